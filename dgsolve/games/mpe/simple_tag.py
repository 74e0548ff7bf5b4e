"""mpe2's ``simple_tag_v3`` in torch: adversaries (predators) chase faster good agents (prey).

``num_adversaries`` adversaries (``adversary_0``…: size 0.075, accel 3, top speed 1) and
``num_good`` good agents (``agent_0``…: size 0.05, accel 4, top speed 1.3) move among
``num_obstacles`` fixed obstacles (``landmark 0``…, size 0.2); everything collides, everybody is
silent. Observation (mpe2's order): own velocity, own position, obstacles relative to the agent,
other agents relative to it, then the other *good* agents' velocities. With
``num_agent_neighbors``/``num_landmark_neighbors`` only the nearest ones are shown, zero-padded;
the velocity slots then follow the nearest agents, zeros for adversaries and padding. Reward:
every adversary gets +10 per (good agent, adversary) pair touching; a good agent gets −10 per
adversary touching it and −bound(|x|) − bound(|y|), with bound(x) = 0 below 0.9, 10 (x − 0.9)
below 1, min(exp(2x − 2), 10) beyond. With ``terminate_on_success`` an episode ends once every
good agent touches some adversary.
"""

from __future__ import annotations

from typing import Any

import torch

from dgsolve.games.mpe.observe import collisions, constant, padded_nearest, seen
from dgsolve.games.mpe.scenario import TorchScenario, check_kwargs
from dgsolve.games.mpe.world import WorldLayout, WorldState, uniform

_ADVERSARY = (0.85, 0.35, 0.35)
_GOOD = (0.35, 0.85, 0.35)
_LANDMARK = (0.25, 0.25, 0.25)


def bound(x: torch.Tensor) -> torch.Tensor:
    """mpe2's boundary penalty of a coordinate's magnitude ``x``, elementwise."""
    near = (x - 0.9) * 10
    far = torch.exp(2 * x - 2).clamp_max(10.0)
    return torch.where(x < 0.9, torch.zeros_like(x), torch.where(x < 1.0, near, far))


class SimpleTag(TorchScenario):
    name = "simple_tag"
    mpe2_module = "mpe2.simple_tag_v3"

    def __init__(
        self,
        num_good: int = 1,
        num_adversaries: int = 3,
        num_obstacles: int = 2,
        terminate_on_success: bool = False,
        num_agent_neighbors: int | None = None,
        num_landmark_neighbors: int | None = None,
        **rest: Any,
    ):
        check_kwargs(self.name, rest)
        if num_good < 0 or num_adversaries < 0 or num_obstacles < 0:
            raise ValueError(
                "simple_tag needs num_good, num_adversaries, num_obstacles >= 0, not "
                f"{num_good}, {num_adversaries}, {num_obstacles}"
            )
        if num_good + num_adversaries < 1:
            raise ValueError("simple_tag needs at least one agent")
        for key, n in [
            ("num_agent_neighbors", num_agent_neighbors),
            ("num_landmark_neighbors", num_landmark_neighbors),
        ]:
            if n is not None and n < 1:
                raise ValueError(f"simple_tag needs {key} >= 1 or None, not {n}")
        self.num_good = num_good
        self.num_adversaries = num_adversaries
        self.num_obstacles = num_obstacles
        self.terminate_on_success = terminate_on_success
        self.num_agent_neighbors = num_agent_neighbors
        self.num_landmark_neighbors = num_landmark_neighbors
        G, V, L = num_good, num_adversaries, num_obstacles
        A = V + G
        agents = tuple(f"adversary_{i}" for i in range(V)) + tuple(f"agent_{i}" for i in range(G))
        landmarks = tuple(f"landmark {i}" for i in range(L))
        self.layout = WorldLayout(
            agents=agents,
            landmarks=landmarks,
            dim_c=2,
            size=(0.075,) * V + (0.05,) * G + (0.2,) * L,
            movable=(True,) * A + (False,) * L,
            collide=(True,) * (A + L),
            silent=(True,) * A,
            max_speed=(1.0,) * V + (1.3,) * G + (None,) * L,
            accel=(3.0,) * V + (4.0,) * G,
        )
        self._agents = list(range(A))
        self._adversaries = list(range(V))
        self._good = list(range(V, A))
        self._landmarks = list(range(A, A + L))

    def initial_state(self, num_envs, generator, device, dtype) -> WorldState:
        """Agents in U(-1, 1)², obstacles in U(-0.9, 0.9)²."""
        A, L = len(self._agents), self.num_obstacles
        agents = uniform((num_envs, A, 2), -1.0, 1.0, generator, device, dtype)
        marks = uniform((num_envs, L, 2), -0.9, 0.9, generator, device, dtype)
        pos = torch.cat([agents, marks], 1)
        return WorldState.at_rest(pos, self.layout)

    def observations(self, state: WorldState) -> dict[str, torch.Tensor]:
        """``[own vel, own pos, obstacles, other agents, other good agents' velocities]``."""
        pos, vel, out = state.pos, state.vel, {}
        for i, agent in enumerate(self.layout.agents):
            others = [j for j in self._agents if j != i]
            marks, _ = seen(pos, i, self._landmarks, self.num_landmark_neighbors)
            near, order = seen(pos, i, others, self.num_agent_neighbors)
            if order is None:
                good = [j for j in others if j in self._good]
                speeds = vel[:, good].flatten(1)
            else:
                n = self.num_agent_neighbors
                is_good = torch.tensor([j in self._good for j in others], device=pos.device)
                shown = torch.where(is_good.view(1, -1, 1), vel[:, others], 0.0)
                speeds = padded_nearest(shown, order, n, 2)
            out[agent] = torch.cat([vel[:, i], pos[:, i], marks, near, speeds], 1)
        return out

    def _caught(self, state: WorldState) -> torch.Tensor:
        """``[B, G, V]`` bool: whether good agent g touches adversary v."""
        size = constant(self.layout.size, state.pos)
        return collisions(state.pos, size, self._good, self._adversaries)

    def rewards(self, state: WorldState) -> torch.Tensor:
        """``[B, A]``: adversaries +10 per touching (good, adversary) pair; good agents −10
        per adversary touching them and the boundary penalty of both coordinates."""
        hit = self._caught(state).to(state.pos.dtype)
        B, V = hit.shape[0], self.num_adversaries
        adv = (10 * hit.sum((1, 2))).unsqueeze(-1).expand(B, V)
        edge = bound(state.pos[:, self._good].abs())
        good = -10 * hit.sum(-1) - edge[..., 0] - edge[..., 1]
        return torch.cat([adv, good], -1)

    def is_terminal(self, state: WorldState) -> torch.Tensor | None:
        """With ``terminate_on_success``: every good agent touches some adversary."""
        if not self.terminate_on_success:
            return None
        return self._caught(state).any(-1).all(-1)

    def colors(self, state: WorldState) -> torch.Tensor:
        """Adversaries red, good agents green, obstacles grey."""
        B = state.pos.shape[0]
        rows = (
            [_ADVERSARY] * self.num_adversaries
            + [_GOOD] * self.num_good
            + [_LANDMARK] * self.num_obstacles
        )
        return torch.tensor(rows, device=state.pos.device).reshape(-1, 3).expand(B, -1, -1)
