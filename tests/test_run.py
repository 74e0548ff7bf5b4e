"""run(cfg): every env config trains end to end and writes the full set of artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dgsolve.run import run
from dgsolve.solvers.ppo import PPOSolver
from tests.conftest import TINY
from tests.test_config import options

MPE_ENVS = [e for e in options("env") if e.startswith("simple_")]


@pytest.mark.parametrize("env", MPE_ENVS)
def test_every_mpe_env_trains(make_cfg, tmp_path, env):
    cfg = make_cfg([*TINY, f"env={env}", "task.render=false"])
    summary = run(cfg, tmp_path)
    assert summary["env_steps"] == 64
    assert set(summary["returns"]) == set(summary["random_returns"])
    assert (tmp_path / "policy.pt").is_file()


@pytest.mark.parametrize("env", ["matrix", "lq"])
def test_games_with_known_answers_train(make_cfg, tmp_path, env):
    summary = run(make_cfg([*TINY, f"env={env}", "algo=stackelberg_ppo"]), tmp_path)
    assert summary["env_steps"] == 64


def test_tiers_on_the_bargaining_game_are_refused(make_cfg, tmp_path):
    from dgsolve.errors import ConfigError

    with pytest.raises(ConfigError, match="hierarchy=simultaneous"):
        run(make_cfg([*TINY, "env=bargain", "algo=stackelberg_ppo"]), tmp_path)


def test_mpe_continuous_actions_train(make_cfg, tmp_path):
    cfg = make_cfg(
        [*TINY, "env=simple_speaker_listener", "env.continuous_actions=true", "task.render=false"]
    )
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed"


@pytest.mark.parametrize(
    "factory,extra",
    [
        ("pettingzoo.classic.rps_v2:parallel_env", ["env.max_cycles=10"]),
        ("pettingzoo.classic.tictactoe_v3:env", []),  # AEC, turn-based, action masks
        ("pettingzoo.classic.connect_four_v3:env", ["algo=stackelberg_ppo"]),
    ],
)
def test_generic_pettingzoo_envs_train(make_cfg, tmp_path, factory, extra):
    cfg = make_cfg([*TINY, "env=pettingzoo", f"env.factory={factory}", *extra])
    summary = run(cfg, tmp_path)
    assert summary["env_steps"] == 64
    assert summary["env"] == factory


def test_artifacts_of_a_stackelberg_run(make_cfg, tmp_path):
    cfg = make_cfg([*TINY, "algo=stackelberg_ppo", "env=simple_adversary"])
    summary = run(cfg, tmp_path)
    for name in (
        "history.json",
        "history.npz",
        "checkpoints/last.pt",
        "policy.pt",
        "summary.json",
        "plots/returns.png",
        "plots/losses.png",
        "rollout.gif",
    ):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("env_steps", "wall_time_s", "steps_per_s", "seed", "returns", "versions"):
        assert key in on_disk
    assert summary["tiers"] == [["adversary_0"], ["agent_0", "agent_1"]]
    npz = np.load(tmp_path / "history.npz")
    assert npz["episodes/returns/adversary_0"].dtype == np.float64
    assert npz["updates/agent_0/policy_loss"].shape == (2,)
    # the leader updates every second iteration (follower_updates_per_leader=2)
    assert npz["updates/adversary_0/policy_loss"].shape == (1,)
    policy = torch.load(tmp_path / "policy.pt", weights_only=True)
    assert [lr["name"] for lr in policy["learners"]] == ["adversary_0", "agent_0", "agent_1"]


def test_same_config_twice_gives_identical_history(make_cfg, tmp_path):
    cfg = make_cfg([*TINY, "algo=stackelberg_ppo", "task.render=false"])
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    for name in ("history.json", "history.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_losses_are_means_over_all_epochs(make_cfg, tmp_path, monkeypatch):
    seen: list[float] = []
    original = PPOSolver._minibatch_loss

    def spy(self, *args):
        stats = original(self, *args)
        if args[0].name == "agent_0":
            seen.append(stats["policy_loss"])
        return stats

    monkeypatch.setattr(PPOSolver, "_minibatch_loss", spy)
    cfg = make_cfg(
        [
            *TINY,
            "algo=nash_ppo",
            "algo.num_epochs=3",
            "algo.total_timesteps=32",
            "task.render=false",
        ]
    )
    run(cfg, tmp_path)
    logged = json.loads((tmp_path / "history.json").read_text())["updates"]["agent_0"]
    assert logged["policy_loss"] == [pytest.approx(sum(seen) / len(seen))]


def test_policies_rebuild_from_the_run_directory_alone(make_cfg, tmp_path):
    from omegaconf import OmegaConf

    from dgsolve import games
    from dgsolve.run import load_policies

    cfg = make_cfg([*TINY, "algo=stackelberg_ppo", "task.render=false"])
    run(cfg, tmp_path)
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    joint, loaded = load_policies(tmp_path, num_envs=3)
    assert loaded.algo.name == "stackelberg_ppo"
    game = games.make(OmegaConf.merge(cfg.env, {"num_envs": 3}))
    ts = game.reset(seed=0)
    actions = joint.act(ts, greedy=True)
    assert set(actions) == set(game.agents) and actions["agent_0"].shape == (3,)
    state = torch.load(tmp_path / "policy.pt", weights_only=True)
    net = joint.policies["adversary_0"].net
    saved = state["learners"][0]["state_dict"]
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in saved.items())
