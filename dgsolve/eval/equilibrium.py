"""Distance of learned policies from the exact equilibria of games that have them.

``equilibrium_report(cfg, joint_policy, hierarchy, device)`` returns the ``eq`` section of
``summary.json`` (logged to TensorBoard under ``eq/``), or ``None`` for game families without an
exact reference (anything but ``matrix``, ``lq``, ``openspiel`` and bargaining variants small
enough for OpenSpiel to walk). The learned policies are
read through :meth:`~dgsolve.policy.JointPolicy.distribution`, which builds each agent's input
as it acts (its observation plus the leaders' actions, or their query answers); the gaps
themselves are in :mod:`dgsolve.eval.matrix_gaps` and :mod:`dgsolve.eval.lq_gaps`. References
come from :func:`dgsolve.eval.exact.exact_reference`; OpenSpiel games get their exact NashConv
from OpenSpiel's best responses (:mod:`dgsolve.eval.openspiel_eq`).

Every report ends with ``verdict``: whether the learned profile is an ε-equilibrium of the kind
the hierarchy defines, with ε = ``tolerance``. The gaps it weighs are each player's deviation
gain (the best deviation open to it, the others as learned) and, for Stackelberg kinds, the
distance of the leader's value from the exact Stackelberg value — a pair that is stable only
because the follower answers some commitments badly is not a Stackelberg equilibrium. OpenSpiel
verdicts also weigh the NashConv (the sum of the deviation gains): a profile is an ε-Nash
equilibrium there iff NashConv ≤ ε. Matrix and OpenSpiel gaps are in payoff units, LQ gaps
relative to the costs involved.
"""

from __future__ import annotations

from typing import Any

import torch

from dgsolve.errors import CapabilityError
from dgsolve.eval.exact import exact_reference
from dgsolve.eval.lq_gaps import lq_report
from dgsolve.eval.matrix_gaps import one_shot_report, repeated_report, roles
from dgsolve.games.matrix import MatrixConfig, payoff_matrices
from dgsolve.hierarchy import Hierarchy
from dgsolve.policy import JointPolicy, MixturePolicy

#: default ε of the verdict: payoff units for matrix and OpenSpiel games, relative for LQ games.
DEFAULT_TOLERANCE = {"matrix": 0.05, "lq": 0.05, "openspiel": 0.05, "bargain": 0.05}


def equilibrium_report(
    cfg, joint_policy, hierarchy: Hierarchy, device: torch.device | str = "cpu"
) -> dict[str, Any] | None:
    """The ``eq`` section of ``summary.json`` for ``joint_policy`` in the game of ``cfg.env``;
    ``None`` where the family has no exact reference. ``cfg.task.eq_tolerance`` (if set) is the
    verdict's ε."""
    family = cfg.env.family
    if family not in DEFAULT_TOLERANCE or (family == "bargain" and not small_bargain(cfg.env)):
        return None
    device = torch.device(device)
    seed = 20_000 + int(cfg.get("seed", 0) or 0)
    task = cfg.get("task") or {}
    tolerance = task.get("eq_tolerance") if hasattr(task, "get") else None
    tolerance = DEFAULT_TOLERANCE[family] if tolerance is None else float(tolerance)
    # Sampling must neither disturb nor depend on the training RNG streams.
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if family == "matrix":
            report = matrix_report(cfg.env, joint_policy, hierarchy, device, seed)
        elif family == "openspiel":
            from dgsolve.eval.openspiel_eq import openspiel_report  # needs the openspiel extra

            report = openspiel_report(cfg.env, joint_policy, hierarchy, device)
        elif family == "bargain":
            report = bargain_exact_report(cfg.env, joint_policy, hierarchy, device)
        else:
            report = lq_report(cfg.env, joint_policy, hierarchy, device, seed)
    if "reference_error" not in report:
        report["verdict"] = verdict(report, hierarchy, family, cfg.env, tolerance)
    return report


def small_bargain(env_cfg) -> bool:
    """Whether the bargaining variant of ``env_cfg`` is small enough for an exact NashConv
    (and OpenSpiel is installed to compute it); larger ones have no reference (task=exploit
    estimates theirs)."""
    try:
        from dgsolve.eval.bargain_exact import MAX_HISTORIES
        from dgsolve.games.bargain.openspiel_game import num_histories
    except ImportError:
        return False
    from dgsolve.games.bargain.rules import BargainRules

    return num_histories(BargainRules.from_config(dict(env_cfg.items()))) <= MAX_HISTORIES


def bargain_exact_report(
    env_cfg, joint, hierarchy: Hierarchy, device: torch.device
) -> dict[str, Any]:
    """Exact NashConv of a small bargaining variant's policies, through the variant as an
    OpenSpiel game (:mod:`dgsolve.eval.bargain_exact`), in the ``eq`` layout of OpenSpiel
    games."""
    from dgsolve.eval.bargain_exact import bargain_nash_conv
    from dgsolve.games.bargain.openspiel_game import load_string
    from dgsolve.games.bargain.rules import BargainRules

    rules = BargainRules.from_config(dict(env_cfg.items()))
    if not hierarchy.is_simultaneous:
        return {
            "game": load_string(rules),
            "reference_error": (
                "exact NashConv needs hierarchy=simultaneous: a policy that sees the other "
                "tier's action is not a policy of the game"
            ),
        }
    try:
        out = bargain_nash_conv(rules, joint, device)
    except CapabilityError as err:  # a policy no table of the Markov observation can hold
        return {"game": load_string(rules), "reference_error": str(err)}
    return {
        "game": out["game"],
        "nash_conv": out["nash_conv"],
        "deviation_gain": out["gains"],
        "values": out["values"],
        "num_histories": out["num_histories"],
    }


def matrix_report(
    env_cfg, joint, hierarchy: Hierarchy, device: torch.device, seed: int = 0
) -> dict[str, Any]:
    """Equilibrium gaps of a joint policy in a one-shot or repeated bimatrix game."""
    mcfg = MatrixConfig.coerce(env_cfg)
    mode = "simultaneous" if hierarchy.is_simultaneous else "leader_follower"
    try:
        ref = exact_reference(mcfg, mode, None if mode == "simultaneous" else hierarchy.tiers)
    except CapabilityError as err:  # a repeated game too large to enumerate
        return {"reference_error": str(err)}
    A, B = payoff_matrices(mcfg)
    A, B = A + mcfg.reward_offset, B + mcfg.reward_offset
    mixed = {a for a, p in joint.policies.items() if isinstance(p, MixturePolicy)}
    if mcfg.rounds == 1:
        if mixed:  # a one-shot game has one decision: a mixture's first is all of it
            policies = {
                a: _OneShotMixture(p) if a in mixed else p for a, p in joint.policies.items()
            }
            joint = JointPolicy(policies, joint.hierarchy, joint.specs)
        return one_shot_report(A, B, ref, joint, hierarchy, device)
    if mixed:
        return {
            "reference_error": (
                "exact gaps of a mixture of policies (PSRO's meta-strategy) in a repeated game "
                "are not computed: a mixture over memory-1 strategies is no memory-1 strategy"
            )
        }
    return repeated_report(mcfg, A, B, ref, joint, hierarchy, device, seed)


# --------------------------------------------------------------------------- verdict
def kind_of(hierarchy: Hierarchy, family: str, env_cfg) -> str:
    """The solution concept the run is judged by."""
    if family == "lq":
        return "feedback nash" if hierarchy.is_simultaneous else "feedback stackelberg"
    if hierarchy.is_simultaneous:
        return "nash"
    if int(env_cfg.rounds) > 1:
        return "stackelberg (memory-1 commitment)"
    mixed = hierarchy.observes_queries and not hierarchy.pure_commitments
    return "stackelberg (mixed commitment)" if mixed else "stackelberg (pure commitment)"


def verdict(
    report: dict[str, Any], hierarchy: Hierarchy, family: str, env_cfg, tolerance: float
) -> dict[str, Any]:
    """``{"equilibrium", "kind", "tolerance", "worst_gap", "gaps"}`` for an ``eq`` report.

    ``gaps`` names each weighed gap: ``<agent>`` deviation gains, ``nash_conv`` (OpenSpiel
    games: their sum, so the worst gap) and, for Stackelberg kinds, ``stackelberg_value`` (the
    leader's distance from the exact value). A gap that could not be
    computed counts as infinite: an unverified profile is not called an equilibrium."""
    gaps: dict[str, float | None] = dict(report.get("deviation_gain", {}))
    for agent in hierarchy.agents:
        gaps.setdefault(agent, None)
    if family in ("openspiel", "bargain"):
        gaps["nash_conv"] = report.get("nash_conv")
    if not hierarchy.is_simultaneous:
        gaps["stackelberg_value"] = report.get("stackelberg_gap")
    values = [float("inf") if g is None else float(g) for g in gaps.values()]
    worst = max(values)
    return {
        "equilibrium": bool(worst <= tolerance),
        "kind": kind_of(hierarchy, family, env_cfg),
        "tolerance": tolerance,
        "worst_gap": worst,
        "gaps": gaps,
    }


def verdict_line(eq: dict[str, Any], hierarchy: Hierarchy) -> str:
    """One console line: what the run found, e.g. ``ε-Stackelberg equilibrium (mixed
    commitment): leader gap 0.004, follower gap 0.001, value gap 0.02 (tolerance 0.05)``."""
    v = eq.get("verdict")
    if v is None:
        return f"no equilibrium verdict: {eq.get('reference_error', 'no reference')}"
    kind = v["kind"]
    name = kind.split(" (")[0]
    detail = kind[len(name) :].strip()
    label = {"nash": "Nash", "stackelberg": "Stackelberg", "feedback nash": "feedback Nash"}.get(
        name, "feedback Stackelberg"
    )
    parts = []
    if hierarchy.is_simultaneous:
        for agent in hierarchy.agents:
            parts.append(f"{agent} gap {_fmt(v['gaps'][agent])}")
        if "nash_conv" in v["gaps"]:
            parts.append(f"NashConv {_fmt(v['gaps']['nash_conv'])}")
    else:
        leader, follower = roles(hierarchy) if _one_leader_one_follower(hierarchy) else (None, None)
        for agent in hierarchy.agents:
            role = "leader" if agent == leader else "follower" if agent == follower else agent
            parts.append(f"{role} gap {_fmt(v['gaps'][agent])}")
        parts.append(f"value gap {_fmt(v['gaps']['stackelberg_value'])}")
    what = f"{label} equilibrium{' ' + detail if detail else ''}"
    tol = f"(tolerance {v['tolerance']:g})"
    if v["equilibrium"]:
        return f"ε-{what}: {', '.join(parts)} {tol}"
    return f"not an ε-{what}: worst gap {_fmt(v['worst_gap'])} — {', '.join(parts)} {tol}"


def _one_leader_one_follower(hierarchy: Hierarchy) -> bool:
    """Two tiers of one agent each: leader and follower."""
    return len(hierarchy.tiers) == 2 and all(len(t) == 1 for t in hierarchy.tiers)


def _fmt(x: float | None) -> str:
    if x is None or x == float("inf"):
        return "unknown"
    return f"{x:.3g}"


class _OneShotMixture:
    """A mixture's first decision as :meth:`JointPolicy.distribution` reads a policy (its
    ``net.distribution`` of ``prepare``'d observations): in a one-shot game, the strategy."""

    def __init__(self, mixture: MixturePolicy):
        self.mixture = mixture

    @property
    def net(self) -> _OneShotMixture:
        return self

    def prepare(self, obs: torch.Tensor) -> torch.Tensor:
        return obs

    def distribution(self, obs: torch.Tensor, legal: torch.Tensor | None = None):
        return self.mixture.first_decision_distribution(obs, legal)
