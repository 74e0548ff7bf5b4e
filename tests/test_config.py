"""Every option of every config group composes; typos fail at composition."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from dgsolve.cli import config_dir
from tests.conftest import compose_config

GROUPS = ("env", "algo", "hierarchy", "hardware", "task")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda x: str(x)
)
def test_every_option_composes(group, option):
    cfg = compose_config([f"{group}={option}"])
    node = cfg[group]
    assert node is not None
    if group in ("env", "algo"):
        assert node.name == option


def test_algo_picks_default_hierarchy():
    assert compose_config(["algo=stackelberg_ppo"]).hierarchy.mode.value == "leader_follower"
    assert compose_config(["algo=nash_ppo"]).hierarchy.mode.value == "simultaneous"
    explicit = compose_config(["algo=nash_ppo", "hierarchy=leader_follower"])
    assert explicit.hierarchy.mode.value == "leader_follower"


def test_action_sequence_from_command_line():
    cfg = compose_config(["hierarchy.action_sequence=[[adversary_0],[agent_0,agent_1]]"])
    assert list(map(list, cfg.hierarchy.action_sequence)) == [
        ["adversary_0"],
        ["agent_0", "agent_1"],
    ]


@pytest.mark.parametrize(
    "override",
    ["algo.lrr=0.1", "hardware.device=gpu", "env.num_envs=many", "env.NN=3", "sed=1"],
)
def test_typos_fail_at_composition(override):
    with pytest.raises((ConfigCompositionException, ValidationError, ConfigKeyError)):
        compose_config([override])


def test_unknown_option_fails():
    with pytest.raises(ConfigCompositionException):
        compose_config(["env=simple_nowhere"])


def test_every_yaml_key_has_a_comment():
    """STYLE.md: every YAML key carries a comment (on its line or in the file header)."""
    for path in Path(config_dir()).rglob("*.yaml"):
        if path.name == "config.yaml":
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            key_line = ":" in stripped and not stripped.startswith(("#", "-"))
            is_header = stripped.endswith(":") and not line.startswith(" ")
            if key_line and not is_header and not stripped.startswith("name:"):
                assert "#" in line, f"{path.name}: '{stripped}' has no comment"


def test_games_bring_their_ppo_settings_and_the_command_line_wins():
    matrix = compose_config(["env=matrix", "algo=nash_ppo"]).algo
    assert (matrix.lr, matrix.num_steps, matrix.num_minibatches, matrix.ent_coef) == (
        0.01,
        1,
        1,
        0.0,
    )
    assert matrix.total_timesteps == 256 * 200  # 200 iterations of every copy
    repeated = compose_config(["env=matrix", "env.rounds=10", "env.num_envs=8"]).algo
    assert (repeated.num_steps, repeated.total_timesteps) == (10, 8 * 10 * 200)
    assert compose_config(["env=matrix", "algo.lr=0.5"]).algo.lr == 0.5
    lq = compose_config(["env=lq", "algo=stackelberg_ppo"]).algo
    assert lq.policy.value == "linear" and lq.ent_coef == 0.2
    bargain = compose_config(["env=bargain", "algo=ppo"]).algo
    assert bargain.total_timesteps == 10_000_000 and list(bargain.hidden_sizes) == [256, 256]
    mpe = compose_config(["env=simple_spread", "algo=nash_ppo", "env.max_cycles=40"]).algo
    assert (mpe.lr, mpe.num_steps, mpe.gamma, mpe.clip_vloss) == (0.001, 40, None, False)
    assert mpe.total_timesteps == 2_000_000
    generic = compose_config(["env=pettingzoo", "algo=nash_ppo"]).algo
    assert (generic.lr, generic.num_steps, generic.clip_vloss) == (0.0003, 64, True)


def test_exact_algo_ignores_the_ppo_settings():
    cfg = compose_config(["env=matrix", "algo=exact"])
    assert "lr" not in cfg.algo and cfg.env.ppo.lr == 0.01


@pytest.mark.parametrize("commitment", ["auto", "mixed", "pure"])
def test_commitment_options_compose(commitment):
    cfg = compose_config(
        ["hierarchy.follower_observes=queries", f"hierarchy.commitment={commitment}"]
    )
    assert cfg.hierarchy.commitment.value == commitment
