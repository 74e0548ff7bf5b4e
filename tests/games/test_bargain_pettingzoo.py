"""PettingZoo views of the bargaining game: the API tests, and the rules seen through them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from pettingzoo.test import api_test, parallel_api_test

from dgsolve.errors import ConfigError
from dgsolve.games.bargain import BargainConfig, BargainGame, env, parallel_env
from dgsolve.games.bargain.rules import ACCEPT, WALK

#: warnings the API tests raise about things the brief fixes: agent names "p1"/"p2", and the
#: parallel test's unmasked random actions (it reads masks only from dict observations).
EXPECTED = ("descriptor>_<number>", "illegal action")


def _unexpected(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if not any(e in str(w.message) for e in EXPECTED)]


def test_parallel_api_test_passes():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallel_api_test(parallel_env(), num_cycles=500)
    assert not _unexpected(caught)


def test_aec_api_test_passes():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api_test(env(render_mode="ansi"), num_cycles=500)
    assert not _unexpected(caught)


def test_aec_turns_masks_and_rewards_follow_the_batched_game():
    e = env()
    e.reset(seed=5)
    ref = BargainGame(BargainConfig(num_envs=1, backend="torch"))
    ts = ref.reset(seed=5)
    assert e.agent_selection == "p1"
    np.testing.assert_array_equal(e.observe("p1"), ts.obs["p1"][0].numpy())
    mask = e.infos["p1"]["action_mask"]
    assert mask.dtype == np.int8 and mask[ACCEPT] == 0 and mask[WALK] == 1 and mask[:80].all()
    e.step(17)
    assert e.agent_selection == "p2" and e.infos["p2"]["action_mask"].all()
    e.step(ACCEPT)
    ts = ref.step({"p1": torch.tensor([17]), "p2": torch.tensor([WALK])})
    ts = ref.step({"p1": torch.tensor([WALK]), "p2": torch.tensor([ACCEPT])})
    assert all(e.terminations.values())
    for agent in ("p1", "p2"):
        assert e._cumulative_rewards[agent] == pytest.approx(float(ts.reward[agent][0]))
        np.testing.assert_array_equal(e.observe(agent), ts.final_obs[agent][0].numpy())
    for _ in e.agent_iter():
        assert e.last()[2]  # terminated
        e.step(None)
    assert e.agents == []


def test_illegal_action_walks_with_a_warning():
    e = parallel_env()
    e.reset(seed=1)
    with pytest.warns(UserWarning, match="illegal action"):
        obs, rewards, terms, truncs, infos = e.step({"p1": ACCEPT, "p2": WALK})
    assert all(terms.values()) and e.agents == []
    outside = obs["p1"][3]  # own outside offer / M: what WALK pays
    assert rewards["p1"] == pytest.approx(float(outside))
    e.reset(seed=1)
    with pytest.warns(UserWarning, match="illegal action"):
        e.step({"p2": 3})  # the acting player gave no action


def test_idle_players_action_is_ignored():
    e = parallel_env()
    e.reset(seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        obs, rewards, terms, _, _ = e.step({"p1": 12, "p2": ACCEPT})
    assert not any(terms.values()) and obs["p2"][7] == 1.0  # P1's offer is on the table


def test_render_and_arguments():
    e = env(render_mode="ansi", quantities=[2, 2], rounds=2)
    e.reset(seed=0)
    assert e.observation_space("p1").shape == (2 * 2 + 4 + 11,)
    assert e.action_space("p2").n == 11
    assert "p1 to move" in e.render()
    with pytest.raises(ConfigError, match="unknown bargain env argument"):
        env(num_envs=3)
    with pytest.raises(ConfigError, match="render_mode"):
        parallel_env(render_mode="rgb_array")
