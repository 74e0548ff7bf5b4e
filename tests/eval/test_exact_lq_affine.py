"""Exact costs of stochastic affine policies and exact best responses in LQ games, checked
against evaluate_gains, the feedback equilibria, closed forms worked by hand, scipy's Riccati
solver and Monte Carlo rollouts."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.linalg import solve_discrete_are

from dgsolve.errors import ConfigError
from dgsolve.eval.exact_lq import (
    AffineRule,
    affine_costs,
    best_response,
    evaluate_gains,
    feedback_nash,
    feedback_stackelberg,
    reference_rules,
)
from dgsolve.games.lq import LQConfig, lq_matrices

GAMES = {"discounted": LQConfig(), "finite": LQConfig(horizon=4, discount=None)}


def scalar_game(**overrides) -> LQConfig:
    """One player, x' = a x + u + w, cost q x^2 + r u^2 (defaults a = 0.9, q = 1, r = 2)."""
    cfg = dict(
        A=[[0.9]],
        B={"p1": [[1.0]]},
        Q={"p1": [[1.0]]},
        R={"p1": {"p1": [[2.0]]}},
        discount=0.8,
        x0_mean=[1.5],
        x0_std=0.5,
        noise_std=0.1,
    )
    cfg.update(overrides)
    return LQConfig(**cfg)


def three_player_game(**overrides) -> LQConfig:
    """p1 leads p2 and p3, who move together; everyone's cost has cross terms."""
    cfg = dict(
        A=[[0.9, 0.2], [-0.1, 1.05]],
        B={"p1": [[1.0], [0.5]], "p2": [[0.3], [1.0]], "p3": [[-0.5], [0.8]]},
        Q={
            "p1": [[1.0, 0.2], [0.2, 0.5]],
            "p2": [[0.5, 0.0], [0.0, 1.0]],
            "p3": np.eye(2).tolist(),
        },
        R={
            "p1": {"p1": [[0.5]], "p3": [[0.2]]},
            "p2": {"p1": [[0.1]], "p2": [[0.8]]},
            "p3": {"p2": [[0.3]], "p3": [[0.6]]},
        },
        leader="p1",
        x0_mean=[1.0, -0.5],
        x0_std=0.4,
        noise_std=0.2,
    )
    cfg.update(overrides)
    return LQConfig(**cfg)


def three_player_rules(steps: int | None) -> dict[str, AffineRule]:
    """Noisy affine rules for three_player_game; p3 has per-step gains when ``steps`` is set."""
    K3 = [[0.3, -0.4]] if steps is None else [[[0.3 + 0.1 * t, -0.4]] for t in range(steps)]
    return {
        "p1": AffineRule(K=[[0.4, 0.3]], b=[0.2], std=[0.3]),
        "p2": AffineRule(K=[[0.1, 0.5]], H={"p1": [[0.4]]}, b=[-0.1], std=[0.2]),
        "p3": AffineRule(K=K3, H={"p1": [[-0.6]]}, b=[0.3], std=[0.25]),
    }


@pytest.mark.parametrize("game", GAMES)
def test_noiseless_linear_rules_cost_what_evaluate_gains_says(game):
    cfg = GAMES[game]
    gains = {"p1": [[0.3, 0.4]], "p2": [[0.2, 0.6]]}
    if cfg.horizon is not None:
        gains["p2"] = [[[0.2 + 0.1 * t, 0.6]] for t in range(cfg.horizon)]
    rules = {i: AffineRule(K=K) for i, K in gains.items()}
    costs = affine_costs(cfg, [["p1", "p2"]], rules)
    expected = evaluate_gains(cfg, gains)
    for i in cfg.agents:
        assert costs[i] == pytest.approx(expected[i], rel=1e-10)


@pytest.mark.parametrize("game", GAMES)
def test_feedback_nash_has_no_profitable_deviation(game):
    cfg = GAMES[game]
    ref = feedback_nash(cfg)
    tiers, rules = reference_rules(ref)
    assert tiers == [["p1", "p2"]]
    costs = affine_costs(cfg, tiers, rules)
    for i in cfg.agents:
        assert costs[i] == pytest.approx(ref["costs"][i], rel=1e-8)
        br_cost, br_rule = best_response(cfg, tiers, rules, i)
        assert costs[i] - br_cost == pytest.approx(0.0, abs=1e-6 * max(1.0, costs[i]))
        np.testing.assert_allclose(br_rule.K, ref["gains"][i], atol=1e-6)
        np.testing.assert_allclose(br_rule.b, 0.0, atol=1e-9)
        assert br_rule.H == {}


@pytest.mark.parametrize("game", GAMES)
def test_feedback_stackelberg_has_no_profitable_deviation(game):
    # The feedback Stackelberg leader's policy satisfies its Bellman equation against the
    # follower's fixed reaction rule, and the follower's reaction is its best response to any
    # leader action, so neither gains by deviating.
    cfg = GAMES[game]
    ref = feedback_stackelberg(cfg, [["p1"], ["p2"]])
    tiers, rules = reference_rules(ref)
    assert set(rules["p2"].H) == {"p1"}
    costs = affine_costs(cfg, tiers, rules)
    for i in cfg.agents:
        assert costs[i] == pytest.approx(ref["costs"][i], rel=1e-8)
        br_cost, br_rule = best_response(cfg, tiers, rules, i)
        assert costs[i] - br_cost == pytest.approx(0.0, abs=1e-6 * max(1.0, costs[i]))
    _, leader = best_response(cfg, tiers, rules, "p1")
    np.testing.assert_allclose(leader.K, ref["gains"]["p1"], atol=1e-6)
    _, follower = best_response(cfg, tiers, rules, "p2")
    np.testing.assert_allclose(follower.K, rules["p2"].K, atol=1e-6)
    np.testing.assert_allclose(follower.H["p1"], rules["p2"].H["p1"], atol=1e-6)


@pytest.mark.parametrize("game", GAMES)
def test_an_intercept_on_the_nash_gains_costs_more_and_invites_deviation(game):
    cfg = GAMES[game]
    tiers, rules = reference_rules(feedback_nash(cfg))
    exact = affine_costs(cfg, tiers, rules)
    shifted = {i: dataclasses.replace(rule, b=[1.0]) for i, rule in rules.items()}
    costs = affine_costs(cfg, tiers, shifted)
    for i in cfg.agents:
        assert costs[i] > exact[i] + 0.1
        br_cost, br_rule = best_response(cfg, tiers, shifted, i)
        assert costs[i] - br_cost > 1e-2
        # The best response costs exactly what its rule costs when played.
        played = affine_costs(cfg, tiers, {**shifted, i: br_rule})
        assert played[i] == pytest.approx(br_cost, rel=1e-8)


def test_scalar_affine_noisy_rule_by_hand():
    # u = -k x + b + s xi, so x' = f x + b + s xi + w with f = a - k = 0.5, and the value is
    # V(x) = p x^2 + 2 h x + c with
    #   p = (q + r k^2) / (1 - g f^2) = 1.32 / 0.8 = 1.65,
    #   h = (-r k b + g p f b) / (1 - g f) = (-0.24 + 0.198) / 0.6 = -0.07,
    #   c = (r b^2 + r s^2 + g (p (b^2 + s^2 + sigma^2) + 2 h b)) / (1 - g)
    #     = (0.18 + 0.08 + 0.8 (1.65 * 0.14 - 0.042)) / 0.2 = 2.056,
    # with a = 0.9, k = 0.4, b = 0.3, s = 0.2, sigma = 0.1, q = 1, r = 2, g = 0.8.
    # From x0 ~ N(1.5, 0.5^2): p (1.5^2 + 0.5^2) + 2 h 1.5 + c = 4.125 - 0.21 + 2.056 = 5.971.
    cfg = scalar_game()
    rule = AffineRule(K=[[0.4]], b=[0.3], std=[0.2])
    assert affine_costs(cfg, [["p1"]], {"p1": rule})["p1"] == pytest.approx(5.971, rel=1e-12)


@pytest.mark.parametrize("a", [0.9, 1.3])
def test_single_player_best_response_is_discounted_lqr(a):
    # Alone, the best response to any own rule is the discounted LQR: P solves the Riccati
    # equation of (sqrt(g) a, sqrt(g) b), K = g b P a / (r + g b^2 P), no intercept, and the
    # cost is P (mu^2 + s0^2) + g sigma^2 P / (1 - g).
    cfg = scalar_game(A=[[a]])
    g, q, r = 0.8, 1.0, 2.0
    P = solve_discrete_are([[math.sqrt(g) * a]], [[math.sqrt(g)]], [[q]], [[r]])[0, 0]
    rule = AffineRule(K=[[0.1]], b=[0.3], std=[0.2])
    cost, br = best_response(cfg, [["p1"]], {"p1": rule}, "p1")
    assert cost == pytest.approx(P * (1.5**2 + 0.5**2) + g * 0.1**2 * P / (1 - g), rel=1e-9)
    np.testing.assert_allclose(br.K, [[g * P * a / (r + g * P)]], atol=1e-9)
    np.testing.assert_allclose(br.b, [0.0], atol=1e-9)
    np.testing.assert_allclose(br.std, [0.0])


def test_costs_match_monte_carlo_rollouts():
    # Leader and follower both add intercepts and noise; the follower reacts to the leader's
    # realised (noisy) action and has per-step gains.
    cfg = LQConfig(horizon=5, discount=None, x0_std=0.5, noise_std=0.3)
    T, episodes = cfg.horizon, 200_000
    K2 = np.array([[[0.3 + 0.05 * t, 0.6]] for t in range(T)])
    rules = {
        "p1": AffineRule(K=[[0.2, 0.5]], b=[0.4], std=[0.3]),
        "p2": AffineRule(K=K2, H={"p1": [[0.8]]}, b=[-0.2], std=[0.25]),
    }
    exact = affine_costs(cfg, [["p1"], ["p2"]], rules)

    mats = lq_matrices(cfg)
    rng = np.random.default_rng(0)
    x = np.array(cfg.x0_mean) + cfg.x0_std * rng.standard_normal((episodes, 2))
    cost = {i: np.zeros(episodes) for i in cfg.agents}

    def quad(v, M):
        return np.einsum("bi,ij,bj->b", v, M, v)

    for t in range(T):
        u = {"p1": -x @ np.array([[0.2, 0.5]]).T + 0.4 + 0.3 * rng.standard_normal((episodes, 1))}
        u["p2"] = -x @ K2[t].T - 0.8 * u["p1"] - 0.2 + 0.25 * rng.standard_normal((episodes, 1))
        for i in cfg.agents:
            cost[i] += quad(x, mats.Q[i]) + sum(quad(u[j], mats.R[i][j]) for j in cfg.agents)
        x = x @ mats.A.T + sum(u[j] @ mats.B[j].T for j in cfg.agents)
        x += cfg.noise_std * rng.standard_normal((episodes, 2))
    for i in cfg.agents:
        cost[i] += quad(x, mats.Qf[i])

    no_leader_noise = affine_costs(
        cfg, [["p1"], ["p2"]], {**rules, "p1": dataclasses.replace(rules["p1"], std=None)}
    )
    for i in cfg.agents:
        mean, se = cost[i].mean(), cost[i].std() / math.sqrt(episodes)
        assert abs(mean - exact[i]) < 4 * se
        # The check is sharp enough to see the leader's action noise.
        assert abs(mean - no_leader_noise[i]) > 10 * se


@pytest.mark.parametrize("horizon", [None, 3])
@pytest.mark.parametrize("agent", ["p1", "p2", "p3"])
def test_best_response_is_attained_and_locally_optimal(horizon, agent):
    # p2 and p3 share a tier: p2's best response cannot see p3's noisy action, but both see p1's.
    cfg = three_player_game() if horizon is None else three_player_game(horizon=3, discount=None)
    tiers = [["p1"], ["p2", "p3"]]
    rules = three_player_rules(horizon)
    current = affine_costs(cfg, tiers, rules)[agent]
    cost, br = best_response(cfg, tiers, rules, agent)
    assert cost < current
    assert affine_costs(cfg, tiers, {**rules, agent: br})[agent] == pytest.approx(cost, rel=1e-8)
    rng = np.random.default_rng(1)
    for _ in range(5):
        nudged = AffineRule(
            K=np.asarray(br.K) + 0.05 * rng.standard_normal(np.shape(br.K)),
            b=np.asarray(br.b) + 0.05 * rng.standard_normal(np.shape(br.b)),
            H={j: np.asarray(H) + 0.05 * rng.standard_normal(np.shape(H)) for j, H in br.H.items()},
        )
        assert affine_costs(cfg, tiers, {**rules, agent: nudged})[agent] > cost
    assert set(br.H) == ({"p1"} if agent != "p1" else set())


def test_non_contracting_discounted_closed_loop_costs_inf():
    # With no control the state's 1.02 mode grows faster than sqrt(g) shrinks it iff
    # sqrt(g) 1.02 >= 1: g = 0.99 gives 1.015, g = 0.95 gives 0.994.
    zero = {i: AffineRule(K=[[0.0, 0.0]], b=[0.5], std=[0.1]) for i in ("p1", "p2")}
    costs = affine_costs(LQConfig(discount=0.99), [["p1", "p2"]], zero)
    assert costs == {"p1": math.inf, "p2": math.inf}
    assert all(math.isfinite(c) for c in affine_costs(LQConfig(), [["p1", "p2"]], zero).values())


def test_non_convex_deviation_and_bad_rules_raise():
    # One step: p1 pays u1^2 - u2^2 + x1^2 and the follower answers u2 = -2 u1, so
    # x1 = x - u1 and p1's cost has u1^2 coefficient 1 - 4 + 1 < 0: no best response.
    cfg = LQConfig(
        A=[[1.0]],
        B={"p1": [[1.0]], "p2": [[1.0]]},
        Q={"p1": [[0.0]], "p2": [[0.0]]},
        Qf={"p1": [[1.0]], "p2": [[1.0]]},
        R={"p1": {"p1": [[1.0]], "p2": [[-1.0]]}, "p2": {"p2": [[1.0]]}},
        horizon=1,
        discount=None,
        x0_mean=[1.0],
    )
    rules = {"p1": AffineRule(K=[[0.0]]), "p2": AffineRule(K=[[0.0]], H={"p1": [[2.0]]})}
    with pytest.raises(ConfigError, match="not convex"):
        best_response(cfg, [["p1"], ["p2"]], rules, "p1")
    with pytest.raises(ValueError, match="earlier tiers"):
        affine_costs(cfg, [["p1", "p2"]], rules)
    with pytest.raises(ValueError, match="K must be 1x1"):
        affine_costs(cfg, [["p1"], ["p2"]], {**rules, "p1": AffineRule(K=[[0.0, 1.0]])})
