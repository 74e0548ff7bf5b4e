"""mpe2's ``simple_world_comm_v3`` in torch: predators led by a speaking leader chase prey
that eat food and hide in forests.

Agents (mpe2's order): ``leadadversary_0``, ``adversary_0``… (``num_adversaries`` in all,
the first being the leader), then ``agent_0``… (``num_good``). Adversaries are large and slow
(size 0.075, accel 3, top speed 1), good agents small and quick (0.045, 4, 1.3); everybody
collides; only the leader (agent 0) speaks, in ``dim_c`` = 4 words. Landmarks (mpe2's
``world.landmarks``): ``num_obstacles`` colliding obstacles ``landmark i`` (0.2), then
``num_food`` foods ``food i`` (0.03), then ``num_forests`` forests ``forest i`` (0.3); neither
food nor forests collide. mpe2 adds no boundary landmarks (its ``set_boundaries`` is unused).

Observation: own velocity, own position, every landmark relative to the agent, every other
agent relative to it, then — for adversaries and the leader — the other good agents'
velocities, one ±1 flag per forest (is the observer inside it), and the leader's utterance;
for good agents the forest flags come before the velocities and there is no utterance. Another
agent's position (and, if good, velocity) is shown only if both share a forest, or neither is in
any forest, or the observer is the leader; otherwise it reads as zeros.

Reward: a good agent gets −5 per adversary touching it, −2 × ``bound(|x|)`` per coordinate
(0 below 0.9, ``10 (x − 0.9)`` below 1, else ``min(exp(2x − 2), 10)``), +2 per food it touches
and −0.05 × its distance to the nearest food. Every adversary gets −0.1 × its distance to the
nearest good agent, +5 per touching (good agent, adversary) pair.
"""

from __future__ import annotations

from typing import Any

import torch

from dgsolve.games.mpe.observe import collisions, constant, relative
from dgsolve.games.mpe.scenario import TorchScenario, check_kwargs
from dgsolve.games.mpe.world import WorldLayout, WorldState, distance, uniform

_ADVERSARY = (0.95, 0.45, 0.45)
_GOOD = (0.45, 0.95, 0.45)
_OBSTACLE = (0.25, 0.25, 0.25)
_FOOD = (0.15, 0.15, 0.65)
_FOREST = (0.6, 0.9, 0.6)
_LEADER_SHADE = 0.3


class SimpleWorldComm(TorchScenario):
    name = "simple_world_comm"
    mpe2_module = "mpe2.simple_world_comm_v3"

    def __init__(
        self,
        num_good: int = 2,
        num_adversaries: int = 4,
        num_obstacles: int = 1,
        num_food: int = 2,
        num_forests: int = 2,
        **rest: Any,
    ):
        check_kwargs(self.name, rest)
        for key, n, least in [
            ("num_good", num_good, 1),
            ("num_adversaries", num_adversaries, 0),
            ("num_obstacles", num_obstacles, 0),
            ("num_food", num_food, 1),
            ("num_forests", num_forests, 0),
        ]:
            if n < least:
                raise ValueError(f"simple_world_comm needs {key} >= {least}, not {n}")
        self.num_good, self.num_adversaries = num_good, num_adversaries
        self.num_obstacles, self.num_food, self.num_forests = num_obstacles, num_food, num_forests
        A = num_adversaries + num_good
        self.adversary = tuple(i < num_adversaries for i in range(A))
        agents = []
        for i in range(A):
            index = max(i - 1 if self.adversary[i] else i - num_adversaries, 0)
            base = "leadadversary" if i == 0 else ("adversary" if self.adversary[i] else "agent")
            agents.append(f"{base}_{index}")
        landmarks = (
            tuple(f"landmark {i}" for i in range(num_obstacles))
            + tuple(f"food {i}" for i in range(num_food))
            + tuple(f"forest {i}" for i in range(num_forests))
        )
        L = len(landmarks)
        adv = self.adversary
        self.layout = WorldLayout(
            agents=tuple(agents),
            landmarks=landmarks,
            dim_c=4,
            size=tuple(0.075 if a else 0.045 for a in adv)
            + (0.2,) * num_obstacles
            + (0.03,) * num_food
            + (0.3,) * num_forests,
            movable=(True,) * A + (False,) * L,
            collide=(True,) * A + (True,) * num_obstacles + (False,) * (num_food + num_forests),
            silent=tuple(i > 0 for i in range(A)),
            max_speed=tuple(1.0 if a else 1.3 for a in adv) + (None,) * L,
            accel=tuple(3.0 if a else 4.0 for a in adv),
        )
        self._agents = list(range(A))
        self._adversaries = [i for i in range(A) if adv[i]]
        self._good = [i for i in range(A) if not adv[i]]
        self._landmarks = list(range(A, A + L))
        self._food = list(range(A + num_obstacles, A + num_obstacles + num_food))
        self._forests = list(range(A + num_obstacles + num_food, A + L))

    def initial_state(self, num_envs, generator, device, dtype) -> WorldState:
        """Agents in U(-1, 1)², every landmark (obstacles, food, forests) in U(-0.9, 0.9)²."""
        A, L = len(self._agents), len(self._landmarks)
        agents = uniform((num_envs, A, 2), -1.0, 1.0, generator, device, dtype)
        marks = uniform((num_envs, L, 2), -0.9, 0.9, generator, device, dtype)
        pos = torch.cat([agents, marks], 1)
        return WorldState.at_rest(pos, self.layout)

    def _size(self, state: WorldState) -> torch.Tensor:
        """``[E]``: every entity's radius, on the state's device and dtype."""
        return constant(self.layout.size, state.pos)

    def observations(self, state: WorldState) -> dict[str, torch.Tensor]:
        """``[vel, pos, landmarks, others, good others' vel, in_forest, leader's words]`` for
        adversaries and the leader, ``[vel, pos, landmarks, others, in_forest, good others'
        vel]`` for good agents; hidden agents read as zeros."""
        pos, vel, out = state.pos, state.vel, {}
        B = pos.shape[0]
        # [B, A, F]: whether agent a is inside forest f
        inside = collisions(pos, self._size(state), self._agents, self._forests)
        anywhere = inside.any(-1)  # [B, A]
        flags = torch.where(inside, 1.0, -1.0).to(pos.dtype)
        leader_words = state.comm[:, 0]
        for i, agent in enumerate(self.layout.agents):
            others = [j for j in self._agents if j != i]
            if i == 0:
                seen = torch.ones(B, len(others), dtype=torch.bool, device=pos.device)
            else:
                shared = (inside[:, i : i + 1] & inside[:, others]).any(-1)
                apart = ~anywhere[:, i : i + 1] & ~anywhere[:, others]
                seen = shared | apart  # [B, len(others)]
            rel = pos[:, others] - pos[:, i : i + 1]
            near = torch.where(seen.unsqueeze(-1), rel, torch.zeros_like(rel)).flatten(1)
            good = [k for k, j in enumerate(others) if not self.adversary[j]]
            v = vel[:, [others[k] for k in good]]
            s = seen[:, good].unsqueeze(-1)
            speeds = torch.where(s, v, torch.zeros_like(v)).flatten(1)
            head = [vel[:, i], pos[:, i], relative(pos, i, self._landmarks), near]
            if self.adversary[i] or i == 0:
                parts = head + [speeds, flags[:, i], leader_words]
            else:
                parts = head + [flags[:, i], speeds]
            out[agent] = torch.cat(parts, 1)
        return out

    def rewards(self, state: WorldState) -> torch.Tensor:
        """``[B, A]``: good agents' collision, boundary and food terms; adversaries' shared
        capture bonus less their distance to the nearest good agent."""
        pos = state.pos
        size = self._size(state)
        B, A = pos.shape[0], len(self._agents)
        out = torch.zeros(B, A, device=pos.device, dtype=pos.dtype)
        good_pos = pos[:, self._good]  # [B, G, 2]
        # [B, G, Adv]: good agent g touches adversary k
        caught = collisions(pos, size, self._good, self._adversaries)
        x = good_pos.abs()
        bound = torch.where(
            x < 0.9,
            torch.zeros_like(x),
            torch.where(x < 1.0, (x - 0.9) * 10, torch.exp(2 * x - 2).clamp(max=10.0)),
        )
        eats = collisions(pos, size, self._good, self._food)  # [B, G, Food]
        food_dist = distance(good_pos.unsqueeze(2), pos[:, self._food].unsqueeze(1))
        good_reward = (
            -5.0 * caught.sum(-1).to(pos.dtype)
            - 2.0 * bound.sum(-1)
            + 2.0 * eats.sum(-1).to(pos.dtype)
            - 0.05 * food_dist.min(-1).values
        )
        out[:, self._good] = good_reward
        if self._adversaries:
            adv_pos = pos[:, self._adversaries].unsqueeze(2)
            nearest = distance(adv_pos, good_pos.unsqueeze(1)).min(-1).values  # [B, Adv]
            pairs = caught.flatten(1).sum(-1).to(pos.dtype).unsqueeze(-1)
            out[:, self._adversaries] = -0.1 * nearest + 5.0 * pairs
        return out

    def colors(self, state: WorldState) -> torch.Tensor:
        """Adversaries red, good agents green (the leader 0.3 darker), obstacles grey, food
        blue, forests pale green."""
        B = state.pos.shape[0]
        rows = []
        for i, adv in enumerate(self.adversary):
            shade = _LEADER_SHADE if i == 0 else 0.0
            rows.append(tuple(c - shade for c in (_ADVERSARY if adv else _GOOD)))
        rows += [_OBSTACLE] * self.num_obstacles
        rows += [_FOOD] * self.num_food + [_FOREST] * self.num_forests
        return torch.tensor(rows, device=state.pos.device).expand(B, -1, -1)
