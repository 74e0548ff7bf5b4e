"""Sweeps through Hydra's plugins: joblib, submitit (local executor), Ray (a local cluster) and
the Optuna sweeper, each run as a user types it; every job lands in the results index and the
Hydra entry returns ``task.objective``. A test whose plugin is not installed is skipped with the
``pip install`` that would enable it (``make install`` installs them all)."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys

import pytest
import yaml

from dgsolve.launchers import job_threads
from dgsolve.results.index import ResultsIndex
from dgsolve.results.objective import default_objective, objective_value
from tests.conftest import TINY, compose_config

#: a tiny exact run (no learning: seconds) and a tiny PPO run
EXACT = ["algo=exact", "env=matrix", "task.progress=false", "hardware=cpu"]
PPO = ["algo=nash_ppo", "env=matrix", *TINY]


def needs(module: str, extra: str):
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f"{module} is not installed (pip install 'dgsolve[{extra}]', or make install)",
    )


def sweep(tmp_path, *args, timeout=600):
    env = {**os.environ, "DGSOLVE_INDEX": str(tmp_path / "index.sqlite"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "dgsolve.cli", "-m", *args, f"hydra.sweep.dir={tmp_path / 'sw'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return ResultsIndex(tmp_path / "index.sqlite").runs(), out


def assert_jobs(runs, seeds):
    assert sorted(r["seed"] for r in runs) == sorted(seeds)
    assert {r["status"] for r in runs} == {"completed"}


#: each launcher's two-job sweep as a user types it, with the plugin it needs
LAUNCHERS = {
    "joblib": (
        ("hydra_plugins.hydra_joblib_launcher", "sweep"),
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ),
    "submitit_local": (
        ("hydra_plugins.hydra_submitit_launcher", "sweep"),
        ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"],
    ),
    "ray_local_cluster": (
        ("hydra_plugins.hydra_ray_launcher", "ray"),
        [
            "hydra/launcher=ray",
            "+hydra.launcher.ray.init.num_cpus=2",
            "+hydra.launcher.ray.init.include_dashboard=false",
        ],
    ),
}


@pytest.mark.parametrize(
    "launcher",
    [pytest.param(name, marks=needs(*plugin)) for name, (plugin, _) in LAUNCHERS.items()],
)
def test_a_launcher_runs_a_two_job_sweep_into_the_index(tmp_path, launcher):
    runs, _ = sweep(tmp_path, *EXACT, "seed=0,1", *LAUNCHERS[launcher][1])
    assert_jobs(runs, [0, 1])


@needs("hydra_plugins.hydra_optuna_sweeper", "sweep")
def test_optuna_minimises_the_objective_over_the_learning_rate(tmp_path):
    runs, _ = sweep(
        tmp_path,
        *PPO,
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.seed=0",
        "algo.lr=interval(0.0001,0.01)",
    )
    result = yaml.safe_load((tmp_path / "sw" / "optimization_results.yaml").read_text())
    gaps = [r["summary"]["eq"]["verdict"]["worst_gap"] for r in runs]
    assert len(runs) == 3
    # the best value Optuna reports is the objective (the default for matrix games: the worst
    # equilibrium gap) of the best trial, read back from that trial's summary.json
    assert result["best_value"] == pytest.approx(min(gaps))
    assert 0.0001 <= result["best_params"]["algo.lr"] <= 0.01


def test_threads_per_job_follow_the_launchers_share():
    def hydra(target, **launcher):
        return {"mode": "RunMode.MULTIRUN", "launcher": {"_target_": target, **launcher}}

    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert job_threads(hydra(joblib, n_jobs=2), cores=8) == 4
    assert job_threads(hydra(joblib, n_jobs=-1), cores=8) == 1
    assert job_threads(hydra(joblib, n_jobs=16), cores=8) == 1
    submitit = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert job_threads(hydra(submitit, cpus_per_task=3), cores=8) == 3
    ray = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert job_threads(hydra(ray, ray={"remote": {"num_cpus": 2}}), cores=8) == 2
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert job_threads(hydra(basic), cores=8) is None  # one job at a time: torch's default
    assert job_threads({"mode": "RunMode.RUN"}, cores=8) is None


def test_the_objective_is_a_summary_path_with_a_default_per_family(capsys):
    cfg = compose_config(EXACT)
    summary = {"eq": {"verdict": {"worst_gap": 0.25}}, "mean_return": 1.5}
    assert default_objective("train", "matrix") == ("eq.verdict.worst_gap", "minimize")
    assert objective_value(cfg, summary) == 0.25
    assert objective_value(compose_config([*EXACT, "task.objective=mean_return"]), summary) == 1.5
    assert default_objective("train", "pettingzoo") == ("mean_return", "maximize")
    missing = objective_value(compose_config([*EXACT, "task.objective=eq.nope"]), summary)
    assert math.isnan(missing)
    err = capsys.readouterr().err
    assert "task.objective=eq.nope" in err and "eq.verdict.worst_gap" in err
