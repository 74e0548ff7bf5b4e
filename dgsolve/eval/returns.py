"""Mean episodic returns of a joint policy, and the uniformly random reference."""

from __future__ import annotations

from collections.abc import Callable

import torch

from dgsolve.games.base import Game, TimeStep

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
            for i in torch.nonzero(ts.done).flatten().tolist():
                for a in game.agents:
                    finished[a].append(float(running[a][i]))
            for r in running.values():
                r[ts.done] = 0.0
    return {a: sum(v[:episodes]) / max(1, len(v[:episodes])) for a, v in finished.items()}


def uniform_random_actions(game: Game, generator: torch.Generator) -> ActFn:
    """An ``act`` function drawing uniformly random legal actions for every agent."""

    def act(ts: TimeStep) -> dict[str, torch.Tensor]:
        actions = {}
        for a in game.agents:
            spec = game.spec(a)
            if spec.discrete:
                weights = ts.legal[a].float()
                actions[a] = torch.multinomial(weights, 1, generator=generator).squeeze(1)
            else:
                low = torch.tensor(spec.low, device=game.device)
                high = torch.tensor(spec.high, device=game.device)
                shape = (game.num_envs, spec.action_dim)
                u = torch.rand(shape, generator=generator, device=game.device)
                actions[a] = low + (high - low) * u
        return actions

    return act
