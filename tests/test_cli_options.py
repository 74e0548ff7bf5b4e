"""What the command line offers: only real options, open mappings, a fast --help, and runs or
sweeps refused at validation that leave no directory behind."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException

from dgsolve import games, lazy_import
from dgsolve.cli import composition_error, config_dir, config_groups
from dgsolve.config import SCHEMAS, schema_name
from tests.conftest import compose_config
from tests.test_cli import dgsolve

GROUPS = ("algo", "env", "experiment", "hardware", "hierarchy", "task")


def yaml_options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dgsolve: error: ") and "Traceback" not in proc.stderr
    return lines[0]


# --------------------------------------------------------------------------- 1. real options only
def test_schemas_are_stored_outside_every_group():
    store = ConfigStore.instance().repo
    for group in GROUPS:
        assert group not in store, f"{group}/ in the ConfigStore offers schemas as options"
    for group, schemas in SCHEMAS.items():
        for name in schemas:
            assert f"{schema_name(group, name)}.yaml" in store


@pytest.mark.parametrize("group", GROUPS)
def test_hydra_offers_exactly_the_yaml_options(group):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        assert sorted(loader.get_group_options(group)) == yaml_options(group)
    assert config_groups()[group] == yaml_options(group)  # what --help lists


@pytest.mark.parametrize("choice", ["algo=base_ppo", "algo=schema_algo_ppo", "env=base_lq"])
def test_a_schema_is_an_unknown_choice(choice):
    group = choice.split("=")[0]
    with pytest.raises(MissingConfigException) as err:
        compose_config([choice])
    assert sorted(err.value.options) == yaml_options(group)
    line = composition_error(err.value)
    assert "\n" not in line and f"unknown {group} option" in line
    assert line.endswith(", ".join(yaml_options(group)))


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["algo.lrr=0.1"], "unknown option 'algo.lrr' (did you mean 'algo.lr'?)"),
        (["sed=1"], "unknown option 'sed' (did you mean 'seed'?)"),
        (["hardware.device=gpu"], "hardware.device=gpu: Invalid value 'gpu'"),
        (["env.num_envs=many"], "env.num_envs=many: Value 'many'"),
        (["env.ppo.foo=1"], "to add a key, use +env.ppo.foo=1"),  # a closed mapping: say how
    ],
)
def test_composition_errors_read_as_one_line(overrides, needle):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(overrides)
    line = composition_error(err.value)
    assert "\n" not in line and needle in line, line


@pytest.mark.parametrize(
    "args,needle",
    [
        (["algo=base_ppo"], "unknown algo option 'base_ppo'"),
        (["algo.lrr=0.1"], "did you mean 'algo.lr'?"),
        (["--help", "env=nowhere"], "unknown env option 'nowhere'"),
    ],
)
def test_cli_composition_errors_are_one_line_and_exit_2(tmp_path, args, needle):
    proc = dgsolve(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    line = one_line(proc)
    assert needle in line and "base_" not in line.split("options are:")[-1], line
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 2. open mappings
def test_mappings_of_data_take_new_keys_without_plus():
    cfg = compose_config(
        [
            "env=pettingzoo",
            "env.factory=pettingzoo.classic.rps_v2:parallel_env",
            "env.kwargs.max_cycles=60",
        ]
    )
    assert dict(cfg.env.kwargs) == {"max_cycles": 60}
    # R[i][j] is the cost to player i of player j's input: p1 now also pays for p2's effort
    cfg = compose_config(["env=lq", "env.R.p1.p2=[[0.17]]", "hardware=cpu"])
    assert cfg.env.R.p1.p2 == [[0.17]] and cfg.env.R.p1.p1 == [[0.5]]
    game = games.make(cfg.env, "cpu")
    assert game.cfg.R["p1"]["p2"] == [[0.17]]


def test_a_null_mapping_takes_a_whole_mapping():
    # a finite horizon with its terminal costs, all from the command line
    horizon = ["env=lq", "env.horizon=10", "env.discount=null"]
    cfg = compose_config([*horizon, "env.Qf={p1:[[1,0],[0,1]],p2:[[2,0],[0,2]]}"])
    assert games.make(cfg.env, "cpu").cfg.Qf["p2"] == [[2, 0], [0, 2]]


@pytest.mark.parametrize(
    "overrides",
    [
        ["env=pettingzoo", "env.kwarg.max_cycles=60"],  # not the mapping: a typo
        ["env=pettingzoo", "env.kwargs=5"],  # still a mapping
        ["env=lq", "env.RR.p1.p2=[[0.17]]"],
        ["env=lq", "env.horizonn=3"],
        ["algo.ppo_lr=1"],
    ],
)
def test_typos_beside_open_mappings_still_fail(overrides):
    with pytest.raises(ConfigCompositionException):
        compose_config(overrides)


def test_cli_takes_new_mapping_keys_without_plus(tmp_path):
    proc = dgsolve(
        "--cfg",
        "job",
        "env=pettingzoo",
        "env.factory=pettingzoo.classic.rps_v2:parallel_env",
        "env.kwargs.max_cycles=60",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "kwargs:\n    max_cycles: 60" in proc.stdout


# --------------------------------------------------------------------------- 3. fast --help
def test_importing_the_cli_loads_neither_torch_nor_a_game():
    code = (
        "import sys, types, dgsolve.cli\n"
        "torch = sys.modules.get('torch')\n"
        "print(torch is not None and type(torch) is types.ModuleType, 'torch._C' in sys.modules,"
        " 'numpy.linalg' in sys.modules, 'dgsolve.games.bargain.reference' in sys.modules,"
        " 'dgsolve.games.lq' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # the schemas' modules are imported (dgsolve.games.lq); what they name is not executed
    assert out.stdout.split() == ["False", "False", "False", "False", "True"], out.stdout


def test_lazy_import_runs_the_module_on_first_use(tmp_path, monkeypatch):
    (tmp_path / "dgsolve_lazy_probe.py").write_text("RUNS = []\nRUNS.append(1)\nVALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        probe = lazy_import("dgsolve_lazy_probe")
        assert type(probe) is not types.ModuleType  # not executed yet
        assert probe.VALUE == 7 and probe.RUNS == [1]
        assert type(probe) is types.ModuleType
        assert lazy_import("dgsolve_lazy_probe") is probe
    finally:
        sys.modules.pop("dgsolve_lazy_probe", None)
    with pytest.raises(ModuleNotFoundError):
        lazy_import("dgsolve_no_such_module")


def test_help_lists_every_group_the_config_and_the_flags(tmp_path):
    proc = dgsolve("--help", "env=matrix", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for group in GROUPS:
        assert f"\n{group}: {', '.join(yaml_options(group))}\n" in proc.stdout
    assert "base_" not in proc.stdout and "schema_" not in proc.stdout
    config = proc.stdout.split("== Config ==")[1]
    assert "\nenv:\n" in config and "\n  name: matrix\n" in config  # what the overrides compose
    assert "--multirun,-m" in proc.stdout and "--cfg,-c" in proc.stdout  # Hydra's flags
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 4. no directory left
def test_a_run_refused_at_validation_leaves_no_directory(tmp_path):
    proc = dgsolve("algo.lr=-1", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "algo.lr" in one_line(proc)
    assert not (tmp_path / "r").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "sweep,needle",
    [
        ("algo.lr=0.1,-1", "sweep job #1: algo=nash_ppo env=matrix algo.lr=-1"),
        ("algo=nash_ppo,nope", "unknown algo option 'nope'"),
    ],
)
def test_a_sweep_with_an_invalid_job_starts_no_job(tmp_path, sweep, needle):
    args = ["-m", "algo=nash_ppo", "env=matrix", sweep, "task.progress=false"]
    if sweep.startswith("algo="):
        args.remove("algo=nash_ppo")
    proc = dgsolve(*args, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert needle in one_line(proc)
    assert list(tmp_path.iterdir()) == []  # neither the sweep directory nor a job's


def test_a_plain_run_skips_hydras_mode_composition_only_when_nothing_could_set_the_mode():
    import argparse

    from hydra._internal.hydra import Hydra

    from dgsolve.cli import _mode_from_the_command_line

    original = Hydra.get_mode
    plain = argparse.Namespace(multirun=False, overrides=["env=matrix", "algo=exact"])
    with _mode_from_the_command_line(plain):
        assert Hydra.get_mode is not original
        assert Hydra.get_mode(None, "config", []) is None  # "not set": Hydra runs it plainly
    assert Hydra.get_mode is original
    for args in [
        argparse.Namespace(multirun=True, overrides=["seed=0,1"]),
        argparse.Namespace(multirun=False, overrides=["hydra.mode=MULTIRUN"]),
        argparse.Namespace(multirun=False, overrides=["+experiment=one_shot_matrix"]),
    ]:
        with _mode_from_the_command_line(args):
            assert Hydra.get_mode is original
