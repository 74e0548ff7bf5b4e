"""mpe2's ``simple_push_v3`` in torch: an adversary pushes a good agent away from its goal.

One adversary (``adversary_0``) and one good agent (``agent_0``), both size 0.05, colliding
with each other and silent; two fixed landmarks (``landmark 0``: green, ``landmark 1``: blue,
size 0.05, not colliding). One landmark (drawn per copy, kept in ``extra["goal"]`` ``[B]``) is
the goal of both agents. Observation (mpe2's order): the good agent sees its own velocity, the
goal relative to it, its own colour (which tells the goal), the landmarks relative to it, the
landmarks' colours, and the adversary relative to it; the adversary, who does not know the
goal, sees its own velocity, the landmarks and the good agent relative to it. Reward: the good
agent gets −(its distance to the goal); the adversary gets (the good agent's distance to the
goal) − (its own distance to the goal).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dgsolve.games.mpe.observe import chosen, constant, relative
from dgsolve.games.mpe.scenario import TorchScenario, check_kwargs
from dgsolve.games.mpe.world import WorldLayout, WorldState, distance, uniform

_ADVERSARY = (0.75, 0.25, 0.25)
#: the good agent's colour before the goal's channel (green or blue) is raised by 0.5
_GOOD = (0.25, 0.25, 0.25)
#: the landmarks' colours: grey 0.1 with channel ``i + 1`` raised by 0.8
_LANDMARK = (0.1, 0.1, 0.1)
#: ... as mpe2 computes them, once
_LANDMARK_COLOURS = tuple(
    tuple(c + 0.8 if k == i + 1 else c for k, c in enumerate(_LANDMARK)) for i in range(2)
)


class SimplePush(TorchScenario):
    name = "simple_push"
    mpe2_module = "mpe2.simple_push_v3"

    def __init__(self, **rest: Any):
        check_kwargs(self.name, rest)
        self.layout = WorldLayout(
            agents=("adversary_0", "agent_0"),
            landmarks=("landmark 0", "landmark 1"),
            dim_c=2,
            size=(0.05,) * 4,
            movable=(True, True, False, False),
            collide=(True, True, False, False),
            silent=(True, True),
        )
        self._landmarks = [2, 3]

    def initial_state(self, num_envs, generator, device, dtype) -> WorldState:
        """The goal uniformly among the landmarks; agents and landmarks in U(-1, 1)²."""
        E = self.layout.num_entities
        goal = torch.randint(2, (num_envs,), generator=generator, device=device)
        pos = uniform((num_envs, E, 2), -1.0, 1.0, generator, device, dtype)
        return WorldState.at_rest(pos, self.layout, {"goal": goal})

    def _landmark_colours(self, state: WorldState) -> torch.Tensor:
        """``[2, 3]``: mpe2's landmark colours (``0.1``, channel ``i + 1`` plus ``0.8``)."""
        return constant(_LANDMARK_COLOURS, state.pos)

    def _good_colour(self, state: WorldState) -> torch.Tensor:
        """``[B, 3]``: the good agent's colour, grey with the goal's channel plus 0.5."""
        base = constant(_GOOD, state.pos)
        channel = state.extra["goal"].long() + 1
        return base + torch.nn.functional.one_hot(channel, 3).to(base.dtype) * 0.5

    def _goal_pos(self, state: WorldState) -> torch.Tensor:
        """``[B, 2]``: every copy's goal landmark position."""
        return chosen(state.pos, self._landmarks, state.extra["goal"])

    def observations(self, state: WorldState) -> dict[str, torch.Tensor]:
        """The adversary: ``[velocity, landmarks, agent]``; the good agent: ``[velocity,
        goal, own colour, landmarks, landmark colours, adversary]``, positions relative to
        the observer."""
        pos, B = state.pos, state.pos.shape[0]
        adversary, good = self.layout.agents
        marks_colour = self._landmark_colours(state).flatten().expand(B, -1)
        adv_obs = torch.cat(
            [state.vel[:, 0], relative(pos, 0, self._landmarks), relative(pos, 0, [1])], 1
        )
        good_obs = torch.cat(
            [
                state.vel[:, 1],
                self._goal_pos(state) - pos[:, 1],
                self._good_colour(state),
                relative(pos, 1, self._landmarks),
                marks_colour,
                relative(pos, 1, [0]),
            ],
            1,
        )
        return {adversary: adv_obs, good: good_obs}

    def rewards(self, state: WorldState) -> torch.Tensor:
        """``[B, 2]``: the adversary's (agent's distance − own distance) to the goal, the good
        agent's −(its distance)."""
        goal = self._goal_pos(state)
        adv = distance(state.pos[:, 0], goal)
        good = distance(state.pos[:, 1], goal)
        return torch.stack([good - adv, -good], -1)

    def extra_from_mpe2(self, world: Any) -> dict[str, np.ndarray]:
        """The goal landmark (every agent's ``goal_a``) as an index into ``world.landmarks``."""
        goal = world.agents[0].goal_a
        index = next(k for k, m in enumerate(world.landmarks) if m is goal)
        return {"goal": np.asarray(index, dtype=np.int64)}

    def colors(self, state: WorldState) -> torch.Tensor:
        """Adversary red, the good agent grey tinted by its goal, landmarks green and blue."""
        B = state.pos.shape[0]
        marks = self._landmark_colours(state)
        adversary = torch.tensor(_ADVERSARY, device=marks.device, dtype=marks.dtype)
        good = self._good_colour(state)
        return torch.cat([adversary.expand(B, 1, 3), good.unsqueeze(1), marks.expand(B, -1, -1)], 1)
