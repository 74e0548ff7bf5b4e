"""Policies: ``act(obs, legal, greedy) -> action`` on batched tensors, and joint play in tiers.

A :class:`NetPolicy` wraps one agent's view of a (possibly shared) network; a
:class:`JointPolicy` plays every agent of a game in the order its :class:`Hierarchy` gives,
appending earlier tiers' actions to later tiers' observations. Baselines implement the same
``act`` method, so evaluation and cross-play treat learned and scripted policies alike.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

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
