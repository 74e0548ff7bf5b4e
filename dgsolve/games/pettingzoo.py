"""Any PettingZoo environment as a batched :class:`~dgsolve.games.base.Game`.

``num_envs`` independent copies are stepped together and their observations stacked per agent.
Parallel envs (everyone acts every step) and AEC envs (turn-based: only ``agent_selection``
acts) are both supported; an AEC env whose agents all act every cycle can instead be converted
with ``wrap_aec``. Observations are flattened (``Discrete`` → one-hot, ``Dict`` with an
``action_mask`` entry → the ``observation`` entry plus a legal mask); actions are ``Discrete`` or
``Box``. Agents that leave the episode early stop ``acting`` until the copy resets.

A copy is done when no agent is left or after ``max_cycles`` steps. An agent has left when the
env removes it from ``env.agents`` or flags it terminated or truncated: PettingZoo's API says
flagged agents leave ``env.agents``, and an env that keeps them there would otherwise never end
its episodes. Where a copy is done, ``agent_terminated[agent]`` says whether that agent's own
episode ended by termination (the env set its ``terminations`` flag, at this step or earlier),
not by truncation or by the cap; the copy is ``terminated`` only if every agent's was, and
``truncated`` otherwise. Terry et al., "PettingZoo: Gym for Multi-Agent Reinforcement Learning"
(NeurIPS 2021).

Envs a user brings are checked where they first speak, at each copy's first reset and first
step (not on every step: the copies are stepped in a Python loop): the API generation (PettingZoo
>= 1.24's parallel API), every observation against its agent's space, and the rewards (one per
agent that acted, a finite number each) and flags (keyed by known agents). A mismatch is a
one-line :class:`EnvFactoryError` naming the agent, the space and the value, not a traceback
from deep inside the adapter.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

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


def unknown_keyword(fn: Callable, kwargs: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """The first of ``kwargs`` that ``fn``'s signature does not take, with the names it does
    take; ``None`` where it takes them all, takes ``**kwargs`` or shows no signature."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in names:
            return key, names
    return None


def bind_factory(path: str, kwargs: Mapping[str, Any]) -> Callable:
    """:func:`import_factory` with ``kwargs`` (``env.kwargs``) bound; a keyword the factory's
    signature does not take is a one-line :class:`EnvFactoryError` (a factory taking
    ``**kwargs`` is checked when :class:`PettingZooGame` first calls it)."""
    factory = import_factory(path)
    unknown = unknown_keyword(factory, kwargs)
    if unknown is not None:
        key, names = unknown
        raise EnvFactoryError(
            f"env.factory '{path}' takes no keyword argument '{key}' (env.kwargs.{key}); it "
            f"takes: {', '.join(names) or 'none'}"
        )
    return functools.partial(factory, **kwargs)


def _callable_name(fn: Callable) -> str:
    """``module:qualname`` of a factory (of the function a ``functools.partial`` wraps)."""
    fn = getattr(fn, "func", fn)
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    return f"{getattr(fn, '__module__', None) or '?'}:{name}"


def _show(value: Any, limit: int = 60) -> str:
    """``value``'s repr on one line, cut to about ``limit`` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bad_number(value: Any) -> str | None:
    """Why ``value`` is not a finite real number (a reward), or ``None`` where it is."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):  # ragged sequences
        return "not a number"
    if arr.ndim != 0 or arr.dtype.kind not in "biuf":
        return "not a number"
    if not np.isfinite(arr):
        return "not finite"
    return None


class _Codec:
    """Turns one agent's PettingZoo observation/action spaces into flat tensors."""

    def __init__(self, agent: str, obs_space: spaces.Space, act_space: spaces.Space):
        self.obs_space = obs_space
        self.masked = isinstance(obs_space, spaces.Dict) and "action_mask" in obs_space.spaces
        inner = obs_space.spaces["observation"] if self.masked else obs_space
        self.inner_space = inner
        if isinstance(inner, spaces.Discrete):
            self.obs_onehot, obs_dim = int(inner.n), int(inner.n)
            self.obs_start = int(inner.start)
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
            row[int(obs) - self.obs_start] = 1.0
        else:
            row[:] = np.asarray(obs, dtype=np.float32).ravel()
        return mask

    def problem(self, obs) -> str | None:
        """What makes ``obs`` unfit for this agent's observation space, or ``None`` where it
        fits: what :meth:`write_obs` needs, checked before it meets a mismatch as a numpy
        error."""
        if self.masked:
            if not isinstance(obs, Mapping) or not {"observation", "action_mask"} <= obs.keys():
                return f"{_show(obs)} is not a dict with 'observation' and 'action_mask'"
            n = self.spec.num_actions
            mask = np.asarray(obs["action_mask"])
            if n and (mask.shape != (n,) or mask.dtype.kind not in "biuf"):
                return f"action_mask {_show(obs['action_mask'])} is not {n} flags"
            obs = obs["observation"]
        try:
            arr = np.asarray(obs)
        except (TypeError, ValueError):  # ragged sequences
            return f"{_show(obs)} is not an array of numbers"
        if arr.dtype.kind not in "biuf":
            return f"{_show(obs)} is not numeric (dtype {arr.dtype})"
        if self.obs_onehot:
            start = self.obs_start
            if arr.ndim != 0 or arr != np.round(arr) or not start <= arr < start + self.obs_onehot:
                return f"{_show(obs)} is not an integer in [{start}, {start + self.obs_onehot})"
        elif arr.shape != self.inner_space.shape:
            return f"{_show(obs)} has shape {arr.shape}"
        return None

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
        label: str | None = None,
    ):
        from pettingzoo.utils.env import AECEnv, ParallelEnv

        self._make_env = make_env
        self._wrap_aec = wrap_aec
        #: how messages name this env (``env.factory 'module:callable'``)
        self.label = label or f"env '{_callable_name(make_env)}'"
        first = self._first_build()
        self.envs = [first] + [self._build() for _ in range(num_envs - 1)]
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
        # the agents of each copy whose episode has ended by termination or truncation: they
        # have left even where the env keeps them in env.agents
        self._over: list[set[str]] = [set() for _ in range(b)]
        self._cycles = np.zeros(b, np.int64)
        self._episode_seed = 0
        # copies whose first reset and first step are still to be checked
        self._unchecked = set(range(b))

    def _first_build(self):
        """Build the first copy. A factory taking ``**kwargs`` (PettingZoo's ``parallel_env``)
        shows no signature to check ``env.kwargs`` against (:func:`bind_factory`): a keyword it
        refuses here is one line naming it, not a TypeError traceback."""
        try:
            return self._build()
        except TypeError as err:
            found = re.search(r"unexpected keyword argument '(\w+)'", str(err))
            if found is None or found.group(1) not in getattr(self._make_env, "keywords", {}):
                raise
            raise EnvFactoryError(
                f"{self.label}: the factory takes no keyword argument '{found.group(1)}' ({err})"
            ) from None

    def _build(self, **extra):
        env = self._make_env(**extra)
        if self._wrap_aec:
            from pettingzoo.utils.conversions import aec_to_parallel

            env = aec_to_parallel(env)
        return env

    def spec(self, agent: str) -> AgentSpec:
        return self.codecs[agent].spec

    # ------------------------------------------------------------------ reading one copy
    def _live(self, i: int, env) -> set[str]:
        """The agents still playing in copy ``i``: in ``env.agents`` and not flagged done."""
        return set(env.agents) - self._over[i]

    def _read_copy(self, i: int, obs_target: dict[str, np.ndarray], live: set[str]) -> None:
        env = self.envs[i]
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

    # ------------------------------------------------------------------ checking a user's env
    def _refuse(self, what: str) -> NoReturn:
        raise EnvFactoryError(f"{self.label}: {what}")

    def _check_obs(self, agent: str, obs, where: str) -> None:
        problem = self.codecs[agent].problem(obs)
        if problem is not None:
            self._refuse(
                f"agent '{agent}': the observation from {where} {problem}, which does not fit "
                f"its observation space {self.codecs[agent].obs_space}"
            )

    def _check_agents(self, env, where: str) -> None:
        strangers = [a for a in env.agents if a not in self.codecs]
        if strangers:
            self._refuse(
                f"env.agents after {where} holds '{strangers[0]}', which is not in "
                f"possible_agents {list(self.agents)}"
            )

    def _check_keys(self, name: str, values, where: str, needed) -> None:
        """``values`` (rewards, flags, ...) is a dict keyed by known agents, holding ``needed``."""
        if not isinstance(values, Mapping):
            self._refuse(f"{where} gave {name} {_show(values)}, not a dict keyed by agent")
        for a in values:
            if a not in self.codecs:
                self._refuse(
                    f"{where} gave {name} for unknown agent {_show(a)}; the env's agents are "
                    f"{list(self.agents)}"
                )
        for a in needed:
            if a not in values:
                self._refuse(
                    f"agent '{a}' is missing from the {name} of {where} ({_show(values)}); "
                    f"every agent {'that acted' if name == 'rewards' else 'still playing'} needs "
                    "one"
                )

    def _check_rewards(self, rewards: Mapping, where: str) -> None:
        for a, r in rewards.items():
            bad = _bad_number(r)
            if bad is not None:
                self._refuse(f"agent '{a}': the reward from {where} {_show(r)} is {bad}")

    def _check_reset(self, env, out) -> None:
        """A copy's first reset speaks PettingZoo >= 1.24's API and observes every agent in
        its space."""
        self._check_agents(env, "reset()")
        if self.turn_based:
            for a in env.agents:
                self._check_obs(a, env.observe(a), "observe() after reset()")
            return
        if isinstance(out, Mapping):
            self._refuse(
                "reset() returned only the observations, as the parallel API of PettingZoo "
                "before 1.23 did; dgsolve needs the parallel API of PettingZoo >= 1.24: "
                "reset(seed=None, options=None) -> (observations, infos)"
            )
        if not (isinstance(out, tuple | list) and len(out) == 2):
            self._refuse(
                f"reset() returned {_show(out)}; dgsolve needs the parallel API of PettingZoo "
                ">= 1.24: reset(seed=None, options=None) -> (observations, infos)"
            )
        obs, infos = out
        self._check_keys("observations", obs, "reset()", env.agents)
        self._check_keys("infos", infos, "reset()", ())
        for a in env.agents:
            self._check_obs(a, obs[a], "reset()")

    def _check_step(self, env, out, joint: Mapping) -> None:
        """A copy's first parallel step speaks PettingZoo >= 1.24's API: five dicts keyed by
        known agents, a finite reward for every agent that acted (a missing one would silently
        count as 0) and an observation of each agent left, in its space."""
        api = (
            "dgsolve needs the parallel API of PettingZoo >= 1.24: step(actions) -> "
            "(observations, rewards, terminations, truncations, infos)"
        )
        if isinstance(out, tuple | list) and len(out) == 4:
            self._refuse(
                "step() returned 4 values (observations, rewards, dones, infos), as the "
                f"parallel API of PettingZoo before 1.22 did; {api}"
            )
        if not (isinstance(out, tuple | list) and len(out) == 5):
            self._refuse(f"step() returned {_show(out)}; {api}")
        obs, rewards, terms, truncs, infos = out
        self._check_agents(env, "step()")
        self._check_keys("rewards", rewards, "step()", joint)
        self._check_rewards(rewards, "step()")
        for name, flags in (("terminations", terms), ("truncations", truncs), ("infos", infos)):
            self._check_keys(name, flags, "step()", ())
        self._check_keys("observations", obs, "step()", env.agents)
        for a, o in obs.items():
            self._check_obs(a, o, "step()")

    def _check_aec_step(self, env) -> None:
        """A copy's first AEC step: PettingZoo >= 1.24's flags, a finite reward for every agent
        in the env and observations in their spaces."""
        if not (hasattr(env, "terminations") and hasattr(env, "truncations")):
            self._refuse(
                "the env has no terminations/truncations (the AEC API of PettingZoo before "
                "1.22 had dones); dgsolve needs the AEC API of PettingZoo >= 1.24"
            )
        self._check_agents(env, "step()")
        self._check_keys("rewards", env.rewards, "step()", env.agents)
        self._check_rewards(env.rewards, "step()")
        self._check_keys("terminations", env.terminations, "step()", ())
        self._check_keys("truncations", env.truncations, "step()", ())
        for a in env.agents:
            self._check_obs(a, env.observe(a), "observe() after step()")

    def _reset_copy(self, i: int) -> None:
        env = self.envs[i]
        seed = self._episode_seed + i
        self._episode_seed += self.num_envs
        out = env.reset(seed=seed)
        if i in self._unchecked:
            self._check_reset(env, out)
        if not self.turn_based:
            self._last_obs[i], self._last_info[i] = out
        self._cycles[i] = 0
        for flags in self._agent_term.values():
            flags[i] = False
        self._over[i].clear()
        self._read_copy(i, self._obs, self._live(i, env))

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
        step = self._step_aec if self.turn_based else self._step_parallel
        live = step(i, env, np_actions)
        self._cycles[i] += 1
        capped = self.max_cycles is not None and self._cycles[i] >= self.max_cycles
        return not live or capped

    def _step_parallel(self, i: int, env, np_actions) -> set[str]:
        """Step parallel copy ``i``; return the agents left playing."""
        joint = {a: self.codecs[a].to_env(np_actions[a][i]) for a in env.agents}
        out = env.step(joint)
        if i in self._unchecked:
            self._check_step(env, out, joint)
            self._unchecked.discard(i)
        obs, rew, term, trunc, info = out
        self._collect(i, rew, term, trunc)
        self._last_obs[i], self._last_info[i] = obs, info
        live = self._live(i, env)
        if live:
            self._read_copy(i, self._obs, live)
        else:
            for a in obs:
                self.codecs[a].write_obs(self._obs[a][i], obs[a])
        return live

    def _step_aec(self, i: int, env, np_actions) -> set[str]:
        """Step AEC copy ``i`` (one move, then the finished agents' steps with None); return the
        agents left playing."""
        mover = env.agent_selection
        env.step(self.codecs[mover].to_env(np_actions[mover][i]))
        if i in self._unchecked:
            self._check_aec_step(env)
            self._unchecked.discard(i)
        self._collect_aec(i, env)
        # Agents that are done must be stepped with None until the env removes them; their
        # observation then is the one a truncated agent bootstraps from. Each such step removes
        # one, so one per agent at most: an env that keeps them has them all flagged done,
        # which ends the copy.
        for _ in range(len(self.agents)):
            done = env.agent_selection
            if not (env.agents and (env.terminations.get(done) or env.truncations.get(done))):
                break
            self.codecs[done].write_obs(self._obs[done][i], env.observe(done))
            env.step(None)
            self._collect_aec(i, env)
        live = self._live(i, env)
        if live:
            self._read_copy(i, self._obs, live)
        else:  # agents an env kept though done bootstrap from what they see now
            for a in env.agents:
                self.codecs[a].write_obs(self._obs[a][i], env.observe(a))
        return live

    def _collect_aec(self, i: int, env) -> None:
        """Add the rewards of the AEC step just taken and note agents it ended."""
        self._collect(i, env.rewards, env.terminations, env.truncations)

    def _collect(self, i: int, rewards: Mapping, terminations: Mapping, truncations: Mapping):
        """Add a step's rewards to copy ``i`` and note the agents it ended: terminated ones
        (``agent_terminated``) and truncated ones leave the copy."""
        for a, r in rewards.items():
            self._reward[a][i] += float(r)
        over = self._over[i]
        for a, ended in terminations.items():
            if ended:
                self._agent_term[a][i] = True
                over.add(a)
        over.update(a for a, ended in truncations.items() if ended)

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
        solo._over = [set(self._over[0])]
        solo._cycles = np.zeros(1, np.int64)
        solo._unchecked = {0}
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
