"""Sweeps through Hydra's plugins: joblib, submitit (local executor), Ray (a local cluster) and
the Optuna sweeper, each run as a user types it; every job lands in the results index and the
Hydra entry returns ``task.objective``. A sweep is refused before its first job where any job
would be refused at its own door; a job that fails is reported and the sweep goes on. A test
whose plugin is not installed is skipped with the ``pip install`` that would enable it
(``make install`` installs them all)."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from dgsolve.errors import ConfigError, TrainingDiverged
from dgsolve.launchers import (
    FAILED_JOBS,
    JobFailed,
    SweepJob,
    job_threads,
    sweep_outcome,
    tolerate_failed_trials,
)
from dgsolve.results.index import ResultsIndex
from dgsolve.results.objective import default_objective, objective_value
from tests.conftest import TINY, compose_config

#: a tiny exact run (no learning: seconds) and a tiny PPO run
EXACT = ["algo=exact", "env=matrix", "task.progress=false", "hardware=cpu"]
PPO = ["algo=nash_ppo", "env=matrix", *TINY]
#: the tiny PPO run without its budget, for sweeps over it
UNBUDGETED = [o for o in PPO if not o.startswith("algo.total_timesteps=")]


def needs(module: str, extra: str):
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f"{module} is not installed (pip install 'dgsolve[{extra}]', or make install)",
    )


def sweep(tmp_path, *args, status=0, timeout=600):
    """Run ``dgsolve -m *args`` into ``tmp_path/sw`` (modules in ``tmp_path`` importable);
    returns the index's runs and the finished process, whose exit status must be ``status``."""
    env = {
        **os.environ,
        "DGSOLVE_INDEX": str(tmp_path / "index.sqlite"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("HYDRA_FULL_ERROR", None)  # set, it would turn one-line errors into tracebacks
    out = subprocess.run(
        [sys.executable, "-m", "dgsolve.cli", "-m", *args, f"hydra.sweep.dir={tmp_path / 'sw'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=tmp_path,
    )
    assert out.returncode == status, out.stdout[-3000:] + out.stderr[-3000:]
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


# ------------------------------------------------------------------ refused and failed jobs
def errors(out) -> list[str]:
    """The lines of stderr that dgsolve wrote (Hydra and Optuna log lines left out)."""
    return [line for line in out.stderr.splitlines() if line.startswith("dgsolve: ")]


@pytest.mark.parametrize(
    "launcher",
    ["basic"] + [pytest.param(n, marks=needs(*plugin)) for n, (plugin, _) in LAUNCHERS.items()],
)
def test_a_job_below_one_iteration_refuses_the_sweep_before_any_job(tmp_path, launcher):
    extra = LAUNCHERS[launcher][1] if launcher != "basic" else []
    # env.num_envs=2 x algo.num_steps=16 = 32 steps an iteration: job #1's budget of 16 is short
    runs, out = sweep(tmp_path, *UNBUDGETED, "algo.total_timesteps=64,16", *extra, status=2)
    assert "Traceback" not in out.stderr
    (line,) = [line for line in out.stderr.splitlines() if line.strip()]
    assert "algo.total_timesteps=16 is less than one iteration" in line
    assert "sweep job #1:" in line and "none of the 2 jobs was started" in line
    assert not (tmp_path / "sw").exists() and runs == []


#: a PettingZoo factory whose games break as the sweep asks (env.kwargs.fail)
FLAKY_ENV = """
from pettingzoo.classic import rps_v2

from dgsolve.errors import ConfigError


def make(fail="no", **kwargs):
    if fail == "fault":
        raise RuntimeError("the env broke")
    if fail == "mistake":
        raise ConfigError("the env was given a wrong option")
    return rps_v2.parallel_env(**kwargs)
"""
FLAKY = [
    "algo=nash_ppo",
    "env=pettingzoo",
    "env.factory=flaky_env:make",
    *TINY,
    "task.render=false",
]


@pytest.mark.parametrize(
    "launcher", ["basic", pytest.param("joblib", marks=needs(*LAUNCHERS["joblib"][0]))]
)
def test_a_failed_job_is_reported_and_the_sweep_goes_on(tmp_path, launcher):
    (tmp_path / "flaky_env.py").write_text(FLAKY_ENV)
    extra = LAUNCHERS[launcher][1] if launcher != "basic" else []
    runs, out = sweep(tmp_path, *FLAKY, "env.kwargs.fail=no,fault,no", *extra, status=1)
    assert sorted(r["status"] for r in runs) == ["completed", "completed", "failed"]
    (job0,) = (tmp_path / "sw").glob("0_*")
    (job1,) = (tmp_path / "sw").glob("1_*")
    (job2,) = (tmp_path / "sw").glob("2_*")
    assert (job0 / "summary.json").is_file() and (job2 / "summary.json").is_file()
    failed = next(r for r in runs if r["status"] == "failed")
    assert failed["run_dir"] == str(job1)
    # the failed job keeps what it wrote, and its traceback; the console has one line for it
    assert (job1 / "run_config.yaml").is_file()
    assert "RuntimeError: the env broke" in (job1 / "errors.log").read_text()
    assert "Traceback" not in out.stderr
    job_line, last = errors(out)
    assert (
        job_line.startswith("dgsolve: error: sweep job #1 (")
        and "env.kwargs.fail=fault" in job_line
    )
    assert last == (
        f"dgsolve: error: 1 of 3 sweep jobs failed: #1 (env.kwargs.fail=fault) in {job1}: "
        "RuntimeError: the env broke (traceback in its errors.log)"
    )


def test_a_sweep_whose_failed_jobs_were_all_user_mistakes_exits_2(tmp_path):
    (tmp_path / "flaky_env.py").write_text(FLAKY_ENV)
    runs, out = sweep(tmp_path, *FLAKY, "env.kwargs.fail=mistake,no", status=2)
    # the mistake came from the game once the job had started: its row and directory stay
    assert sorted(r["status"] for r in runs) == ["completed", "failed"]
    assert errors(out)[-1].startswith(
        "dgsolve: error: 1 of 2 sweep jobs failed: #0 (env.kwargs.fail=mistake) in "
    )
    assert errors(out)[-1].endswith(": the env was given a wrong option")


@needs("hydra_plugins.hydra_optuna_sweeper", "sweep")
def test_optuna_goes_on_past_a_trial_refused_at_its_door(tmp_path):
    runs, out = sweep(
        tmp_path,
        *UNBUDGETED,
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.seed=0",
        "algo.total_timesteps=choice(16,64)",  # 16 is below one iteration (32 steps)
        status=2,
    )
    *job_lines, last = errors(out)
    assert job_lines, out.stderr  # the seeded sampler draws 16 at least once
    assert all("algo.total_timesteps=16 is less than one iteration" in x for x in job_lines)
    # a refused trial leaves neither a directory nor an index row; the others ran
    jobs = [p for p in (tmp_path / "sw").iterdir() if p.is_dir() and p.name != FAILED_JOBS]
    assert len(runs) == len(jobs) == 4 - len(job_lines)
    assert {r["status"] for r in runs} == {"completed"}
    result = yaml.safe_load((tmp_path / "sw" / "optimization_results.yaml").read_text())
    assert result["best_params"] == {"algo.total_timesteps": 64}
    assert last.startswith(f"dgsolve: error: {len(job_lines)} sweep job")
    assert last.count("(algo.total_timesteps=16) refused, no directory: ") == len(job_lines)


def job_of(sweep_dir, num, basic=True) -> SweepJob:
    """A sweep job whose directory holds what Hydra writes before the job starts."""
    job = SweepJob(
        num=num,
        overrides=("env=matrix", f"seed={num}"),
        dir=sweep_dir / f"{num}_seed={num}",
        sweep_dir=sweep_dir,
        log_name="cli.log",
        basic=basic,
    )
    (job.dir / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (job.dir / ".hydra" / name).write_text("{}\n")
    (job.dir / "cli.log").write_text("")
    return job


def test_a_refused_job_leaves_no_directory_and_a_started_one_keeps_its_own(tmp_path, capsys):
    refused, started = job_of(tmp_path, 0), job_of(tmp_path, 1)
    (started.dir / "run_config.yaml").write_text("seed: 1\n")
    assert refused.failed(ConfigError("algo.lr=-1.0 is not allowed")) is None
    try:
        raise RuntimeError("the env broke")
    except RuntimeError as err:
        assert started.failed(err) is None  # the basic sweeper: the next job runs
    assert not refused.dir.exists()
    assert (started.dir / "run_config.yaml").is_file() and (started.dir / ".hydra").is_dir()
    log = (started.dir / "errors.log").read_text()
    assert log.startswith("--- run\nTraceback") and "RuntimeError: the env broke" in log
    assert capsys.readouterr().err.splitlines() == [
        "dgsolve: error: sweep job #0 (env=matrix seed=0): algo.lr=-1.0 is not allowed",
        f"dgsolve: error: sweep job #1 (env=matrix seed=1): RuntimeError: the env broke "
        f"(traceback in {started.dir / 'errors.log'})",
    ]
    line, status = sweep_outcome(tmp_path, common=["env=matrix"], jobs=3)
    assert status == 1
    assert line == (
        "2 of 3 sweep jobs failed: #0 (seed=0) refused, no directory: algo.lr=-1.0 is not "
        f"allowed | #1 (seed=1) in {started.dir}: RuntimeError: the env broke (traceback in its "
        "errors.log)"
    )


def test_a_fault_before_the_run_started_keeps_the_directory_for_its_traceback(tmp_path):
    job = job_of(tmp_path, 0)
    job.failed(RuntimeError("a bug in the door"))
    assert "RuntimeError: a bug in the door" in (job.dir / "errors.log").read_text()
    assert f"#0 (env=matrix seed=0) in {job.dir}: RuntimeError" in sweep_outcome(tmp_path)[0]


@pytest.mark.parametrize(
    "failures,status",
    [
        ([ConfigError("a"), ConfigError("b")], 2),  # every failure a user mistake
        ([TrainingDiverged("a"), TrainingDiverged("b")], 3),  # every one diverged
        ([ConfigError("a"), RuntimeError("b")], 1),  # a fault among them
        ([ConfigError("a"), TrainingDiverged("b")], 1),  # no status they share
    ],
)
def test_a_sweeps_status_is_its_failed_jobs_own_where_they_agree(tmp_path, failures, status):
    for num, err in enumerate(failures):
        job_of(tmp_path, num).failed(err)
    assert sweep_outcome(tmp_path)[1] == status
    assert sweep_outcome(tmp_path / "elsewhere") is None  # no failed job: no line


def test_an_optimising_sweeper_is_told_the_job_failed(tmp_path, capsys):
    with pytest.raises(JobFailed, match=r"sweep job #0 \(env=matrix seed=0\): no good"):
        job_of(tmp_path, 0, basic=False).failed(ConfigError("no good"))
    assert (tmp_path / FAILED_JOBS / "0.json").is_file()
    # Optuna ends the study at its first failed trial unless told otherwise
    # the overrides are read as typed: one naming ${hydra.job.num} is not resolved here
    config = OmegaConf.create(
        {
            "hydra": {
                "sweeper": {"max_failure_rate": 0.0},
                "overrides": {"hydra": ["hydra.sweep.subdir=${hydra.job.num}"]},
            }
        }
    )
    tolerate_failed_trials(config)
    assert config.hydra.sweeper.max_failure_rate == 1.0
    config.hydra.sweeper.max_failure_rate = 0.25
    config.hydra.overrides.hydra = ["hydra.sweeper.max_failure_rate=0.25"]
    tolerate_failed_trials(config)  # the command line's choice stands
    assert config.hydra.sweeper.max_failure_rate == 0.25


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
