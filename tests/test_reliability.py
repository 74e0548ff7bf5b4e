"""Bad files, faults and signals: each gives one line, runs no code and loses nothing finished.

Every case here is one a careful user tried (issue 8): planted pickles, damaged and mismatched
checkpoints, a crash or a signal during the final evaluation, a second run into a live directory,
unwritable output paths, a disk that fills up, a divergence before the first checkpoint.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dgsolve import lock
from dgsolve.errors import (
    ConfigError,
    DiskWriteError,
    IncompleteRun,
    RunDirError,
    TrainingDiverged,
)
from dgsolve.run import run
from dgsolve.rundir import load_policies
from dgsolve.solvers.ppo import PPOSolver
from dgsolve.tasks import train as train_task
from tests.conftest import TINY
from tests.test_cli import dgsolve

MATRIX = [*TINY, "env=matrix", "algo=nash_ppo", "task.render=false"]


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("dgsolve: error:"), proc.stderr
    return lines[0]


@pytest.fixture
def trained(make_cfg, tmp_path) -> Path:
    """A finished matrix run (a few seconds)."""
    out = tmp_path / "trained"
    run(make_cfg(MATRIX), out)
    return out


class Payload:
    """A pickle that would create a file when loaded with ``weights_only=False``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ------------------------------------------------------------------ untrusted files are data
@pytest.mark.parametrize(
    "protocol,message",
    [
        (2, r"refused to load the checkpoint: .*\(posix\.system\)"),
        (pickle.HIGHEST_PROTOCOL, "the checkpoint is damaged or not a torch file"),
    ],
)
def test_planted_pickle_in_the_checkpoint_does_not_run(
    make_cfg, trained, tmp_path, protocol, message
):
    marker = tmp_path / "pwned"
    state = {"version": 2, "solver": Payload(marker), "history": {}, "wall_time_s": 0.0}
    torch.save(state, trained / "checkpoints" / "last.pt", pickle_protocol=protocol)
    with pytest.raises(RunDirError, match=message):
        run(make_cfg([f"resume={trained}"]), tmp_path / "elsewhere")
    assert not marker.exists()


def test_planted_pickle_in_the_policy_does_not_run(trained, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"learners": Payload(marker)}, trained / "policy.pt")
    with pytest.raises(RunDirError, match="policy.pt: refused to load the policy"):
        load_policies(trained)
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: os.urandom(4096), id="random-bytes"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_damaged_checkpoint_is_one_line_naming_the_file(make_cfg, trained, tmp_path, damage):
    path = trained / "checkpoints" / "last.pt"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(RunDirError, match=r"last\.pt: the checkpoint is damaged"):
        run(make_cfg([f"resume={trained}"]), tmp_path / "elsewhere")


def test_damaged_policy_is_one_line(trained):
    (trained / "policy.pt").write_bytes(b"not a torch file")
    with pytest.raises(RunDirError, match=r"policy\.pt: the policy is damaged"):
        load_policies(trained)


def test_checkpoint_of_another_game_or_algo_is_refused(make_cfg, trained, tmp_path):
    other = tmp_path / "other"
    run(make_cfg([*TINY, "env=lq", "algo=stackelberg_ppo"]), other)
    (trained / "checkpoints" / "last.pt").write_bytes(
        (other / "checkpoints" / "last.pt").read_bytes()
    )
    with pytest.raises(RunDirError, match="was written for algo='stackelberg_ppo'"):
        run(make_cfg([f"resume={trained}"]), tmp_path / "elsewhere")


def test_policy_of_another_shape_is_refused(make_cfg, trained, tmp_path):
    other = tmp_path / "other"
    run(make_cfg([*MATRIX, "algo.hidden_sizes=[8]"]), other)
    (trained / "policy.pt").write_bytes((other / "policy.pt").read_bytes())
    with pytest.raises(RunDirError, match="does not fit this run's networks"):
        load_policies(trained)


def test_crossplay_against_other_bargaining_rules_is_refused(make_cfg, tmp_path):
    bargain = ["env=bargain", "algo=ppo", "hardware=cpu", "task.progress=false"]
    small = [
        *bargain,
        "env.num_envs=4",
        "algo.num_steps=8",
        "algo.total_timesteps=32",
        "algo.num_minibatches=1",
        "task.eval_games=50",
        "task.eval_episodes=2",
        "env.quantities=[2,1]",
    ]
    trained = tmp_path / "bargain"
    run(make_cfg(small), trained)
    cp = make_cfg(["task=crossplay", "env=bargain", "hardware=cpu", f"task.policies=[{trained}]"])
    with pytest.raises(RunDirError, match=r"other bargaining rules: quantities=\(2, 1\)"):
        run(cp, tmp_path / "cp")


# ------------------------------------------------------------------ nothing finished is lost
def test_a_crash_in_evaluation_keeps_the_training_and_resume_redoes_only_it(
    make_cfg, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    real = train_task.final_evaluation

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation exploded")

    monkeypatch.setattr(train_task, "final_evaluation", broken)
    with pytest.raises(IncompleteRun, match="evaluation failed: RuntimeError: evaluation exploded"):
        run(make_cfg(MATRIX), out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "incomplete" and list(summary["missing"]) == ["evaluation"]
    assert (out / "policy.pt").is_file() and (out / "history.json").is_file()
    assert (out / "plots" / "returns.png").is_file()  # the other stages still ran
    assert "evaluation exploded" in (out / "errors.log").read_text()
    episodes = len(json.loads((out / "history.json").read_text())["episodes"]["env_step"])

    monkeypatch.setattr(train_task, "final_evaluation", real)
    done = run(make_cfg([f"resume={out}"]), tmp_path / "elsewhere")
    assert done["status"] == "completed" and done["missing"] == {}
    assert "returns" in done and done["env_steps"] == summary["env_steps"]
    history = json.loads((out / "history.json").read_text())
    assert len(history["episodes"]["env_step"]) == episodes  # not trained again


def test_a_signal_during_evaluation_leaves_a_summary_that_says_so(make_cfg, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = train_task.final_evaluation

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_task, "final_evaluation", interrupted)
    summary = run(make_cfg(MATRIX), out)
    assert summary["status"] == "interrupted"
    assert summary["missing"]["evaluation"] == "interrupted by SIGTERM"
    assert (out / "policy.pt").is_file() and (out / "history.json").is_file()
    monkeypatch.setattr(train_task, "final_evaluation", real)
    assert run(make_cfg([f"resume={out}"]), tmp_path / "x")["status"] == "completed"


def test_resume_of_a_complete_run_says_so_and_changes_nothing(make_cfg, trained, tmp_path, capsys):
    def files() -> dict[str, tuple[int, bytes]]:
        return {
            str(p.relative_to(trained)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(trained.rglob("*"))
            if p.is_file() and p.name != lock.LOCK_NAME
        }

    before = files()
    capsys.readouterr()
    summary = run(make_cfg([f"resume={trained}"]), tmp_path / "x")
    assert summary["status"] == "completed"
    assert "is complete" in capsys.readouterr().out
    assert files() == before  # not a byte, not a timestamp


def test_resume_accepts_safe_overrides_and_refuses_the_rest(make_cfg, trained, tmp_path):
    safe = [f"resume={trained}", "task.eval_episodes=6", "hardware=cpu"]
    summary = run(make_cfg(safe), tmp_path / "x", overrides=safe)
    assert summary["eval_episodes"] == 6 and summary["status"] == "completed"
    bad = make_cfg([f"resume={trained}", "algo.lr=0.5"])
    with pytest.raises(ConfigError, match="'algo.lr=0.5' cannot change on resume"):
        run(bad, tmp_path / "x", overrides=[f"resume={trained}", "algo.lr=0.5"])
    smaller = [f"resume={trained}", "algo.total_timesteps=16"]
    with pytest.raises(ConfigError, match="below the run's budget of 64"):
        run(make_cfg(smaller), tmp_path / "x", overrides=smaller)
    larger = [f"resume={trained}", "algo.total_timesteps=128"]
    summary = run(make_cfg(larger), tmp_path / "x", overrides=larger)
    assert summary["env_steps"] == 128 and summary["status"] == "completed"


# ------------------------------------------------------------------ one run per directory
def test_a_directory_in_use_is_refused(make_cfg, tmp_path):
    out = tmp_path / "live"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(out / lock.LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'4242'); print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match="in use by a live run"):
            run(make_cfg(MATRIX), out)
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "summary.json").exists()


def test_a_second_run_into_a_used_directory_exits_2_and_keeps_the_first(trained, tmp_path):
    before = (trained / ".hydra").exists()
    proc = dgsolve(*MATRIX, f"hydra.run.dir={trained}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "already holds a run" in one_line_error(proc)
    assert (trained / ".hydra").exists() == before  # Hydra never wrote into it


@pytest.mark.parametrize("where", ["file", "proc"])
def test_unwritable_output_paths_are_one_line(tmp_path, where):
    if where == "file":
        (tmp_path / "a_file").write_text("x")
        target = tmp_path / "a_file" / "run"
    else:
        target = Path("/proc/dgsolve-run")
    proc = dgsolve(*MATRIX, f"hydra.run.dir={target}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "cannot write the run directory" in one_line_error(proc)


def test_a_disk_that_fills_up_mid_run_is_exit_1_and_keeps_the_checkpoint(
    make_cfg, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    real = os.replace
    calls = {"n": 0}

    def full_disk(src, dst):
        if str(dst).endswith("last.pt"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    cfg = make_cfg([*MATRIX, "task.checkpoint_every=1", "algo.total_timesteps=256"])
    with pytest.raises(DiskWriteError, match="No space left on device") as info:
        run(cfg, out)
    assert info.value.exit_code == 1
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["solver"]["iteration"] == 1
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ honest divergence
@pytest.mark.parametrize(
    "every,expect", [(10, "no checkpoint was written yet"), (1, "env step 64")]
)
def test_divergence_says_which_checkpoint_exists(make_cfg, tmp_path, monkeypatch, every, expect):
    original = PPOSolver._minibatch_loss

    def explode(self, *args):
        if self.iteration == 3:
            raise TrainingDiverged(f"non-finite loss at update {self.iteration}")
        return original(self, *args)

    monkeypatch.setattr(PPOSolver, "_minibatch_loss", explode)
    cfg = make_cfg([*MATRIX, f"task.checkpoint_every={every}", "algo.total_timesteps=256"])
    with pytest.raises(TrainingDiverged, match=expect):
        run(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and expect in summary["error"]
    assert (tmp_path / "run" / "history.json").is_file()
    if every == 1:  # the checkpoint named is the last good one, from the update before
        state = torch.load(tmp_path / "run" / "checkpoints/last.pt", weights_only=True)
        assert state["solver"]["iteration"] == 2


# ------------------------------------------------------------------ exact resume
def test_interrupted_and_resumed_run_writes_the_same_history(make_cfg, tmp_path, monkeypatch):
    overrides = [
        *TINY,
        "env=matrix",
        "env.rounds=5",
        "algo=stackelberg_ppo",
        "hierarchy.follower_observes=action",
        "algo.num_steps=3",  # episodes span iterations
        "algo.total_timesteps=120",
        "task.render=false",
    ]
    whole = tmp_path / "whole"
    run(make_cfg(overrides), whole)

    parts = tmp_path / "parts"
    real_step = PPOSolver.step

    def stop_at_4(self):
        out = real_step(self)
        if self.iteration == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(PPOSolver, "step", stop_at_4)
    assert run(make_cfg(overrides), parts)["status"] == "interrupted"
    monkeypatch.setattr(PPOSolver, "step", real_step)
    assert run(make_cfg([f"resume={parts}"]), tmp_path / "x")["status"] == "completed"
    a = json.loads((whole / "history.json").read_text())
    b = json.loads((parts / "history.json").read_text())
    assert a["episodes"] == b["episodes"] and a["updates"] == b["updates"]
