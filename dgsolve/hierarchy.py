"""Tiers of decision makers within one environment step.

``action_sequence: null`` is one tier: everyone moves at once (dynamic Nash). ``[[leader], [f1,
f2]]`` is a Stackelberg hierarchy: tier k decides after seeing the actions of every tier before
it, appended to its observation (one-hot for discrete actions, the raw vector for continuous
ones); agents within a tier do not see each other. The game still receives one joint action.
See von Stackelberg (1934) and, for the learning view, Gerstgrasser & Parkes, "Oracles &
Followers: Stackelberg Equilibria in Deep Multi-Agent Reinforcement Learning" (ICML 2023).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dgsolve.errors import HierarchyError
from dgsolve.games.base import AgentSpec


@dataclass(frozen=True)
class Hierarchy:
    """An ordered partition of the game's agents into tiers."""

    tiers: tuple[tuple[str, ...], ...]

    @classmethod
    def from_config(cls, cfg, agents: Sequence[str], leader: str | None = None) -> Hierarchy:
        """Build tiers from ``cfg.action_sequence`` or, with ``mode=leader_follower``, from the
        game's natural ``leader`` (the first agent when the game names none)."""
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

    def augmented_obs_dim(self, agent: str, specs: dict[str, AgentSpec]) -> int:
        return specs[agent].obs_dim + sum(specs[a].action_size for a in self.predecessors(agent))

    def augment(
        self,
        agent: str,
        obs: torch.Tensor,
        actions: dict[str, torch.Tensor],
        specs: dict[str, AgentSpec],
    ) -> torch.Tensor:
        """Append the predecessors' actions to ``obs`` (one-hot when discrete)."""
        preds = self.predecessors(agent)
        if not preds:
            return obs
        parts = [obs]
        for a in preds:
            spec = specs[a]
            if spec.discrete:
                parts.append(F.one_hot(actions[a].long(), spec.num_actions).to(obs.dtype))
            else:
                parts.append(actions[a].to(obs.dtype))
        return torch.cat(parts, dim=-1)

    def describe(self) -> str:
        if self.is_simultaneous:
            return "simultaneous (" + ", ".join(self.tiers[0]) + ")"
        return " -> ".join("[" + ", ".join(t) + "]" for t in self.tiers)


def _mode(cfg) -> str:
    mode = getattr(cfg, "mode", "simultaneous")
    return getattr(mode, "value", mode)
