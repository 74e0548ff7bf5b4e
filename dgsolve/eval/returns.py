"""Episodic returns of a joint policy: means, per game in pairs, and the uniformly random
reference.

Every episode played here is bounded (:func:`max_episode_steps`): a game whose episode outlasts
the bound is refused in one line (:class:`~dgsolve.errors.ConfigError` naming the game and the
bound), not averaged over the episodes that did end, which would report returns of a game that
was never played to its end.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dgsolve.errors import ConfigError
from dgsolve.games.base import Game, TimeStep
from dgsolve.policy import UniformPolicy

ActFn = Callable[[TimeStep], dict[str, torch.Tensor]]

#: steps an evaluated episode may last in a game that states no length of its own
#: (``episode_steps`` or ``max_cycles``): user PettingZoo envs without ``env.max_cycles``,
#: OpenSpiel and bargaining games
DEFAULT_MAX_EPISODE_STEPS = 10_000


def _inner(game: Game) -> Game:
    """The game that a view of one agent (:class:`~dgsolve.games.frozen.FixedOpponents`)
    plays, or ``game`` itself."""
    inner = getattr(game, "game", None)
    return inner if isinstance(inner, Game) else game


def max_episode_steps(game: Game) -> tuple[int, str]:
    """The most steps one episode of ``game`` may last, and where that bound comes from: its
    ``episode_steps`` (matrix and LQ games), its ``max_cycles`` (torch MPE, the PettingZoo
    adapter's ``env.max_cycles``, an OpenSpiel game's longest game), else
    :data:`DEFAULT_MAX_EPISODE_STEPS`."""
    if game.episode_steps:
        return int(game.episode_steps), "its episode_steps"
    inner = _inner(game)
    max_cycles = getattr(inner, "max_cycles", None)
    if max_cycles:
        return int(max_cycles), "its max_cycles"
    source = "dgsolve's default where a game states no episode length"
    if hasattr(inner, "max_cycles"):  # a PettingZoo env run without env.max_cycles
        source += ": set env.max_cycles for longer episodes"
    return DEFAULT_MAX_EPISODE_STEPS, source


def _game_label(game: Game) -> str:
    inner = _inner(game)
    label = getattr(inner, "label", None)
    if label:
        return str(label)
    name = getattr(getattr(inner, "cfg", None), "name", None)
    return f"env={name}" if name else type(inner).__name__


def _step_limit(game: Game, max_steps: int | None) -> tuple[int, str]:
    if max_steps is None:
        return max_episode_steps(game)
    return int(max_steps), f"max_steps={int(max_steps)}"


def _endless(game: Game, limit: int, source: str) -> ConfigError:
    return ConfigError(
        f"{_game_label(game)}: an evaluated episode did not end within {limit:,} steps "
        f"({source}); a game must end every episode (a PettingZoo env by removing its finished "
        "agents from env.agents)"
    )


def evaluate_returns(
    game: Game, act: ActFn, episodes: int, seed: int, max_steps: int | None = None
) -> dict[str, float]:
    """Play until ``episodes`` games have finished; mean return per agent over the first ones.

    Games finishing in the same step are taken in copy order, so the result is deterministic for
    a deterministic ``act``. ``max_steps`` bounds each episode (``None``:
    :func:`max_episode_steps`); an episode that outlasts it is a one-line :class:`ConfigError`.
    """
    limit, source = _step_limit(game, max_steps)
    ts = game.reset(seed=seed)
    running = {a: torch.zeros(game.num_envs, device=game.device) for a in game.agents}
    finished: dict[str, list[float]] = {a: [] for a in game.agents}
    # steps of each copy's current episode, kept on the CPU: checking it costs no device sync
    length = torch.zeros(game.num_envs, dtype=torch.long)
    while len(finished[game.agents[0]]) < episodes:
        ts = game.step(act(ts))
        length += 1
        for a in game.agents:
            running[a] += ts.reward[a]
        if ts.done.any():
            for a in game.agents:  # the finished copies' returns, in copy order, at once
                finished[a] += running[a][ts.done].tolist()
            for r in running.values():
                r[ts.done] = 0.0
            length[ts.done.cpu()] = 0
        if int(length.max()) >= limit:
            raise _endless(game, limit, source)
    return {a: sum(v[:episodes]) / max(1, len(v[:episodes])) for a, v in finished.items()}


def uniform_random_actions(game: Game, generator: torch.Generator) -> ActFn:
    """An ``act`` function drawing uniformly random legal actions for every agent."""
    policies = {a: UniformPolicy(game.spec(a), generator) for a in game.agents}

    def act(ts: TimeStep) -> dict[str, torch.Tensor]:
        return {a: p.act(ts.obs[a], ts.legal[a]) for a, p in policies.items()}

    return act


def first_game_returns(
    game: Game, act: ActFn, num_games: int, seed: int, max_steps: int | None = None
) -> dict[str, torch.Tensor]:
    """Each agent's return in ``num_games`` games, ``[num_games]`` per agent, in a fixed order.

    The games are played in batches of ``game.num_envs``; batch ``b`` is reset with seed
    ``seed + b`` and each copy contributes its first game. Two policies played with the same
    ``game``, ``num_games`` and ``seed`` thus meet the same starting draws game by game, so their
    returns can be compared in pairs (common random numbers). ``max_steps`` bounds each game
    (``None``: :func:`max_episode_steps`); one that outlasts it is a one-line
    :class:`ConfigError`.
    """
    limit, source = _step_limit(game, max_steps)
    out: dict[str, list[torch.Tensor]] = {a: [] for a in game.agents}
    played, batch = 0, 0
    while played < num_games:
        take = min(game.num_envs, num_games - played)
        ts = game.reset(seed=seed + batch)
        running = {a: torch.zeros(game.num_envs, device=game.device) for a in game.agents}
        first = {a: torch.zeros(game.num_envs, device=game.device) for a in game.agents}
        ended = torch.zeros(game.num_envs, dtype=torch.bool, device=game.device)
        for _ in range(limit):
            ts = game.step(act(ts))
            new = ts.done & ~ended
            for a in game.agents:
                running[a] += ts.reward[a]
                first[a] = torch.where(new, running[a], first[a])
            ended |= ts.done
            if bool(ended.all()):
                break
        else:
            raise _endless(game, limit, source)
        for a in game.agents:
            out[a].append(first[a][:take].cpu())
        played += take
        batch += 1
    return {a: torch.cat(v) for a, v in out.items()}
