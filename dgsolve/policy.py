"""Policies: ``act(obs, legal, greedy) -> action`` on batched tensors, and joint play in tiers.

A :class:`NetPolicy` wraps one agent's view of a (possibly shared) network; a
:class:`JointPolicy` plays every agent of a game in the order its :class:`Hierarchy` gives,
appending earlier tiers' actions to later tiers' observations. Baselines implement the same
``act`` method, so evaluation and cross-play treat learned and scripted policies alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Normal

from dgsolve.errors import CapabilityError
from dgsolve.games.base import AgentSpec, TimeStep
from dgsolve.hierarchy import Hierarchy
from dgsolve.nets import ActorCritic


class Policy(Protocol):
    def act(
        self, obs: torch.Tensor, legal: torch.Tensor | None = None, greedy: bool = False
    ) -> torch.Tensor: ...


class NetPolicy:
    """One agent's policy from an :class:`ActorCritic` it may share with others.

    A shared network sees a one-hot of the agent's index in its group appended to the
    observation, so agents with identical spaces can still behave differently.
    """

    def __init__(self, net: ActorCritic, spec: AgentSpec, index: int = 0, group_size: int = 1):
        self.net, self.spec, self.index, self.group_size = net, spec, index, group_size
        if not spec.discrete:
            self._low = torch.tensor(spec.low)
            self._high = torch.tensor(spec.high)

    def prepare(self, obs: torch.Tensor) -> torch.Tensor:
        """The network input for this agent: ``obs`` plus its one-hot id in a shared group."""
        if self.group_size == 1:
            return obs
        ids = torch.full(obs.shape[:-1], self.index, dtype=torch.long, device=obs.device)
        return torch.cat([obs, F.one_hot(ids, self.group_size).to(obs.dtype)], dim=-1)

    def to_env(self, raw: torch.Tensor) -> torch.Tensor:
        """What the game receives: discrete ids as they are, continuous actions clipped."""
        if self.spec.discrete:
            return raw
        return torch.maximum(torch.minimum(raw, self._high.to(raw)), self._low.to(raw))

    @torch.no_grad()
    def answer(self, obs: torch.Tensor) -> torch.Tensor:
        """What a follower observing this policy sees: action probabilities at each observation
        (discrete) or mean actions (continuous), ``[Q, action_size]``."""
        dist = self.net.distribution(self.prepare(obs))
        return dist.probs if self.spec.discrete else self.to_env(dist.mean)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, legal: torch.Tensor | None = None, greedy: bool = False
    ) -> torch.Tensor:
        x = self.prepare(obs)
        if greedy:
            return self.to_env(self.net.greedy(x, legal))
        return self.to_env(self.net.sample(x, legal)[0])


class UniformPolicy:
    """Uniformly random play: over the legal actions (discrete) or the action box (continuous).

    The reference every discrete and continuous game has, and the ``random`` target of
    ``task=exploit``; ``generator`` (on the device the observations live on) makes it
    reproducible, ``greedy`` is ignored (a uniform policy has no mode).
    """

    def __init__(self, spec: AgentSpec, generator: torch.Generator | None = None):
        self.spec, self.generator = spec, generator

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, legal: torch.Tensor | None = None, greedy: bool = False
    ) -> torch.Tensor:
        spec, rows = self.spec, obs.shape[0]
        if spec.discrete:
            weights = legal.float() if legal is not None else obs.new_ones(rows, spec.num_actions)
            return torch.multinomial(weights, 1, generator=self.generator).squeeze(1)
        low = torch.tensor(spec.low, device=obs.device)
        high = torch.tensor(spec.high, device=obs.device)
        u = torch.rand((rows, spec.action_dim), generator=self.generator, device=obs.device)
        return low + (high - low) * u


class MixturePolicy:
    """A mixed strategy over policies, drawn once per game: each game copy plays one of
    ``members``, chosen with probability ``weights`` at its episode's start.

    ``new_episodes(started)`` draws a member afresh for the copies where an episode starts (the
    game views of :mod:`dgsolve.games.frozen` call it); until then a copy keeps its member, so a
    copy's whole episode is played by one policy, as a mixed strategy prescribes. A batch of
    another size than the last (another game) draws members for all its rows. ``generator`` (on
    the device the observations live on) makes the draws reproducible.
    """

    def __init__(
        self,
        members: list[Policy],
        weights,
        generator: torch.Generator | None = None,
    ):
        weights = torch.as_tensor(np.asarray(weights, np.float64))
        if len(members) != len(weights) or not len(members) or (weights < 0).any():
            raise ValueError("a mixture needs one weight ≥ 0 per member, and a member")
        self.members, self.weights, self.generator = (
            list(members),
            weights / weights.sum(),
            generator,
        )
        self.assignment: torch.Tensor | None = None

    def new_episodes(self, started: torch.Tensor) -> None:
        """Draw members for the copies where ``started`` (``[B]`` bool) is true."""
        if self.assignment is None or len(self.assignment) != len(started):
            self.assignment = self._draw(len(started), started.device)
            return
        fresh = self._draw(len(started), started.device)
        self.assignment = torch.where(started, fresh, self.assignment)

    def _draw(self, rows: int, device) -> torch.Tensor:
        weights = self.weights.to(device=device, dtype=torch.float32)
        return torch.multinomial(weights, rows, replacement=True, generator=self.generator)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, legal: torch.Tensor | None = None, greedy: bool = False
    ) -> torch.Tensor:
        rows = obs.shape[0]
        if self.assignment is None or len(self.assignment) != rows:
            self.new_episodes(torch.ones(rows, dtype=torch.bool, device=obs.device))
        out = None
        for k in torch.unique(self.assignment).tolist():
            where = self.assignment == k
            chosen = self.members[k].act(
                obs[where], None if legal is None else legal[where], greedy
            )
            if out is None:
                out = chosen.new_zeros((rows, *chosen.shape[1:]))
            out[where] = chosen
        return out

    @torch.no_grad()
    def first_decision_distribution(
        self, obs: torch.Tensor, legal: torch.Tensor | None = None
    ) -> Categorical:
        """The action distribution of an episode's *first* decision at ``obs``: the members'
        distributions weighted by the mixture. The whole strategy in a one-shot game; later
        decisions depend on the member drawn, which no one distribution at an observation
        holds, so a mixture offers no ``distribution`` (exact evaluations that tabulate a policy
        refuse it). Discrete members with a distribution (networks, tables, the uniform
        policy)."""
        total = None
        for member, weight in zip(self.members, self.weights.tolist(), strict=True):
            if isinstance(member, UniformPolicy) and member.spec.discrete:
                ones = legal.float() if legal is not None else None
                if ones is None:
                    ones = obs.new_ones(obs.shape[0], member.spec.num_actions)
                probs = ones / ones.sum(-1, keepdim=True)
            elif hasattr(member, "net") and hasattr(member, "prepare"):
                dist = member.net.distribution(member.prepare(obs), legal)
                if not isinstance(dist, Categorical):
                    raise CapabilityError("a mixture's distribution is for discrete actions")
                probs = dist.probs
            else:
                raise CapabilityError(
                    f"a mixture member {type(member).__name__} has no action distribution"
                )
            total = weight * probs if total is None else total + weight * probs
        return Categorical(probs=total, validate_args=False)


class JointPolicy:
    """Every agent's policy, played tier by tier within one environment step.

    In ``queries`` mode (see :mod:`dgsolve.hierarchy`) the leaders' policies must also offer
    ``answer(obs) -> [Q, action_size]``.
    """

    def __init__(
        self, policies: dict[str, Policy], hierarchy: Hierarchy, specs: dict[str, AgentSpec]
    ):
        self.policies, self.hierarchy, self.specs = policies, hierarchy, specs

    @torch.no_grad()
    def query_answers(self) -> dict[str, torch.Tensor]:
        """Each leader's flattened answers to its query observations, tier by tier."""
        answers: dict[str, torch.Tensor] = {}
        if not self.hierarchy.observes_queries:
            return answers
        for tier in self.hierarchy.tiers[:-1]:
            for agent in tier:
                q = self.hierarchy.queries[agent]
                x = self.hierarchy.augment(agent, q, answers, self.specs)
                answers[agent] = self.policies[agent].answer(x).reshape(-1)
        return answers

    def context(
        self,
        agent: str,
        obs: torch.Tensor,
        seen: dict[str, torch.Tensor],
        acting: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The observation ``agent``'s policy acts on: ``obs`` plus what it sees of earlier tiers
        (``seen``: their actions, or :meth:`query_answers` in queries mode; ``acting``: where
        each of them decides, so that a waiting leader shows "no action")."""
        return self.hierarchy.augment(agent, obs, seen, self.specs, acting)

    def distribution(
        self,
        agent: str,
        obs: torch.Tensor,
        seen_actions: dict[str, torch.Tensor],
        legal: torch.Tensor | None = None,
    ):
        """``agent``'s action distribution given its observation and its predecessors' actions
        (ignored in queries mode, where the predecessors' policies are what it sees)."""
        seen = self.query_answers() if self.hierarchy.observes_queries else seen_actions
        policy = self.policies[agent]
        return policy.net.distribution(policy.prepare(self.context(agent, obs, seen)), legal)

    @torch.no_grad()
    def act(self, ts: TimeStep, greedy: bool = False) -> dict[str, torch.Tensor]:
        return self.act_on(ts.obs, ts.legal, greedy, ts.acting)

    @torch.no_grad()
    def act_on(
        self,
        obs: dict[str, torch.Tensor],
        legal: dict[str, torch.Tensor],
        greedy: bool = False,
        acting: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        answers = self.query_answers()
        actions: dict[str, torch.Tensor] = {}
        for tier in self.hierarchy.tiers:
            tier_actions = {}
            for agent in tier:
                x = self.context(agent, obs[agent], answers or actions, acting)
                mask = legal[agent] if self.specs[agent].discrete else None
                tier_actions[agent] = self.policies[agent].act(x, mask, greedy)
            actions.update(tier_actions)
        return actions


# --------------------------------------------------------------------------- exact policies
#: relative tolerance when a follower compares payoffs computed from float32 probabilities.
RESPONSE_TOL = 1e-5


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


def _row_key(row: np.ndarray) -> bytes:
    # + 0.0 turns -0.0 into 0.0, which compares equal but has other bytes
    return (np.ascontiguousarray(row, dtype=np.float32) + np.float32(0)).tobytes()


class InfoStateTablePolicy(ExactPolicy):
    """One player's tabular policy over an OpenSpiel game's information states, looked up by the
    ``information_state_tensor`` the player observes.

    ``probs [N, num_actions]`` (float64, kept as given) belongs to the information states
    ``keys``, whose tensors are ``tensor [N, obs_dim]``. An observation that is none of them (a
    waiting player's) plays uniformly over its legal actions.
    """

    def __init__(
        self,
        keys: list[str] | tuple[str, ...],
        tensor: np.ndarray,
        probs: np.ndarray,
        device: torch.device | str = "cpu",
    ):
        self.keys = tuple(keys)
        self.obs_dim = tensor.shape[1] if tensor.ndim == 2 else 0
        self._index: dict[bytes, int] = {}
        for i, row in enumerate(tensor):
            first = self._index.setdefault(_row_key(row), i)
            if first != i:
                raise CapabilityError(
                    f"information states {self.keys[first]!r} and {self.keys[i]!r} have the same "
                    "information_state_tensor; a policy of the tensor cannot tell them apart"
                )
        probs = torch.as_tensor(np.asarray(probs), dtype=torch.float64)
        unknown = torch.ones(1, probs.shape[1], dtype=torch.float64)
        self._probs = torch.cat([probs, unknown]).to(device)  # last row: not an info state

    def distribution(self, obs: torch.Tensor, legal: torch.Tensor | None = None) -> Categorical:
        flat = obs.reshape(-1, obs.shape[-1])[:, : self.obs_dim].detach().cpu().numpy()
        index = [self._index.get(_row_key(row), len(self.keys)) for row in flat]
        rows = self._probs[torch.tensor(index, device=self._probs.device)]
        rows = rows.reshape(*obs.shape[:-1], -1)
        if legal is not None:
            masked = rows * legal.to(rows.device)
            rows = torch.where(masked.sum(-1, keepdim=True) > 0, masked, torch.ones_like(rows))
        return Categorical(probs=rows, validate_args=False)

    def table(self) -> dict[str, list[float]]:
        """``{information state: probabilities}`` of this player."""
        return dict(zip(self.keys, self._probs[:-1].cpu().tolist(), strict=True))

    def state(self) -> dict[str, Any]:
        return {"kind": "info_state_table", "policy": self.table()}
