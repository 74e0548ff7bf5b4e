"""The sequence form: exact payoffs of tabular profiles and mixtures as behaviour policies."""

from __future__ import annotations

import numpy as np
import pytest

pyspiel = pytest.importorskip("pyspiel")

from dgsolve.eval.openspiel_eq import game_of, openspiel_policy  # noqa: E402
from dgsolve.eval.sequence_form import mixture_table, sequence_form  # noqa: E402

GAMES = ["kuhn_poker", "leduc_poker", "kuhn_poker(players=3)"]


def random_policies(sf, player: int, count: int, rng) -> np.ndarray:
    legal = sf.info.legal[sf.info.of_player(player)]
    probs = rng.random((count, *legal.shape)) * legal
    return probs / probs.sum(-1, keepdims=True)


def as_table(sf, rows_by_player: list[np.ndarray]) -> dict[str, list[float]]:
    table = {}
    for player, rows in enumerate(rows_by_player):
        for row, probs in zip(sf.info.of_player(player), rows, strict=True):
            table[sf.info.keys[row]] = probs.tolist()
    return table


def openspiel_values(load_string: str, table: dict) -> list[float]:
    policy = pyspiel.TabularPolicy(openspiel_policy(load_string, table))
    return pyspiel.expected_returns(game_of(load_string).new_initial_state(), policy, -1, True)


@pytest.mark.parametrize("load_string", GAMES)
def test_payoffs_of_every_profile_equal_openspiel_expected_returns(load_string):
    sf = sequence_form(load_string)
    rng = np.random.default_rng(0)
    n = sf.info.num_players
    members = [random_policies(sf, p, 3, rng) for p in range(n)]
    payoffs = sf.payoffs([sf.realization(p, m) for p, m in enumerate(members)])
    assert all(u.shape == (3,) * n for u in payoffs)
    for profile in [(0,) * n, (2, 1, 0)[:n], (1, 2, 2)[:n]]:
        table = as_table(sf, [members[p][k] for p, k in enumerate(profile)])
        expected = openspiel_values(load_string, table)
        assert [u[profile] for u in payoffs] == pytest.approx(expected, abs=1e-12)
        plans = [sf.realization(p, m) for p, m in enumerate(members)]
        assert sf.leaf_probabilities(plans, profile).sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("load_string", ["kuhn_poker", "leduc_poker"])
def test_a_mixture_plays_as_its_behaviour_policy(load_string):
    # Kuhn's theorem: in a game of perfect recall, the mixture that picks policy k with
    # probability w_k before the game and the behaviour policy of mixture_table have the same
    # payoff against every opponent
    sf = sequence_form(load_string)
    rng = np.random.default_rng(1)
    members = random_policies(sf, 0, 4, rng)
    members[1] = np.eye(sf.info.num_actions)[members[1].argmax(-1)] * (members[1] > 0)  # pure
    members[1] /= members[1].sum(-1, keepdims=True)
    weights = np.array([0.1, 0.4, 0.0, 0.5])
    opponent = random_policies(sf, 1, 1, rng)
    behaviour = mixture_table(sf, 0, members, weights)
    assert np.allclose(behaviour.sum(-1), 1.0)
    assert not (behaviour[~sf.info.legal[sf.info.of_player(0)]]).any()
    mixed = sf.payoffs([sf.realization(0, members), sf.realization(1, opponent)])
    expected = [weights @ u[:, 0] for u in mixed]
    played = sf.payoffs([sf.realization(0, behaviour[None]), sf.realization(1, opponent)])
    assert [u[0, 0] for u in played] == pytest.approx(expected, abs=1e-12)
    # and OpenSpiel agrees on the behaviour policy's value
    values = openspiel_values(load_string, as_table(sf, [behaviour, opponent[0]]))
    assert values == pytest.approx(expected, abs=1e-12)


def test_own_reach_is_the_product_of_the_players_own_moves():
    # Kuhn poker: player 0 holding a card bets (1) at its first state; the state after
    # "pass, bet" is reached with its probability of passing at the first one
    sf = sequence_form("kuhn_poker")
    rows = sf.info.of_player(0)
    probs = np.full((1, len(rows), 2), 0.5)
    first = [k for k, r in enumerate(rows) if sf.info.keys[r] == "0"][0]
    probs[0, first] = [0.3, 0.7]
    reach = sf.own_reach(0, sf.realization(0, probs))[0]
    by_key = {sf.info.keys[r]: reach[k] for k, r in enumerate(rows)}
    assert by_key["0"] == 1.0 and by_key["0pb"] == pytest.approx(0.3)
    assert by_key["1pb"] == pytest.approx(0.5)


def test_a_policy_of_the_wrong_shape_is_refused():
    sf = sequence_form("kuhn_poker")
    with pytest.raises(ValueError, match=r"\[K, 6, 2\]"):
        sf.realization(0, np.full((1, 5, 2), 0.5))
