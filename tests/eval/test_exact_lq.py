"""Exact feedback Nash and Stackelberg solutions of LQ games, checked by hand, by independent
solvers (scipy's Riccati equations, nested numerical minimisation) and on the batched game."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.linalg import solve_discrete_are
from scipy.optimize import minimize_scalar

from dgsolve.errors import ConfigError, HierarchyError
from dgsolve.eval.exact import exact_reference
from dgsolve.eval.exact_lq import (
    cost_gap,
    evaluate_gains,
    feedback_nash,
    feedback_stackelberg,
    fit_linear_gain,
    gain_error,
)
from dgsolve.games.lq import LQConfig, LQGame


def scalar_game(**overrides) -> LQConfig:
    """x' = x + u1 + u2, both pay x^2 + u_i^2, deterministic start x0 = 1, no noise."""
    cfg = dict(
        A=[[1.0]],
        B={"p1": [[1.0]], "p2": [[1.0]]},
        Q={"p1": [[1.0]], "p2": [[1.0]]},
        R={"p1": {"p1": [[1.0]]}, "p2": {"p2": [[1.0]]}},
        x0_mean=[1.0],
        x0_std=0.0,
        noise_std=0.0,
    )
    cfg.update(overrides)
    return LQConfig(**cfg)


def test_scalar_discounted_nash_by_hand():
    # Symmetric guess K1 = K2 = k, P1 = P2 = p, g = discount, y = g p. First-order condition
    # (r + g p) k + g p k = g p a  ->  k = y / (1 + 2y); value p = 1 + k^2 + y (1 - 2k)^2.
    # With y = 1: k = 1/3 and p = 1 + 1/9 + 1/9 = 11/9, consistent iff g = y / p = 9/11.
    # Cost from x0 ~ N(2, 0.5^2) with noise 0.1: p (4 + 0.25) + g/(1-g) * 0.01 * p,
    # g/(1-g) = 4.5.
    cfg = scalar_game(discount=9 / 11, x0_mean=[2.0], x0_std=0.5, noise_std=0.1)
    ref = feedback_nash(cfg)
    for agent in ("p1", "p2"):
        np.testing.assert_allclose(ref["gains"][agent], [[1 / 3]], atol=1e-9)
        assert ref["costs"][agent] == pytest.approx(11 / 9 * (4.25 + 4.5 * 0.01), rel=1e-9)


def test_scalar_single_controller_riccati_by_hand():
    # p2 has no input (B2 = 0), so K2 = 0 and p1 solves a scalar LQR with a = b = q = r = 1 and
    # discount 1/2: p = 1 + y - y^2 / (1 + y), y = p / 2  ->  y^2 = 1/2, p = sqrt 2,
    # K1 = y / (1 + y) = sqrt 2 - 1. p2 pays x^2 + 1 * u1^2 (cross term R21 = 1) along
    # F = 1 - K1 = 2 - sqrt 2: P2 = (1 + K1^2) / (1 - F^2 / 2) = (4 - 2 sqrt 2) / (2 sqrt 2 - 2)
    # = sqrt 2.
    cfg = scalar_game(
        discount=0.5,
        B={"p1": [[1.0]], "p2": [[0.0]]},
        R={"p1": {"p1": [[1.0]]}, "p2": {"p1": [[1.0]], "p2": [[1.0]]}},
    )
    ref = feedback_nash(cfg)
    np.testing.assert_allclose(ref["gains"]["p1"], [[math.sqrt(2) - 1]], atol=1e-9)
    np.testing.assert_allclose(ref["gains"]["p2"], [[0.0]], atol=1e-12)
    assert ref["costs"]["p1"] == pytest.approx(math.sqrt(2), rel=1e-9)
    assert ref["costs"]["p2"] == pytest.approx(math.sqrt(2), rel=1e-9)


def test_one_step_nash_and_stackelberg_by_hand():
    # Horizon 1, terminal cost x_1^2 (Qf = Q = 1), x0 = 1.
    # Nash: each minimises u_i^2 + (x + u_1 + u_2)^2: u_i = -(x + u_j) / 2 -> K = 1/3 each;
    #   x_1 = 1/3, cost 1 + 1/9 + 1/9 = 11/9 for both.
    # Stackelberg, p1 leads: the follower answers u2 = -(x + u1) / 2; the leader minimises
    #   u1^2 + (x + u1)^2 / 4  ->  u1 = -x / 5, u2 = -2x / 5, x_1 = 2/5.
    #   Leader cost 1 + 1/25 + 4/25 = 1.2; follower 1 + 4/25 + 4/25 = 1.32.
    cfg = scalar_game(discount=None, horizon=1)
    nash = feedback_nash(cfg)
    np.testing.assert_allclose(nash["gains"]["p1"], [[[1 / 3]]])
    assert nash["costs"] == pytest.approx({"p1": 11 / 9, "p2": 11 / 9})
    stack = feedback_stackelberg(cfg)
    assert stack["tiers"] == [["p1"], ["p2"]]
    np.testing.assert_allclose(stack["gains"]["p1"], [[[0.2]]])
    np.testing.assert_allclose(stack["gains"]["p2"], [[[0.4]]])
    assert set(stack["response"]) == {"p2"}  # u2 = -(x + u1) / 2
    np.testing.assert_allclose(stack["response"]["p2"], [[[0.5, 0.5]]])
    assert stack["costs"] == pytest.approx({"p1": 1.2, "p2": 1.32})


def _lqr_best_response(A, B, Q, R, g, S=None):
    """Discounted LQR gain by scipy's DARE: cost x'Qx + u'Ru + 2x'Su, dynamics x' = Ax + Bu."""
    a, b = math.sqrt(g) * A, math.sqrt(g) * B
    S = np.zeros((A.shape[0], B.shape[1])) if S is None else S
    X = solve_discrete_are(a, b, Q, R, s=S)
    return np.linalg.solve(R + b.T @ X @ b, b.T @ X @ a + S.T)


def test_default_game_nash_gains_are_mutual_lqr_best_responses():
    # At a feedback Nash equilibrium each K_i is the optimal LQR gain when the others' linear
    # policies are folded into the dynamics and costs (checked with scipy's DARE solver).
    cfg = LQConfig()
    ref = feedback_nash(cfg)
    A, g = np.array(cfg.A), cfg.discount
    B = {i: np.array(cfg.B[i]) for i in cfg.agents}
    K = {i: np.array(ref["gains"][i]) for i in cfg.agents}
    R = {i: {j: np.array(cfg.R[i].get(j, [[0.0]])) for j in cfg.agents} for i in cfg.agents}
    for i in cfg.agents:
        others = [j for j in cfg.agents if j != i]
        A_cl = A - sum(B[j] @ K[j] for j in others)
        Q_eff = np.array(cfg.Q[i]) + sum(K[j].T @ R[i][j] @ K[j] for j in others)
        np.testing.assert_allclose(
            _lqr_best_response(A_cl, B[i], Q_eff, R[i][i], g), K[i], rtol=1e-8, atol=1e-10
        )


def test_vector_actions_and_a_wider_state():
    # 3-D state, p1 with a 2-D action, p2 with one; cross costs both ways. The Nash gains are
    # mutual LQR best responses and the follower's response has the shape of its observation.
    cfg = LQConfig(
        A=[[0.9, 0.2, 0.0], [0.0, 1.0, 0.1], [0.1, 0.0, 0.95]],
        B={"p1": [[1.0, 0.0], [0.0, 0.5], [0.0, 0.0]], "p2": [[0.0], [0.3], [1.0]]},
        Q={"p1": np.eye(3).tolist(), "p2": np.diag([0.5, 0.0, 2.0]).tolist()},
        R={
            "p1": {"p1": [[1.0, 0.2], [0.2, 2.0]], "p2": [[0.1]]},
            "p2": {"p1": [[0.3, 0.0], [0.0, 0.3]], "p2": [[1.0]]},
        },
        x0_mean=[1.0, 0.0, -1.0],
    )
    nash = feedback_nash(cfg)
    assert np.shape(nash["gains"]["p1"]) == (2, 3) and np.shape(nash["gains"]["p2"]) == (1, 3)
    K = {i: np.array(nash["gains"][i]) for i in cfg.agents}
    B = {i: np.array(cfg.B[i]) for i in cfg.agents}
    for i, j in (("p1", "p2"), ("p2", "p1")):
        Q_eff = np.array(cfg.Q[i]) + K[j].T @ np.array(cfg.R[i][j]) @ K[j]
        A_cl = np.array(cfg.A) - B[j] @ K[j]
        np.testing.assert_allclose(
            _lqr_best_response(A_cl, B[i], Q_eff, np.array(cfg.R[i][i]), cfg.discount),
            K[i],
            rtol=1e-7,
            atol=1e-10,
        )
    stack = feedback_stackelberg(cfg)
    assert np.shape(stack["response"]["p2"]) == (1, 3 + 2)
    game = LQGame(cfg)
    game.reset(seed=0)
    ts = game.step({"p1": torch.zeros(cfg.num_envs, 2), "p2": torch.zeros(cfg.num_envs, 1)})
    assert ts.obs["p1"].shape == (cfg.num_envs, 3) and ts.legal["p1"].shape == (cfg.num_envs, 2)


def test_default_game_stackelberg_checked_against_lqr_and_differs_from_nash():
    cfg = LQConfig()
    stack = feedback_stackelberg(cfg)
    nash = feedback_nash(cfg)
    A, g, n = np.array(cfg.A), cfg.discount, 2
    B1, B2 = np.array(cfg.B["p1"]), np.array(cfg.B["p2"])
    K1, K2 = np.array(stack["gains"]["p1"]), np.array(stack["gains"]["p2"])
    G = np.array(stack["response"]["p2"])  # u2 = -G [x; u1]
    S_x, S_u = G[:, :n], G[:, n:]
    np.testing.assert_allclose(K2, S_x - S_u @ K1, rtol=1e-10)
    # The follower's on-path gain is its LQR best response to the leader's linear policy.
    Q2 = np.array(cfg.Q["p2"]) + K1.T @ np.array(cfg.R["p2"]["p1"]) @ K1
    np.testing.assert_allclose(
        _lqr_best_response(A - B1 @ K1, B2, Q2, np.array(cfg.R["p2"]["p2"]), g),
        K2,
        rtol=1e-8,
    )
    # The leader's gain is the LQR optimum with the follower's reaction substituted:
    # x' = (A - B2 S_x) x + (B1 - B2 S_u) u1; p1 pays nothing for u2 here (R12 = 0).
    np.testing.assert_allclose(
        _lqr_best_response(
            A - B2 @ S_x, B1 - B2 @ S_u, np.array(cfg.Q["p1"]), np.array(cfg.R["p1"]["p1"]), g
        ),
        K1,
        rtol=1e-8,
    )
    # The default game is chosen so that leadership matters a lot.
    assert gain_error(stack["gains"]["p1"], nash["gains"]["p1"]) > 0.5
    assert gain_error(stack["gains"]["p2"], nash["gains"]["p2"]) > 0.5
    assert stack["costs"]["p1"] < nash["costs"]["p1"]


def test_long_finite_horizon_converges_to_the_discounted_solution():
    # Discounting by g equals the undiscounted game with A, B scaled by sqrt(g) (substitute
    # x_t -> g^(t/2) x_t): the gains are the same and, without noise, so are the values. So the
    # first-step gains of a long finite game with Qf = Q approach the infinite-horizon ones.
    inf = LQConfig(noise_std=0.0)
    s = math.sqrt(inf.discount)
    scaled = LQConfig(
        A=(s * np.array(inf.A)).tolist(),
        B={i: (s * np.array(b)).tolist() for i, b in inf.B.items()},
        discount=None,
        horizon=400,
        noise_std=0.0,
    )
    for solve in (feedback_nash, feedback_stackelberg):
        ref, fin = solve(inf), solve(scaled)
        for i in inf.agents:
            assert gain_error(fin["gains"][i][0], ref["gains"][i]) < 1e-9
            assert fin["costs"][i] == pytest.approx(ref["costs"][i], rel=1e-9)
        short = solve(LQConfig(A=scaled.A, B=scaled.B, discount=None, horizon=3, noise_std=0.0))
        assert gain_error(short["gains"]["p1"][0], ref["gains"]["p1"]) > 1e-3


def test_three_tiers_match_nested_numerical_minimisation():
    # One step, three players leading one another: x' = x + u1 + 2 u2 - u3, terminal costs
    # q_i x'^2, effort r_i u_i^2 (+ p1 pays 0.3 u3^2). Solve the hierarchy by brute force:
    # p3 reacts in closed form, p2 and p1 minimise numerically over their own action.
    b = {"p1": 1.0, "p2": 2.0, "p3": -1.0}
    qf = {"p1": 1.0, "p2": 2.0, "p3": 0.5}
    r = {"p1": 1.0, "p2": 1.5, "p3": 0.7}
    cfg = LQConfig(
        A=[[1.0]],
        B={i: [[b[i]]] for i in b},
        Q={i: [[0.0]] for i in b},
        Qf={i: [[qf[i]]] for i in b},
        R={"p1": {"p1": [[1.0]], "p3": [[0.3]]}, "p2": {"p2": [[1.5]]}, "p3": {"p3": [[0.7]]}},
        leader="p1",
        discount=None,
        horizon=1,
        x0_mean=[1.0],
        x0_std=0.0,
        noise_std=0.0,
    )
    x = 1.0

    def u3_of(u1, u2):  # argmin r3 u3^2 + q3 (x + u1 + 2 u2 - u3)^2
        c = x + b["p1"] * u1 + b["p2"] * u2
        return qf["p3"] * c / (r["p3"] + qf["p3"])

    def cost(i, u1, u2, u3):
        own = {"p1": u1, "p2": u2, "p3": u3}[i]
        x1 = x + b["p1"] * u1 + b["p2"] * u2 + b["p3"] * u3
        extra = 0.3 * u3**2 if i == "p1" else 0.0
        return r[i] * own**2 + extra + qf[i] * x1**2

    def u2_of(u1):
        return minimize_scalar(lambda u2: cost("p2", u1, u2, u3_of(u1, u2)), tol=1e-12).x

    u1 = minimize_scalar(lambda u1: cost("p1", u1, u2_of(u1), u3_of(u1, u2_of(u1))), tol=1e-12).x
    u2 = u2_of(u1)
    u3 = u3_of(u1, u2)
    ref = feedback_stackelberg(cfg, [["p1"], ["p2"], ["p3"]])
    assert ref["gains"]["p1"][0][0][0] == pytest.approx(-u1, abs=1e-6)
    assert ref["gains"]["p2"][0][0][0] == pytest.approx(-u2, abs=1e-6)
    assert ref["gains"]["p3"][0][0][0] == pytest.approx(-u3, abs=1e-6)
    assert ref["costs"]["p1"] == pytest.approx(cost("p1", u1, u2, u3), abs=1e-7)
    # p3 observes [x, u1, u2]: u3 = q3 / (r3 + q3) * (x + u1 + 2 u2).
    k = qf["p3"] / (r["p3"] + qf["p3"])
    np.testing.assert_allclose(ref["response"]["p3"][0], [[-k, -k, -2 * k]], atol=1e-12)
    # A single tier is the Nash equilibrium.
    one_tier = feedback_stackelberg(cfg, [["p1", "p2", "p3"]])
    nash = feedback_nash(cfg)
    for i in cfg.agents:
        np.testing.assert_allclose(one_tier["gains"][i], nash["gains"][i], atol=1e-12)


def _play(cfg: LQConfig, ref: dict, episodes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Discounted return per episode and agent of the reference's linear policies in the game.

    The leader plays ``-K x``; a follower with a ``response`` reacts to the leader's action as it
    would observe it, ``-G [x; u_leader]``; without one it plays ``-K x`` too.
    """
    game = LQGame(dataclasses.replace(cfg, num_envs=episodes))
    ts = game.reset(seed=seed)
    steps = cfg.horizon if cfg.horizon is not None else 200  # 0.95^200 < 1e-4: the tail is lost
    g = 1.0 if cfg.discount is None else cfg.discount

    def at_step(matrix: list, t: int) -> torch.Tensor:
        return torch.tensor(matrix[t] if cfg.horizon is not None else matrix, dtype=torch.float64)

    returns = {i: torch.zeros(episodes, dtype=torch.float64) for i in game.agents}
    for t in range(steps):
        x = ts.obs["p1"][:, :2].double()
        u1 = -x @ at_step(ref["gains"]["p1"], t).T
        if "response" in ref:
            u2 = -torch.cat([x, u1], dim=1) @ at_step(ref["response"]["p2"], t).T
        else:
            u2 = -x @ at_step(ref["gains"]["p2"], t).T
        ts = game.step({"p1": u1.float(), "p2": u2.float()})
        for i in game.agents:
            returns[i] += g**t * ts.reward[i].double()
    return {i: returns[i].numpy() for i in game.agents}


@pytest.mark.parametrize("horizon", [8, None])
def test_reference_costs_match_monte_carlo_returns_of_the_game(horizon):
    # The batched game, driven by the reference gains, pays on average minus the exact cost
    # (the bound is raised so that clipping, which the references ignore, never happens; the
    # noise is raised so that its share of the cost is well above the Monte Carlo error).
    discount = None if horizon else 0.95
    cfg = LQConfig(
        horizon=horizon, discount=discount, max_steps=200, noise_std=0.2, action_bound=100.0
    )
    for ref in (feedback_nash(cfg), feedback_stackelberg(cfg)):
        returns = _play(cfg, ref, episodes=4096)
        for i in cfg.agents:
            stderr = returns[i].std() / math.sqrt(len(returns[i]))
            assert -returns[i].mean() == pytest.approx(ref["costs"][i], abs=4 * stderr + 1e-3)


def test_evaluate_gains_and_cost_gap():
    for cfg in (LQConfig(), LQConfig(discount=None, horizon=6)):
        nash = feedback_nash(cfg)
        assert evaluate_gains(cfg, nash["gains"]) == pytest.approx(nash["costs"], rel=1e-8)
        assert cost_gap(cfg, nash["gains"], nash) == pytest.approx({"p1": 0, "p2": 0}, abs=1e-7)
        # Nash: no player lowers its own cost by changing only its own gain.
        for i in cfg.agents:
            for delta in (-0.05, 0.05):
                perturbed = dict(nash["gains"])
                perturbed[i] = (np.array(nash["gains"][i]) + delta).tolist()
                assert cost_gap(cfg, perturbed, nash)[i] > 0
    # A stationary gain may stand for every step of a finite game.
    finite = LQConfig(discount=None, horizon=6)
    zero = {"p1": [[0.0, 0.0]], "p2": [[0.0, 0.0]]}
    assert evaluate_gains(finite, zero) == evaluate_gains(
        finite, {i: [z] * 6 for i, z in zero.items()}
    )
    # Without control x' = 1.5 x diverges under discount 0.95: 0.95 * 1.5^2 > 1.
    unstable = scalar_game(discount=0.95, A=[[1.5]])
    zero = {"p1": [[0.0]], "p2": [[0.0]]}
    assert evaluate_gains(unstable, zero) == {"p1": math.inf, "p2": math.inf}


def test_fit_linear_gain_and_gain_error():
    rng = np.random.default_rng(0)
    K = np.array([[1.0, -2.0], [0.5, 0.0]])
    b = np.array([0.1, -0.3])
    states = rng.normal(size=(256, 2))
    fit = fit_linear_gain(lambda x: -x @ K.T + b, states)
    np.testing.assert_allclose(fit.gain, K, atol=1e-12)
    np.testing.assert_allclose(fit.intercept, b, atol=1e-12)
    assert fit.r2 == pytest.approx(1.0)
    noisy = fit_linear_gain(lambda x: -x @ K.T + rng.normal(size=(256, 2)), states)
    assert noisy.r2 < 0.9
    # |[[1.1, -2], [0.5, 0]] - K|_F / |K|_F = 0.1 / sqrt(1 + 4 + 0.25).
    assert gain_error(K + [[0.1, 0], [0, 0]], K) == pytest.approx(0.1 / math.sqrt(5.25))
    assert gain_error([[[1.0]], [[2.0]]], [[[1.0]], [[1.0]]]) == pytest.approx(1 / math.sqrt(2))


def test_exact_reference_for_lq_games():
    cfg = LQConfig()
    assert exact_reference(cfg, "simultaneous") == {"nash": feedback_nash(cfg)}
    ref = exact_reference(cfg, "leader_follower")
    assert ref["stackelberg"] == feedback_stackelberg(cfg)
    swapped = exact_reference(cfg, "leader_follower", action_sequence=[["p2"], ["p1"]])
    assert swapped["stackelberg"]["tiers"] == [["p2"], ["p1"]]
    assert set(swapped["stackelberg"]["response"]) == {"p1"}
    # A composed (OmegaConf) config works the same as the dataclass.
    assert exact_reference(OmegaConf.structured(LQConfig), "leader_follower") == ref


def test_unsolvable_games_raise_config_errors():
    # x' = 1.5 x, nobody can act, discount 0.95: 0.95 * 1.5^2 > 1, the values blow up.
    stuck = scalar_game(discount=0.95, A=[[1.5]], B={"p1": [[0.0]], "p2": [[0.0]]})
    with pytest.raises(ConfigError, match="diverged"):
        feedback_nash(stuck)
    # A negative terminal cost larger than the effort cost: not convex in the own action.
    concave = scalar_game(discount=None, horizon=1, Qf={"p1": [[-10.0]], "p2": [[1.0]]})
    with pytest.raises(ConfigError, match="not convex"):
        feedback_nash(concave)
    with pytest.raises(HierarchyError, match="every agent"):
        feedback_stackelberg(LQConfig(), [["p1"]])


@pytest.mark.parametrize("solve", [feedback_nash, feedback_stackelberg])
def test_unstable_dynamics_are_named_as_divergence_not_as_a_non_convex_cost(solve):
    # The default game's inputs both push along (0.5, 1): with x' = 3 x the other direction
    # grows threefold per step whatever they do, the coupled values ninefold per iteration
    # until rounding breaks their convexity. The cause is the unstable state, said as such.
    unstable = dataclasses.replace(LQConfig(), A=[[3.0, 0.0], [0.0, 3.0]])
    with pytest.raises(ConfigError, match="diverged") as err:
        solve(unstable)
    assert "not convex" not in str(err.value)
    long = dataclasses.replace(LQConfig(), A=[[30.0, 0.0], [0.0, 30.0]], horizon=300, discount=None)
    with pytest.raises(ConfigError, match="overflow over env.horizon=300") as err:
        solve(long)
    assert "not convex" not in str(err.value)
