"""The torch MPE backend keeps the Game interface's promises: seeded resets, auto-reset with
the finishing reward and the final observation, saved state that resumes exactly, rendering,
and the config's ``env.backend`` choosing between it and mpe2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mpe2 import simple_spread_v3

from dgsolve import games
from dgsolve.errors import ConfigError
from dgsolve.games.mpe import SCENARIOS, TorchMPEGame, make_torch
from dgsolve.games.mpe.world import distance
from dgsolve.games.pettingzoo import PettingZooGame
from tests.conftest import through_torch


def random_actions(game: TorchMPEGame, gen: torch.Generator, copies: int | None = None):
    """Uniformly random actions for every agent of ``copies`` copies (default: all)."""
    n = game.num_envs if copies is None else copies
    out = {}
    for a in game.agents:
        spec = game.spec(a)
        if spec.discrete:
            out[a] = torch.randint(spec.num_actions, (n,), generator=gen)
        else:
            out[a] = torch.rand(n, spec.action_dim, generator=gen)
    return out


def test_a_seed_fixes_every_copy_and_copies_differ():
    a, b = make_torch("simple_spread", 8, seed=3), make_torch("simple_spread", 8, seed=3)
    oa, ob = a.observe(), b.observe()
    for agent in a.agents:
        assert torch.equal(oa[agent], ob[agent])
        assert not torch.equal(oa[agent][0], oa[agent][1])
    assert not torch.equal(
        make_torch("simple_spread", 8, seed=4).observe()["agent_0"], oa["agent_0"]
    )


def test_episodes_truncate_after_max_cycles_and_restart_with_the_last_reward_once():
    game = make_torch("simple_spread", 4, seed=0, max_cycles=5)
    held = make_torch("simple_spread", 4, seed=0, max_cycles=5, auto_reset=False)  # kept at the end
    gen = torch.Generator().manual_seed(0)
    for t in range(1, 6):
        acts = random_actions(game, gen)
        ts, end = game.step(acts), held.step(acts)
        assert bool(ts.truncated.all()) is (t == 5) and not ts.terminated.any()
    for agent in game.agents:
        assert torch.equal(ts.reward[agent], end.reward[agent])
        assert torch.equal(ts.final_obs[agent], end.obs[agent])
        assert not torch.equal(ts.obs[agent], end.obs[agent])
        assert torch.equal(ts.obs[agent][:, :2], torch.zeros(4, 2))  # new games stand still
    assert torch.equal(game.steps, torch.zeros(4, dtype=torch.long))
    nxt = game.step(random_actions(game, gen))
    assert not nxt.done.any()


def test_early_termination_ends_only_the_covered_copy():
    game = make_torch("simple_spread", 2, seed=0, terminate_on_success=True, N=1)
    # copy 0: the agent sits on its landmark; copy 1: far away
    game.state.pos[0, 0] = game.state.pos[0, 1]
    game.state.pos[1, 0] = game.state.pos[1, 1] + 0.5
    ts = game.step({"agent_0": torch.zeros(2, dtype=torch.long)})
    assert ts.terminated.tolist() == [True, False] and not ts.truncated.any()
    assert game.steps.tolist() == [0, 1]
    gap = distance(game.state.pos[:, 0], game.state.pos[:, 1])
    assert float(gap[1]) == pytest.approx(0.5 * 2**0.5, abs=1e-12)  # still (0.5, 0.5) away


def test_saved_state_resumes_the_same_games():
    game = make_torch("simple_spread", 3, seed=5, max_cycles=4)
    gen = torch.Generator().manual_seed(1)
    plan = [random_actions(game, gen) for _ in range(9)]
    for acts in plan[:2]:
        game.step(acts)
    saved = through_torch(game.state_dict())
    first = [game.step(acts) for acts in plan[2:]]
    other = make_torch("simple_spread", 3, seed=99, max_cycles=4)
    other.load_state_dict(saved)
    second = [other.step(acts) for acts in plan[2:]]
    for x, y in zip(first, second, strict=True):
        for agent in game.agents:
            assert torch.equal(x.obs[agent], y.obs[agent])
            assert torch.equal(x.reward[agent], y.reward[agent])


def test_a_snapshot_of_another_game_is_refused():
    saved = make_torch("simple_spread", 3, seed=0).state_dict()
    with pytest.raises(ValueError, match="saved game state"):
        make_torch("simple_spread", 3, seed=0, N=4).load_state_dict(saved)


def test_load_mpe2_state_copies_the_world_into_one_copy():
    env = simple_spread_v3.parallel_env()
    first, _ = env.reset(seed=11)
    game = make_torch("simple_spread", 3, seed=0)
    game.load_mpe2_state(env, copy=1)
    mine = game.observe()
    for agent in game.agents:
        assert np.array_equal(mine[agent][1].numpy(), first[agent])
        assert not np.array_equal(mine[agent][0].numpy(), first[agent])
    with pytest.raises(ValueError, match="agents"):
        make_torch("simple_spread", 1, N=4).load_mpe2_state(env)


def test_actions_for_another_batch_are_refused():
    game = make_torch("simple_spread", 3, seed=0)
    with pytest.raises(ValueError, match="3 copies"):
        game.step(random_actions(game, torch.Generator(), copies=2))


def test_unknown_mpe2_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="no argument 'bogus'"):
        make_torch("simple_spread", 2, bogus=1)
    with pytest.raises(ValueError, match="curriculum"):
        make_torch("simple_spread", 2, curriculum=True)
    with pytest.raises(ValueError, match="known"):
        make_torch("simple_nothing", 2)


def test_float32_worlds_agree_with_float64_ones_over_an_episode():
    wide = make_torch("simple_spread", 16, seed=2)
    narrow = make_torch("simple_spread", 16, seed=2, dtype=torch.float32)
    saved = wide.state_dict()
    narrow.load_state_dict({**saved, "world": {k: v.float() for k, v in saved["world"].items()}})
    gen = torch.Generator().manual_seed(3)
    for _ in range(25):
        acts = random_actions(wide, gen)
        a, b = wide.step(acts), narrow.step(acts)
        assert torch.allclose(a.final_obs["agent_0"], b.final_obs["agent_0"], atol=1e-3)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_renders_labelled_frames_of_one_size(scenario):
    game = make_torch(scenario, 2, seed=0, max_cycles=3)
    gen = torch.Generator().manual_seed(0)
    frames = game.render_episode(lambda ts: random_actions(game, gen, copies=1), 10, seed=1)
    frames = [np.asarray(f) for f in frames]
    assert len(frames) == 4  # the first state and one per step
    assert len({f.shape for f in frames}) == 1 and frames[0].dtype == np.uint8
    assert frames[0].std() > 0  # something is drawn


def test_env_backend_chooses_torch_or_mpe2(make_cfg):
    torch_game = games.make(make_cfg(["env=simple_spread", "env.num_envs=3"]).env)
    assert isinstance(torch_game, TorchMPEGame) and torch_game.num_envs == 3
    reference = games.make(
        make_cfg(["env=simple_spread", "env.backend=mpe2", "env.num_envs=2"]).env
    )
    assert isinstance(reference, PettingZooGame)
    assert [torch_game.spec(a) for a in torch_game.agents] == [
        reference.spec(a) for a in reference.agents
    ]
    reference.close()


def test_every_mpe_config_builds_on_the_torch_backend_with_mpe2s_spaces(make_cfg):
    for scenario in sorted(SCENARIOS):
        cfg = make_cfg([f"env={scenario}", "env.num_envs=1"]).env
        mine = games.make(cfg)
        cfg.backend = "mpe2"
        theirs = games.make(cfg)
        assert mine.agents == theirs.agents, scenario
        assert [mine.spec(a) for a in mine.agents] == [theirs.spec(a) for a in theirs.agents]
        assert mine.leader == theirs.leader
        theirs.close()


def test_an_unsupported_argument_in_the_config_is_a_config_error(make_cfg):
    cfg = make_cfg(["env=simple_spread"]).env
    cfg.N = 0
    with pytest.raises(ConfigError, match="env=simple_spread"):
        games.make(cfg)
