"""Exact NashConv of dgsolve bargaining policies on small variants, through OpenSpiel.

    NashConv(π) = Σ_i [ max_{π'_i} u_i(π'_i, π_-i) − u_i(π) ]

(Lanctot et al., "A Unified Game-Theoretic Approach to Multiagent Reinforcement Learning", NIPS
2017). The variant is loaded as the OpenSpiel game ``dgsolve_bargain``
(:mod:`dgsolve.games.bargain.openspiel_game`), whose ``observation_tensor`` is dgsolve's
Markov observation of BARGAIN.md. A dgsolve policy reads that observation alone, so it is a
behavioural strategy of the OpenSpiel game (its information states see at least as much).

Each player's policy is asked once, in one batch, for every observation the player can meet
at its decisions (:func:`observations`); OpenSpiel's exact best response
(``open_spiel.python.algorithms.best_response.BestResponsePolicy``) and on-policy values
(``expected_game_score.policy_value``) then read those rows through a ``policy.Policy`` keyed
by observation string — the sum that ``exploitability.nash_conv`` returns, kept per player.

OpenSpiel's best response walks the whole tree in Python, several times: about 15 s for the
59,035 histories of ``quantities=[2, 1], max_value=3, rounds=1`` under a fully mixed profile
(less where the policies leave actions unplayed: those subtrees are not walked). A variant with
more than :data:`MAX_HISTORIES` histories (counted from the rules by
:func:`~dgsolve.games.bargain.openspiel_game.num_histories`) is refused. BARGAIN.md's defaults
are far beyond reach (their deals alone number about 4·10^17); a learned best response
(``task=exploit``) is what measures them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from open_spiel.python import policy as os_policy
from open_spiel.python.algorithms import best_response, expected_game_score
from torch.distributions import Categorical

from dgsolve.errors import CapabilityError, ConfigError
from dgsolve.games.bargain.baselines import BargainBaseline, RandomBaseline
from dgsolve.games.bargain.openspiel_game import load, load_string, num_histories
from dgsolve.games.bargain.rules import AGENTS, BargainRules
from dgsolve.policy import MixturePolicy

#: the largest tree (histories: chance, decision and terminal nodes) walked for an exact figure
MAX_HISTORIES = 2_000_000


def bargain_rules(rules: Any) -> BargainRules:
    """``rules`` as a BargainRules (a BargainRules, a BargainConfig, a mapping of its fields)."""
    return rules if isinstance(rules, BargainRules) else BargainRules.from_config(rules)


def check_size(rules: BargainRules) -> int:
    """The number of histories of the variant, refused with a one-line :class:`ConfigError`
    above :data:`MAX_HISTORIES`."""
    size = num_histories(rules)
    if size > MAX_HISTORIES:
        raise ConfigError(
            f"exact NashConv walks the whole tree, and quantities={list(rules.quantities)} "
            f"max_value={rules.max_value} rounds={rules.rounds} has {size:.2g} histories "
            f"(at most {MAX_HISTORIES:.0e}); shrink the variant or use task=exploit"
        )
    return size


# --------------------------------------------------------------------------- observations
def observations(game, player: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every observation ``player`` meets at its own decisions in ``game`` (a
    ``dgsolve_bargain`` game): the observation strings, float32 tensors ``[N, obs_dim]`` and
    legal masks ``[N, num_actions]``, in the order of a depth-first walk.

    A Markov observation holds no private information of the other player and the legal
    actions never depend on the deal, so the other player's deal is fixed to its first chance
    outcomes: the walk covers ``deals x decisions``, not ``deals² x decisions``.
    """
    keys: dict[str, int] = {}
    tensors, legals = [], []
    stack = [game.new_initial_state()]
    while stack:
        state = stack.pop()
        if state.is_terminal():
            continue
        if state.is_chance_node():
            outcomes = state.chance_outcomes()
            if state.dealing_player() != player:
                outcomes = outcomes[:1]
            stack.extend(state.child(a) for a, _ in reversed(outcomes))
            continue
        if state.current_player() == player:
            key = state.observation_string(player)
            if key not in keys:
                keys[key] = len(keys)
                tensors.append(np.asarray(state.observation_tensor(player), np.float32))
                legals.append(np.asarray(state.legal_actions_mask(player), bool))
        stack.extend(state.child(a) for a in reversed(state.legal_actions()))
    return list(keys), np.stack(tensors), np.stack(legals)


@torch.no_grad()
def action_probabilities(policy: Any, obs: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
    """The action probabilities ``[B, num_actions]`` of a dgsolve bargaining policy at
    observations ``obs`` with legal masks ``legal``.

    Accepted: anything with ``distribution(obs, legal)`` (the exact policies of
    :mod:`dgsolve.policy`), a :class:`~dgsolve.policy.NetPolicy` (its network's distribution),
    and the BARGAIN.md baselines: ``random`` is uniform over the legal actions, the others are
    deterministic (their greedy action, with probability 1).
    """
    if hasattr(policy, "distribution"):
        dist = policy.distribution(obs, legal)
    elif hasattr(policy, "net") and hasattr(policy, "prepare"):
        dist = policy.net.distribution(policy.prepare(obs), legal)
    elif isinstance(policy, RandomBaseline):
        dist = Categorical(probs=legal.to(torch.float64))
    elif isinstance(policy, MixturePolicy):
        raise CapabilityError(
            "the policies are mixtures of policies (PSRO's meta-strategy), which no one policy "
            "of the Markov observation plays; measure them with task=exploit"
        )
    elif isinstance(policy, BargainBaseline):
        action = policy.act(obs, legal, greedy=True)
        return torch.nn.functional.one_hot(action, legal.shape[1]).to(torch.float64)
    else:
        raise ConfigError(
            f"{type(policy).__name__} is not a policy exact NashConv can read: give one with "
            "distribution(obs, legal), a NetPolicy or a bargaining baseline"
        )
    return dist.probs.to(torch.float64)


def policy_rows(
    policy: Any, keys: list[str], obs: np.ndarray, legal: np.ndarray, device: Any = "cpu"
) -> dict[str, dict[int, float]]:
    """``{observation string: {action: probability}}`` of ``policy`` at the observations
    ``obs`` (one batch), renormalised in float64 over the legal actions; actions of probability
    0 are left out, so OpenSpiel does not walk what is never played. A row without probability
    on any legal action (or with a non-finite one) is an error: the policy is undefined there.
    """
    x = torch.from_numpy(obs).to(device)
    mask = torch.from_numpy(legal).to(device)
    probs = action_probabilities(policy, x, mask).cpu().numpy()
    probs = np.where(legal, probs, 0.0)
    mass = probs.sum(1)
    bad = ~(np.isfinite(mass) & (mass > 0))
    if bad.any():
        raise ValueError(
            f"the policy gives no finite probability to any legal action at {int(bad.sum())} "
            f"observations, e.g. {keys[int(np.flatnonzero(bad)[0])]!r}"
        )
    probs /= mass[:, None]
    rows = {}
    for key, row in zip(keys, probs, strict=True):
        played = np.flatnonzero(row > 0)
        rows[key] = {int(a): float(row[a]) for a in played}
    return rows


class ObservationPolicy(os_policy.Policy):
    """An OpenSpiel policy that plays, at every decision, the row of the mover's observation
    string in ``rows[player]`` (:func:`policy_rows`)."""

    def __init__(self, game, rows: list[dict[str, dict[int, float]]]):
        super().__init__(game, list(range(game.num_players())))
        self.rows = rows

    def action_probabilities(self, state, player_id=None) -> dict[int, float]:
        player = state.current_player() if player_id is None else player_id
        return self.rows[player][state.observation_string(player)]


# --------------------------------------------------------------------------- NashConv
def bargain_nash_conv(rules: Any, policies: Any, device: Any = "cpu") -> dict[str, Any]:
    """Exact NashConv of dgsolve bargaining policies on a small variant.

    ``rules``: a BargainRules, a BargainConfig or a mapping of its fields. ``policies``:
    ``{"p1": policy, "p2": policy}`` (or a one-tier JointPolicy), each acting on the Markov
    observation (see :func:`action_probabilities` for what a policy may be).

    Returns ``{"nash_conv", "gains": {agent: best-response value − value}, "values": {agent:
    value of the profile}, "best_response_values", "game" (the OpenSpiel load string),
    "num_histories", "num_observations": {agent: count}}``; values are normalised payoffs
    (BARGAIN.md rule 11).
    """
    rules = bargain_rules(rules)
    size = check_size(rules)
    hierarchy = getattr(policies, "hierarchy", None)
    if hierarchy is not None and not hierarchy.is_simultaneous:
        raise ConfigError(
            "exact NashConv needs hierarchy=simultaneous: the OpenSpiel game fixes who moves "
            "when, and a policy that sees other tiers' actions is not a policy of it"
        )
    policies = getattr(policies, "policies", policies)
    if not isinstance(policies, Mapping) or set(policies) != set(AGENTS):
        raise ConfigError(f"bargain_nash_conv needs a policy per agent {list(AGENTS)}")
    game = load(rules)
    rows, counts = [], {}
    for player, agent in enumerate(AGENTS):
        keys, obs, legal = observations(game, player)
        rows.append(policy_rows(policies[agent], keys, obs, legal, device))
        counts[agent] = len(keys)
    profile = ObservationPolicy(game, rows)
    root = game.new_initial_state()
    values = expected_game_score.policy_value(root, [profile] * game.num_players())
    best = [
        best_response.BestResponsePolicy(game, player, profile).value(root)
        for player in range(game.num_players())
    ]
    gains = {agent: float(best[p] - values[p]) for p, agent in enumerate(AGENTS)}
    return {
        "nash_conv": math.fsum(gains.values()),
        "gains": gains,
        "values": {agent: float(values[p]) for p, agent in enumerate(AGENTS)},
        "best_response_values": {agent: float(best[p]) for p, agent in enumerate(AGENTS)},
        "game": load_string(rules),
        "num_histories": size,
        "num_observations": counts,
    }


__all__ = [
    "MAX_HISTORIES",
    "ObservationPolicy",
    "action_probabilities",
    "bargain_nash_conv",
    "check_size",
    "observations",
    "policy_rows",
]
