"""mpe2's ``simple_spread_v3`` in torch: N agents cover N landmarks without colliding.

Observation (mpe2's order): own velocity, own position, landmarks relative to the agent, other
agents relative to it, the other agents' communication (silent: zeros). With
``num_agent_neighbors``/``num_landmark_neighbors`` only the nearest ones are shown, zero-padded.
Reward: ``local_ratio`` × (−1 per other agent touched) + (1 − local_ratio) × (−Σ over
landmarks of the nearest agent's distance).
"""

from __future__ import annotations

from typing import Any

import torch

from dgsolve.games.mpe.observe import collisions, constant, padded_nearest, seen, take
from dgsolve.games.mpe.scenario import TorchScenario, check_kwargs
from dgsolve.games.mpe.world import WorldLayout, WorldState, distance, uniform

CAPTURE_RADIUS = 0.1  # mpe2's Scenario.CAPTURE_RADIUS (terminate_on_success)


class SimpleSpread(TorchScenario):
    name = "simple_spread"
    mpe2_module = "mpe2.simple_spread_v3"

    def __init__(
        self,
        N: int = 3,
        local_ratio: float = 0.5,
        terminate_on_success: bool = False,
        num_agent_neighbors: int | None = None,
        num_landmark_neighbors: int | None = None,
        **rest: Any,
    ):
        check_kwargs(self.name, rest)
        if N < 1:
            raise ValueError(f"simple_spread needs N >= 1, not {N}")
        self.N = N
        self.local_ratio = local_ratio
        self.terminate_on_success = terminate_on_success
        self.num_agent_neighbors = num_agent_neighbors
        self.num_landmark_neighbors = num_landmark_neighbors
        agents = tuple(f"agent_{i}" for i in range(N))
        landmarks = tuple(f"landmark {i}" for i in range(N))
        self.layout = WorldLayout(
            agents=agents,
            landmarks=landmarks,
            dim_c=2,
            size=(0.15,) * N + (0.05,) * N,
            movable=(True,) * N + (False,) * N,
            collide=(True,) * N + (False,) * N,
            silent=(True,) * N,
        )
        self._agents = list(range(N))
        self._landmarks = list(range(N, 2 * N))

    def initial_state(self, num_envs, generator, device, dtype) -> WorldState:
        E = self.layout.num_entities
        pos = uniform((num_envs, E, 2), -1.0, 1.0, generator, device, dtype)
        return WorldState.at_rest(pos, self.layout)

    def observations(self, state: WorldState) -> dict[str, torch.Tensor]:
        pos, out = state.pos, {}
        for i, agent in enumerate(self.layout.agents):
            others = [j for j in self._agents if j != i]
            marks, _ = seen(pos, i, self._landmarks, self.num_landmark_neighbors)
            near, order = seen(pos, i, others, self.num_agent_neighbors)
            if order is None:
                said = take(state.comm, others).flatten(1)
            else:
                n = self.num_agent_neighbors
                said = padded_nearest(state.comm[:, others], order, n, self.layout.dim_c)
            out[agent] = torch.cat([state.vel[:, i], pos[:, i], marks, near, said], 1)
        return out

    def rewards(self, state: WorldState) -> torch.Tensor:
        size = constant(self.layout.size, state.pos)
        hit = collisions(state.pos, size, self._agents, self._agents)
        eye = torch.eye(self.N, dtype=torch.bool, device=hit.device)
        return -(hit & ~eye).sum(-1).to(state.pos.dtype)

    def _nearest_agent(self, state: WorldState) -> torch.Tensor:
        """``[B, N]``: every landmark's distance to its nearest agent."""
        agents = state.pos[:, : self.N].unsqueeze(1)  # agents first, then the landmarks
        marks = state.pos[:, self.N :].unsqueeze(2)
        return distance(agents, marks).min(-1).values

    def global_reward(self, state: WorldState) -> torch.Tensor:
        return -self._nearest_agent(state).sum(-1)

    def is_terminal(self, state: WorldState) -> torch.Tensor | None:
        if not self.terminate_on_success:
            return None
        return (self._nearest_agent(state) < CAPTURE_RADIUS).all(-1)

    def colors(self, state: WorldState) -> torch.Tensor:
        B = state.pos.shape[0]
        rows = [(0.35, 0.35, 0.85)] * self.N + [(0.25, 0.25, 0.25)] * self.N
        return torch.tensor(rows, device=state.pos.device).expand(B, -1, -1)
