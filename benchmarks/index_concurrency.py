"""The results index under concurrent writers: P processes, each a dgsolve sweep of R runs, all
started at once against one fresh index; prints how many rows arrived and SQLite's integrity
check (JSON).

    python benchmarks/index_concurrency.py            # 8 processes x 2 runs (algo=exact)
    python benchmarks/index_concurrency.py --processes 4 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dgsolve-index-bench-"))
    index = root / "index.sqlite"
    env = {**os.environ, "DGSOLVE_INDEX": str(index), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    procs = []
    for p in range(args.processes):
        seeds = ",".join(str(p * args.runs + r) for r in range(args.runs))
        cmd = [sys.executable, "-m", "dgsolve.cli", "-m", "algo=exact", "env=matrix"]
        cmd += [f"seed={seeds}", "task.progress=false", f"hydra.sweep.dir={root}/p{p}"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
    codes = [proc.wait() for proc in procs]
    wall = time.perf_counter() - started
    with sqlite3.connect(index) as conn:
        rows = conn.execute("SELECT seed, status FROM runs").fetchall()
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    expected = args.processes * args.runs
    report = {
        "processes": args.processes,
        "runs_per_process": args.runs,
        "exit_codes": codes,
        "rows_expected": expected,
        "rows_found": len(rows),
        "distinct_seeds": len({s for s, _ in rows}),
        "statuses": sorted({s for _, s in rows}),
        "integrity_check": integrity,
        "journal_mode": mode,
        "wall_s": round(wall, 1),
        "index": str(index),
    }
    print(json.dumps(report, indent=2))
    sys.exit(0 if len(rows) == expected and integrity == "ok" and not any(codes) else 1)


if __name__ == "__main__":
    main()
