"""MatrixGame: config validation, payoffs, one-shot and repeated stepping, auto-reset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dgsolve.errors import ConfigError
from dgsolve.games.matrix import CANONICAL_GAMES, MatrixConfig, MatrixGame, payoff_matrices


def test_twelve_canonical_games_match_the_shared_table():
    # MATRIX_GAMES.md (after "Oracles & Followers", Gerstgrasser & Parkes, ICML 2023): two rows.
    assert len(CANONICAL_GAMES) == 12
    A, B = payoff_matrices(MatrixConfig(game="chicken"))
    np.testing.assert_array_equal(A, [[3, 2], [4, 1]])
    np.testing.assert_array_equal(B, [[3, 4], [2, 1]])
    A, B = payoff_matrices(MatrixConfig(game="hero"))
    np.testing.assert_array_equal(A, [[1, 3], [4, 2]])
    np.testing.assert_array_equal(B, [[1, 4], [3, 2]])


def test_payoffs_override_game_and_may_be_any_shape():
    cfg = MatrixConfig(
        game="stag_hunt", payoffs=[[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 1]]]
    )
    A, B = payoff_matrices(cfg)
    np.testing.assert_array_equal(A, [[1, 3, 5], [7, 9, 1]])
    np.testing.assert_array_equal(B, [[2, 4, 6], [8, 0, 1]])
    game = MatrixGame(cfg)
    assert game.spec("row").num_actions == 2
    assert game.spec("column").num_actions == 3
    assert game.spec("row").obs_dim == 2 * 3 + 1


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"game": "nope"}, "not a known matrix game"),
        ({"game": None}, "not a known matrix game"),
        ({"payoffs": [[[1, 2], [3]]]}, "env.payoffs"),
        ({"payoffs": [[1, 2], [3, 4]]}, "env.payoffs"),
        ({"payoffs": [[["a", 1]]]}, "env.payoffs"),
        ({"payoffs": []}, "env.payoffs"),
        ({"payoffs": [[[1.0, float("nan")]]]}, "finite"),
        ({"rounds": 0}, "env.rounds"),
        ({"num_envs": 0}, "env.num_envs"),
        ({"leader": "p1"}, "env.leader"),
        ({"render": True}, "env.render"),
        ({"reward_offset": float("inf")}, "env.reward_offset"),
    ],
)
def test_bad_config_is_a_one_line_config_error(overrides, words):
    with pytest.raises(ConfigError, match=words) as info:
        MatrixGame(MatrixConfig(**overrides))
    assert "\n" not in str(info.value)


def test_built_from_a_composed_omegaconf_config():
    cfg = OmegaConf.structured(MatrixConfig)
    cfg.game = "battle"
    cfg.rounds = 3
    game = MatrixGame(cfg)
    assert game.rounds == 3
    np.testing.assert_array_equal(game.A, [[2, 3], [4, 1]])


def test_one_shot_step_pays_once_and_resets():
    game = MatrixGame(MatrixConfig(game="prisoners_dilemma", num_envs=4, reward_offset=-2.5))
    ts = game.reset(seed=0)
    start = torch.tensor([0, 0, 0, 0, 1.0])
    for agent in game.agents:
        assert ts.obs[agent].shape == (4, 5)
        assert torch.equal(ts.obs[agent], start.expand(4, 5))
        assert torch.equal(ts.reward[agent], torch.zeros(4))
        assert ts.legal[agent].shape == (4, 2) and ts.legal[agent].all()
        assert ts.acting[agent].shape == (4,) and ts.acting[agent].all()
    assert not ts.done.any()

    row = torch.tensor([0, 0, 1, 1])
    col = torch.tensor([0, 1, 0, 1])
    ts = game.step({"row": row, "column": col})
    # PD payoffs (C,C)=(3,3), (C,D)=(1,4), (D,C)=(4,1), (D,D)=(2,2), each shifted by -2.5.
    assert torch.allclose(ts.reward["row"], torch.tensor([0.5, -1.5, 1.5, -0.5]))
    assert torch.allclose(ts.reward["column"], torch.tensor([0.5, 1.5, -1.5, -0.5]))
    assert ts.terminated.all() and not ts.truncated.any()
    # The new game starts at once; final_obs is the last joint action, one-hot.
    assert torch.equal(ts.obs["row"], start.expand(4, 5))
    assert torch.equal(ts.final_obs["column"], torch.eye(5)[[0, 1, 2, 3]])


def test_repeated_game_observes_the_last_joint_action_and_ends_after_t_rounds():
    game = MatrixGame(MatrixConfig(game="stag_hunt", num_envs=2, rounds=3))
    ts = game.reset()
    plays = [([1, 0], [0, 0]), ([0, 1], [1, 1]), ([1, 1], [0, 1])]
    for t, (row, col) in enumerate(plays):
        ts = game.step({"row": torch.tensor(row), "column": torch.tensor(col)})
        # Stag hunt: (C,C)=(4,4), (C,D)=(1,3), (D,C)=(3,1), (D,D)=(2,2).
        expected = {(0, 0): 4, (0, 1): 1, (1, 0): 3, (1, 1): 2}
        assert ts.reward["row"].tolist() == [
            expected[(r, c)] for r, c in zip(row, col, strict=True)
        ]
        joint = [r * 2 + c for r, c in zip(row, col, strict=True)]
        assert torch.equal(ts.final_obs["row"], torch.eye(5)[joint])
        if t < 2:
            assert not ts.done.any()
            assert torch.equal(ts.obs["row"], torch.eye(5)[joint])
            assert torch.equal(ts.obs["row"], ts.obs["column"])
        else:
            assert ts.terminated.all()
            assert torch.equal(ts.obs["row"], torch.eye(5)[[4, 4]])
    # The next game counts its rounds from zero again.
    ts = game.step({"row": torch.tensor([0, 0]), "column": torch.tensor([0, 0])})
    assert not ts.done.any()


def test_agents_get_separate_observation_tensors():
    game = MatrixGame(MatrixConfig(num_envs=2))
    ts = game.reset()
    ts.obs["row"][0, 0] = 7.0
    assert ts.obs["column"][0, 0] == 0.0
