"""mpe2's ``simple_reference_v3`` in torch: two agents guide each other to goal landmarks.

Two agents (``agent_0``, ``agent_1``, size 0.05) and three fixed landmarks (``landmark 0``…,
size 0.05, red, green, blue); nothing collides, both agents move and speak (``dim_c`` 10). Each
agent has a goal landmark (drawn per copy, kept in ``extra["goal"]`` ``[B, 2]``) that the
*other* agent must reach: agent ``i`` knows where agent ``1 - i`` should go and must tell it.
Observation (mpe2's order): own velocity, the landmarks relative to the agent, the colour of
the agent's own goal landmark (the one its partner must reach), the partner's communication;
no own position. Reward: agent ``i``'s own reward is −(partner's distance to agent ``i``'s goal
landmark); the global reward is the mean of the two; each agent gets
``local_ratio`` × own + (1 − ``local_ratio``) × global.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dgsolve.games.mpe.observe import chosen, constant, relative
from dgsolve.games.mpe.scenario import TorchScenario, check_kwargs
from dgsolve.games.mpe.world import WorldLayout, WorldState, distance, uniform

#: mpe2's landmark colours, fixed: red, green, blue
_LANDMARKS = ((0.75, 0.25, 0.25), (0.25, 0.75, 0.25), (0.25, 0.25, 0.75))


class SimpleReference(TorchScenario):
    name = "simple_reference"
    mpe2_module = "mpe2.simple_reference_v3"

    def __init__(self, local_ratio: float = 0.5, **rest: Any):
        check_kwargs(self.name, rest)
        if not 0.0 <= local_ratio <= 1.0:
            raise ValueError(f"simple_reference needs 0 <= local_ratio <= 1, not {local_ratio}")
        self.local_ratio = local_ratio
        self.layout = WorldLayout(
            agents=("agent_0", "agent_1"),
            landmarks=tuple(f"landmark {i}" for i in range(3)),
            dim_c=10,
            size=(0.05,) * 5,
            movable=(True, True, False, False, False),
            collide=(False,) * 5,
            silent=(False, False),
        )
        self._landmarks = [2, 3, 4]

    def initial_state(self, num_envs, generator, device, dtype) -> WorldState:
        """Each agent's goal uniformly among the landmarks; everything in U(-1, 1)²."""
        E = self.layout.num_entities
        goal = torch.randint(3, (num_envs, 2), generator=generator, device=device)
        pos = uniform((num_envs, E, 2), -1.0, 1.0, generator, device, dtype)
        return WorldState.at_rest(pos, self.layout, {"goal": goal})

    def _goal_pos(self, state: WorldState) -> torch.Tensor:
        """``[B, 2, 2]``: the position of each agent's goal landmark."""
        return chosen(state.pos, self._landmarks, state.extra["goal"])

    def observations(self, state: WorldState) -> dict[str, torch.Tensor]:
        """``[velocity, landmarks, own goal's colour, partner's words]`` per agent."""
        pos, out = state.pos, {}
        colour = constant(_LANDMARKS, state.pos)[state.extra["goal"].long()]
        for i, agent in enumerate(self.layout.agents):
            marks = relative(pos, i, self._landmarks)
            parts = [state.vel[:, i], marks, colour[:, i], state.comm[:, 1 - i]]
            out[agent] = torch.cat(parts, 1)
        return out

    def rewards(self, state: WorldState) -> torch.Tensor:
        """``[B, 2]``: −(partner's distance to the agent's goal landmark)."""
        partner = state.pos[:, [1, 0]]
        return -distance(partner, self._goal_pos(state))

    def global_reward(self, state: WorldState) -> torch.Tensor:
        """``[B]``: the mean of the two agents' own rewards."""
        own = self.rewards(state)
        return (own[:, 0] + own[:, 1]) / 2

    def extra_from_mpe2(self, world: Any) -> dict[str, np.ndarray]:
        """Each agent's goal landmark (``goal_b``) as an index into ``world.landmarks``."""
        goal = [
            next(k for k, m in enumerate(world.landmarks) if m is agent.goal_b)
            for agent in world.agents
        ]
        return {"goal": np.asarray(goal, dtype=np.int64)}

    def colors(self, state: WorldState) -> torch.Tensor:
        """Landmarks red, green, blue; each agent in the colour of the landmark it must reach
        (its partner's goal)."""
        palette = constant(_LANDMARKS, state.pos)
        goal = state.extra["goal"].long()
        agents = palette[goal[:, [1, 0]]]
        marks = palette.expand(state.pos.shape[0], -1, -1)
        return torch.cat([agents, marks], 1)
