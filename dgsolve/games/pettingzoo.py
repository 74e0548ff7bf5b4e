"""Any PettingZoo environment as a batched :class:`~dgsolve.games.base.Game`.

``num_envs`` independent copies are stepped together and their observations stacked per agent.
Parallel envs (everyone acts every step) and AEC envs (turn-based: only ``agent_selection``
acts) are both supported; an AEC env whose agents all act every cycle can instead be converted
with ``wrap_aec``. Observations are flattened (``Discrete`` → one-hot, ``Dict`` with an
``action_mask`` entry → the ``observation`` entry plus a legal mask); actions are ``Discrete`` or
``Box``. Agents that leave the episode early stop ``acting`` until the copy resets.

A copy is done when no agent is left or after ``max_cycles`` steps. Where it is done,
``agent_terminated[agent]`` says whether that agent's own episode ended by termination (the env
set its ``terminations`` flag, at this step or earlier), not by truncation or by the cap; the copy
is ``terminated`` only if every agent's was, and ``truncated`` otherwise. Terry et al.,
"PettingZoo: Gym for Multi-Agent Reinforcement Learning" (NeurIPS 2021).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import torch
from gymnasium import spaces

from dgsolve.errors import EnvFactoryError
from dgsolve.games.base import AgentSpec, Game, TimeStep


def import_factory(path: str) -> Callable:
    """Resolve ``"package.module:callable"`` or raise a one-line :class:`EnvFactoryError`."""
    module_name, sep, attr = str(path).partition(":")
    if not sep or not module_name or not attr:
        raise EnvFactoryError(
            f"env.factory '{path}' must look like 'package.module:callable', "
            "e.g. 'pettingzoo.classic.rps_v2:parallel_env'"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import error of any kind is the user's to fix
        raise EnvFactoryError(
            f"env.factory '{path}': cannot import module '{module_name}' ({exc})"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise EnvFactoryError(
            f"env.factory '{path}': module '{module_name}' has no callable '{attr}'"
        )
    return factory


class _Codec:
    """Turns one agent's PettingZoo observation/action spaces into flat tensors."""

    def __init__(self, agent: str, obs_space: spaces.Space, act_space: spaces.Space):
        self.masked = isinstance(obs_space, spaces.Dict) and "action_mask" in obs_space.spaces
        inner = obs_space.spaces["observation"] if self.masked else obs_space
        if isinstance(inner, spaces.Discrete):
            self.obs_onehot, obs_dim = int(inner.n), int(inner.n)
        elif isinstance(inner, spaces.Box):
            self.obs_onehot, obs_dim = 0, int(np.prod(inner.shape))
        else:
            raise EnvFactoryError(
                f"agent '{agent}': observation space {inner} is not supported; "
                "use Box, Discrete, or Dict(observation, action_mask)"
            )
        if isinstance(act_space, spaces.Discrete):
            self.spec = AgentSpec(obs_dim=obs_dim, num_actions=int(act_space.n))
            self.action_start = int(act_space.start)
        elif isinstance(act_space, spaces.Box):
            low = tuple(float(x) for x in np.broadcast_to(act_space.low, act_space.shape).ravel())
            high = tuple(float(x) for x in np.broadcast_to(act_space.high, act_space.shape).ravel())
            self.spec = AgentSpec(
                obs_dim=obs_dim, action_dim=int(np.prod(act_space.shape)), low=low, high=high
            )
            self.action_shape = act_space.shape
        else:
            raise EnvFactoryError(
                f"agent '{agent}': action space {act_space} is not supported; use Discrete or Box"
            )

    def write_obs(self, row: np.ndarray, obs) -> np.ndarray | None:
        """Write a flat observation into ``row``; return the action mask if the env gives one."""
        mask = None
        if self.masked:
            mask, obs = obs["action_mask"], obs["observation"]
        if self.obs_onehot:
            row[:] = 0.0
            row[int(obs)] = 1.0
        else:
            row[:] = np.asarray(obs, dtype=np.float32).ravel()
        return mask

    def to_env(self, action: np.ndarray):
        if self.spec.discrete:
            return int(action) + self.action_start
        return action.reshape(self.action_shape).astype(np.float32)


class PettingZooGame(Game):
    """``num_envs`` copies of a PettingZoo env behind the batched Game interface."""

    def __init__(
        self,
        make_env: Callable[..., object],
        num_envs: int,
        device: torch.device | str = "cpu",
        max_cycles: int | None = None,
        leader: str | None = None,
        can_render: bool = False,
        wrap_aec: bool = False,
    ):
        from pettingzoo.utils.env import AECEnv, ParallelEnv

        self._make_env = make_env
        self._wrap_aec = wrap_aec
        self.envs = [self._build() for _ in range(num_envs)]
        first = self.envs[0]
        if not isinstance(first, (AECEnv, ParallelEnv)):
            raise EnvFactoryError(
                f"env factory returned {type(first).__name__}, not a PettingZoo ParallelEnv or "
                "AECEnv"
            )
        self.turn_based = isinstance(first, AECEnv)
        possible = getattr(first, "possible_agents", None)
        if not possible:
            raise EnvFactoryError(
                "this env does not list its agents before reset (possible_agents is empty); "
                "dgsolve needs every agent known at reset"
            )
        self.agents = tuple(possible)
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.max_cycles = max_cycles
        self.leader = leader
        self.can_render = can_render
        self.codecs = {
            a: _Codec(a, first.observation_space(a), first.action_space(a)) for a in self.agents
        }
        b = num_envs
        self._obs = {a: np.zeros((b, c.spec.obs_dim), np.float32) for a, c in self.codecs.items()}
        self._final = {a: np.zeros_like(o) for a, o in self._obs.items()}
        self._legal = {
            a: np.ones((b, c.spec.num_actions or 1), bool) for a, c in self.codecs.items()
        }
        self._acting = {a: np.zeros(b, bool) for a in self.agents}
        self._reward = {a: np.zeros(b, np.float32) for a in self.agents}
        # whether each agent's episode in each copy has ended by termination so far
        self._agent_term = {a: np.zeros(b, bool) for a in self.agents}
        self._cycles = np.zeros(b, np.int64)
        self._episode_seed = 0

    def _build(self, **extra):
        env = self._make_env(**extra)
        if self._wrap_aec:
            from pettingzoo.utils.conversions import aec_to_parallel

            env = aec_to_parallel(env)
        return env

    def spec(self, agent: str) -> AgentSpec:
        return self.codecs[agent].spec

    # ------------------------------------------------------------------ reading one copy
    def _read_copy(self, i: int, obs_target: dict[str, np.ndarray]) -> None:
        env = self.envs[i]
        live = set(env.agents)
        for a in self.agents:
            self._acting[a][i] = a in live
        if self.turn_based:
            for a in self.agents:
                if a in live:
                    mask = self.codecs[a].write_obs(obs_target[a][i], env.observe(a))
                    self._acting[a][i] = a == env.agent_selection
                    # A waiting agent's action is ignored; all-legal keeps its policy defined.
                    self._set_legal(a, i, mask if self._acting[a][i] else None, {})
        else:
            for a in self.agents:
                if a in live:
                    mask = self.codecs[a].write_obs(obs_target[a][i], self._last_obs[i][a])
                    self._set_legal(a, i, mask, self._last_info[i].get(a, {}))

    def _set_legal(self, agent: str, i: int, mask, info: dict) -> None:
        if mask is None:
            mask = info.get("action_mask") if isinstance(info, dict) else None
        if self.codecs[agent].spec.discrete:
            self._legal[agent][i] = True if mask is None else np.asarray(mask, dtype=bool)

    def _reset_copy(self, i: int) -> None:
        env = self.envs[i]
        seed = self._episode_seed + i
        self._episode_seed += self.num_envs
        if self.turn_based:
            env.reset(seed=seed)
        else:
            self._last_obs[i], self._last_info[i] = env.reset(seed=seed)
        self._cycles[i] = 0
        for flags in self._agent_term.values():
            flags[i] = False
        self._read_copy(i, self._obs)

    def _timestep(
        self,
        terminated: np.ndarray,
        truncated: np.ndarray,
        agent_terminated: dict[str, np.ndarray] | None = None,
    ) -> TimeStep:
        dev = self.device
        if agent_terminated is None:
            agent_terminated = {a: np.zeros(self.num_envs, bool) for a in self.agents}

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(x.copy()).to(dev)

        return TimeStep(
            obs={a: t(o) for a, o in self._obs.items()},
            reward={a: t(r) for a, r in self._reward.items()},
            terminated=t(terminated),
            truncated=t(truncated),
            legal={a: t(m) for a, m in self._legal.items()},
            acting={a: t(m) for a, m in self._acting.items()},
            final_obs={a: t(o) for a, o in self._final.items()},
            agent_terminated={a: t(f) for a, f in agent_terminated.items()},
        )

    # ------------------------------------------------------------------ Game API
    def reset(self, seed: int | None = None) -> TimeStep:
        self._episode_seed = 0 if seed is None else int(seed) * 1_000_003
        self._last_obs: list[dict] = [{} for _ in range(self.num_envs)]
        self._last_info: list[dict] = [{} for _ in range(self.num_envs)]
        for i in range(self.num_envs):
            for a in self.agents:
                self._legal[a][i] = True
            self._reset_copy(i)
        for r in self._reward.values():
            r[:] = 0.0
        b = self.num_envs
        for a in self.agents:
            self._final[a][:] = self._obs[a]
        return self._timestep(np.zeros(b, bool), np.zeros(b, bool))

    def step(self, actions: dict[str, torch.Tensor]) -> TimeStep:
        np_actions = {a: actions[a].detach().cpu().numpy() for a in self.agents}
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        agent_terminated = {a: np.zeros(self.num_envs, bool) for a in self.agents}
        for r in self._reward.values():
            r[:] = 0.0
        for i, env in enumerate(self.envs):
            if self._advance(i, env, np_actions):
                for a in self.agents:
                    agent_terminated[a][i] = self._agent_term[a][i]
                terminated[i] = all(agent_terminated[a][i] for a in self.agents)
                truncated[i] = not terminated[i]
                for a in self.agents:
                    self._final[a][i] = self._obs[a][i]
                for a in self.agents:
                    self._legal[a][i] = True
                self._reset_copy(i)
        return self._timestep(terminated, truncated, agent_terminated)

    def _advance(self, i: int, env, np_actions) -> bool:
        """Step copy ``i`` once; return whether it is done (no agent left, or capped)."""
        if self.turn_based:
            self._step_aec(i, env, np_actions)
        else:
            self._step_parallel(i, env, np_actions)
        self._cycles[i] += 1
        capped = self.max_cycles is not None and self._cycles[i] >= self.max_cycles
        return not env.agents or capped

    def _step_parallel(self, i: int, env, np_actions) -> None:
        joint = {a: self.codecs[a].to_env(np_actions[a][i]) for a in env.agents}
        obs, rew, term, trunc, info = env.step(joint)
        for a, r in rew.items():
            self._reward[a][i] += float(r)
        for a, ended in term.items():
            self._agent_term[a][i] |= bool(ended)
        self._last_obs[i], self._last_info[i] = obs, info
        if env.agents:
            self._read_copy(i, self._obs)
        else:
            for a in obs:
                self.codecs[a].write_obs(self._obs[a][i], obs[a])

    def _step_aec(self, i: int, env, np_actions) -> None:
        mover = env.agent_selection
        env.step(self.codecs[mover].to_env(np_actions[mover][i]))
        self._collect_aec(i, env)
        # Agents that are done must be stepped with None until the env removes them; their
        # observation then is the one a truncated agent bootstraps from.
        while env.agents and (
            env.terminations.get(env.agent_selection) or env.truncations.get(env.agent_selection)
        ):
            done = env.agent_selection
            self.codecs[done].write_obs(self._obs[done][i], env.observe(done))
            env.step(None)
            self._collect_aec(i, env)
        if env.agents:
            self._read_copy(i, self._obs)

    def _collect_aec(self, i: int, env) -> None:
        """Add the rewards of the AEC step just taken and note agents it terminated."""
        for a, r in env.rewards.items():
            self._reward[a][i] += float(r)
        for a, ended in env.terminations.items():
            self._agent_term[a][i] |= bool(ended)

    # ------------------------------------------------------------------ rendering
    def render_episode(self, policy_fn, max_steps: int, seed: int) -> list[np.ndarray]:
        """Play one episode with ``policy_fn(TimeStep) -> actions`` in a fresh rgb_array copy;
        every frame names the agents (beside each one in mpe2 envs, else in a strip above) and
        shows the step (:func:`dgsolve.plots.label_frames`)."""
        from dgsolve.plots import label_frames, mpe_screen_positions

        solo = PettingZooGame.__new__(PettingZooGame)
        solo.__dict__.update(self.__dict__)
        solo.envs = [self._build(render_mode="rgb_array")]
        solo.num_envs = 1
        solo._obs = {a: o[:1].copy() for a, o in self._obs.items()}
        solo._final = {a: o[:1].copy() for a, o in self._final.items()}
        solo._legal = {a: m[:1].copy() for a, m in self._legal.items()}
        solo._acting = {a: m[:1].copy() for a, m in self._acting.items()}
        solo._reward = {a: r[:1].copy() for a, r in self._reward.items()}
        solo._agent_term = {a: f[:1].copy() for a, f in self._agent_term.items()}
        solo._cycles = np.zeros(1, np.int64)
        env = solo.envs[0]

        def shot() -> tuple[np.ndarray | None, dict]:
            return env.render(), mpe_screen_positions(env, self.agents)

        ts = solo.reset(seed)
        shots = [shot()]
        for _ in range(max_steps):
            ts = solo._step_without_reset(policy_fn(ts))
            shots.append(shot())
            if ts is None:
                break
        env.close()
        shots = [(f, p) for f, p in shots if f is not None]
        return label_frames([f for f, _ in shots], self.agents, [p for _, p in shots])

    def _step_without_reset(self, actions: dict[str, torch.Tensor]) -> TimeStep | None:
        env = self.envs[0]
        np_actions = {a: actions[a].detach().cpu().numpy() for a in self.agents}
        for r in self._reward.values():
            r[:] = 0.0
        if self._advance(0, env, np_actions):
            return None
        z = np.zeros(1, bool)
        return self._timestep(z, z)

    def close(self) -> None:
        for env in self.envs:
            env.close()
