"""mpe2's ``simple_crypto_v3`` in torch: Alice sends Bob a secret past the eavesdropper Eve.

Agents (mpe2's order): ``eve_0`` (the adversary), ``bob_0`` (the listener) and ``alice_0``
(the speaker). Nobody moves or collides; all three speak, in ``dim_c`` = 4 words (a discrete
action is the word's index, a continuous one the four words themselves). Two landmarks, whose
colours are the one-hot vectors ``e_0`` and ``e_1`` of length 4, only give the episode its
secret: the goal colour (``extra["goal"]`` ``[B]``, a landmark index) and Alice and Bob's key
(``extra["key"]`` ``[B]``, another landmark index drawn independently), both uniform per copy.

Observation (mpe2's order): Alice sees ``[goal colour, key]``, Bob ``[key, Alice's
utterance]``, Eve ``[Alice's utterance]``.

Reward: with ``d(c) = Σ (c − goal colour)²`` and a silent (all-zero) utterance counting for
nothing, Eve gets −d(Eve's); Alice and Bob both get d(Eve's) − d(Bob's).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dgsolve.games.mpe.scenario import TorchScenario, check_kwargs
from dgsolve.games.mpe.world import WorldLayout, WorldState, uniform

_EVE, _BOB, _ALICE = 0, 1, 2
_GREY = (0.25, 0.25, 0.25)
_RED = (0.75, 0.25, 0.25)
_DIM_C = 4
_LANDMARKS = 2


class SimpleCrypto(TorchScenario):
    name = "simple_crypto"
    mpe2_module = "mpe2.simple_crypto_v3"

    def __init__(self, **rest: Any):
        check_kwargs(self.name, rest)
        self.layout = WorldLayout(
            agents=("eve_0", "bob_0", "alice_0"),
            landmarks=tuple(f"landmark {i}" for i in range(_LANDMARKS)),
            dim_c=_DIM_C,
            size=(0.05,) * (3 + _LANDMARKS),
            movable=(False,) * (3 + _LANDMARKS),
            collide=(False,) * (3 + _LANDMARKS),
            silent=(False,) * 3,
        )

    def initial_state(self, num_envs, generator, device, dtype) -> WorldState:
        """Goal and key uniformly among the landmarks; agents and landmarks in U(-1, 1)²."""
        goal = torch.randint(_LANDMARKS, (num_envs,), generator=generator, device=device)
        key = torch.randint(_LANDMARKS, (num_envs,), generator=generator, device=device)
        E = self.layout.num_entities
        pos = uniform((num_envs, E, 2), -1.0, 1.0, generator, device, dtype)
        return WorldState.at_rest(pos, self.layout, {"goal": goal, "key": key})

    def _color(self, state: WorldState, name: str) -> torch.Tensor:
        """``[B, dim_c]``: the colour of landmark ``extra[name]`` (one-hot of its index)."""
        index = state.extra[name].long()
        return torch.nn.functional.one_hot(index, _DIM_C).to(state.comm.dtype)

    def observations(self, state: WorldState) -> dict[str, torch.Tensor]:
        """Alice ``[goal, key]``, Bob ``[key, Alice's words]``, Eve ``[Alice's words]``."""
        goal, key = self._color(state, "goal"), self._color(state, "key")
        said = state.comm[:, _ALICE]
        return {
            "eve_0": said.clone(),
            "bob_0": torch.cat([key, said], 1),
            "alice_0": torch.cat([goal, key], 1),
        }

    def rewards(self, state: WorldState) -> torch.Tensor:
        """``[B, 3]``: Eve −d(Eve); Bob and Alice d(Eve) − d(Bob), silence scoring 0."""
        goal = self._color(state, "goal")

        def miss(agent: int) -> torch.Tensor:
            c = state.comm[:, agent]
            d = torch.sum(torch.square(c - goal), dim=-1)
            return torch.where((c == 0).all(-1), torch.zeros_like(d), d)

        eve, bob = miss(_EVE), miss(_BOB)
        good = eve - bob
        return torch.stack([-eve, good, good], -1)

    def extra_from_mpe2(self, world: Any) -> dict[str, np.ndarray]:
        """The goal landmark's index and the index of the landmark whose colour is the key."""
        goal = world.agents[0].goal_a
        g = next(k for k, m in enumerate(world.landmarks) if m is goal)
        key = np.asarray(world.agents[_ALICE].key)
        k = next(k for k, m in enumerate(world.landmarks) if np.array_equal(m.color, key))
        return {"goal": np.asarray(g, dtype=np.int64), "key": np.asarray(k, dtype=np.int64)}

    def colors(self, state: WorldState) -> torch.Tensor:
        """Eve red, Alice grey, Bob in the goal's colour; landmark i pure red/green (the
        first three of mpe2's 4-long one-hot colours)."""
        B, dev = state.pos.shape[0], state.pos.device
        marks = torch.eye(_DIM_C, device=dev)[:_LANDMARKS, :3]
        rows = torch.tensor([_RED, _GREY, _GREY], device=dev)
        out = torch.cat([rows, marks], 0).expand(B, -1, -1).clone()
        out[:, _BOB] = marks[state.extra["goal"].long()]
        return out
