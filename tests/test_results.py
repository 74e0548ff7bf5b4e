"""The results index and ``dgsolve-results``: every run recorded, nothing lost under concurrent
writers, rebuildable from the run directories, and the commands (list, show, compare, best,
leaderboard, export, plot) computing what they say."""

from __future__ import annotations

import csv
import json
import multiprocessing
import sqlite3
import statistics
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from dgsolve.errors import DGSolveError
from dgsolve.results.cli import main as results_main
from dgsolve.results.index import ResultsIndex, record_run
from dgsolve.run import run
from tests.conftest import compose_config


def fake_run(root, name, algo="nash_ppo", seed=0, lr=0.001, gap=0.1, status="completed"):
    """A run directory as dgsolve writes it: run_config.yaml, .hydra/overrides.yaml, summary.json
    and a history with two agents' returns."""
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    cfg = {
        "seed": seed,
        "task": {"name": "train"},
        "env": {"name": "matrix", "family": "matrix"},
        "algo": {"name": algo, "lr": lr},
        "hierarchy": {"mode": "simultaneous"},
        "hardware": {"device": "cpu"},
    }
    (d / "run_config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    overrides = [f"algo={algo}", "env=matrix", f"seed={seed}", f"algo.lr={lr}"]
    (d / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    summary = {
        "algo": algo,
        "env": "matrix",
        "status": status,
        "seed": seed,
        "wall_time_s": 1.5,
        "env_steps": 100,
        "returns": {"row": 1.0 + gap, "column": 2.0},
        "eq": {"verdict": {"equilibrium": gap < 0.05, "worst_gap": gap}},
    }
    (d / "summary.json").write_text(json.dumps(summary))
    history = {
        "episodes": {
            "env_step": [10, 10, 20, 30],
            "returns": {"row": [1, 3, 2, 4], "column": [0] * 4},
        },
        "updates": {"solver": {"env_step": [10, 20], "policy_loss": [0.5, 0.25]}},
        "evaluations": {},
    }
    (d / "history.json").write_text(json.dumps(history))
    return d


def results(*argv, capsys):
    code = results_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def index(tmp_path, monkeypatch):
    path = tmp_path / "index.sqlite"
    monkeypatch.setenv("DGSOLVE_INDEX", str(path))
    return ResultsIndex(path)


def test_a_real_run_is_recorded_with_its_outcome(tmp_path, index):
    cfg = compose_config(["algo=exact", "env=matrix", "task.progress=false", "hardware=cpu"])
    run(cfg, tmp_path / "r", ["algo=exact", "env=matrix"])
    [rec] = index.runs()
    assert rec["run_dir"] == str((tmp_path / "r").resolve())
    assert (rec["task"], rec["env"], rec["algo"], rec["status"]) == (
        "train",
        "matrix",
        "exact",
        "completed",
    )
    assert rec["overrides"] == ["algo=exact", "env=matrix"]
    assert rec["summary"]["eq"]["verdict"]["equilibrium"] is True
    assert rec["wall_time_s"] is not None and rec["started_at"] > 0


def test_a_run_that_fails_is_recorded_as_failed_and_a_refused_one_not_at_all(tmp_path, index):
    cfg = compose_config(["env=matrix", "task.progress=false", "hardware=cpu", "algo=cfr"])
    with pytest.raises(DGSolveError):
        run(cfg, tmp_path / "bad", [])  # CFR needs an OpenSpiel game: refused by the solver
    rows = {r["name"]: r for r in index.runs()}
    assert rows["bad"]["status"] == "failed"
    cfg = compose_config(["env=matrix", "algo=nash_ppo", "algo.lr=-1", "hardware=cpu"])
    with pytest.raises(DGSolveError):
        run(cfg, tmp_path / "refused", [])
    assert "refused" not in {r["name"] for r in index.runs()}


def _record_two(paths, index_path):
    import os

    os.environ["DGSOLVE_INDEX"] = str(index_path)  # importing tests.conftest set its own
    for p in paths:
        record_run(p)


def test_sixteen_concurrent_writers_lose_no_row(tmp_path, index):
    dirs = [fake_run(tmp_path, f"run{i:02d}", seed=i) for i in range(16)]
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_record_two, args=(dirs[2 * k : 2 * k + 2], index.path))
        for k in range(8)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert sorted(r["name"] for r in index.runs()) == [f"run{i:02d}" for i in range(16)]
    with sqlite3.connect(index.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _open_at_once(path, barrier):
    barrier.wait()
    ResultsIndex(path)._connect().close()  # an uncaught ResultsIndexError exits with 1


def test_jobs_that_open_a_new_index_at_the_same_moment_all_get_it(tmp_path):
    # the first opening switches the file to WAL, a lock SQLite does not wait for: before
    # the retry, about one fresh index in five refused one of four simultaneous jobs
    ctx = multiprocessing.get_context("fork")  # started at once: spawn would stagger them
    for trial in range(15):
        path = tmp_path / f"fresh{trial}" / "index.sqlite"
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * 4, f"trial {trial}"


def test_reindex_rebuilds_the_index_from_the_run_directories(tmp_path, index, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a bare reindex also scans ./outputs: not the checkout's own
    for i in range(3):
        fake_run(tmp_path / "sweep", f"{i}_seed={i}", seed=i)
    assert index.runs() == []
    code, out, _ = results("reindex", str(tmp_path / "sweep"), capsys=capsys)
    assert code == 0 and "3 runs indexed (3 new" in out
    index.path.unlink()
    (index.path.parent / (index.path.name + "-wal")).unlink(missing_ok=True)
    results("reindex", str(tmp_path / "sweep"), capsys=capsys)
    assert len(index.runs()) == 3
    import shutil

    shutil.rmtree(tmp_path / "sweep" / "1_seed=1")
    code, out, _ = results("reindex", "--json", capsys=capsys)
    assert json.loads(out)["removed"] == 1 and len(index.runs()) == 2


def test_leaderboard_is_mean_and_std_over_seeds_per_configuration(tmp_path, index, capsys):
    gaps = {"nash_ppo": [0.1, 0.2, 0.3], "mappo": [0.02, 0.04, 0.09]}
    for algo, values in gaps.items():
        for seed, gap in enumerate(values):
            fake_run(tmp_path, f"{algo}{seed}", algo=algo, seed=seed, gap=gap)
    results("reindex", str(tmp_path), capsys=capsys)
    code, out, _ = results(
        "leaderboard", "--metric", "eq.verdict.worst_gap", "--json", capsys=capsys
    )
    board = json.loads(out)
    assert code == 0 and board["lower_is_better"] is True
    assert [row["algo"] for row in board["rows"]] == ["mappo", "nash_ppo"]
    for row in board["rows"]:
        assert row["runs"] == 3 and row["seeds"] == [0, 1, 2]
        assert row["mean"] == pytest.approx(statistics.fmean(gaps[row["algo"]]))
        assert row["std"] == pytest.approx(statistics.stdev(gaps[row["algo"]]))
    code, out, _ = results("leaderboard", "--metric", "eq.verdict.worst_gap", capsys=capsys)
    assert "0.05 ± 0.036" in out and "0.2 ± 0.1" in out
    code, out, _ = results(
        "leaderboard",
        "--metric",
        "returns.row",
        "--under",
        str(tmp_path / "mappo0"),
        "--json",
        capsys=capsys,
    )
    assert [row["runs"] for row in json.loads(out)["rows"]] == [1]  # one directory's run
    code, out, _ = results("best", "--metric", "returns.row", "--json", capsys=capsys)
    assert json.loads(out)["value"] == pytest.approx(1.3)  # higher is better for a return


def test_an_unknown_metric_lists_the_available_ones(tmp_path, index, capsys):
    fake_run(tmp_path, "a")
    results("reindex", str(tmp_path), capsys=capsys)
    code, _, err = results("best", "--metric", "eq.nope", capsys=capsys)
    assert code == 2
    assert "unknown metric 'eq.nope'" in err and "eq.verdict.worst_gap" in err
    assert len(err.strip().splitlines()) == 1


def test_list_filters_and_json(tmp_path, index, capsys):
    fake_run(tmp_path, "a", algo="nash_ppo")
    fake_run(tmp_path, "b", algo="mappo", status="diverged")
    results("reindex", str(tmp_path), capsys=capsys)
    _, out, _ = results("list", "--json", "--algo", "mappo", capsys=capsys)
    assert [r["name"] for r in json.loads(out)] == ["b"]
    _, out, _ = results("list", "--json", "--status", "completed", capsys=capsys)
    assert [r["name"] for r in json.loads(out)] == ["a"]
    _, out, _ = results("list", "--json", "--since", "1h", capsys=capsys)
    assert len(json.loads(out)) == 2
    future = time.strftime("%Y-%m-%d", time.localtime(time.time() + 3 * 86400))
    _, out, _ = results("list", "--json", "--since", future, capsys=capsys)
    assert json.loads(out) == []
    code, _, err = results("list", "--since", "yesterday", capsys=capsys)
    assert code == 2 and "--since" in err
    _, out, _ = results("list", capsys=capsys)
    assert "mappo" in out and "diverged" in out


def test_show_and_compare_name_runs_by_a_tail_of_their_directory(tmp_path, index, capsys):
    fake_run(tmp_path, "x/one", lr=0.001, gap=0.1)
    fake_run(tmp_path, "x/two", lr=0.01, gap=0.2)
    results("reindex", str(tmp_path), capsys=capsys)
    _, out, _ = results("show", "x/one", "--json", capsys=capsys)
    assert json.loads(out)["config"]["algo"]["lr"] == 0.001
    code, out, _ = results("compare", "one", "two", "--json", capsys=capsys)
    cmp = json.loads(out)
    assert code == 0 and cmp["config"] == {"algo.lr": [0.001, 0.01]}
    assert cmp["metrics"]["eq.verdict.worst_gap"] == [0.1, 0.2]
    code, _, err = results("show", "nothing-like-this", capsys=capsys)
    assert code == 2 and "no run" in err


def test_export_writes_one_csv_row_per_run(tmp_path, index, capsys):
    for i in range(3):
        fake_run(tmp_path, f"r{i}", seed=i, gap=0.1 * i)
    results("reindex", str(tmp_path), capsys=capsys)
    out = tmp_path / "all.csv"
    assert results("export", str(out), capsys=capsys)[0] == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["seed"]) for r in rows] == [0, 1, 2]
    assert [float(r["eq.verdict.worst_gap"]) for r in rows] == pytest.approx([0, 0.1, 0.2])


def test_plot_draws_the_history_curves_into_one_png(tmp_path, index, capsys):
    fake_run(tmp_path, "p1")
    fake_run(tmp_path, "p2")
    results("reindex", str(tmp_path), capsys=capsys)
    png = tmp_path / "returns.png"
    code, out, _ = results(
        "plot", "--metric", "returns", "p1", "p2", "--out", str(png), "--json", capsys=capsys
    )
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads(out)["curves"]) == 4  # two agents in two runs
    code, _, err = results("plot", "--metric", "nope", "p1", capsys=capsys)
    assert code == 2 and "returns.row" in err and "losses.solver.policy_loss" in err


def test_the_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "dgsolve.results.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for command in ("list", "show", "compare", "best", "leaderboard", "export", "plot"):
        assert command in out.stdout


def test_a_run_without_a_final_status_is_running_while_locked_else_unfinished(tmp_path):
    from dgsolve import lock
    from dgsolve.results.record import read_run

    d = fake_run(tmp_path, "live", status="evaluating")
    lock.acquire(d)
    try:
        assert lock.is_held(d) and read_run(d)["status"] == "running"
    finally:
        lock.release(d)
    assert not lock.is_held(d) and read_run(d)["status"] == "unfinished"
