"""Cross-play on the bargaining game: each policy as P1 against each as P2.

``play_matches`` plays a number of fresh games between two policies and reports mean normalised
payoffs, welfare (their sum) and how games ended (BARGAIN.md: every game ends by ACCEPT or WALK).
``crossplay_matrix`` does so for every ordered pair, on the same deals for every pair (one seed,
common random numbers), so differences between cells come from the policies, not the draws.
A policy is anything with ``act(obs, legal, greedy) -> actions`` (dgsolve.policy.Policy): learned
policies and the scripted baselines of ``dgsolve.games.bargain.baselines`` alike.

How a game ended is read from the game's ``last_outcome`` (``[B]`` int8: 0 running, 1 ACCEPT,
2 WALK), which :class:`dgsolve.games.bargain.BargainGame` sets on every step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dgsolve.errors import CapabilityError, ConfigError
from dgsolve.games.bargain import make_bargain
from dgsolve.games.bargain.config import BargainConfig
from dgsolve.games.bargain.reference import ACCEPTED, WALKED
from dgsolve.games.base import Game

if TYPE_CHECKING:
    from dgsolve.policy import Policy

#: copies stepped together when play_matches builds its own game.
MAX_BATCH = 65_536


def play_matches(
    game: Game | BargainConfig | Any,
    policy_p1: Policy,
    policy_p2: Policy,
    num_games: int,
    seed: int,
    device: torch.device | str | None = None,
    greedy: bool = False,
) -> dict[str, float]:
    """Mean results of ``num_games`` games, ``policy_p1`` as P1 and ``policy_p2`` as P2.

    ``game`` is a bargaining Game (played in batches of its ``num_envs``) or a config for one
    (built with up to MAX_BATCH copies on ``device``). Each batch is reset with its own seed
    (``seed``, ``seed + 1``, ...) and contributes each copy's first game. Returns ``p1``, ``p2``
    (mean normalised payoffs), ``welfare`` (their sum), ``agreement_rate`` (fraction ended by
    ACCEPT), ``walk_rate`` (fraction ended by WALK) and ``games``.
    """
    if num_games < 1:
        raise ConfigError(f"num_games={num_games}; play at least one game")
    if not isinstance(game, Game):
        cfg = BargainConfig.coerce(game)
        cfg.num_envs = min(num_games, MAX_BATCH)
        game = make_bargain(cfg, device)
    if not hasattr(game, "last_outcome"):
        raise CapabilityError(
            f"{type(game).__name__} does not report how games end (last_outcome); "
            "cross-play needs the bargaining game"
        )
    totals = {"p1": 0.0, "p2": 0.0, "accepted": 0, "walked": 0}
    played, batch = 0, 0
    while played < num_games:
        take = min(game.num_envs, num_games - played)
        result = _play_batch(game, policy_p1, policy_p2, seed + batch, greedy)
        for key, value in result.items():
            totals[key] += float(value[:take].sum())
        played += take
        batch += 1
    p1, p2 = totals["p1"] / played, totals["p2"] / played
    return {
        "p1": p1,
        "p2": p2,
        "welfare": p1 + p2,
        "agreement_rate": totals["accepted"] / played,
        "walk_rate": totals["walked"] / played,
        "games": played,
    }


def _play_batch(
    game: Game, policy_p1: Policy, policy_p2: Policy, seed: int, greedy: bool
) -> dict[str, torch.Tensor]:
    """Per copy: the first game's payoffs and whether it ended by ACCEPT or WALK."""
    p1, p2 = game.agents
    ts = game.reset(seed=seed)
    first = torch.zeros(game.num_envs, dtype=torch.bool, device=game.device)
    out = {
        "p1": torch.zeros(game.num_envs, device=game.device),
        "p2": torch.zeros(game.num_envs, device=game.device),
        "accepted": torch.zeros(game.num_envs, dtype=torch.bool, device=game.device),
        "walked": torch.zeros(game.num_envs, dtype=torch.bool, device=game.device),
    }
    # Every game ends within 2 * rounds decisions; the bound guards against a game that does not.
    for _ in range(2 * game.rules.rounds):
        actions = {
            p1: policy_p1.act(ts.obs[p1], ts.legal[p1], greedy),
            p2: policy_p2.act(ts.obs[p2], ts.legal[p2], greedy),
        }
        ts = game.step(actions)
        new = ts.terminated & ~first
        out["p1"] = torch.where(new, ts.reward[p1], out["p1"])
        out["p2"] = torch.where(new, ts.reward[p2], out["p2"])
        out["accepted"] |= new & (game.last_outcome == ACCEPTED)
        out["walked"] |= new & (game.last_outcome == WALKED)
        first |= ts.terminated
        if bool(first.all()):
            return out
    raise RuntimeError("a bargaining game did not end within 2 * rounds decisions")


def crossplay_matrix(
    policies: dict[str, Policy],
    num_games: int,
    seed: int,
    device: torch.device | str | None = None,
    game_cfg: BargainConfig | Any = None,
    greedy: bool = False,
) -> dict[str, Any]:
    """Every ordered pair of ``policies`` on the same deals: ``M[i][j]`` is policy ``i`` as P1
    against policy ``j`` as P2, for ``p1``, ``p2``, ``welfare``, ``agreement_rate`` and
    ``walk_rate``; ``policies`` lists the names in row order."""
    names = list(policies)
    cfg = BargainConfig.coerce(game_cfg)
    cfg.num_envs = min(num_games, MAX_BATCH)
    game = make_bargain(cfg, device)
    keys = ("p1", "p2", "welfare", "agreement_rate", "walk_rate")
    table: dict[str, Any] = {"policies": names, **{k: [] for k in keys}}
    for row in names:
        results = [
            play_matches(game, policies[row], policies[col], num_games, seed, greedy=greedy)
            for col in names
        ]
        for k in keys:
            table[k].append([r[k] for r in results])
    return table
