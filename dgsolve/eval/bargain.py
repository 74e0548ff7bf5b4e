"""Evaluation of bargaining policies: self-play, and play against the BARGAIN.md baselines.

``bargain_report`` plays the trained joint policy against itself and against every baseline,
seated as P1 and as P2, on common deals (``dgsolve.eval.crossplay``), and reports mean
normalised payoffs, welfare (their sum), agreement and walk rates.
"""

from __future__ import annotations

from typing import Any

import torch

from dgsolve.eval.crossplay import play_matches
from dgsolve.games.bargain.baselines import BASELINES, make_baseline
from dgsolve.games.bargain.config import BargainConfig
from dgsolve.games.bargain.rules import BargainRules

MATCH_KEYS = ("p1", "p2", "welfare", "agreement_rate")


class SeatedPolicy:
    """One policy object for a player whose network depends on its seat.

    A trained run has a policy per seat (``p1``, ``p2``); the observation says who moves, so
    each row is answered by the policy of the seat that is deciding. Rows where nobody of this
    seat decides are answered too, but the game ignores them.
    """

    def __init__(self, policies: dict[str, Any], rules: BargainRules):
        self.p1, self.p2 = policies["p1"], policies["p2"]
        self.player_index = rules.player_index

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, legal: torch.Tensor | None = None, greedy: bool = False
    ) -> torch.Tensor:
        as_p2 = obs[:, self.player_index] > 0.5
        a1 = self.p1.act(obs, legal, greedy)
        a2 = self.p2.act(obs, legal, greedy)
        return torch.where(as_p2, a2, a1)


def seated(policies: dict[str, Any], env_cfg) -> SeatedPolicy:
    return SeatedPolicy(policies, BargainRules.from_config(_game_cfg(env_cfg)))


def _game_cfg(env_cfg) -> BargainConfig:
    return BargainConfig.coerce(dict(env_cfg.items()))


def bargain_report(
    policies: dict[str, Any],
    env_cfg,
    num_games: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> dict:
    """``self_play`` and ``vs_baselines.<name>.{as_p1, as_p2}`` results of ``policies``."""
    game_cfg = _game_cfg(env_cfg)
    game_cfg.backend = "torch" if torch.device(device).type == "cpu" else game_cfg.backend
    player = seated(policies, env_cfg)
    rules = BargainRules.from_config(game_cfg)

    def match(first, second) -> dict[str, float]:
        return play_matches(game_cfg, first, second, num_games, seed, device=device)

    own = match(player, player)
    report = {"self_play": {k: own[k] for k in (*MATCH_KEYS, "walk_rate")}, "vs_baselines": {}}
    for name in BASELINES:
        baseline = make_baseline(name, rules, seed=seed)
        as_p1, as_p2 = match(player, baseline), match(baseline, player)
        report["vs_baselines"][name] = {
            "as_p1": {k: as_p1[k] for k in MATCH_KEYS},
            "as_p2": {k: as_p2[k] for k in MATCH_KEYS},
        }
    return report
