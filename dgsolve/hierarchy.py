"""Tiers of decision makers within one environment step.

``action_sequence: null`` is one tier: everyone moves at once (dynamic Nash). ``[[leader], [f1,
f2]]`` is a Stackelberg hierarchy: tier k decides after seeing what every tier before it did,
appended to its observation; agents within a tier do not see each other. The game still
receives one joint action. What a later tier sees (``follower_observes``):

- ``action``: the earlier tiers' actions in this step (one-hot for discrete actions, the raw
  vector for continuous ones);
- ``queries``: the earlier tiers' *policies*, as their answers (action probabilities, or mean
  actions) to a fixed set of query observations that the game provides
  (``game.query_observations(agent)``); followers then act simultaneously with their leaders but
  condition on the policy those leaders committed to — the contextual follower of
  Gerstgrasser & Parkes.
See von Stackelberg (1934) and, for the learning view, Gerstgrasser & Parkes, "Oracles &
Followers: Stackelberg Equilibria in Deep Multi-Agent Reinforcement Learning" (ICML 2023).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dgsolve.errors import CapabilityError, HierarchyError
from dgsolve.games.base import AgentSpec


@dataclass(frozen=True)
class Hierarchy:
    """An ordered partition of the game's agents into tiers, and what later tiers observe.

    ``queries`` (``follower_observes == "queries"`` only) maps each agent that leads someone to
    its query observations ``[Q, obs_dim]``. ``commitment`` (queries only) is what a leader
    commits to: ``mixed`` (followers see its action probabilities) or ``pure`` (once per episode
    it draws one action per query observation from its policy, followers see that table and it
    plays it: deterministic commitments, the "query answers as actions" of Gerstgrasser &
    Parkes).
    """

    tiers: tuple[tuple[str, ...], ...]
    follower_observes: str = "action"
    queries: Mapping[str, torch.Tensor] | None = field(default=None, compare=False)
    commitment: str = "mixed"

    @classmethod
    def for_game(cls, cfg, game) -> Hierarchy:
        """Tiers for ``game`` from the ``hierarchy`` config, with query observations when
        followers observe their leaders' policies."""
        tiers = cls.from_config(cfg, game.agents, game.leader)
        observes = getattr(getattr(cfg, "follower_observes", "action"), "value", None) or str(
            getattr(cfg, "follower_observes", "action")
        )
        if observes != "queries" or tiers.is_simultaneous:
            return tiers
        if not hasattr(game, "query_observations"):
            raise CapabilityError(
                f"hierarchy.follower_observes=queries needs a game with query observations; "
                f"{type(game).__name__} has none (use follower_observes=action)"
            )
        leaders = {a for tier in tiers.tiers[:-1] for a in tier}
        queries = {a: game.query_observations(a) for a in leaders}
        commitment = _value(getattr(cfg, "commitment", "auto"))
        if commitment == "auto":
            # the class of the exact references: mixed strategies in one-shot games,
            # deterministic memory-1 tables in repeated ones
            commitment = "mixed" if game.episode_steps == 1 else "pure"
        return cls(tiers.tiers, "queries", queries, commitment)

    @classmethod
    def from_config(cls, cfg, agents: Sequence[str], leader: str | None = None) -> Hierarchy:
        """Build tiers from ``cfg.action_sequence`` or, with ``mode=leader_follower``, from the
        game's natural ``leader`` (the first agent when the game names none). Followers observe
        actions; :meth:`for_game` adds query observations."""
        agents = tuple(agents)
        sequence = cfg.action_sequence
        if sequence is None and _mode(cfg) == "leader_follower":
            lead = leader if leader is not None else agents[0]
            if lead not in agents:
                raise HierarchyError(
                    f"env.leader '{lead}' is not an agent of this game; agents: {list(agents)}"
                )
            sequence = [[lead], [a for a in agents if a != lead]]
        if sequence is None:
            return cls((agents,))
        return cls.from_sequence(sequence, agents)

    @classmethod
    def from_sequence(cls, sequence: Sequence[Sequence[str]], agents: Sequence[str]) -> Hierarchy:
        """Validate that ``sequence`` names every agent exactly once, in non-empty tiers."""
        agents = tuple(agents)
        seen: list[str] = []
        tiers = []
        for tier in sequence:
            if isinstance(tier, str):
                raise HierarchyError(
                    f"hierarchy.action_sequence must be a list of lists of agents, got tier "
                    f"'{tier}'; e.g. [[{agents[0]}],[{','.join(agents[1:])}]]"
                )
            tier = tuple(str(a) for a in tier)
            if not tier:
                raise HierarchyError("hierarchy.action_sequence has an empty tier; remove it")
            for agent in tier:
                if agent not in agents:
                    raise HierarchyError(
                        f"unknown agent '{agent}' in hierarchy.action_sequence; "
                        f"agents of this game: {list(agents)}"
                    )
                if agent in seen:
                    raise HierarchyError(
                        f"agent '{agent}' appears twice in hierarchy.action_sequence; "
                        "each agent belongs to exactly one tier"
                    )
                seen.append(agent)
            tiers.append(tier)
        missing = [a for a in agents if a not in seen]
        if missing:
            raise HierarchyError(
                f"hierarchy.action_sequence leaves out {missing}; every agent of "
                f"{list(agents)} must appear in exactly one tier"
            )
        return cls(tuple(tiers))

    @property
    def agents(self) -> tuple[str, ...]:
        return tuple(a for tier in self.tiers for a in tier)

    @property
    def is_simultaneous(self) -> bool:
        return len(self.tiers) == 1

    def tier_of(self, agent: str) -> int:
        return next(k for k, tier in enumerate(self.tiers) if agent in tier)

    def predecessors(self, agent: str) -> tuple[str, ...]:
        """Agents whose actions ``agent`` observes: all agents of earlier tiers, in order."""
        return tuple(a for tier in self.tiers[: self.tier_of(agent)] for a in tier)

    @property
    def observes_queries(self) -> bool:
        return self.follower_observes == "queries"

    @property
    def pure_commitments(self) -> bool:
        """Followers see a table of actions drawn from the leader's policy (queries mode)."""
        return self.observes_queries and self.commitment == "pure"

    def seen_size(self, agent: str, specs: dict[str, AgentSpec]) -> int:
        """Width of what ``agent`` sees of its predecessors."""
        if self.observes_queries:
            return sum(
                self.queries[a].shape[0] * specs[a].action_size for a in self.predecessors(agent)
            )
        return sum(specs[a].action_size for a in self.predecessors(agent))

    def augmented_obs_dim(self, agent: str, specs: dict[str, AgentSpec]) -> int:
        return specs[agent].obs_dim + self.seen_size(agent, specs)

    def augment(
        self,
        agent: str,
        obs: torch.Tensor,
        seen: dict[str, torch.Tensor],
        specs: dict[str, AgentSpec],
        acting: dict[str, torch.Tensor] | None = None,
        as_actions: bool = False,
    ) -> torch.Tensor:
        """Append what ``agent`` sees of its predecessors to ``obs``.

        ``seen[p]`` is p's action ``[B]`` (one-hot encoded here) or ``[B, action_dim]`` in
        ``action`` mode, and p's flattened query answers (``[Q * action_size]``, the same for
        every copy, or ``[B, Q * action_size]``, one commitment per copy) in ``queries`` mode.
        ``acting[p]`` (``[B]`` bool, action mode) marks where p decides in this step; elsewhere
        (a turn-based game where p waits) p's action is encoded as "no action": zeros.
        ``as_actions`` encodes actions whatever the mode (a critic that sees realised actions).
        """
        preds = self.predecessors(agent)
        if not preds:
            return obs
        parts = [obs]
        for a in preds:
            spec = specs[a]
            if self.observes_queries and not as_actions:
                parts.append(seen[a].to(obs.dtype).expand(*obs.shape[:-1], -1))
                continue
            if spec.discrete:
                encoded = F.one_hot(seen[a].long(), spec.num_actions).to(obs.dtype)
            else:
                encoded = seen[a].to(obs.dtype)
            if acting is not None and a in acting:
                encoded = encoded * acting[a].to(obs.dtype).reshape(*encoded.shape[:-1], 1)
            parts.append(encoded)
        return torch.cat(parts, dim=-1)

    def describe(self) -> str:
        if self.is_simultaneous:
            return "simultaneous (" + ", ".join(self.tiers[0]) + ")"
        tiers = " -> ".join("[" + ", ".join(t) + "]" for t in self.tiers)
        if not self.observes_queries:
            return tiers
        return tiers + f" (followers see query answers, {self.commitment} commitments)"


def _mode(cfg) -> str:
    return _value(getattr(cfg, "mode", "simultaneous"))


def _value(option) -> str:
    """An enum option's value, or the string itself."""
    return str(getattr(option, "value", option))
