"""The bargaining game (BARGAIN.md) as PettingZoo environments over one game.

``parallel_env(**kwargs)`` is a ParallelEnv: every live agent submits an action each step and only
the acting player's counts. ``env(**kwargs)`` is a native AEC env whose ``agent_selection`` is the
player to move, as in PettingZoo's classic board games. Both step the torch reference
(:class:`BargainGame` with one copy, on the CPU), so they follow the batched rules exactly.

Spaces (PettingZoo docs, "Environment creation"): observation ``Box(-1, 1, (obs_dim,))`` float32,
the 92-entry vector of BARGAIN.md, whose mask block is already the legal mask; action
``Discrete(num_actions)``. ``infos[agent]["action_mask"]`` (int8) repeats the mask: that is where
PettingZoo's API tests and most training loops look for it. An illegal or missing action of the
acting player is played as WALK, with a warning. ``kwargs`` are BargainConfig's rule knobs
(``quantities``, ``max_value``, ``rounds``, ``discount``, ``outside_offer``) and ``render_mode``
(``"ansi"`` returns a line of text, ``"human"`` prints it).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv

from dgsolve.errors import ConfigError
from dgsolve.games.bargain.config import BargainBackend, BargainConfig
from dgsolve.games.bargain.reference import BargainGame
from dgsolve.games.bargain.rules import AGENTS

RENDER_MODES = ("ansi", "human")
_RULE_KNOBS = ("quantities", "max_value", "rounds", "discount", "outside_offer")


class _OneGame:
    """One bargaining game behind both views: numpy observations, masks, legality, text."""

    def __init__(self, render_mode: str | None, kwargs: dict[str, Any]):
        unknown = sorted(set(kwargs) - set(_RULE_KNOBS))
        if unknown:
            raise ConfigError(
                f"unknown bargain env argument(s) {unknown}; known: "
                f"{sorted((*_RULE_KNOBS, 'render_mode'))}"
            )
        if render_mode not in (None, *RENDER_MODES):
            raise ConfigError(f"render_mode={render_mode!r}; use None or one of {RENDER_MODES}")
        cfg = BargainConfig.coerce({**kwargs, "num_envs": 1, "backend": BargainBackend.torch})
        self.render_mode = render_mode
        self.game = BargainGame(cfg, "cpu")
        self.rules = self.game.rules
        self.observation_spaces = {
            a: spaces.Box(-1.0, 1.0, (self.rules.obs_dim,), np.float32) for a in AGENTS
        }
        self.action_spaces = {a: spaces.Discrete(self.rules.num_actions) for a in AGENTS}
        self.obs: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}
        self.acting = AGENTS[0]
        self.over = False

    def start(self, seed: int | None) -> None:
        self._show(self.game.reset(seed), final=False)

    def play(self, action: Any) -> tuple[dict[str, float], bool]:
        """Play ``action`` for the acting player; rewards of both and whether the game ended."""
        action = torch.tensor([self.legalise(action, self.acting)])
        ts = self.game.step({a: action for a in AGENTS})  # the idle player's action is ignored
        done = bool(ts.terminated[0])
        self._show(ts, final=done)
        return {a: float(ts.reward[a][0]) for a in AGENTS}, done

    def legalise(self, action: Any, agent: str) -> int:
        try:
            a = int(action)
        except (TypeError, ValueError):
            a = -1
        if not (0 <= a < self.rules.num_actions and self.masks[agent][a]):
            warnings.warn(
                f"bargain: illegal action {action!r} for {agent}; played as WALK", stacklevel=3
            )
            return self.rules.walk
        return a

    def _show(self, ts, final: bool) -> None:
        obs = ts.final_obs if final else ts.obs
        self.obs = {a: obs[a][0].numpy().copy() for a in AGENTS}
        self.masks = {a: self.obs[a][self.rules.mask_slice].astype(np.int8) for a in AGENTS}
        self.acting = AGENTS[1] if bool(ts.acting[AGENTS[1]][0]) else AGENTS[0]
        self.over = final

    def text(self) -> str:
        """One line: round, whose move (or the end), and the offer on the table."""
        r, obs = self.rules, self.obs[AGENTS[0]]
        rnd = round(float(obs[r.round_index]) * max(r.rounds - 1, 1))
        if obs[r.has_offer_index] == 0:
            table = "no offer"
        else:
            kept = [
                round(float(x * q)) for x, q in zip(obs[r.offer_slice], r.quantities, strict=True)
            ]
            table = f"P1 would keep {kept} of {list(r.quantities)}"
        turn = "game over" if self.over else f"{self.acting} to move"
        return f"round {rnd}, {turn}, {table}"

    def render(self) -> str | None:
        if self.render_mode is None:
            warnings.warn("bargain: render() called without a render_mode", stacklevel=3)
            return None
        line = self.text()
        if self.render_mode == "human":
            print(line)
            return None
        return line


class _OneGameView:
    """What both PettingZoo views share: one game, its agents and their spaces."""

    def _setup(self, render_mode: str | None, kwargs: dict[str, Any]) -> None:
        self._one = _OneGame(render_mode, kwargs)
        self.render_mode = render_mode
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []

    def observation_space(self, agent: str) -> spaces.Box:
        return self._one.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._one.action_spaces[agent]


class BargainParallelEnv(_OneGameView, ParallelEnv):
    """Parallel API: both players act every step; the idle player's action is ignored."""

    metadata = {"name": "bargain_v0", "render_modes": list(RENDER_MODES), "is_parallelizable": True}

    def __init__(self, render_mode: str | None = None, **kwargs: Any):
        self._setup(render_mode, kwargs)

    def reset(self, seed: int | None = None, options: dict | None = None):
        self._one.start(seed)
        self.agents = list(self.possible_agents)
        return dict(self._one.obs), self._infos()

    def step(self, actions: dict[str, Any]):
        rewards, done = self._one.play(actions.get(self._one.acting))
        live = list(self.agents)
        if done:
            self.agents = []
        obs = {a: self._one.obs[a] for a in live}
        terminations = {a: done for a in live}
        truncations = {a: False for a in live}
        infos = {a: i for a, i in self._infos().items() if a in live}
        return obs, {a: rewards[a] for a in live}, terminations, truncations, infos

    def _infos(self) -> dict[str, dict[str, np.ndarray]]:
        return {a: {"action_mask": self._one.masks[a]} for a in self.possible_agents}

    def render(self) -> str | None:
        return self._one.render()

    def close(self) -> None:
        """Nothing to release."""


class BargainAECEnv(_OneGameView, AECEnv):
    """AEC API: ``agent_selection`` is the player to move (P1 first)."""

    metadata = {"name": "bargain_v0", "render_modes": list(RENDER_MODES), "is_parallelizable": True}

    def __init__(self, render_mode: str | None = None, **kwargs: Any):
        super().__init__()
        self._setup(render_mode, kwargs)

    def observe(self, agent: str) -> np.ndarray:
        return self._one.obs[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self._one.start(seed)
        self.agents = list(self.possible_agents)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {"action_mask": self._one.masks[a]} for a in self.agents}
        self.agent_selection = self._one.acting

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self.rewards, done = self._one.play(action)
        self.infos = {a: {"action_mask": self._one.masks[a]} for a in self.agents}
        if done:
            self.terminations = {a: True for a in self.agents}
            # the other player then leaves first, as in PettingZoo's classic games
            self.agent_selection = AGENTS[1] if agent == AGENTS[0] else AGENTS[0]
        else:
            self.agent_selection = self._one.acting
        self._accumulate_rewards()

    def render(self) -> str | None:
        return self._one.render()

    def close(self) -> None:
        """Nothing to release."""


def parallel_env(**kwargs: Any) -> BargainParallelEnv:
    """The bargaining game as a PettingZoo ParallelEnv (agents "p1", "p2")."""
    return BargainParallelEnv(**kwargs)


def env(**kwargs: Any) -> BargainAECEnv:
    """The bargaining game as a PettingZoo AEC env (agents "p1", "p2")."""
    return BargainAECEnv(**kwargs)
