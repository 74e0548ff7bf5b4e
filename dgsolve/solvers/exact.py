"""Exact equilibria as a solver (``algo=exact``): no learning, one step, policies that play them.

The one iteration computes the exact reference of the configured game with
:func:`dgsolve.eval.exact.exact_reference` (bimatrix games: vertex enumeration and commitment
LPs; repeated bimatrix games: enumeration of memory-1 policies as in Gerstgrasser & Parkes,
"Oracles & Followers: Stackelberg Equilibria in Deep Multi-Agent Reinforcement Learning", ICML
2023; LQ games: the coupled Riccati recursions of Başar & Olsder, "Dynamic Noncooperative Game
Theory", 1999, ch. 6-7). Its policies then play that equilibrium through the same
:class:`~dgsolve.policy.JointPolicy` as learned ones, so a run's evaluation, summary and ``eq``
section describe the exact solution — the ground truth next to which learned runs are read:

* one tier (``simultaneous``): the first Nash equilibrium that ``exact_reference`` lists;
* two tiers (``leader_follower``), one-shot bimatrix game: with ``follower_observes=action`` the
  leader plays its pure Stackelberg commitment and the follower best-responds to the action it
  observes; with ``queries`` the follower sees the leader's mixed strategy, so the leader plays
  its mixed commitment (Conitzer & Sandholm, EC 2006; the pure one with
  ``hierarchy.commitment=pure``) and the follower best-responds to the strategy it is shown;
* repeated bimatrix game: the memory-1 tables of the leader-optimal commitment; with ``queries``
  the follower reads the leader's (deterministic) memory-1 policy from its query answers and
  plays its best memory-1 response to it, so it also answers commitments other than the optimum;
* LQ game: ``u_i = -K_i x`` with the feedback gains (per step for a finite horizon); a follower
  that observes its leaders' actions plays its reaction ``u_i = -G_i [x; leaders' actions]``.

Ties a follower is indifferent about are broken in the leader's favour, as in the reference
(strong Stackelberg equilibrium).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dgsolve.errors import CapabilityError, RunDirError
from dgsolve.eval import exact_matrix
from dgsolve.eval.exact import exact_reference
from dgsolve.games.base import Game
from dgsolve.games.matrix import AGENTS, payoff_matrices
from dgsolve.hierarchy import Hierarchy
from dgsolve.policy import (
    ConditionalTablePolicy,
    ExactPolicy,
    JointPolicy,
    LinearPolicy,
    Memory1ResponsePolicy,
    MixedResponsePolicy,
    TablePolicy,
)


# --------------------------------------------------------------------------- solver
class ExactSolver:
    """``algo=exact``: one step computes the exact equilibrium; the policies play it.

    ``cfg`` is the algo config (``ExactConfig``); the game's own config (``game.cfg``) says which
    reference to compute. ``seed`` is unused: the solution is deterministic. It does not learn
    (``learns = False``), so a run writes no checkpoint, history, curves or plots for it.
    """

    #: nothing is learned: there are no curves, and a resume recomputes the solution
    learns = False

    def __init__(self, cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
        env_cfg = getattr(game, "cfg", None)
        family = getattr(env_cfg, "family", None)
        if family not in ("matrix", "lq"):
            raise CapabilityError(
                f"algo=exact needs a game with an exact reference (env=matrix or env=lq); "
                f"{type(game).__name__} has none"
            )
        self.cfg, self.game, self.hierarchy, self.device = cfg, game, hierarchy, device
        self.env_cfg = env_cfg
        self.specs = {a: game.spec(a) for a in game.agents}
        self.mode = "simultaneous" if hierarchy.is_simultaneous else "leader_follower"
        self.num_iterations = 1
        self.iteration = 0
        self.global_step = 0
        self._reference: dict[str, Any] | None = None
        self._policies: dict[str, ExactPolicy] | None = None

    # ------------------------------------------------------------------ public API
    @property
    def done(self) -> bool:
        return self.iteration >= self.num_iterations

    def step(self) -> dict:
        """Compute the exact reference and the policies that play it."""
        self.reference()
        self.policies()
        self.iteration += 1
        return {"episodes": [], "losses": {}}

    def reference(self) -> dict[str, Any]:
        """``exact_reference`` of the game for this hierarchy (computed once)."""
        if self._reference is None:
            tiers = None if self.hierarchy.is_simultaneous else self.hierarchy.tiers
            self._reference = exact_reference(self.env_cfg, self.mode, tiers)
        return self._reference

    def summary(self) -> dict[str, Any]:
        """``{"exact": {"nash": [...], "stackelberg": {...}, "stackelberg_mixed": {...}}}``; for
        LQ games each entry has ``gains`` and ``costs``, for matrix games ``strategies`` and
        ``payoffs``."""
        ref = self.reference()
        out: dict[str, Any] = {"mode": self.mode}
        if self.env_cfg.family == "lq":
            out["nash"] = [ref["nash"]]
        else:
            out["nash"] = ref["nash"]
        for key in ("stackelberg", "stackelberg_mixed"):
            if key in ref:
                out[key] = ref[key]
        out["played"] = self._played()
        return {"exact": out}

    def policies(self) -> dict[str, ExactPolicy]:
        if self._policies is None:
            if self.env_cfg.family == "lq":
                self._policies = self._lq_policies()
            else:
                self._policies = self._matrix_policies()
        return dict(self._policies)

    def joint_policy(self) -> JointPolicy:
        return JointPolicy(self.policies(), self.hierarchy, self.specs)

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "global_step": self.global_step}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state["iteration"])
        self.global_step = int(state["global_step"])

    def policy_state(self) -> dict:
        """What ``policy.pt`` holds: each agent's exact policy as plain lists (for reading; the
        policies are rebuilt from the config, see :meth:`load_policy_state`)."""
        return {
            "solver": "exact",
            "tiers": [list(t) for t in self.hierarchy.tiers],
            "policies": {a: p.state() for a, p in self.policies().items()},
        }

    def load_policy_state(self, state: dict) -> None:
        """Accept a ``policy.pt`` written by :meth:`policy_state`. The exact policies are a
        function of the game and the hierarchy alone, so they are recomputed, not read."""
        tiers = [list(t) for t in self.hierarchy.tiers]
        if state.get("solver") != "exact" or state.get("tiers") != tiers:
            raise RunDirError(
                f"policy.pt was not written by algo=exact with tiers {tiers}; rebuild the run's "
                "policies with the algo and hierarchy it was trained with"
            )
        self.policies()

    # ------------------------------------------------------------------ matrix games
    def _played(self) -> str:
        """Which entry of the reference the policies play."""
        if self.mode == "simultaneous":
            return "nash[0]"
        if self.env_cfg.family == "matrix" and self.env_cfg.rounds == 1:
            mixed = self.hierarchy.observes_queries and not self.hierarchy.pure_commitments
            return "stackelberg_mixed" if mixed else "stackelberg"
        return "stackelberg"

    def _matrix_policies(self) -> dict[str, ExactPolicy]:
        ref, game, dev = self.reference(), self.game, self.device
        S = game.num_states
        if self.mode == "simultaneous":
            strategies = ref["nash"][0]["strategies"]
            if game.rounds == 1:
                return {a: TablePolicy([strategies[a]] * S, dev) for a in AGENTS}
            return {a: TablePolicy(strategies[a], dev) for a in AGENTS}

        leader, follower = self.hierarchy.tiers[0][0], self.hierarchy.tiers[1][0]
        A, B = payoff_matrices(self.env_cfg)
        # the offset moves no best response, but keeps tolerances those of the reference
        A, B = A + self.env_cfg.reward_offset, B + self.env_cfg.reward_offset
        L, F = (A, B) if leader == AGENTS[0] else (B.T, A.T)
        m, n = L.shape
        if game.rounds == 1:
            if self.hierarchy.observes_queries:
                # a mixed commitment, or (pure commitments) the pure one, shown as answers
                key = "stackelberg" if self.hierarchy.pure_commitments else "stackelberg_mixed"
                mixed = ref[key]["strategies"][leader]
                queries = self.hierarchy.queries[leader]
                return {
                    leader: TablePolicy([mixed] * S, dev),
                    follower: MixedResponsePolicy(L, F, queries),
                }
            pure = ref["stackelberg"]
            response = pure["response"][follower]  # [m][n] one-hot per leader action
            return {
                leader: TablePolicy([pure["strategies"][leader]] * S, dev),
                follower: ConditionalTablePolicy([response] * S, dev),
            }
        tables = ref["stackelberg"]["strategies"]
        if self.hierarchy.observes_queries:
            response = _memory1_responses(L, F, game.rounds, leader == AGENTS[0])
            queries = self.hierarchy.queries[leader]
            return {
                leader: TablePolicy(tables[leader], dev),
                follower: Memory1ResponsePolicy(response, m, n, queries),
            }
        # The follower sees the leader's action, which a deterministic memory-1 commitment fixes
        # given the state, so the committed follower table is its response in every case.
        conditional = [[row] * m for row in tables[follower]]
        return {
            leader: TablePolicy(tables[leader], dev),
            follower: ConditionalTablePolicy(conditional, dev),
        }

    # ------------------------------------------------------------------ LQ games
    def _lq_policies(self) -> dict[str, ExactPolicy]:
        ref, game = self.reference(), self.game
        horizon = game.horizon
        if self.mode == "simultaneous":
            return {
                a: LinearPolicy(
                    ref["nash"]["gains"][a], self.specs[a], game.state_dim, horizon, 0, self.device
                )
                for a in game.agents
            }
        sol = ref["stackelberg"]
        out: dict[str, ExactPolicy] = {}
        for agent in game.agents:
            preds = self.hierarchy.predecessors(agent)
            if preds and not self.hierarchy.observes_queries:
                seen_dim = sum(self.specs[p].action_dim for p in preds)
                gains = sol["response"][agent]
            else:
                seen_dim, gains = 0, sol["gains"][agent]
            out[agent] = LinearPolicy(
                gains, self.specs[agent], game.state_dim, horizon, seen_dim, self.device
            )
        return out


def _memory1_responses(L: np.ndarray, F: np.ndarray, rounds: int, leader_is_row: bool):
    """The follower's best deterministic memory-1 response to every deterministic memory-1
    leader policy, ``[m ** S, S]`` actions, with the tie-breaking of
    :func:`~dgsolve.eval.exact_matrix.repeated_equilibria` (best for the leader, then the
    lowest-numbered policy)."""
    A, B = (L, F) if leader_is_row else (F.T, L.T)
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    m_row, n_col = A.shape
    S = m_row * n_col + 1
    rows, cols = exact_matrix.memory1_policies(m_row, S), exact_matrix.memory1_policies(n_col, S)
    row_ret, col_ret, _ = exact_matrix.repeated_returns(A, B, rounds, rows, cols)
    tol = exact_matrix.TOL * max(1.0, float(np.abs(A).max() + np.abs(B).max())) * rounds
    if leader_is_row:
        leader_ret, follower_ret, follower_policies = row_ret, col_ret, cols
    else:
        leader_ret, follower_ret, follower_policies = col_ret.T, row_ret.T, rows
    is_best = follower_ret >= follower_ret.max(axis=1, keepdims=True) - tol
    favoured = np.where(is_best, leader_ret, -np.inf).argmax(axis=1)
    return follower_policies[favoured]
