"""Exact NashConv of bargaining policies (``dgsolve.eval.bargain_exact``): against a hand
computation and a brute force written from BARGAIN.md alone, against OpenSpiel's C++ best
response on the information-state table, never negative, and refused on large variants."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical

pytest.importorskip("pyspiel")

from dgsolve.errors import ConfigError  # noqa: E402
from dgsolve.eval.bargain_exact import bargain_nash_conv, check_size  # noqa: E402
from dgsolve.eval.openspiel_eq import information_states, nash_conv_of_table  # noqa: E402
from dgsolve.games.bargain import BargainRules, OutsideOffer  # noqa: E402
from dgsolve.games.bargain.baselines import make_baseline  # noqa: E402
from dgsolve.games.bargain.openspiel_game import load_string  # noqa: E402
from dgsolve.games.base import AgentSpec  # noqa: E402
from dgsolve.nets import ActorCritic  # noqa: E402
from dgsolve.policy import NetPolicy  # noqa: E402

#: the tiniest variant: one item, values 1 or 2, P1 offers and P2 answers (ACCEPT or WALK)
TINY = BargainRules(quantities=(1,), max_value=2, rounds=1)
OFFER0, OFFER1, ACCEPT, WALK = 0, 1, 2, 3  # offers give P2 n = 0 or 1 unit (rule 6)


class LinearPolicy:
    """A seeded mixed policy: softmax of a random linear function of the observation."""

    def __init__(self, rules: BargainRules, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.weight = 3 * torch.randn(rules.obs_dim, rules.num_actions, generator=gen)

    def distribution(self, obs: torch.Tensor, legal: torch.Tensor) -> Categorical:
        return Categorical(logits=(obs @ self.weight).masked_fill(~legal, -math.inf))


def baselines(p1: str, p2: str, rules: BargainRules = TINY) -> dict:
    return {"p1": make_baseline(p1, rules), "p2": make_baseline(p2, rules)}


# --------------------------------------------------------------------------- independent checks
def test_random_profile_matches_the_hand_computation():
    # P1 draws v1 in {1, 2} and o1 uniform on 1..v1, so w = E[o1 / M1] = (1 + 3/4) / 2 = 7/8.
    # Random: P1 picks offer 0, offer 1, WALK with 1/3 each, P2 ACCEPT or WALK with 1/2.
    # u1 = (w + (1/2 + w/2) + w/2) / 3 = 3/4; by symmetry u2 = 3/4.
    # P1's best response: offer 0 (keep the item) pays 1/2 + o1/(2 M1) >= o1/M1: 1/2 + 7/16.
    # P2's best response: accept offer 1, walk otherwise: 1/3 + (2/3)(7/8) = 11/12.
    out = bargain_nash_conv(TINY, baselines("random", "random"))
    assert out["values"] == pytest.approx({"p1": 0.75, "p2": 0.75}, abs=1e-12)
    assert out["gains"] == pytest.approx({"p1": 15 / 16 - 3 / 4, "p2": 11 / 12 - 3 / 4}, abs=1e-12)
    assert out["nash_conv"] == pytest.approx(3 / 16 + 1 / 6, abs=1e-12)
    assert out["num_histories"] == 84 and out["num_observations"] == {"p1": 3, "p2": 6}


def brute_force(policies: dict) -> dict:
    """Values, best-response values and NashConv on TINY, from BARGAIN.md alone: observations
    built from its table, the policies asked at each, and every deal enumerated."""
    deals = [((v, o), 1 / 2 / v) for v in (1, 2) for o in range(1, v + 1)]  # (value, outside)

    def probs(agent, row, legal):
        obs = torch.tensor([row + [float(x) for x in legal]], dtype=torch.float32)
        mask = torch.tensor([legal], dtype=torch.bool)
        policy = policies[agent]
        if hasattr(policy, "distribution"):
            dist = policy.distribution(obs, mask)
        else:
            dist = policy.net.distribution(policy.prepare(obs), mask)
        p = dist.probs[0].detach().double().numpy() * legal
        return p / p.sum()

    def first(v1, o1):  # P1 to move: own values / 2, outside / M, no offer, round 0, player 0
        return probs("p1", [v1 / 2, o1 / v1, -1.0, 0.0, 0.0, 0.0], [1, 1, 0, 1])

    def answer(v2, o2, n):  # P2 to answer offer n: its share n / Q, has-offer, player 1
        return probs("p2", [v2 / 2, o2 / v2, float(n), 1.0, 0.0, 1.0], [0, 0, 1, 1])

    values, best1, best2 = np.zeros(2), 0.0, 0.0
    for ((v1, o1), p1), ((v2, o2), p2) in itertools.product(deals, deals):
        walk = np.array([o1 / v1, o2 / v2])  # rule 8, over M_i = v_i (rule 11)
        deal_p = p1 * p2
        pi1 = first(v1, o1)
        for a, pa in zip((OFFER0, OFFER1, WALK), pi1[[OFFER0, OFFER1, WALK]], strict=True):
            if a == WALK:
                values += deal_p * pa * walk
                best2 += deal_p * pa * walk[1]
                continue
            n = a  # offer id = P2's units
            agreed = np.array([1 - n, n])  # rule 7: v1 (1 - n) / v1, v2 n / v2
            pi2 = answer(v2, o2, n)
            values += deal_p * pa * (pi2[ACCEPT] * agreed + pi2[WALK] * walk)
            best2 += deal_p * pa * max(agreed[1], walk[1])  # P2's payoff ignores P1's deal

    for (v1, o1), p1 in deals:  # P1's best response: the best action for each of its deals
        options = [0.0, 0.0, 0.0]
        for (v2, o2), p2 in deals:
            for i, n in enumerate((0, 1)):
                pi2 = answer(v2, o2, n)
                options[i] += p2 * (pi2[ACCEPT] * (1 - n) + pi2[WALK] * o1 / v1)
            options[2] += p2 * o1 / v1
        best1 += p1 * max(options)
    gains = {"p1": best1 - values[0], "p2": best2 - values[1]}
    return {"values": {"p1": values[0], "p2": values[1]}, "gains": gains}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixed_policies_match_the_brute_force(seed):
    policies = {"p1": LinearPolicy(TINY, seed), "p2": LinearPolicy(TINY, seed + 10)}
    expected = brute_force(policies)
    out = bargain_nash_conv(TINY, policies)
    assert out["values"] == pytest.approx(expected["values"], abs=1e-9)
    assert out["gains"] == pytest.approx(expected["gains"], abs=1e-9)
    assert out["nash_conv"] == pytest.approx(sum(expected["gains"].values()), abs=1e-9)
    assert out["nash_conv"] > 0.01


def test_net_policies_match_the_brute_force():
    torch.manual_seed(0)
    spec = AgentSpec(obs_dim=TINY.obs_dim, num_actions=TINY.num_actions)
    net = ActorCritic(TINY.obs_dim + 2, spec, hidden_sizes=(16,))
    torch.nn.init.normal_(net.actor_head.weight, std=2.0)  # far from uniform
    policies = {a: NetPolicy(net, spec, index=i, group_size=2) for i, a in enumerate(("p1", "p2"))}
    expected = brute_force(policies)
    out = bargain_nash_conv(TINY, policies)
    assert out["gains"] == pytest.approx(expected["gains"], abs=1e-6)
    assert out["values"] == pytest.approx(expected["values"], abs=1e-6)


# --------------------------------------------------------------------------- facts
def test_always_walk_is_an_equilibrium():
    # Against a player who always walks nothing else pays more: WALK by both is a (no-deal)
    # Nash equilibrium, NashConv exactly 0, each value E[o / M] = 7/8 on TINY.
    out = bargain_nash_conv(TINY, baselines("always_walk", "always_walk"))
    assert out["nash_conv"] == 0.0 and out["values"] == pytest.approx({"p1": 7 / 8, "p2": 7 / 8})
    # but P1 walking away from a P2 who would accept an offer worth more to P1 is not
    two = BargainRules(quantities=(1, 1), max_value=2, rounds=1)
    out = bargain_nash_conv(two, baselines("always_walk", "greedy", two))
    assert out["gains"]["p1"] > 0.01 and out["gains"]["p2"] == 0.0


@pytest.mark.parametrize(
    "rules",
    [
        TINY,
        BargainRules(quantities=(1,), max_value=2, rounds=2, discount=0.9),
        BargainRules(quantities=(1,), max_value=3, rounds=2, outside_offer=OutsideOffer.none),
    ],
    ids=["tiny", "two_rounds_discounted", "no_outside_offer"],
)
def test_nash_conv_is_never_negative(rules):
    profiles = [
        baselines(a, b, rules) for a in ("greedy", "fair_split") for b in ("random", "greedy")
    ]
    profiles += [{"p1": LinearPolicy(rules, s), "p2": LinearPolicy(rules, s + 1)} for s in (3, 4)]
    for policies in profiles:
        out = bargain_nash_conv(rules, policies)
        assert min(out["gains"].values()) >= -1e-12
        assert out["nash_conv"] >= -1e-12 and math.isfinite(out["nash_conv"])


def test_agrees_with_the_cpp_best_response_on_the_information_state_table():
    rules = BargainRules(quantities=(1,), max_value=2, rounds=2, discount=0.9)
    game = load_string(rules)
    info = information_states(game)
    rows = info.legal / info.legal.sum(1, keepdims=True)  # the random baseline's table
    uniform = {key: list(row) for key, row in zip(info.keys, rows, strict=True)}
    reference = nash_conv_of_table(game, uniform)
    out = bargain_nash_conv(rules, baselines("random", "random", rules))
    assert out["nash_conv"] == pytest.approx(reference["nash_conv"], abs=1e-12)
    assert out["values"]["p1"] == pytest.approx(reference["values"]["player_0"], abs=1e-12)
    assert out["gains"]["p2"] == pytest.approx(reference["deviation_gain"]["player_1"], abs=1e-12)


# --------------------------------------------------------------------------- refusals
def test_refuses_trees_too_large_in_one_line():
    assert check_size(BargainRules(quantities=(2, 1), max_value=3, rounds=1)) == 59_035
    for rules in (BargainRules(), BargainRules(quantities=(2, 1), max_value=3, rounds=2)):
        with pytest.raises(ConfigError, match="histories") as err:
            bargain_nash_conv(rules, baselines("random", "random", rules))
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="a policy per agent"):
        bargain_nash_conv(TINY, {"p1": make_baseline("random", TINY)})
    with pytest.raises(ConfigError, match="not a policy"):
        bargain_nash_conv(TINY, {"p1": object(), "p2": object()})
