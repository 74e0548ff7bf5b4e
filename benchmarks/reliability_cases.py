"""Bad values, damaged files and faults through the ``dgsolve`` command, as a user meets them.

Runs each case in a subprocess in a temporary directory and prints one JSON line per case: the
command's exit status and the last line it printed to stderr (or stdout). The tests
(``tests/test_reliability.py``, ``tests/test_validation.py``) assert on these behaviours; this
script shows them all at once, for the record.

    python benchmarks/reliability_cases.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TINY = [
    "env=matrix",
    "algo=nash_ppo",
    "hardware=cpu",
    "task.progress=false",
    "env.num_envs=2",
    "algo.num_steps=16",
    "algo.total_timesteps=64",
    "algo.num_minibatches=1",
    "task.eval_episodes=2",
]

BAD_VALUES = [
    ["env.num_envs=0"],
    ["env.num_envs=-3"],
    ["algo.num_steps=0"],
    ["algo.num_minibatches=0"],
    ["algo.follower_updates_per_leader=0"],
    ["task.checkpoint_every=0"],
    ["algo.lr=-1"],
    ["algo.lr=nan"],
    ["algo.lr=1e6"],
    ["seed=-1"],
    ["algo.gamma=1.5"],
    ["algo.hidden_sizes=[0]"],
    ["task.eval_episodes=0"],
    ["env=simple_spread", "env.N=0"],
    ["env=simple_spread", "env.max_cycles=0"],
]


def dgsolve(*args: str, cwd: Path) -> dict:
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    proc = subprocess.run(
        [sys.executable, "-m", "dgsolve.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
    return {"rc": proc.returncode, "lines": len(lines), "last": lines[-1] if lines else ""}


def report(case: str, result: dict) -> None:
    print(json.dumps({"case": case, **result}), flush=True)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="dgsolve-reliability-"))
    try:
        for values in BAD_VALUES:
            out = root / "bad"
            result = dgsolve(*TINY, *values, f"hydra.run.dir={out}", cwd=root)
            result["left_a_directory"] = out.exists()
            report(" ".join(values), result)
            shutil.rmtree(out, ignore_errors=True)

        trained = root / "trained"
        report("a finished run", dgsolve(*TINY, f"hydra.run.dir={trained}", cwd=root))
        ckpt = trained / "checkpoints" / "last.pt"
        good = ckpt.read_bytes()
        report("a second run into it", dgsolve(*TINY, f"hydra.run.dir={trained}", cwd=root))
        marker = root / "pwned"
        payload = (
            "import os, torch\n"
            "class P:\n"
            f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
            f"torch.save({{'version': 2, 'solver': P()}}, {str(ckpt)!r})\n"
        )
        subprocess.run([sys.executable, "-c", payload], check=True)
        result = dgsolve(f"resume={trained}", f"hydra.run.dir={root / 'r1'}", cwd=root)
        result["payload_ran"] = marker.exists()
        report("resume= of a planted pickle", result)
        damaged = {"truncated": good[: len(good) // 2], "random bytes": os.urandom(999)}
        for name, data in damaged.items():
            ckpt.write_bytes(data)
            report(f"resume= of a {name} last.pt", dgsolve(f"resume={trained}", cwd=root))
        ckpt.write_bytes(good)
        report("resume= changing algo.lr", dgsolve(f"resume={trained}", "algo.lr=0.1", cwd=root))
        report(
            "resume= with task.eval_episodes=5",
            dgsolve(f"resume={trained}", "task.eval_episodes=5", cwd=root),
        )
        (root / "file").write_text("x")
        for where in (root / "file" / "run", Path("/proc/dgsolve-run")):
            report(f"hydra.run.dir={where}", dgsolve(*TINY, f"hydra.run.dir={where}", cwd=root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
