"""Episodic returns of a joint policy: means, per game in pairs, and the uniformly random
reference."""

from __future__ import annotations

from collections.abc import Callable

import torch

from dgsolve.games.base import Game, TimeStep
from dgsolve.policy import UniformPolicy

ActFn = Callable[[TimeStep], dict[str, torch.Tensor]]


def evaluate_returns(game: Game, act: ActFn, episodes: int, seed: int, max_steps: int = 100_000):
    """Play until ``episodes`` games have finished; mean return per agent over the first ones.

    Games finishing in the same step are taken in copy order, so the result is deterministic for
    a deterministic ``act``.
    """
    ts = game.reset(seed=seed)
    running = {a: torch.zeros(game.num_envs, device=game.device) for a in game.agents}
    finished: dict[str, list[float]] = {a: [] for a in game.agents}
    steps = 0
    while len(finished[game.agents[0]]) < episodes and steps < max_steps:
        ts = game.step(act(ts))
        steps += 1
        for a in game.agents:
            running[a] += ts.reward[a]
        if ts.done.any():
            for a in game.agents:  # the finished copies' returns, in copy order, at once
                finished[a] += running[a][ts.done].tolist()
            for r in running.values():
                r[ts.done] = 0.0
    return {a: sum(v[:episodes]) / max(1, len(v[:episodes])) for a, v in finished.items()}


def uniform_random_actions(game: Game, generator: torch.Generator) -> ActFn:
    """An ``act`` function drawing uniformly random legal actions for every agent."""
    policies = {a: UniformPolicy(game.spec(a), generator) for a in game.agents}

    def act(ts: TimeStep) -> dict[str, torch.Tensor]:
        return {a: p.act(ts.obs[a], ts.legal[a]) for a, p in policies.items()}

    return act


def first_game_returns(
    game: Game, act: ActFn, num_games: int, seed: int, max_steps: int = 100_000
) -> dict[str, torch.Tensor]:
    """Each agent's return in ``num_games`` games, ``[num_games]`` per agent, in a fixed order.

    The games are played in batches of ``game.num_envs``; batch ``b`` is reset with seed
    ``seed + b`` and each copy contributes its first game. Two policies played with the same
    ``game``, ``num_games`` and ``seed`` thus meet the same starting draws game by game, so their
    returns can be compared in pairs (common random numbers).
    """
    out: dict[str, list[torch.Tensor]] = {a: [] for a in game.agents}
    played, batch = 0, 0
    while played < num_games:
        take = min(game.num_envs, num_games - played)
        ts = game.reset(seed=seed + batch)
        running = {a: torch.zeros(game.num_envs, device=game.device) for a in game.agents}
        first = {a: torch.zeros(game.num_envs, device=game.device) for a in game.agents}
        ended = torch.zeros(game.num_envs, dtype=torch.bool, device=game.device)
        for _ in range(max_steps):
            ts = game.step(act(ts))
            new = ts.done & ~ended
            for a in game.agents:
                running[a] += ts.reward[a]
                first[a] = torch.where(new, running[a], first[a])
            ended |= ts.done
            if bool(ended.all()):
                break
        else:
            raise RuntimeError(f"a game did not end within {max_steps} steps")
        for a in game.agents:
            out[a].append(first[a][:take].cpu())
        played += take
        batch += 1
    return {a: torch.cat(v) for a, v in out.items()}
