"""The eight mpe2 scenarios as one batched torch :class:`~dgsolve.games.base.Game`.

:class:`TorchMPEGame` steps ``num_envs`` copies of a :class:`TorchScenario` together, on any
device, with no per-copy Python: mpe2's action decoding (``SimpleEnv._set_action``: discrete
``move + 5 * word`` for agents that move and speak, continuous ``[no-op, -x, +x, -y, +y, words]``
in ``[0, 1]``, clipped as mpe2's ``ClipOutOfBoundsWrapper`` does), the physics of
:mod:`dgsolve.games.mpe.world`, the rewards (``local_ratio`` mixes the scenario's global reward
in as ``SimpleEnv._execute_world_step`` does), truncation after ``max_cycles`` steps, early
termination where the scenario has it, and auto-reset as the Game interface says.

:meth:`TorchMPEGame.load_mpe2_state` copies a reset mpe2 env's world into one copy, so that a
test can step both with the same actions (the method of JaxMARL's MPE tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dgsolve.games.base import AgentSpec, Game, TimeStep, all_true, loaded
from dgsolve.games.mpe.scenario import TorchScenario
from dgsolve.games.mpe.world import Physics, WorldState

#: mpe2's discrete moves: no-op, left, right, down, up
_MOVES = ((0.0, 0.0), (-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))
_MOVE_DIM = 5


class TorchMPEGame(Game):
    """``num_envs`` copies of one mpe2 scenario in torch tensors on ``device``."""

    can_render = True
    can_save_state = True

    def __init__(
        self,
        scenario: TorchScenario,
        num_envs: int,
        device: torch.device | str = "cpu",
        *,
        max_cycles: int = 25,
        continuous_actions: bool = False,
        dynamic_rescaling: bool = True,
        leader: str | None = None,
        dtype: torch.dtype = torch.float64,
        seed: int | None = None,
        auto_reset: bool = True,
    ):
        """``auto_reset=False`` keeps finished copies at their end instead of restarting them
        (side-by-side comparisons with mpe2, rendering one episode); the Game interface's
        solvers need the default."""
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, not {num_envs}")
        if max_cycles < 1:
            raise ValueError(f"max_cycles must be at least 1, not {max_cycles}")
        self.scenario = scenario
        self.layout = scenario.layout
        self.agents = self.layout.agents
        if leader is not None and leader not in self.agents:
            raise ValueError(f"leader '{leader}' is not an agent of {scenario.name}: {self.agents}")
        self.leader = leader
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.dtype = dtype
        self.max_cycles = max_cycles
        self.continuous_actions = continuous_actions
        self.dynamic_rescaling = dynamic_rescaling
        self.physics = Physics(self.layout, self.device, dtype)
        self.generator = torch.Generator(device=self.device)
        self._moves = torch.tensor(_MOVES, device=self.device, dtype=dtype)
        self.auto_reset = auto_reset
        self._specs = self._build_specs()
        # every action is legal and every agent acts at every step: built once, read-only
        B = num_envs
        self._legal = {
            a: all_true(B, s.num_actions if s.discrete else None, self.device)
            for a, s in self._specs.items()
        }
        self._acting = {a: all_true(B, None, self.device) for a in self.agents}
        self.reset(seed)

    # ------------------------------------------------------------------ spaces
    def _build_specs(self) -> dict[str, AgentSpec]:
        lay = self.layout
        probe = self.scenario.initial_state(1, self.generator, self.device, self.dtype)
        obs = self.scenario.observations(probe)
        specs = {}
        for i, agent in enumerate(self.agents):
            moves, speaks = lay.movable[i], not lay.silent[i]
            if self.continuous_actions:
                dim = (_MOVE_DIM if moves else 0) + (lay.dim_c if speaks else 0)
                specs[agent] = AgentSpec(
                    obs_dim=obs[agent].shape[-1],
                    action_dim=dim,
                    low=(0.0,) * dim,
                    high=(1.0,) * dim,
                )
            else:
                n = (_MOVE_DIM if moves else 1) * (lay.dim_c if speaks else 1)
                specs[agent] = AgentSpec(obs_dim=obs[agent].shape[-1], num_actions=n)
        return specs

    def spec(self, agent: str) -> AgentSpec:
        return self._specs[agent]

    # ------------------------------------------------------------------ stepping
    def _decode(self, actions: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit controls ``[B, A, 2]`` and utterances ``[B, A, dim_c]`` from the joint action."""
        lay, B = self.layout, self.num_envs
        us, words = [], []
        zeros_u = torch.zeros(B, 2, device=self.device, dtype=self.dtype)
        zeros_c = torch.zeros(B, lay.dim_c, device=self.device, dtype=self.dtype)
        for i, agent in enumerate(self.agents):
            a = actions[agent].to(self.device)
            if a.shape[:1] != (B,):
                raise ValueError(
                    f"{agent}'s actions have shape {list(a.shape)}; this game has {B} copies"
                )
            moves, speaks = lay.movable[i], not lay.silent[i]
            if self.continuous_actions:
                # mpe2 clips and subtracts in the action's own dtype, then adds in float64
                a = a.clamp(0.0, 1.0)
                u = torch.stack([a[:, 2] - a[:, 1], a[:, 4] - a[:, 3]], -1) if moves else zeros_u
                rest = a[:, _MOVE_DIM:] if moves else a
                u, rest = u.to(self.dtype), rest.to(self.dtype)
                c = rest if speaks else zeros_c
            else:
                a = a.long()
                u = self._moves.index_select(0, a % _MOVE_DIM) if moves else zeros_u
                rest = a // _MOVE_DIM if moves else a
                c = (
                    torch.nn.functional.one_hot(rest, lay.dim_c).to(self.dtype)
                    if speaks
                    else zeros_c
                )
            us.append(u)
            words.append(c)
        return torch.stack(us, 1), torch.stack(words, 1)

    def observe(self) -> dict[str, torch.Tensor]:
        """Every copy's current observations, ``[B, obs_dim]`` float32 per agent."""
        return {a: o.float() for a, o in self.scenario.observations(self.state).items()}

    def _timestep(self, obs, reward, terminated, truncated, final_obs=None) -> TimeStep:
        return TimeStep(
            obs=obs,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            legal=self._legal,
            acting=self._acting,
            final_obs=obs if final_obs is None else final_obs,
        )

    def reset(self, seed: int | None = None) -> TimeStep:
        if seed is not None:
            self.generator.manual_seed(int(seed))
        else:
            self.generator.seed()
        B = self.num_envs
        self.state = self.scenario.initial_state(B, self.generator, self.device, self.dtype)
        self.steps = torch.zeros(B, dtype=torch.long, device=self.device)
        no = torch.zeros(B, dtype=torch.bool, device=self.device)
        zero = {a: torch.zeros(B, device=self.device) for a in self.agents}
        return self._timestep(self.observe(), zero, no, no.clone())

    def step(self, actions: dict[str, torch.Tensor]) -> TimeStep:
        sc = self.scenario
        u, words = self._decode(actions)
        self.state = self.physics.step(self.state, u, words)
        own = sc.rewards(self.state)
        if sc.local_ratio is not None:
            shared = sc.global_reward(self.state).unsqueeze(-1)
            own = shared * (1 - sc.local_ratio) + own * sc.local_ratio
        reward = {a: own[:, i].float() for i, a in enumerate(self.agents)}
        self.steps = self.steps + 1
        truncated = self.steps >= self.max_cycles
        ends = sc.is_terminal(self.state)
        terminated = torch.zeros_like(truncated) if ends is None else ends & ~truncated
        obs = self.observe()
        done = terminated | truncated
        if not self.auto_reset or not bool(done.any()):
            return self._timestep(obs, reward, terminated, truncated)
        fresh = sc.initial_state(self.num_envs, self.generator, self.device, self.dtype)
        self.state = self.state.where(done, fresh)
        self.steps = torch.where(done, torch.zeros_like(self.steps), self.steps)
        first = self.observe()
        new_obs = {a: torch.where(done.unsqueeze(-1), first[a], obs[a]) for a in self.agents}
        return self._timestep(new_obs, reward, terminated, truncated, final_obs=obs)

    # ------------------------------------------------------------------ mpe2 state
    def load_mpe2_state(self, parallel_env: Any, copy: int = 0) -> None:
        """Copy the world of an mpe2 env (a ParallelEnv or AEC env of the same scenario,
        after ``reset``) into copy ``copy``: positions, velocities, communication, the step
        count and the scenario's own state (goals, observed colours)."""
        raw = parallel_env.unwrapped
        world = raw.world
        names = tuple(a.name for a in world.agents)
        if names != self.agents:
            raise ValueError(f"mpe2 env has agents {names}, this game {self.agents}")
        if len(world.landmarks) != len(self.layout.landmarks):
            raise ValueError(
                f"mpe2 env has {len(world.landmarks)} landmarks, this game "
                f"{len(self.layout.landmarks)}"
            )
        if not 0 <= copy < self.num_envs:
            raise IndexError(f"copy {copy} is outside 0..{self.num_envs - 1}")

        def t(x) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x), device=self.device)

        self.state.pos[copy] = t([e.state.p_pos for e in world.entities]).to(self.dtype)
        self.state.vel[copy] = t([e.state.p_vel for e in world.entities]).to(self.dtype)
        dim_c = self.layout.dim_c
        comm = [a.state.c if a.state._c is not None else np.zeros(dim_c) for a in world.agents]
        self.state.comm[copy] = t(np.reshape(comm, (len(world.agents), dim_c))).to(self.dtype)
        for key, value in self.scenario.extra_from_mpe2(world).items():
            target = self.state.extra[key]
            target[copy] = t(value).to(target.dtype)
        self.steps[copy] = int(raw.steps)

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> dict[str, Any]:
        return {
            "world": {k: v.clone() for k, v in self.state.tensors().items()},
            "steps": self.steps.clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state.tensors()
        if set(state["world"]) != set(mine):
            raise ValueError(f"saved MPE state holds {sorted(state['world'])}, not {sorted(mine)}")
        self.state = WorldState.from_tensors(
            {k: loaded(state["world"][k], v, k) for k, v in mine.items()}
        )
        self.steps = loaded(state["steps"], self.steps, "steps")
        self.generator.set_state(state["generator"].cpu())

    # ------------------------------------------------------------------ rendering
    def render_episode(
        self, policy_fn: Callable[[TimeStep], dict[str, torch.Tensor]], max_steps: int, seed: int
    ) -> list[np.ndarray]:
        """One episode of ``policy_fn`` in a fresh copy, drawn as mpe2 draws it (700×700,
        camera on the farthest entity), each frame naming the agents and the step."""
        from dgsolve.games.mpe.render import draw_frame
        from dgsolve.plots import label_frames

        solo = TorchMPEGame(
            self.scenario,
            1,
            self.device,
            max_cycles=self.max_cycles,
            continuous_actions=self.continuous_actions,
            dynamic_rescaling=self.dynamic_rescaling,
            dtype=self.dtype,
            seed=seed,
            auto_reset=False,
        )
        ts = solo.reset(seed)
        cam0 = float(solo.state.pos[0].abs().max())
        shots = [draw_frame(solo, cam0)]
        for _ in range(min(max_steps, self.max_cycles)):
            ts = solo.step(policy_fn(ts))
            shots.append(draw_frame(solo, cam0))
            if bool(ts.done.any()):
                break
        return label_frames([f for f, _ in shots], self.agents, [p for _, p in shots])
