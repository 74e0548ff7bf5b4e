"""Every numeric option has a range, checked on the composed config (dgsolve/validation.py).

Composing with Hydra takes a few tenths of a second, so each group option is composed once and
a bad value is applied to a copy the way Hydra applies a command-line value (parse it, then
``OmegaConf.update(cfg, key, value, merge=True)`` on the struct config); the failures measured
in the issue are composed in full, which also checks that shortcut.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dgsolve import memory
from dgsolve.cli import config_dir
from dgsolve.config import (
    SCHEMAS,
    DGSolveConfig,
    HardwareConfig,
    HierarchyConfig,
    PSROLearnerConfig,
)
from dgsolve.errors import ConfigError
from dgsolve.validation import (
    FAMILY_RULES,
    RULES,
    Int,
    ListOf,
    OrNull,
    Real,
    numeric_fields,
    rule_for,
    validate,
)
from tests.conftest import compose_config


@pytest.fixture(autouse=True)
def workstation(monkeypatch):
    """A 24 GB machine, so that the memory check (tests/test_memory.py) passes the same
    everywhere."""
    monkeypatch.setattr(memory, "machine_memory", lambda: 24 * 10**9)


@functools.cache
def composed(options: tuple[str, ...]) -> DictConfig:
    return compose_config(list(options))


def with_values(options: tuple[str, ...], *values: str) -> DictConfig:
    """``compose_config([*options, *values])`` for value overrides, from a cached composition."""
    cfg = copy.deepcopy(composed(options))
    for override in OverridesParser.create().parse_overrides(list(values)):
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    return cfg


def config_error(cfg: DictConfig) -> str:
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- rules
@pytest.mark.parametrize(
    "rule,says,allowed,refused",
    [
        (Int(min=1), "an integer ≥ 1", [1, 10**12], [0, -3, True, 1.0, None, "1"]),
        (Int(min=0), "an integer ≥ 0", [0, 5], [-1, False]),
        (Int(min=1, max=16), "an integer from 1 to 16", [1, 16], [0, 17]),
        (
            Int(min=1, max=10**15),
            "an integer from 1 to 10^15",
            [1, 10**15],
            [0, 10**15 + 1, 99999999999999999999],
        ),
        (
            Real(low=0, high=1, low_open=True),
            "a finite number in (0, 1]",
            [1e-9, 0.5, 1, 1.0],
            [0, 0.0, 1.5, -1.0, math.nan, math.inf, True, None, "0.5"],
        ),
        (Real(low=0, high=1, high_open=True), "a finite number in [0, 1)", [0, 0.99], [1.0]),
        (Real(low=0), "a finite number ≥ 0", [0.0, 1e9], [-1e-9, math.inf, math.nan]),
        (Real(low=0, low_open=True), "a finite number > 0", [1e-9], [0.0]),
        (Real(), "a finite number", [-2.5, 0, 3], [math.nan, -math.inf, False]),
        (
            OrNull(Real(low=0, high=1, low_open=True)),
            "null or a finite number in (0, 1]",
            [None, 0.99],
            [0.0, 1.5, math.nan],
        ),
        (
            ListOf(Int(min=1)),
            "a list of integers ≥ 1",
            [[], [64, 64], (8,)],
            [[0], [64, -1], [True], [1.0], 5, None, "64"],
        ),
        (ListOf(Int(min=1), min_len=1), "a non-empty list of integers ≥ 1", [[7, 4, 1]], [[]]),
        (ListOf(Real()), "a list of finite numbers", [[1.0, -1]], [[math.inf], [True]]),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_rules_check_and_say_what_is_allowed(rule, says, allowed, refused):
    assert rule.describe() == says
    assert [v for v in allowed if not rule.allows(v)] == []
    assert [v for v in refused if rule.allows(v)] == []


# --------------------------------------------------------------------------- coverage
def schema_paths() -> list[tuple[type, str, str | None]]:
    """(schema, dotted path, env family) of every numeric field of every schema, including the
    dataclasses a schema inherits from (e.g. MatrixConfig behind MatrixEnvConfig)."""
    schemas = [(DGSolveConfig, ""), (HardwareConfig, "hardware."), (HierarchyConfig, "hierarchy.")]
    schemas += [(cls, f"{group}.") for group, named in SCHEMAS.items() for cls in named.values()]
    schemas.append((PSROLearnerConfig, "algo.ppo."))  # nested in PSROConfig
    out = []
    for cls, prefix in schemas:
        family = None
        if prefix == "env.":
            default = {f.name: f.default for f in dataclasses.fields(cls)}["family"]
            family = default if isinstance(default, str) and default != "???" else None
        for base in cls.__mro__:
            if dataclasses.is_dataclass(base):
                out += [(base, prefix + name, family) for name in numeric_fields(base)]
    return out


def test_every_numeric_field_has_a_rule():
    missing = sorted(
        {
            f"{cls.__name__}: {path}"
            for cls, path, family in schema_paths()
            if not rule_for(path, family)
        }
    )
    assert missing == [], f"numeric options without a range in dgsolve/validation.py: {missing}"


def test_every_rule_is_an_option_of_some_schema():
    paths = {path for _, path, _ in schema_paths()}
    families = {(family, path) for _, path, family in schema_paths()}
    assert sorted(set(RULES) - paths) == []
    assert sorted(set(FAMILY_RULES) - families) == []


def test_numeric_fields_reads_the_annotations():
    from dgsolve.config import LQEnvConfig, PPOConfig, TrainTaskConfig
    from dgsolve.games.lq import LQConfig

    assert "hidden_sizes" in numeric_fields(PPOConfig)  # list[int]
    assert "gamma" in numeric_fields(PPOConfig)  # float | None
    assert "share_policy" not in numeric_fields(PPOConfig)  # bool
    assert "eq_tolerance" in numeric_fields(TrainTaskConfig)
    # the env schema leaves x0_mean untyped (`list`); the game's config types it list[float]
    assert "x0_mean" not in numeric_fields(LQEnvConfig)
    assert "x0_mean" in numeric_fields(LQConfig)


# --------------------------------------------------------------------------- bad values
SPREAD, TAG, WORLD, REFERENCE = (
    ("env=simple_spread",),
    ("env=simple_tag",),
    ("env=simple_world_comm",),
    ("env=simple_reference",),
)
MATRIX, LQ, BARGAIN, PETTINGZOO = (
    ("env=matrix",),
    ("env=lq",),
    ("env=bargain",),
    ("env=pettingzoo",),
)
BARGAIN_PPO = ("env=bargain", "algo=ppo")

#: the failures measured in the issue: tracebacks, or runs that went on without a word
MEASURED = [
    ("env.num_envs=0", "env.num_envs=0"),
    ("env.num_envs=-3", "env.num_envs=-3"),
    ("algo.num_steps=0", "algo.num_steps=0"),
    ("algo.num_minibatches=0", "algo.num_minibatches=0"),
    ("algo.follower_updates_per_leader=0", "algo.follower_updates_per_leader=0"),
    ("task.checkpoint_every=0", "task.checkpoint_every=0"),
    ("algo.lr=-1", "algo.lr=-1.0"),
    ("algo.lr=nan", "algo.lr=nan"),
    ("seed=-1", "seed=-1"),
    ("env.N=0", "env.N=0"),
    ("algo.gamma=1.5", "algo.gamma=1.5"),
    ("env.max_cycles=0", "env.max_cycles=0"),
    ("algo.hidden_sizes=[0]", "algo.hidden_sizes=[0]"),
    ("algo.lr=1e6", "algo.lr=1000000.0"),
    ("task.eval_episodes=0", "task.eval_episodes=0"),
    # issue 25: accepted, then ran without end
    ("algo.total_timesteps=99999999999999999999", "algo.total_timesteps=99999999999999999999"),
    ("task.eval_episodes=1000000000000", "task.eval_episodes=1000000000000"),
]
E15, E9, E7 = "1000000000000001", "1000000001", "10000001"  # one past each upper bound

#: (group options, bad value, what the message starts with); at least one per rule
BAD = [(("env=simple_adversary",), value, shown) for value, shown in MEASURED] + [
    ((), "seed=4294967296", "seed=4294967296"),
    ((), "hardware.threads=-1", "hardware.threads=-1"),
    # env
    (MATRIX, "env.num_envs=0", "env.num_envs=0"),
    (LQ, "env.num_envs=-1", "env.num_envs=-1"),
    (BARGAIN, "env.num_envs=0", "env.num_envs=0"),
    (PETTINGZOO, "env.max_cycles=0", "env.max_cycles=0"),
    (SPREAD, "env.N=-1", "env.N=-1"),
    (SPREAD, "env.eval_episodes=0", "env.eval_episodes=0"),
    (SPREAD, "env.local_ratio=1.5", "env.local_ratio=1.5"),
    (REFERENCE, "env.local_ratio=-0.1", "env.local_ratio=-0.1"),
    (TAG, "env.num_good=0", "env.num_good=0"),
    (TAG, "env.num_adversaries=0", "env.num_adversaries=0"),
    (TAG, "env.num_obstacles=-1", "env.num_obstacles=-1"),
    (WORLD, "env.num_good=0", "env.num_good=0"),
    (WORLD, "env.num_adversaries=0", "env.num_adversaries=0"),
    (WORLD, "env.num_obstacles=-1", "env.num_obstacles=-1"),
    (WORLD, "env.num_food=0", "env.num_food=0"),
    (WORLD, "env.num_forests=-1", "env.num_forests=-1"),
    (MATRIX, "env.rounds=0", "env.rounds=0"),  # before algo.num_steps=${env.rounds}
    (MATRIX, "env.reward_offset=nan", "env.reward_offset=nan"),
    (MATRIX, "env.reward_offset=-inf", "env.reward_offset=-inf"),
    (LQ, "env.discount=1.0", "env.discount=1.0"),  # lq: strictly below 1
    (LQ, "env.discount=0", "env.discount=0.0"),
    (LQ, "env.horizon=0", "env.horizon=0"),  # discount 0.95 is fine; the game wants one of them
    (LQ, "env.max_steps=0", "env.max_steps=0"),
    (LQ, "env.x0_mean=[1.0,inf]", "env.x0_mean=[1.0, inf]"),
    (LQ, "env.x0_mean=[true,1.0]", "env.x0_mean=[true, 1.0]"),  # an untyped list in the schema
    (LQ, "env.x0_std=-0.5", "env.x0_std=-0.5"),
    (LQ, "env.noise_std=inf", "env.noise_std=inf"),
    (LQ, "env.action_bound=0", "env.action_bound=0.0"),
    (BARGAIN, "env.quantities=[0,2]", "env.quantities=[0, 2]"),
    (BARGAIN, "env.quantities=[]", "env.quantities=[]"),
    (BARGAIN, "env.max_value=0", "env.max_value=0"),
    (BARGAIN, "env.rounds=0", "env.rounds=0"),
    (BARGAIN, "env.rounds=17", "env.rounds=17"),  # bargain: at most MAX_ROUNDS
    (BARGAIN, "env.discount=0", "env.discount=0.0"),
    (BARGAIN, "env.discount=1.5", "env.discount=1.5"),
    # upper bounds: budgets that would run without end, copies no machine holds
    (MATRIX, f"env.num_envs={E9}", f"env.num_envs={E9}"),
    (SPREAD, f"env.eval_episodes={E7}", f"env.eval_episodes={E7}"),
    ((), f"algo.total_timesteps={E15}", f"algo.total_timesteps={E15}"),
    (("algo=cfr",), f"algo.iterations={E9}", f"algo.iterations={E9}"),
    (("algo=deep_cfr",), f"algo.iterations={E9}", f"algo.iterations={E9}"),
    (("algo=nfsp",), f"algo.total_timesteps={E15}", f"algo.total_timesteps={E15}"),
    (("algo=nfsp",), f"algo.steps_per_iteration={E15}", f"algo.steps_per_iteration={E15}"),
    (("algo=psro",), f"algo.sims_per_entry={E7}", f"algo.sims_per_entry={E7}"),
    (("algo=psro",), f"algo.br_steps={E15}", f"algo.br_steps={E15}"),
    (("algo=ex2psro",), f"algo.imitation_steps={E15}", f"algo.imitation_steps={E15}"),
    (("algo=fcp",), f"algo.partner_steps={E15}", f"algo.partner_steps={E15}"),
    (("algo=fcp",), f"algo.fcp_steps={E15}", f"algo.fcp_steps={E15}"),
    (("algo=fcp",), f"algo.eval_games={E7}", f"algo.eval_games={E7}"),
    ((), f"task.eval_episodes={E7}", f"task.eval_episodes={E7}"),
    ((), f"task.eval_games={E7}", f"task.eval_games={E7}"),
    (("task=crossplay",), f"task.games={E7}", f"task.games={E7}"),
    (("task=exploit",), f"task.br_timesteps={E15}", f"task.br_timesteps={E15}"),
    (("task=exploit",), f"task.eval_games={E7}", f"task.eval_games={E7}"),
    (("task=search",), f"task.games={E7}", f"task.games={E7}"),
    # algo
    ((), "algo.total_timesteps=0", "algo.total_timesteps=0"),
    ((), "algo.num_epochs=0", "algo.num_epochs=0"),
    ((), "algo.lr=0", "algo.lr=0.0"),
    ((), "algo.gamma=0", "algo.gamma=0.0"),
    ((), "algo.gae_lambda=1.1", "algo.gae_lambda=1.1"),
    ((), "algo.clip_coef=0", "algo.clip_coef=0.0"),
    ((), "algo.ent_coef=-0.01", "algo.ent_coef=-0.01"),
    ((), "algo.ent_coef=inf", "algo.ent_coef=inf"),
    ((), "algo.vf_coef=-1", "algo.vf_coef=-1.0"),
    ((), "algo.max_grad_norm=0", "algo.max_grad_norm=0.0"),
    ((), "algo.target_kl=0", "algo.target_kl=0.0"),
    ((), "algo.hidden_sizes=[64,-1]", "algo.hidden_sizes=[64, -1]"),
    ((), "algo.leader_probe_rate=1.5", "algo.leader_probe_rate=1.5"),
    ((), "algo.leader_probe_rate=-0.1", "algo.leader_probe_rate=-0.1"),
    ((), "algo.leader_warmup=1.0", "algo.leader_warmup=1.0"),
    ((), "algo.follower_restarts=-1", "algo.follower_restarts=-1"),
    ((), "algo.commitment_noise=0", "algo.commitment_noise=0.0"),
    ((), "algo.commitment_noise_final=-0.05", "algo.commitment_noise_final=-0.05"),
    # algo: cfr
    (("algo=cfr",), "algo.iterations=0", "algo.iterations=0"),
    (("algo=cfr",), "algo.iterations_per_step=-5", "algo.iterations_per_step=-5"),
    # algo: deep_cfr
    (("algo=deep_cfr",), "algo.traversals=0", "algo.traversals=0"),
    (("algo=deep_cfr",), "algo.advantage_steps=0", "algo.advantage_steps=0"),
    (("algo=deep_cfr",), "algo.policy_steps=-1", "algo.policy_steps=-1"),
    (("algo=deep_cfr",), "algo.batch_size=0", "algo.batch_size=0"),
    (("algo=deep_cfr",), "algo.memory_size=0", "algo.memory_size=0"),
    (("algo=deep_cfr",), "algo.sampled_actions=1", "algo.sampled_actions=1"),
    # algo: nfsp
    (("algo=nfsp",), "algo.steps_per_iteration=0", "algo.steps_per_iteration=0"),
    (("algo=nfsp",), "algo.anticipatory=1.5", "algo.anticipatory=1.5"),
    (("algo=nfsp",), "algo.replay_size=0", "algo.replay_size=0"),
    (("algo=nfsp",), "algo.reservoir_size=-1", "algo.reservoir_size=-1"),
    (("algo=nfsp",), "algo.rl_lr=0", "algo.rl_lr=0.0"),
    (("algo=nfsp",), "algo.sl_lr=nan", "algo.sl_lr=nan"),
    (("algo=nfsp",), "algo.train_every=0", "algo.train_every=0"),
    (("algo=nfsp",), "algo.target_update=0", "algo.target_update=0"),
    (("algo=nfsp",), "algo.epsilon_start=-0.1", "algo.epsilon_start=-0.1"),
    (("algo=nfsp",), "algo.epsilon_end=2", "algo.epsilon_end=2.0"),
    # algo: psro
    (("algo=psro",), "algo.max_policies=0", "algo.max_policies=0"),
    (("algo=psro",), "algo.sims_per_entry=0", "algo.sims_per_entry=0"),
    (("algo=psro",), "algo.br_steps=-1", "algo.br_steps=-1"),
    (("algo=psro",), "algo.ppo.num_steps=0", "algo.ppo.num_steps=0"),
    (("algo=psro",), "algo.ppo.num_epochs=0", "algo.ppo.num_epochs=0"),
    (("algo=psro",), "algo.ppo.num_minibatches=0", "algo.ppo.num_minibatches=0"),
    (("algo=psro",), "algo.ppo.lr=2", "algo.ppo.lr=2.0"),
    (("algo=psro",), "algo.ppo.ent_coef=-1", "algo.ppo.ent_coef=-1.0"),
    (("algo=psro",), "algo.ppo.hidden_sizes=[0]", "algo.ppo.hidden_sizes=[0]"),
    # algo: fcp
    (("algo=fcp",), "algo.population_size=0", "algo.population_size=0"),
    (("algo=fcp",), "algo.snapshot_interval=0", "algo.snapshot_interval=0"),
    (("algo=fcp",), "algo.priority_temperature=0", "algo.priority_temperature=0.0"),
    (("algo=fcp",), "algo.heldout_partners=0", "algo.heldout_partners=0"),
    (("algo=fcp",), "algo.partner_steps=-1", "algo.partner_steps=-1"),
    (("algo=fcp",), "algo.fcp_steps=0", "algo.fcp_steps=0"),
    (("algo=fcp",), "algo.eval_games=0", "algo.eval_games=0"),
    (("algo=fcp", "env=bargain"), "env.fcp.population_size=0", "algo.population_size=0"),
    # algo: ex2psro
    (("algo=ex2psro",), "algo.exploration_top_k=0", "algo.exploration_top_k=0"),
    (("algo=ex2psro",), "algo.imitation_top_fraction=0", "algo.imitation_top_fraction=0.0"),
    (("algo=ex2psro",), "algo.imitation_top_fraction=1.5", "algo.imitation_top_fraction=1.5"),
    (("algo=ex2psro",), "algo.imitation_steps=0", "algo.imitation_steps=0"),
    (("algo=ex2psro",), "algo.imitation_epochs=0", "algo.imitation_epochs=0"),
    (("algo=ex2psro",), "algo.imitation_lr=0", "algo.imitation_lr=0.0"),
    (("algo=ex2psro",), "algo.kl_coef=-1", "algo.kl_coef=-1.0"),
    (("algo=ex2psro",), "algo.kl_target=0", "algo.kl_target=0.0"),
    # through the game's ppo section: list elements are not type-checked on interpolation
    (BARGAIN_PPO, "env.ppo.hidden_sizes=[true]", "algo.hidden_sizes=[true]"),
    (BARGAIN_PPO, "env.ppo.hidden_sizes=5", "algo.hidden_sizes=5"),
    (BARGAIN_PPO, "env.ppo.ent_coef=-1", "algo.ent_coef=-1.0"),
    # task
    ((), "task.eval_every=-1", "task.eval_every=-1"),
    ((), "task.eval_games=0", "task.eval_games=0"),
    ((), "task.eq_tolerance=-0.1", "task.eq_tolerance=-0.1"),
    ((), "task.eq_tolerance=nan", "task.eq_tolerance=nan"),
    (("task=crossplay",), "task.games=0", "task.games=0"),
    (("task=exploit",), "task.br_timesteps=0", "task.br_timesteps=0"),
    (("task=exploit",), "task.eval_games=0", "task.eval_games=0"),
    (("task=search",), "task.simulations=[16,-1]", "task.simulations=[16, -1]"),
    (("task=search",), "task.simulations=[]", "task.simulations=[]"),
    (("task=search",), "task.c_puct=0", "task.c_puct=0.0"),
    (("task=search",), "task.considered=0", "task.considered=0"),
    (("task=search",), "task.c_visit=-1", "task.c_visit=-1.0"),
    (("task=search",), "task.c_scale=0", "task.c_scale=0.0"),
    (("task=search",), "task.games=0", "task.games=0"),
]


def rule_key(options: tuple[str, ...], path: str) -> str | tuple[str, str]:
    family = composed(options).env.family
    return (family, path) if (family, path) in FAMILY_RULES else path


@pytest.mark.parametrize("options,value,shown", BAD, ids=[f"{' '.join(o)} {v}" for o, v, _ in BAD])
def test_bad_value_is_refused_in_one_line(options, value, shown):
    message = config_error(with_values(options, value))
    path = shown.split("=")[0]
    key = rule_key(options, path)
    rule = FAMILY_RULES[key] if isinstance(key, tuple) else RULES[key]
    assert message == f"{shown} is not allowed: {path} must be {rule.describe()}"


def test_every_rule_has_a_bad_value():
    covered = {rule_key(options, shown.split("=")[0]) for options, _, shown in BAD}
    assert [k for k in [*RULES, *FAMILY_RULES] if k not in covered] == []


@pytest.mark.parametrize("value,shown", MEASURED, ids=[v for v, _ in MEASURED])
def test_measured_failures_are_refused_at_the_door(value, shown):
    message = config_error(compose_config([value]))
    assert message.startswith(f"{shown} is not allowed: ")
    assert message == config_error(with_values(("env=simple_adversary",), value))


# --------------------------------------------------------------------------- wrong types
@pytest.mark.parametrize(
    "options,value",
    [
        ((), "env.num_envs=true"),
        ((), "algo.lr=true"),
        ((), "seed=1.5"),
        (BARGAIN, "env.quantities=[true]"),
    ],
)
def test_hydra_refuses_bools_and_wrong_types_in_typed_fields(options, value):
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException)):
        with_values(options, value)


@pytest.mark.parametrize(
    "options,value,path",
    [
        (BARGAIN_PPO, "env.ppo.num_steps=true", "algo.num_steps"),  # a bool for an int
        (BARGAIN_PPO, "env.ppo.lr=fast", "algo.lr"),
        ((), "algo.num_steps=${env.nowhere}", "algo.num_steps"),
    ],
)
def test_a_value_that_cannot_be_resolved_is_one_line(options, value, path):
    message = config_error(with_values(options, value))
    assert message.startswith(f"{path} cannot be read (")
    assert message.endswith(f"; {path} must be {RULES[path].describe()}")


# --------------------------------------------------------------------------- defaults pass
def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


DEFAULTS = [
    (f"{group}={o}",) for group in ("env", "algo", "task", "hardware") for o in options(group)
]
DEFAULTS += [(f"+experiment={o}",) for o in options("experiment")] + [BARGAIN_PPO]


@pytest.mark.parametrize("options", DEFAULTS, ids=" ".join)
def test_default_configs_pass(options):
    validate(composed(options))


def test_options_the_config_does_not_have_are_skipped():
    cfg = composed(("algo=exact",))
    assert "lr" not in cfg.algo
    validate(cfg)
    validate(OmegaConf.create({"seed": 3}))
