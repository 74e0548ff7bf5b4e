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

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch.distributions import Categorical, Normal

from dgsolve.errors import CapabilityError, RunDirError
from dgsolve.eval import exact_matrix
from dgsolve.eval.exact import exact_reference
from dgsolve.games.base import AgentSpec, Game
from dgsolve.games.matrix import AGENTS, payoff_matrices
from dgsolve.hierarchy import Hierarchy
from dgsolve.policy import JointPolicy

#: relative tolerance when a follower compares payoffs computed from float32 probabilities.
RESPONSE_TOL = 1e-5


# --------------------------------------------------------------------------- policies
class ExactPolicy(ABC):
    """What every exact policy offers: ``distribution``, ``answer``, ``act`` and ``state``.

    ``net`` and ``prepare`` give it the surface of a :class:`~dgsolve.policy.NetPolicy`
    (``policy.net.distribution(policy.prepare(x))``), which
    :meth:`~dgsolve.policy.JointPolicy.distribution` queries.
    """

    discrete = True

    @property
    def net(self) -> ExactPolicy:
        return self

    def prepare(self, obs: torch.Tensor) -> torch.Tensor:
        return obs

    @abstractmethod
    def distribution(self, obs: torch.Tensor, legal: torch.Tensor | None = None):
        """The action distribution at ``obs`` (the agent's observation plus what it sees)."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """The policy as plain lists, for ``policy.pt``."""

    @torch.no_grad()
    def answer(self, obs: torch.Tensor) -> torch.Tensor:
        dist = self.distribution(obs)
        return dist.probs if self.discrete else dist.mean

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, legal: torch.Tensor | None = None, greedy: bool = False
    ) -> torch.Tensor:
        dist = self.distribution(obs, legal)
        if not self.discrete:
            return dist.mean
        return dist.probs.argmax(-1) if greedy else dist.sample()


def _categorical(probs: torch.Tensor, legal: torch.Tensor | None) -> Categorical:
    if legal is not None:
        probs = probs * legal
    return Categorical(probs=probs, validate_args=False)


class TablePolicy(ExactPolicy):
    """Action probabilities per state of a matrix game; the observation's first ``num_states``
    entries are the one-hot state (anything a follower sees after them is ignored)."""

    def __init__(self, probs: Any, device: torch.device | str = "cpu"):
        self.probs = torch.as_tensor(np.asarray(probs), dtype=torch.float32, device=device)
        self.num_states = self.probs.shape[0]

    def distribution(self, obs: torch.Tensor, legal: torch.Tensor | None = None) -> Categorical:
        state = obs[..., : self.num_states].argmax(-1)
        return _categorical(self.probs[state], legal)

    def state(self) -> dict[str, Any]:
        return {"kind": "table", "probs": self.probs.tolist()}


class ConditionalTablePolicy(ExactPolicy):
    """A follower's probabilities per (state, observed leader action): ``probs [S, m, n]``; the
    observation is the one-hot state followed by the leader's one-hot action."""

    def __init__(self, probs: Any, device: torch.device | str = "cpu"):
        self.probs = torch.as_tensor(np.asarray(probs), dtype=torch.float32, device=device)
        self.num_states, self.num_leader_actions = self.probs.shape[:2]

    def distribution(self, obs: torch.Tensor, legal: torch.Tensor | None = None) -> Categorical:
        state = obs[..., : self.num_states].argmax(-1)
        seen = obs[..., self.num_states : self.num_states + self.num_leader_actions].argmax(-1)
        return _categorical(self.probs[state, seen], legal)

    def state(self) -> dict[str, Any]:
        return {"kind": "conditional_table", "probs": self.probs.tolist()}


class MixedResponsePolicy(ExactPolicy):
    """One-shot follower that sees the leader's mixed strategy (``queries`` mode) and plays a
    pure best response to it, ties broken in the leader's favour.

    ``L`` and ``F`` are the leader's and the follower's payoffs with the leader's actions as rows;
    the observation is the one-hot state followed by the leader's answers to its query
    observations ``queries [Q, S]``, ``Q x m`` probabilities.
    """

    def __init__(self, L: np.ndarray, F: np.ndarray, queries: torch.Tensor):
        device = queries.device
        self.L = torch.as_tensor(L, dtype=torch.float32, device=device)
        self.F = torch.as_tensor(F, dtype=torch.float32, device=device)
        self.queries = queries.to(torch.float32)
        self.num_states = queries.shape[1]
        scale = max(1.0, float(np.abs(L).max()), float(np.abs(F).max()))
        self.tol = RESPONSE_TOL * scale

    def leader_strategy(self, obs: torch.Tensor) -> torch.Tensor:
        """The leader's answer at the current state, ``[B, m]``."""
        m = self.L.shape[0]
        state = obs[..., : self.num_states]
        answers = obs[..., self.num_states : self.num_states + len(self.queries) * m]
        answers = answers.reshape(*obs.shape[:-1], len(self.queries), m)
        index = (state @ self.queries.T).argmax(-1)
        return answers.gather(-2, index[..., None, None].expand(*index.shape, 1, m)).squeeze(-2)

    def distribution(self, obs: torch.Tensor, legal: torch.Tensor | None = None) -> Categorical:
        p = self.leader_strategy(obs)
        follower, leader = p @ self.F, p @ self.L
        best = follower >= follower.max(-1, keepdim=True).values - self.tol
        choice = torch.where(best, leader, -torch.inf).argmax(-1)
        return _categorical(torch.nn.functional.one_hot(choice, self.F.shape[1]).float(), legal)

    def state(self) -> dict[str, Any]:
        return {"kind": "mixed_response", "L": self.L.tolist(), "F": self.F.tolist()}


class Memory1ResponsePolicy(ExactPolicy):
    """Repeated-game follower that reads the leader's deterministic memory-1 policy from its
    query answers and plays its best memory-1 response to it.

    ``response [m ** S, S]`` holds the follower's action per state for every leader policy,
    numbered as :func:`~dgsolve.eval.exact_matrix.memory1_policies` numbers them.
    """

    def __init__(
        self, response: np.ndarray, num_leader_actions: int, num_actions: int, queries: torch.Tensor
    ):
        device = queries.device
        self.response = torch.as_tensor(response, dtype=torch.long, device=device)
        self.m, self.num_actions = num_leader_actions, num_actions
        self.queries = queries.to(torch.float32)
        self.num_states = queries.shape[1]
        S = self.num_states
        # memory1_policies enumerates with itertools.product: the first state is most significant
        self.radix = torch.tensor([self.m ** (S - 1 - s) for s in range(S)], device=device)

    def distribution(self, obs: torch.Tensor, legal: torch.Tensor | None = None) -> Categorical:
        num_queries = len(self.queries)
        state = obs[..., : self.num_states].argmax(-1)
        answers = obs[..., self.num_states : self.num_states + num_queries * self.m]
        table = torch.zeros(*obs.shape[:-1], self.num_states, dtype=torch.long, device=obs.device)
        # queries are one-hot states; scatter each state's greedy leader action into its slot
        slots = self.queries.argmax(-1)
        table[..., slots] = answers.reshape(*obs.shape[:-1], num_queries, self.m).argmax(-1)
        leader_policy = (table * self.radix).sum(-1)
        action = self.response[leader_policy, state]
        probs = torch.nn.functional.one_hot(action, self.num_actions).float()
        return _categorical(probs, legal)

    def state(self) -> dict[str, Any]:
        return {"kind": "memory1_response", "response": self.response.tolist()}


class LinearPolicy(ExactPolicy):
    """``u = -K x`` (``K`` per step for a finite horizon, read from the ``t / T`` feature), or a
    follower's reaction ``u = -G [x; seen actions]`` when ``reacts`` is set.

    The distribution is a Normal with zero spread: its mean is the action, and sampling returns
    it unchanged. Actions are clipped to the game's bounds, as the game clips them.
    """

    discrete = False

    def __init__(
        self,
        gains: Any,
        spec: AgentSpec,
        state_dim: int,
        horizon: int | None,
        seen_dim: int = 0,
        device: torch.device | str = "cpu",
    ):
        K = torch.as_tensor(np.asarray(gains), dtype=torch.float32, device=device)
        self.K = K if horizon is not None else K[None]  # [steps, m, state_dim + seen_dim]
        self.state_dim, self.horizon, self.seen_dim = state_dim, horizon, seen_dim
        self.obs_dim = spec.obs_dim
        self.low = torch.tensor(spec.low, device=device)
        self.high = torch.tensor(spec.high, device=device)

    def distribution(self, obs: torch.Tensor, legal: torch.Tensor | None = None) -> Normal:
        x = obs[..., : self.state_dim]
        if self.seen_dim:
            x = torch.cat([x, obs[..., self.obs_dim : self.obs_dim + self.seen_dim]], dim=-1)
        if self.horizon is None:
            step = torch.zeros(obs.shape[:-1], dtype=torch.long, device=obs.device)
        else:
            step = (obs[..., self.state_dim] * self.horizon).round().long()
            step = step.clamp(0, self.horizon - 1)
        u = -(self.K[step] @ x[..., None]).squeeze(-1)
        u = torch.maximum(torch.minimum(u, self.high), self.low)
        return Normal(u, torch.zeros_like(u), validate_args=False)

    def state(self) -> dict[str, Any]:
        K = self.K if self.horizon is not None else self.K[0]
        return {"kind": "linear", "gains": K.tolist(), "seen_dim": self.seen_dim}


# --------------------------------------------------------------------------- solver
class ExactSolver:
    """``algo=exact``: one step computes the exact equilibrium; the policies play it.

    ``cfg`` is the algo config (``ExactConfig``); the game's own config (``game.cfg``) says which
    reference to compute. ``seed`` is unused: the solution is deterministic.
    """

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
