"""The ``dgsolve`` command end to end, in subprocesses, as a researcher runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dgsolve.artifacts import atomic_write_bytes, file_mode
from dgsolve.errors import ConfigError
from dgsolve.lock import door_check
from tests.conftest import TINY


def dgsolve(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    env.pop("HYDRA_FULL_ERROR", None)  # set, it would turn one-line errors into tracebacks
    return subprocess.run(
        [sys.executable, "-m", "dgsolve.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        **kwargs,
    )


def test_main_command_writes_a_complete_run_directory(tmp_path):
    out = tmp_path / "run"
    proc = dgsolve(
        "algo=stackelberg_ppo", "env=simple_adversary", *TINY, f"hydra.run.dir={out}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    for name in (
        ".hydra/config.yaml",
        "summary.json",
        "history.json",
        "history.npz",
        "checkpoints/last.pt",
        "policy.pt",
        "plots/returns.png",
        "rollout.gif",
    ):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing else in the cwd
    # every artifact is as readable as a plainly created file (0644 under umask 022)
    modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in out.rglob("*")}
    files = {name: mode for name, mode in modes.items() if (out / name).is_file()}
    assert files and all(mode == file_mode() for mode in files.values()), files


@pytest.mark.parametrize(
    "args,needle",
    [
        (
            ["hierarchy.action_sequence=[[bob],[agent_0,agent_1,adversary_0]]"],
            "unknown agent 'bob'",
        ),
        (["env=pettingzoo", "env.factory=no_such_pkg.envs:make"], "cannot import module"),
        (["resume=/nonexistent/run"], "not a dgsolve run directory"),
        # the command line composes the default env, not the resumed run's: no "unknown option"
        (
            ["resume=/nonexistent/run", "env.game=chicken"],
            "'env.game=chicken' cannot be given with resume=: a resumed run keeps its own "
            "config, and only these options may be given: task.eval_episodes, ",
        ),
        (
            ["resume=/nonexistent/run", "task.eval_episodez=3"],
            "cannot be given with resume= (did you mean 'task.eval_episodes'?)",
        ),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, args, needle):
    proc = dgsolve(*TINY, *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_a_budget_below_one_iteration_is_refused_before_the_run_directory_exists(tmp_path):
    out = tmp_path / "run"
    # env.num_envs=2 x algo.num_steps=16 = 32 steps an iteration
    proc = dgsolve(
        "algo=nash_ppo",
        "env=matrix",
        *TINY,
        "algo.total_timesteps=16",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [
        "dgsolve: error: algo.total_timesteps=16 is less than one iteration (env.num_envs x "
        "algo.num_steps = 32); use at least 32"
    ]
    assert list(tmp_path.iterdir()) == []  # no run directory, so no index row either


@pytest.mark.parametrize(
    "algo,short,needle",
    [
        (["algo=nash_ppo"], "algo.total_timesteps=16", "algo.total_timesteps=16 is less than one"),
        (["algo=psro", "algo.oracle=ppo"], "algo.br_steps=8", "algo.br_steps=8 is less than one"),
        (["algo=fcp"], "algo.fcp_steps=8", "algo.fcp_steps=8 is less than one PPO iteration"),
    ],
)
def test_the_door_refuses_every_ppo_budget_below_one_iteration(make_cfg, algo, short, needle):
    # matrix games: 256 copies x 1 step = 256 steps an iteration
    door_check(make_cfg([*algo, "env=matrix"]))  # the tuned budgets pass
    with pytest.raises(ConfigError, match=re.escape(needle)):
        door_check(make_cfg([*algo, "env=matrix", short]))


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["env=matrix", "env.game=nope"], "env.game='nope' is not a known matrix game"),
        (["env=matrix", "env.payoffs=[[[1,2]],[[1,2],[3,4]]]"], "env.payoffs must be m rows"),
        (["env=lq", "env.R.p1.p1=[[-1.0]]"], "env.R.p1.p1 must be positive definite"),
        (["env=bargain", "env.leader=p3"], "env.leader='p3'; use null, 'p1' or 'p2'"),
        (["env=matrix", "hardware=cuda"], "hardware=cuda but no CUDA device is visible"),
    ],
)
def test_the_door_refuses_a_game_or_device_that_cannot_be_had(make_cfg, overrides, needle):
    if "hardware=cuda" in overrides and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    door_check(make_cfg([o for o in overrides if "=" in o and o.split("=")[0] in ("env",)]))
    with pytest.raises(ConfigError, match=re.escape(needle)):
        door_check(make_cfg(overrides))


def test_a_game_refused_at_the_door_leaves_no_directory(tmp_path):
    out = tmp_path / "out"
    proc = dgsolve(
        "algo=exact", "env=matrix", "env.game=nope", f"hydra.run.dir={out}", cwd=tmp_path
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is not a known matrix game" in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_run_directory_that_is_a_dangling_link_is_named_with_its_target(tmp_path):
    link, target = tmp_path / "latest", tmp_path / "gone" / "run"
    link.symlink_to(target)
    for run_dir in (link, link / "sub"):
        proc = dgsolve("algo=exact", "env=matrix", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert proc.returncode == 2
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert f"is a symbolic link to a missing path, '{target}'" in lines[0]
        assert f"create '{target}' or choose another hydra.run.dir" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]  # nothing created


def test_sigterm_checkpoints_and_resume_finishes_the_budget(tmp_path):
    out = tmp_path / "run"
    budget = 3200
    args = [
        *TINY,
        "algo=nash_ppo",
        f"algo.total_timesteps={budget}",
        "task.render=false",
        f"hydra.run.dir={out}",
    ]
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgsolve.cli", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    while not (out / "tb").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "interrupted" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["env_steps"] < budget
    stopped_at = len(json.loads((out / "history.json").read_text())["episodes"]["env_step"])

    proc = dgsolve(f"resume={out}", f"hydra.run.dir={tmp_path / 'resumer'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    done = json.loads((out / "summary.json").read_text())
    assert done["status"] == "completed" and done["env_steps"] == budget
    history = json.loads((out / "history.json").read_text())
    assert len(history["episodes"]["env_step"]) > stopped_at  # appended, nothing lost


@pytest.mark.slow
def test_multirun_sweep_one_directory_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    proc = dgsolve(
        "-m",
        "seed=0,1",
        "algo=nash_ppo,stackelberg_ppo",
        *TINY,
        "task.render=false",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "summary.json").exists())
    assert len(jobs) == 4
    combos = {
        (
            json.loads((j / "summary.json").read_text())["seed"],
            json.loads((j / "summary.json").read_text())["algo"],
        )
        for j in jobs
    }
    assert combos == {
        (0, "nash_ppo"),
        (0, "stackelberg_ppo"),
        (1, "nash_ppo"),
        (1, "stackelberg_ppo"),
    }


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_writes_get_the_mode_the_umask_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        plain = tmp_path / "plain"
        plain.write_bytes(b"")
    finally:
        os.umask(previous)
    assert file_mode() == 0o666 & ~previous
    mode = (tmp_path / "a.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask == plain.stat().st_mode & 0o777
