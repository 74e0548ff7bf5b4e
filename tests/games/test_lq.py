"""LQGame: config validation, one step of dynamics and costs by hand, horizons and auto-reset."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from dgsolve.errors import ConfigError
from dgsolve.games.lq import LQConfig, LQGame


def test_default_config_is_a_two_player_game_with_a_2d_state():
    game = LQGame(LQConfig(num_envs=3))
    assert game.agents == ("p1", "p2")
    assert game.leader == "p1"
    spec = game.spec("p1")
    assert spec.obs_dim == 2 and spec.action_dim == 1 and not spec.discrete
    assert spec.low == (-5.0,) and spec.high == (5.0,)


def test_built_from_a_composed_omegaconf_config():
    cfg = OmegaConf.structured(LQConfig)
    cfg.discount = None
    cfg.horizon = 4
    game = LQGame(cfg)
    assert game.spec("p2").obs_dim == 3  # state plus the time feature


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"A": [[1.0, 0.0]]}, "env.A must be square"),
        ({"A": [[1.0, 0.0], [1.0]]}, "env.A must be a matrix"),
        ({"B": {"p1": [[1.0]], "p2": [[1.0], [0.0]]}}, "env.B.p1 must have n=2 rows"),
        ({"Q": {"p1": [[1.0, 0.0], [0.0, 1.0]]}}, "env.Q must have one entry per agent"),
        ({"Q": {"p1": [[1.0, 0.5], [0.0, 1.0]], "p2": [[1.0, 0.0], [0.0, 1.0]]}}, "symmetric"),
        ({"Q": {"p1": [[1.0]], "p2": [[1.0, 0.0], [0.0, 1.0]]}}, "env.Q.p1 must be 2x2"),
        ({"R": {"p1": {"p1": [[0.0]]}, "p2": {"p2": [[1.0]]}}}, "positive definite"),
        ({"R": {"p1": {"p1": [[-1.0]]}, "p2": {"p2": [[1.0]]}}}, "positive definite"),
        ({"R": {"p1": {"p2": [[1.0]]}, "p2": {"p2": [[1.0]]}}}, "env.R.p1.p1"),
        ({"R": {"p1": {"p1": [[1.0]], "p3": [[1.0]]}, "p2": {"p2": [[1.0]]}}}, "unknown agents"),
        ({"R": {"p1": {"p1": [[1.0]], "p2": [[1.0, 0.0]]}, "p2": {"p2": [[1.0]]}}}, "1x1"),
        ({"horizon": 10}, "exactly one of env.horizon"),
        ({"discount": None}, "exactly one of env.horizon"),
        ({"discount": 1.0}, "env.discount"),
        ({"discount": None, "horizon": 0}, "env.horizon"),
        ({"Qf": {"p1": [[1.0]], "p2": [[1.0]]}}, "env.Qf"),
        ({"x0_mean": [1.0]}, "env.x0_mean"),
        ({"noise_std": -0.1}, "env.noise_std"),
        ({"action_bound": 0.0}, "env.action_bound"),
        ({"leader": "p3"}, "env.leader"),
        ({"render": True}, "env.render"),
    ],
)
def test_bad_config_is_a_one_line_config_error(overrides, words):
    with pytest.raises(ConfigError, match=words) as info:
        LQGame(LQConfig(**overrides))
    assert "\n" not in str(info.value)


def scalar_free_game(**overrides) -> LQConfig:
    """A hand-checkable game: 2-D state, deterministic start, no noise, one action each."""
    cfg = dict(
        A=[[1.0, 1.0], [0.0, 2.0]],
        B={"a": [[1.0], [0.0]], "b": [[0.0], [3.0]]},
        Q={"a": [[1.0, 0.0], [0.0, 0.0]], "b": [[0.0, 0.0], [0.0, 2.0]]},
        R={"a": {"a": [[1.0]], "b": [[0.5]]}, "b": {"b": [[4.0]]}},
        leader="a",
        x0_mean=[1.0, 2.0],
        x0_std=0.0,
        noise_std=0.0,
        action_bound=10.0,
        num_envs=2,
    )
    cfg.update(overrides)
    return LQConfig(**cfg)


def test_one_step_of_dynamics_and_costs_by_hand():
    game = LQGame(scalar_free_game(discount=0.9))
    ts = game.reset(seed=0)
    assert torch.allclose(ts.obs["a"], torch.tensor([[1.0, 2.0]] * 2))
    ts = game.step({"a": torch.tensor([[1.0], [0.0]]), "b": torch.tensor([[-1.0], [2.0]])})
    # x = (1, 2). Env 0: u_a = 1, u_b = -1 -> x' = (1 + 2 + 1, 4 - 3) = (4, 1).
    #   cost_a = x1^2 + 1 * u_a^2 + 0.5 * u_b^2 = 1 + 1 + 0.5 = 2.5; cost_b = 2 * 4 + 4 * 1 = 12.
    # Env 1: u_a = 0, u_b = 2 -> x' = (3, 4 + 6) = (3, 10).
    #   cost_a = 1 + 0 + 0.5 * 4 = 3;  cost_b = 8 + 4 * 4 = 24.
    assert torch.allclose(ts.obs["a"], torch.tensor([[4.0, 1.0], [3.0, 10.0]]))
    assert torch.allclose(ts.reward["a"], torch.tensor([-2.5, -3.0]))
    assert torch.allclose(ts.reward["b"], torch.tensor([-12.0, -24.0]))
    assert not ts.done.any()


def test_actions_are_clipped_before_they_act_and_are_charged():
    game = LQGame(scalar_free_game(discount=0.9, action_bound=0.5))
    game.reset()
    ts = game.step({"a": torch.tensor([[3.0], [-3.0]]), "b": torch.tensor([[0.0], [0.0]])})
    # u_a is clipped to +-0.5: x'_1 = 1 + 2 +- 0.5 and cost_a = 1 + 0.25.
    assert torch.allclose(ts.obs["a"][:, 0], torch.tensor([3.5, 2.5]))
    assert torch.allclose(ts.reward["a"], torch.tensor([-1.25, -1.25]))


def test_finite_horizon_time_feature_terminal_cost_and_reset():
    game = LQGame(
        scalar_free_game(
            discount=None,
            horizon=2,
            Qf={"a": [[3.0, 0.0], [0.0, 0.0]], "b": [[0.0, 0.0], [0.0, 1.0]]},
        )
    )
    ts = game.reset()
    assert torch.allclose(ts.obs["b"], torch.tensor([[1.0, 2.0, 0.0]] * 2))
    zero = {"a": torch.zeros(2, 1), "b": torch.zeros(2, 1)}
    ts = game.step(zero)
    # x: (1, 2) -> (3, 4); time feature t / T = 1 / 2.
    assert torch.allclose(ts.obs["a"], torch.tensor([[3.0, 4.0, 0.5]] * 2))
    assert not ts.done.any()
    ts = game.step(zero)
    # x: (3, 4) -> (7, 8), the last step. Stage cost a: 9, b: 2 * 16 = 32; terminal cost
    # a: 3 * 49 = 147, b: 64.
    assert ts.terminated.all() and not ts.truncated.any()
    assert torch.allclose(ts.reward["a"], torch.tensor([-(9.0 + 147.0)] * 2))
    assert torch.allclose(ts.reward["b"], torch.tensor([-(32.0 + 64.0)] * 2))
    assert torch.allclose(ts.final_obs["a"], torch.tensor([[7.0, 8.0, 1.0]] * 2))
    assert torch.allclose(ts.obs["a"], torch.tensor([[1.0, 2.0, 0.0]] * 2))


def test_infinite_horizon_truncates_at_max_steps_with_final_obs():
    game = LQGame(scalar_free_game(discount=0.9, max_steps=3))
    ts = game.reset()
    zero = {"a": torch.zeros(2, 1), "b": torch.zeros(2, 1)}
    for _ in range(2):
        ts = game.step(zero)
        assert not ts.done.any()
    ts = game.step(zero)
    # (1, 2) -> (3, 4) -> (7, 8) -> (15, 16); no terminal cost in the discounted game.
    assert ts.truncated.all() and not ts.terminated.any()
    assert torch.allclose(ts.final_obs["b"], torch.tensor([[15.0, 16.0]] * 2))
    assert torch.allclose(ts.obs["b"], torch.tensor([[1.0, 2.0]] * 2))
    assert torch.allclose(ts.reward["a"], torch.tensor([-49.0] * 2))


def test_initial_states_and_noise_are_seeded():
    cfg = LQConfig(num_envs=4096, x0_mean=[1.0, -2.0], x0_std=0.5, noise_std=0.1)
    game = LQGame(cfg)
    first = game.reset(seed=3).obs["p1"]
    assert torch.equal(first, game.reset(seed=3).obs["p1"])
    assert not torch.equal(first, game.reset(seed=4).obs["p1"])
    assert torch.allclose(first.mean(0), torch.tensor([1.0, -2.0]), atol=0.05)
    assert torch.allclose(first.std(0), torch.tensor([0.5, 0.5]), atol=0.05)
    # With zero actions the step adds N(0, 0.1^2) noise to A x.
    x = game.reset(seed=3).obs["p1"]
    ts = game.step({"p1": torch.zeros(4096, 1), "p2": torch.zeros(4096, 1)})
    A = torch.tensor(cfg.A)
    residual = ts.obs["p1"] - x @ A.T
    assert torch.allclose(residual.std(0), torch.tensor([0.1, 0.1]), atol=0.01)
