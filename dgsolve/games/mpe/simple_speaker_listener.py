"""mpe2's ``simple_speaker_listener_v4`` in torch: a speaker tells a listener where to go.

Two agents (size 0.075): ``speaker_0`` does not move but speaks (``dim_c`` 3), ``listener_0``
moves but is silent; three fixed landmarks (``landmark 0``…, size 0.04, red, green, blue);
nothing collides. One landmark (drawn per copy, kept in ``extra["goal"]`` ``[B]``) is the goal,
known only to the speaker. Observation (mpe2's order): the speaker sees only the goal
landmark's colour; the listener sees its own velocity, the landmarks relative to it and the
speaker's communication (no own position). Reward (both agents): −(squared distance from the
listener to the goal landmark).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dgsolve.games.mpe.observe import chosen, constant, relative
from dgsolve.games.mpe.scenario import TorchScenario, check_kwargs
from dgsolve.games.mpe.world import WorldLayout, WorldState, uniform

#: mpe2's landmark colours, fixed: red, green, blue
_LANDMARKS = ((0.65, 0.15, 0.15), (0.15, 0.65, 0.15), (0.15, 0.15, 0.65))
_SPEAKER = (0.25, 0.25, 0.25)
#: the listener is drawn in its goal's colour lightened by this much
_LIGHTEN = 0.45


class SimpleSpeakerListener(TorchScenario):
    name = "simple_speaker_listener"
    mpe2_module = "mpe2.simple_speaker_listener_v4"

    def __init__(self, **rest: Any):
        check_kwargs(self.name, rest)
        self.layout = WorldLayout(
            agents=("speaker_0", "listener_0"),
            landmarks=tuple(f"landmark {i}" for i in range(3)),
            dim_c=3,
            size=(0.075, 0.075) + (0.04,) * 3,
            movable=(False, True, False, False, False),
            collide=(False,) * 5,
            silent=(False, True),
        )
        self._landmarks = [2, 3, 4]

    def initial_state(self, num_envs, generator, device, dtype) -> WorldState:
        """The goal uniformly among the landmarks; both agents and the landmarks in
        U(-1, 1)² (the speaker stays where it is put)."""
        E = self.layout.num_entities
        goal = torch.randint(3, (num_envs,), generator=generator, device=device)
        pos = uniform((num_envs, E, 2), -1.0, 1.0, generator, device, dtype)
        return WorldState.at_rest(pos, self.layout, {"goal": goal})

    def _goal_pos(self, state: WorldState) -> torch.Tensor:
        """``[B, 2]``: every copy's goal landmark position."""
        return chosen(state.pos, self._landmarks, state.extra["goal"])

    def observations(self, state: WorldState) -> dict[str, torch.Tensor]:
        """The speaker: ``[goal colour]``; the listener: ``[velocity, landmarks, speaker's
        words]``."""
        speaker, listener = self.layout.agents
        colour = constant(_LANDMARKS, state.pos)[state.extra["goal"].long()]
        marks = relative(state.pos, 1, self._landmarks)
        heard = torch.cat([state.vel[:, 1], marks, state.comm[:, 0]], 1)
        return {speaker: colour, listener: heard}

    def rewards(self, state: WorldState) -> torch.Tensor:
        """``[B, 2]``: both agents get −|listener − goal|²."""
        dist2 = torch.sum(torch.square(state.pos[:, 1] - self._goal_pos(state)), dim=-1)
        return (-dist2).unsqueeze(-1).expand(-1, 2)

    def extra_from_mpe2(self, world: Any) -> dict[str, np.ndarray]:
        """The goal landmark (the speaker's ``goal_b``) as an index into ``world.landmarks``."""
        goal = world.agents[0].goal_b
        index = next(k for k, m in enumerate(world.landmarks) if m is goal)
        return {"goal": np.asarray(index, dtype=np.int64)}

    def colors(self, state: WorldState) -> torch.Tensor:
        """Speaker grey, landmarks red, green, blue, the listener its goal's colour
        lightened."""
        B = state.pos.shape[0]
        palette = constant(_LANDMARKS, state.pos)
        speaker = constant(_SPEAKER, palette)
        listener = palette[state.extra["goal"].long()] + _LIGHTEN
        marks = palette.expand(B, -1, -1)
        return torch.cat([speaker.expand(B, 1, 3), listener.unsqueeze(1), marks], 1)
