"""Distance of learned policies from the exact equilibria of games that have them.

``equilibrium_report(cfg, joint_policy, hierarchy, device)`` returns the ``eq`` section of
``summary.json`` (logged to TensorBoard under ``eq/``), or ``None`` for game families without an
exact reference (anything but ``matrix`` and ``lq``). The learned policies are read through
:meth:`~dgsolve.policy.JointPolicy.distribution`, which builds each agent's input as it acts
(its observation plus the leaders' actions, or their query answers). References come from
:func:`dgsolve.eval.exact.exact_reference`.

**One-shot bimatrix games.** From the action probabilities at the start state:

* one tier: ``nash_gap`` is the larger of the two players' exact best-response gains;
* two tiers, ``follower_observes=action``: the follower's probabilities per observed leader
  action, and :func:`~dgsolve.eval.exact_matrix.stackelberg_gaps` gives ``nash_gap`` (follower's
  gain from best-responding to each action the leader plays; leader's gain from its best pure
  action against those responses) and ``stackelberg_gap`` = |leader's expected payoff - pure
  commitment Stackelberg value|;
* two tiers, ``queries``: the follower sees the leader's mixed strategy, so the commitment model
  is the mixed one (Conitzer & Sandholm, EC 2006) and ``stackelberg_gap`` is taken against its
  value. The follower's gain is against the leader's mixture; the leader's gain is over pure
  commitments, each shown to the learned follower in place of the leader's policy.

**Repeated bimatrix games** (Gerstgrasser & Parkes, "Oracles & Followers: Stackelberg
Equilibria in Deep Multi-Agent RL", ICML 2023). Observations carry no time, so policies are
memory-1; the reference (and the gains below) use deterministic memory-1 policies, and the
learned ones are read greedily at every state. ``returns`` plays the game with the learned joint
policy, greedily and sampled. ``stackelberg_gap`` = |greedy leader return - optimal memory-1
commitment value| (``stackelberg_gap_sampled`` uses the sampled return). ``nash_gap`` = the
larger of the players' gains from switching to their best deterministic memory-1 policy: the
follower (or column player) against the leader's greedy table; the leader (or row player)
against the follower's greedy response, which in ``queries`` mode is recomputed by showing each
alternative commitment to the learned follower. With ``follower_observes=action`` the follower
cannot see a changed commitment, only the leader's actions, so its replies stay as they are: a
commitment that relies on the follower knowing it (the prisoner's dilemma's) then shows a
leader gain even when played exactly.

**LQ games** (Başar & Olsder, "Dynamic Noncooperative Game Theory", 1999, ch. 6-7). States are
those of one episode of 256 games played (sampled) by the learned policies, plus a copy jittered
by a tenth of their size; each player's mean action, with its leaders' mean actions fed to it as
what it observes, is fitted by least squares to ``u = -K x + b``
(:func:`~dgsolve.eval.exact_lq.fit_linear_gain`), so a follower's ``K`` is its effective gain
on the state along the equilibrium path. With a finite horizon one gain is fitted per step
``t`` on the states visited at ``t`` (time feature ``t / T``) and ``gain_error`` is the relative
Frobenius error over all ``T`` gains stacked. References: feedback Nash gains with one tier,
feedback Stackelberg gains with tiers. ``cost_gap`` = (cost of the fitted linear profile -
reference cost) / |reference cost|, both exact (:func:`~dgsolve.eval.exact_lq.evaluate_gains`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from dgsolve import games
from dgsolve.errors import CapabilityError
from dgsolve.eval import exact_lq, exact_matrix
from dgsolve.eval.exact import exact_reference
from dgsolve.eval.returns import evaluate_returns
from dgsolve.games.lq import LQConfig
from dgsolve.games.matrix import AGENTS, MatrixConfig, payoff_matrices
from dgsolve.hierarchy import Hierarchy
from dgsolve.solvers.exact import TablePolicy

#: most memory-1 policies enumerated for one player's best response (numpy, cheap).
MAX_ENUMERATED_POLICIES = 1 << 20
#: most leader commitments shown one by one to a learned follower (``queries`` mode).
MAX_SUBSTITUTED_POLICIES = 4096
#: sampled episodes of a repeated matrix game, and LQ games rolled out to sample states.
SAMPLED_EPISODES = 1024
LQ_ROLLOUT_ENVS = 256


def equilibrium_report(
    cfg, joint_policy, hierarchy: Hierarchy, device: torch.device | str = "cpu"
) -> dict[str, Any] | None:
    """The ``eq`` section of ``summary.json`` for ``joint_policy`` in the game of ``cfg.env``;
    ``None`` where the family has no exact reference. See the module docstring for each key."""
    family = cfg.env.family
    if family not in ("matrix", "lq"):
        return None
    device = torch.device(device)
    seed = 20_000 + int(cfg.get("seed", 0) or 0)
    # Sampling must neither disturb nor depend on the training RNG streams.
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if family == "matrix":
            return matrix_report(cfg.env, joint_policy, hierarchy, device, seed)
        return lq_report(cfg.env, joint_policy, hierarchy, device, seed)


def _mode(hierarchy: Hierarchy) -> str:
    return "simultaneous" if hierarchy.is_simultaneous else "leader_follower"


def _probs(joint, agent: str, obs: torch.Tensor, seen: dict[str, torch.Tensor]) -> np.ndarray:
    return joint.distribution(agent, obs, seen).probs.double().cpu().numpy()


def _floats(values) -> list:
    return np.asarray(values, dtype=np.float64).tolist()


# --------------------------------------------------------------------------- matrix games
def matrix_report(
    env_cfg, joint, hierarchy: Hierarchy, device: torch.device, seed: int = 0
) -> dict[str, Any]:
    """Equilibrium gaps of a joint policy in a one-shot or repeated bimatrix game."""
    mcfg = MatrixConfig.coerce(env_cfg)
    mode = _mode(hierarchy)
    try:
        ref = exact_reference(mcfg, mode, None if mode == "simultaneous" else hierarchy.tiers)
    except CapabilityError as err:  # a repeated game too large to enumerate
        return {"reference_error": str(err)}
    A, B = payoff_matrices(mcfg)
    A, B = A + mcfg.reward_offset, B + mcfg.reward_offset
    if mcfg.rounds == 1:
        return _one_shot(A, B, ref, joint, hierarchy, device)
    return _repeated(mcfg, A, B, ref, joint, hierarchy, device, seed)


def _roles(hierarchy: Hierarchy) -> tuple[str, str]:
    """(first, second): leader and follower, or row and column with one tier."""
    if hierarchy.is_simultaneous:
        return AGENTS
    return hierarchy.tiers[0][0], hierarchy.tiers[1][0]


def _one_shot(A, B, ref, joint, hierarchy: Hierarchy, device) -> dict[str, Any]:
    m, n = A.shape
    start = F.one_hot(torch.tensor([m * n], device=device), m * n + 1).float()
    if hierarchy.is_simultaneous:
        p = _probs(joint, "row", start, {})[0]
        q = _probs(joint, "column", start, {})[0]
        gains = {
            "row": float((A @ q).max() - p @ A @ q),
            "column": float((p @ B).max() - p @ B @ q),
        }
        return {
            "nash_gap": exact_matrix.nash_gap(A, B, p, q),
            "deviation_gain": gains,
            "strategies": {"row": _floats(p), "column": _floats(q)},
            "payoffs": {"row": float(p @ A @ q), "column": float(p @ B @ q)},
            "reference": {"nash": ref["nash"]},
        }

    leader, follower = _roles(hierarchy)
    L, Fm = (A, B) if leader == AGENTS[0] else (B.T, A.T)
    p = _probs(joint, leader, start, {})[0]
    reference = {
        "nash": ref["nash"],
        "stackelberg": ref["stackelberg"],
        "stackelberg_mixed": ref["stackelberg_mixed"],
    }
    if not hierarchy.observes_queries:
        # the follower's response to each leader action it may observe, [m, n]
        seen = {leader: torch.arange(m, device=device)}
        q = _probs(joint, follower, start.expand(m, -1), seen)
        gaps = exact_matrix.stackelberg_gaps(L, Fm, p, q)
        per_action = (q * L).sum(axis=1)
        leader_value = float(p @ per_action)
        follower_value = float(p @ (q * Fm).sum(axis=1))
        gains = {
            leader: float(per_action.max() - leader_value),
            follower: float(p @ (Fm.max(axis=1) - (q * Fm).sum(axis=1))),
        }
        return {
            "nash_gap": gaps["nash_gap"],
            "stackelberg_gap": gaps["stackelberg_gap"],
            "deviation_gain": gains,
            "strategies": {leader: _floats(p), follower: _floats(q)},
            "payoffs": {leader: leader_value, follower: follower_value},
            "reference": {"commitment": "pure", **reference},
        }

    # queries: the follower sees the leader's mixed strategy, not the sampled action
    q = _probs(joint, follower, start, {})[0]
    leader_value, follower_value = float(p @ L @ q), float(p @ Fm @ q)
    responses = []
    for i in range(m):
        pure = _substitute(joint, leader, TablePolicy(np.eye(m)[[i] * (m * n + 1)], device))
        responses.append(_probs(pure, follower, start, {})[0])
    pure_values = [float(L[i] @ responses[i]) for i in range(m)]
    gains = {
        leader: max(0.0, max(pure_values) - leader_value),
        follower: float((p @ Fm).max() - p @ Fm @ q),
    }
    value = ref["stackelberg_mixed"]["payoffs"][leader]
    return {
        "nash_gap": max(gains.values()),
        "stackelberg_gap": abs(leader_value - value),
        "deviation_gain": gains,
        "strategies": {
            leader: _floats(p),
            follower: _floats(q),
            "follower_response_to_pure": _floats(responses),
        },
        "payoffs": {leader: leader_value, follower: follower_value},
        "reference": {"commitment": "mixed", **reference},
    }


def _substitute(joint, agent: str, policy) -> Any:
    """A copy of ``joint`` in which ``agent`` plays ``policy``; query answers are recomputed from
    the policies on every call, so followers see the substitute."""
    other = copy.copy(joint)
    other.policies = {**joint.policies, agent: policy}
    return other


def _repeated(mcfg, A, B, ref, joint, hierarchy: Hierarchy, device, seed: int) -> dict[str, Any]:
    m, n = A.shape
    S = m * n + 1
    first, second = _roles(hierarchy)
    first_is_row = first == AGENTS[0]
    R1, R2 = (A, B) if first_is_row else (B.T, A.T)  # first's actions as rows
    m1, m2 = R1.shape
    states = torch.eye(S, device=device)

    # ---- the learned policies as tables over the memory-1 states
    p1 = _probs(joint, first, states, {})  # [S, m1]
    if hierarchy.is_simultaneous or hierarchy.observes_queries:
        p2 = np.repeat(_probs(joint, second, states, {})[:, None], m1, axis=1)
    else:
        seen = {first: torch.arange(m1, device=device).repeat(S)}
        p2 = _probs(joint, second, states.repeat_interleave(m1, dim=0), seen).reshape(S, m1, m2)
    g1, g2 = p1.argmax(-1), p2.argmax(-1)  # greedy tables [S], [S, m1]
    v1, v2 = _play(R1, R2, mcfg.rounds, n, first_is_row, g1[None], g2[None])

    # ---- best deterministic memory-1 deviations
    gains: dict[str, float] = {}
    if m2**S <= MAX_ENUMERATED_POLICIES:
        tables = exact_matrix.memory1_policies(m2, S)
        alt = np.repeat(tables[:, :, None], m1, axis=2)
        _, ret2 = _play(R1, R2, mcfg.rounds, n, first_is_row, g1[None], alt)
        gains[second] = max(0.0, float(ret2.max() - v2[0]))
    if hierarchy.observes_queries:
        if m1**S <= MAX_SUBSTITUTED_POLICIES:
            tables = exact_matrix.memory1_policies(m1, S)
            responses = np.stack(
                [
                    _probs(
                        _substitute(joint, first, TablePolicy(np.eye(m1)[t], device)),
                        second,
                        states,
                        {},
                    ).argmax(-1)
                    for t in tables
                ]
            )
            alt = np.repeat(responses[:, :, None], m1, axis=2)
            ret1, _ = _play(R1, R2, mcfg.rounds, n, first_is_row, tables, alt)
            gains[first] = max(0.0, float(ret1.max() - v1[0]))
    elif m1**S <= MAX_ENUMERATED_POLICIES:
        tables = exact_matrix.memory1_policies(m1, S)
        ret1, _ = _play(R1, R2, mcfg.rounds, n, first_is_row, tables, g2[None])
        gains[first] = max(0.0, float(ret1.max() - v1[0]))

    # ---- play the game with the learned joint policy
    returns = {
        "greedy": _play_returns(mcfg, joint, device, seed, greedy=True, episodes=1),
        "sampled": _play_returns(
            mcfg, joint, device, seed, greedy=False, episodes=SAMPLED_EPISODES
        ),
    }
    out: dict[str, Any] = {}
    if len(gains) == 2:
        out["nash_gap"] = max(gains.values())
    if not hierarchy.is_simultaneous:
        value = ref["stackelberg"]["payoffs"][first]
        out["stackelberg_gap"] = abs(float(v1[0]) - value)
        out["stackelberg_gap_sampled"] = abs(returns["sampled"][first] - value)
    shape2 = p2 if not (hierarchy.is_simultaneous or hierarchy.observes_queries) else p2[:, 0]
    out.update(
        {
            "deviation_gain": gains,
            "returns": returns,
            "greedy_returns": {first: float(v1[0]), second: float(v2[0])},
            "strategies": {first: _floats(p1), second: _floats(shape2)},
            "reference": ref,
        }
    )
    return out


def _play(R1, R2, rounds: int, n_cols: int, first_is_row: bool, t1, t2):
    """Returns of deterministic memory-1 tables, vectorised over a batch of profiles.

    ``t1 [P, S]`` is the first player's action per state, ``t2 [P, S, m1]`` the second's per
    state and first player's action; ``P`` broadcasts. States are the game's: ``row * n + col``
    after a round, ``S - 1`` at the start. Returns ``(ret1 [P], ret2 [P])``.
    """
    t1, t2 = np.asarray(t1), np.asarray(t2)
    P = max(len(t1), len(t2))
    t1 = np.broadcast_to(t1, (P, *t1.shape[1:]))
    t2 = np.broadcast_to(t2, (P, *t2.shape[1:]))
    idx = np.arange(P)
    state = np.full(P, t1.shape[1] - 1)
    ret1, ret2 = np.zeros(P), np.zeros(P)
    for _ in range(rounds):
        a = t1[idx, state]
        b = t2[idx, state, a]
        ret1 += R1[a, b]
        ret2 += R2[a, b]
        row, col = (a, b) if first_is_row else (b, a)
        state = row * n_cols + col
    return ret1, ret2


def _play_returns(mcfg, joint, device, seed: int, greedy: bool, episodes: int) -> dict:
    game = games.make(dataclasses.replace(mcfg, num_envs=episodes), device)
    returns = evaluate_returns(game, lambda ts: joint.act(ts, greedy=greedy), episodes, seed)
    game.close()
    return {a: float(v) for a, v in returns.items()}


# --------------------------------------------------------------------------- LQ games
def lq_report(
    env_cfg, joint, hierarchy: Hierarchy, device: torch.device, seed: int = 0
) -> dict[str, Any]:
    """Fitted linear gains of a joint policy in an LQ game against the exact feedback gains."""
    lcfg = LQConfig.coerce(env_cfg)
    mode = _mode(hierarchy)
    ref = exact_reference(lcfg, mode, None if mode == "simultaneous" else hierarchy.tiers)
    target = ref["nash"] if mode == "simultaneous" else ref["stackelberg"]
    obs = _lq_states(env_cfg, joint, device, seed)  # [steps, 2N, obs_dim]
    n = len(lcfg.A)
    agents = hierarchy.agents

    def fit(step_obs: torch.Tensor) -> dict[str, exact_lq.LinearFit]:
        U = _mean_actions(joint, hierarchy, step_obs)
        X = step_obs[:, :n].double().cpu().numpy()
        return {a: exact_lq.fit_linear_gain(lambda _x, a=a: U[a], X) for a in agents}

    if lcfg.horizon is None:
        fits = fit(obs.reshape(-1, obs.shape[-1]))
        gains = {a: fits[a].gain.tolist() for a in agents}
        r2 = {a: fits[a].r2 for a in agents}
    else:
        per_step = [fit(obs[t]) for t in range(lcfg.horizon)]
        gains = {a: [f[a].gain.tolist() for f in per_step] for a in agents}
        r2 = {a: min(f[a].r2 for f in per_step) for a in agents}
    costs = exact_lq.evaluate_gains(lcfg, gains)
    ref_costs = target["costs"]
    return {
        "gains": gains,
        "gain_error": {a: float(exact_lq.gain_error(gains[a], target["gains"][a])) for a in agents},
        "cost_gap": {
            a: _finite((costs[a] - ref_costs[a]) / max(abs(ref_costs[a]), 1e-12)) for a in agents
        },
        "costs": {a: _finite(costs[a]) for a in agents},
        "fit_r2": r2,
        "reference": {
            "equilibrium": "feedback_nash" if mode == "simultaneous" else "feedback_stackelberg",
            "gains": target["gains"],
            "costs": ref_costs,
        },
    }


def _finite(x: float) -> float | None:
    """JSON has no infinity: a diverging closed loop's cost is reported as null."""
    return float(x) if math.isfinite(x) else None


def _lq_states(env_cfg, joint, device, seed: int) -> torch.Tensor:
    """Observations ``[steps, 2N, obs_dim]`` where ``joint`` acts: row ``t`` holds the states of
    ``N`` games at step ``t`` of an episode played (sampled) by ``joint``, and the same states
    perturbed by a tenth of their typical size, so that the fit is determined even where every
    game follows the same path (a deterministic start and no noise)."""
    game = games.make(OmegaConf.merge(env_cfg, {"num_envs": LQ_ROLLOUT_ENVS}), device)
    ts = game.reset(seed=seed)
    first = game.agents[0]  # every player observes the same state (and time)
    obs = []
    for _ in range(game.episode_steps):
        obs.append(ts.obs[first])
        ts = game.step(joint.act(ts))
    game.close()
    visited = torch.stack(obs)
    n = game.state_dim
    x = visited[..., :n]
    scale = 0.1 * x.pow(2).mean().sqrt().clamp_min(1e-3)
    jittered = visited.clone()
    jittered[..., :n] = x + scale * torch.randn_like(x)
    return torch.cat([visited, jittered], dim=1)


def _mean_actions(joint, hierarchy: Hierarchy, obs: torch.Tensor) -> dict[str, np.ndarray]:
    """Each player's mean action at ``obs`` (clipped as the game clips it), tier by tier with
    the earlier tiers' mean actions as what later tiers observe."""
    seen: dict[str, torch.Tensor] = {}
    out: dict[str, np.ndarray] = {}
    for tier in hierarchy.tiers:
        tier_actions = {}
        for agent in tier:
            spec = joint.specs[agent]
            mean = joint.distribution(agent, obs, seen).mean
            low = torch.tensor(spec.low, device=mean.device, dtype=mean.dtype)
            high = torch.tensor(spec.high, device=mean.device, dtype=mean.dtype)
            tier_actions[agent] = torch.maximum(torch.minimum(mean, high), low)
            out[agent] = tier_actions[agent].double().cpu().numpy()
        seen.update(tier_actions)
    return out
