"""What one mpe2 scenario tells the batched torch MPE game (:mod:`dgsolve.games.mpe.game`).

A :class:`TorchScenario` is the torch twin of one ``mpe2`` scenario module: it builds the
:class:`~dgsolve.games.mpe.world.WorldLayout` (mpe2's ``make_world``), samples initial states
for every copy at once (``reset_world``), and computes every copy's observations and rewards
(``observation``, ``reward``, ``global_reward``) as tensors, in mpe2's order and arithmetic. It
reads an mpe2 world into one copy (:meth:`TorchScenario.extra_from_mpe2`), so that tests can
step both from the same state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from dgsolve.games.mpe.world import WorldLayout, WorldState


class TorchScenario(ABC):
    """One mpe2 scenario, batched. Subclasses set :attr:`name` and :attr:`layout` in
    ``__init__`` (which takes the scenario's own mpe2 keyword arguments, e.g. ``N``)."""

    #: mpe2's module name without the version, e.g. ``"simple_spread"``
    name: str
    #: mpe2's module, e.g. ``"mpe2.simple_spread_v3"`` (the reference backend)
    mpe2_module: str
    layout: WorldLayout
    #: weight of an agent's own reward against ``global_reward`` (mpe2's ``local_ratio``);
    #: ``None``: rewards are the agents' own
    local_ratio: float | None = None

    @abstractmethod
    def initial_state(
        self, num_envs: int, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> WorldState:
        """Fresh initial states of ``num_envs`` copies (mpe2's ``reset_world``), drawn from
        ``generator``. Velocities and communication start at zero."""

    @abstractmethod
    def observations(self, state: WorldState) -> dict[str, torch.Tensor]:
        """Every agent's observation, ``[B, obs_dim]``, in mpe2's layout."""

    @abstractmethod
    def rewards(self, state: WorldState) -> torch.Tensor:
        """``[B, A]``: every agent's own reward (mpe2's ``scenario.reward``) after a step."""

    def global_reward(self, state: WorldState) -> torch.Tensor:
        """``[B]``: the shared reward that ``local_ratio`` mixes in (mpe2's default is 0)."""
        return torch.zeros(state.pos.shape[0], device=state.pos.device, dtype=state.pos.dtype)

    def is_terminal(self, state: WorldState) -> torch.Tensor | None:
        """``[B]`` bool where an episode ends early; ``None`` where the scenario never does."""
        return None

    def extra_from_mpe2(self, world: Any) -> dict[str, np.ndarray]:
        """The scenario's ``extra`` tensors of one copy, read from an mpe2 ``world`` (a goal's
        index, colours that agents observe); one array per key, without the batch dimension."""
        return {}

    def colors(self, state: WorldState) -> torch.Tensor:
        """``[B, E, 3]`` RGB in [0, 1]: how each entity is drawn (mpe2's ``entity.color``)."""
        raise NotImplementedError


def check_kwargs(scenario: str, rest: Mapping[str, Any]) -> None:
    """Refuse, in one line (``ValueError``) naming the way out (``env.backend=mpe2``), the
    keyword arguments a scenario's constructor did not take by name (its ``**rest``): mpe2
    arguments the torch backend does not implement, or typos."""
    for key in rest:
        raise ValueError(
            f"{scenario} on the torch backend has no argument '{key}' "
            "(env.backend=mpe2 runs mpe2 itself)"
        )
