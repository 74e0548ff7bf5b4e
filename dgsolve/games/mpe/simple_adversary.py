"""mpe2's ``simple_adversary_v3`` in torch: N good agents hide a goal from one adversary.

One adversary (``adversary_0``) and N good agents (``agent_0``…) share N landmarks, one of which
(drawn per copy, kept in ``extra["goal"]`` ``[B]``) is the goal. Nobody collides; everybody is
silent. Observation (mpe2's order): a good agent sees the goal relative to itself, then the
landmarks relative to it, then the other agents relative to it; the adversary, who does not know
the goal, sees only the landmarks and the other agents. With
``num_agent_neighbors``/``num_landmark_neighbors`` only the nearest ones are shown, zero-padded
(the goal slot of good agents is always there). Reward: the adversary gets −(its distance to the
goal); every good agent gets −(the nearest good agent's distance to the goal) + (the adversary's
distance to the goal).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dgsolve.games.mpe.observe import chosen, seen
from dgsolve.games.mpe.scenario import TorchScenario, check_kwargs
from dgsolve.games.mpe.world import WorldLayout, WorldState, distance, uniform

_ADVERSARY = (0.85, 0.35, 0.35)
_GOOD = (0.35, 0.35, 0.85)
_LANDMARK = (0.15, 0.15, 0.15)
_GOAL = (0.15, 0.65, 0.15)


class SimpleAdversary(TorchScenario):
    name = "simple_adversary"
    mpe2_module = "mpe2.simple_adversary_v3"

    def __init__(
        self,
        N: int = 2,
        num_agent_neighbors: int | None = None,
        num_landmark_neighbors: int | None = None,
        **rest: Any,
    ):
        check_kwargs(self.name, rest)
        if N < 1:
            raise ValueError(f"simple_adversary needs N >= 1, not {N}")
        for key, n in [
            ("num_agent_neighbors", num_agent_neighbors),
            ("num_landmark_neighbors", num_landmark_neighbors),
        ]:
            if n is not None and n < 1:
                raise ValueError(f"simple_adversary needs {key} >= 1 or None, not {n}")
        self.N = N
        self.num_agent_neighbors = num_agent_neighbors
        self.num_landmark_neighbors = num_landmark_neighbors
        A = N + 1
        agents = ("adversary_0",) + tuple(f"agent_{i}" for i in range(N))
        landmarks = tuple(f"landmark {i}" for i in range(N))
        self.layout = WorldLayout(
            agents=agents,
            landmarks=landmarks,
            dim_c=2,
            size=(0.15,) * A + (0.08,) * N,
            movable=(True,) * A + (False,) * N,
            collide=(False,) * (A + N),
            silent=(True,) * A,
        )
        self._agents = list(range(A))
        self._good = list(range(1, A))
        self._landmarks = list(range(A, A + N))

    def initial_state(self, num_envs, generator, device, dtype) -> WorldState:
        """The goal uniformly among the landmarks; agents and landmarks in U(-1, 1)²."""
        E = self.layout.num_entities
        goal = torch.randint(self.N, (num_envs,), generator=generator, device=device)
        pos = uniform((num_envs, E, 2), -1.0, 1.0, generator, device, dtype)
        return WorldState.at_rest(pos, self.layout, {"goal": goal})

    def _goal_pos(self, state: WorldState) -> torch.Tensor:
        """``[B, 2]``: every copy's goal landmark position."""
        return chosen(state.pos, self._landmarks, state.extra["goal"])

    def observations(self, state: WorldState) -> dict[str, torch.Tensor]:
        """``[goal, landmarks, others]`` for good agents, ``[landmarks, others]`` for the
        adversary, all relative to the observer."""
        pos, out = state.pos, {}
        goal = self._goal_pos(state)
        for i, agent in enumerate(self.layout.agents):
            others = [j for j in self._agents if j != i]
            marks, _ = seen(pos, i, self._landmarks, self.num_landmark_neighbors)
            near, _ = seen(pos, i, others, self.num_agent_neighbors)
            parts = [marks, near] if i == 0 else [goal - pos[:, i], marks, near]
            out[agent] = torch.cat(parts, 1)
        return out

    def rewards(self, state: WorldState) -> torch.Tensor:
        """``[B, A]``: the adversary's −distance to the goal; the good agents' shared
        −(nearest good agent's distance) + (adversary's distance)."""
        goal = self._goal_pos(state).unsqueeze(1)
        adv = distance(state.pos[:, 0], goal.squeeze(1))
        good = distance(state.pos[:, self._good], goal).min(-1).values
        good_reward = (-good + adv).unsqueeze(-1).expand(-1, self.N)
        return torch.cat([-adv.unsqueeze(-1), good_reward], -1)

    def extra_from_mpe2(self, world: Any) -> dict[str, np.ndarray]:
        """The goal landmark's index in ``world.landmarks``."""
        goal = world.agents[0].goal_a
        index = next(k for k, m in enumerate(world.landmarks) if m is goal)
        return {"goal": np.asarray(index, dtype=np.int64)}

    def colors(self, state: WorldState) -> torch.Tensor:
        """Adversary red, good agents blue, landmarks dark grey, each copy's goal green."""
        B, dev = state.pos.shape[0], state.pos.device
        rows = [_ADVERSARY] + [_GOOD] * self.N + [_LANDMARK] * self.N
        out = torch.tensor(rows, device=dev).expand(B, -1, -1).clone()
        goal = torch.tensor(_GOAL, device=dev)
        hit = torch.nn.functional.one_hot(state.extra["goal"].long(), self.N).bool()
        is_goal = torch.zeros(B, self.layout.num_entities, dtype=torch.bool, device=dev)
        is_goal[:, self._landmarks] = hit
        return torch.where(is_goal.unsqueeze(-1), goal, out)
