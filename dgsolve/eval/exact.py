"""Exact equilibrium references for games that have them: bimatrix and linear-quadratic games.

:func:`exact_reference` picks the solver by game family (:mod:`dgsolve.eval.exact_matrix` for
matrix games, :mod:`dgsolve.eval.exact_lq` for LQ games) so that evaluation can compare learned
policies with the true equilibrium of the configured game. Payoffs and costs are in the units the
game pays its rewards in (matrix payoffs include ``reward_offset`` every round).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dgsolve.errors import CapabilityError, ConfigError, HierarchyError
from dgsolve.eval import exact_lq, exact_matrix
from dgsolve.games.lq import LQConfig
from dgsolve.games.matrix import AGENTS, MatrixConfig, payoff_matrices

MODES = ("simultaneous", "leader_follower")


def exact_reference(
    env_cfg: Any,
    mode: str = "simultaneous",
    action_sequence: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The exact equilibria of the game ``env_cfg`` describes.

    Always has ``nash``; with ``mode="leader_follower"`` also ``stackelberg`` and, for one-shot
    matrix games, ``stackelberg_mixed``. The leader is the first tier of ``action_sequence`` when
    given (the hierarchy's tiers), else ``env_cfg.leader``, else the game's first agent.

    * matrix, one-shot: ``nash`` lists every extreme Nash equilibrium; ``stackelberg`` is the
      pure-commitment and ``stackelberg_mixed`` the mixed-commitment strong Stackelberg
      equilibrium (see :mod:`dgsolve.eval.exact_matrix`).
    * matrix, repeated: over deterministic memory-1 policies, ``nash`` lists one pure equilibrium
      per distinct path of play and ``stackelberg`` is the leader-optimal commitment.
    * lq: feedback Nash and feedback Stackelberg gains and expected costs.

    Raises :class:`CapabilityError` for any other game family.
    """
    mode = getattr(mode, "value", mode)  # accept the HierarchyMode enum as well as its value
    if mode not in MODES:
        raise ConfigError(f"hierarchy mode {mode!r} is not one of {', '.join(MODES)}")
    family = env_cfg["family"] if isinstance(env_cfg, Mapping) else env_cfg.family
    if family == "matrix":
        return _matrix_reference(MatrixConfig.coerce(env_cfg), mode, action_sequence)
    if family == "lq":
        return _lq_reference(LQConfig.coerce(env_cfg), mode, action_sequence)
    raise CapabilityError(
        f"no exact equilibrium reference for env family {family!r}; exact references exist for "
        "matrix and lq games"
    )


def _matrix_reference(
    cfg: MatrixConfig, mode: str, action_sequence: Sequence[Sequence[str]] | None
) -> dict[str, Any]:
    A, B = payoff_matrices(cfg)
    # Equilibria do not move when both payoffs shift by the offset; the reported values do.
    A, B = A + cfg.reward_offset, B + cfg.reward_offset
    if mode == "simultaneous":
        if cfg.rounds > 1:
            return {"nash": exact_matrix.repeated_equilibria(A, B, cfg.rounds)["nash"]}
        return {"nash": exact_matrix.nash_equilibria(A, B, AGENTS)}
    leader = _leader(cfg.leader, AGENTS, action_sequence)
    follower = AGENTS[1] if leader == AGENTS[0] else AGENTS[0]
    if action_sequence is not None and [list(t) for t in action_sequence] != [[leader], [follower]]:
        raise HierarchyError(
            f"a matrix game's action_sequence must be [[{leader}], [{follower}]] (one agent per "
            f"tier), got {[list(t) for t in action_sequence]}"
        )
    if cfg.rounds > 1:
        return exact_matrix.repeated_equilibria(A, B, cfg.rounds, leader)
    # The Stackelberg solvers want the leader's actions as rows.
    L, F = (A, B) if leader == AGENTS[0] else (B.T, A.T)
    return {
        "nash": exact_matrix.nash_equilibria(A, B, AGENTS),
        "stackelberg": exact_matrix.stackelberg_pure(L, F, (leader, follower)),
        "stackelberg_mixed": exact_matrix.stackelberg_mixed(L, F, (leader, follower)),
    }


def _lq_reference(
    cfg: LQConfig, mode: str, action_sequence: Sequence[Sequence[str]] | None
) -> dict[str, Any]:
    reference = {"nash": exact_lq.feedback_nash(cfg)}
    if mode == "leader_follower":
        if action_sequence is None:
            leader = _leader(cfg.leader, cfg.agents, None)
            action_sequence = [[leader], [i for i in cfg.agents if i != leader]]
        reference["stackelberg"] = exact_lq.feedback_stackelberg(cfg, action_sequence)
    return reference


def _leader(
    leader: str | None, agents: Sequence[str], action_sequence: Sequence[Sequence[str]] | None
) -> str:
    if action_sequence is not None and len(action_sequence) > 0 and len(action_sequence[0]) == 1:
        leader = action_sequence[0][0]
    leader = agents[0] if leader is None else leader
    if leader not in agents:
        raise ConfigError(f"leader {leader!r} is not an agent; agents are {', '.join(agents)}")
    return leader
