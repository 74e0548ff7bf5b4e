"""Step the torch MPE backend and mpe2 side by side from the same states and actions.

The method of JaxMARL's MPE tests: every episode, an mpe2 ParallelEnv is reset with its own
seed, its world is copied into one copy of the torch game (:meth:`TorchMPEGame.load_mpe2_state`),
and both are stepped with the same random actions to the end of the episode; the largest
differences in observations and rewards are reported. Used by ``tests/games/test_mpe_torch.py``
and ``benchmarks/mpe_equivalence.py``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dgsolve.games.mpe import make_torch, scenario_name


@dataclass
class Agreement:
    """The largest absolute differences found, over ``episodes`` episodes of ``steps`` steps."""

    scenario: str
    continuous: bool
    episodes: int
    steps: int
    obs: float
    reward: float
    #: episodes in which mpe2 and the torch game ended at different steps
    ends_differ: int

    def within(self, tol: float) -> bool:
        return self.obs <= tol and self.reward <= tol and self.ends_differ == 0


def _random_action(space, rng: np.random.Generator):
    if hasattr(space, "n"):
        return int(rng.integers(space.n))
    return rng.uniform(0.0, 1.0, space.shape).astype(np.float32)


def agreement(
    scenario: str,
    episodes: int = 100,
    seed: int = 0,
    continuous_actions: bool = False,
    **kwargs: Any,
) -> Agreement:
    """Play ``episodes`` seeded episodes in mpe2 and in the torch game (one copy each, all
    copies stepped together) with the same uniformly random actions and compare them."""
    name = scenario_name(scenario)
    game = make_torch(
        name, episodes, continuous_actions=continuous_actions, seed=seed, auto_reset=False, **kwargs
    )
    module = importlib.import_module(game.scenario.mpe2_module)
    envs = [
        module.parallel_env(continuous_actions=continuous_actions, **kwargs)
        for _ in range(episodes)
    ]
    rng = np.random.default_rng(seed)
    obs_gap = reward_gap = 0.0
    for k, env in enumerate(envs):
        first, _ = env.reset(seed=seed * 100_003 + k)
        game.load_mpe2_state(env, copy=k)
        obs_gap = max(obs_gap, _gap(first, game.observe(), k))
    alive = np.ones(episodes, bool)
    ends_differ = 0
    steps = 0
    while alive.any():
        steps += 1
        acts = {a: [] for a in game.agents}
        results = []
        for k, env in enumerate(envs):
            joint = {a: _random_action(env.action_space(a), rng) for a in game.agents}
            for a in game.agents:
                acts[a].append(joint[a])
            results.append(env.step(joint) if alive[k] else None)
        batch = {a: torch.as_tensor(np.stack(v)) for a, v in acts.items()}
        ts = game.step(batch)
        done = ts.done.cpu().numpy()
        for k, res in enumerate(results):
            if res is None:
                continue
            obs, rew, term, trunc, _ = res
            obs_gap = max(obs_gap, _gap(obs, ts.final_obs, k))
            reward_gap = max(
                reward_gap, max(abs(float(rew[a]) - float(ts.reward[a][k])) for a in game.agents)
            )
            ended = any(term.values()) or any(trunc.values())
            if ended != bool(done[k]):
                ends_differ += 1
            if ended or done[k]:
                alive[k] = False
    for env in envs:
        env.close()
    return Agreement(name, continuous_actions, episodes, steps, obs_gap, reward_gap, ends_differ)


def _gap(reference: dict, obs: dict[str, torch.Tensor], copy: int) -> float:
    gaps = [
        np.abs(np.asarray(reference[a], np.float64) - obs[a][copy].double().cpu().numpy())
        for a in reference
    ]
    return max(float(np.max(g, initial=0.0)) for g in gaps)
