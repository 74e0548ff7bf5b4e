"""NFSP on Kuhn poker: exact NashConv of the average policy against wall time.

Runs ``dgsolve env=openspiel algo=nfsp task.eval_every=1`` through ``dgsolve.run.run`` (as the
CLI would, in a temporary directory) and prints one JSON object: the settings, and per
evaluation the environment steps, wall time and ``eq/nash_conv`` read from ``history.json``.
Target (issue): NashConv <= 0.08 within 300 s on a 2-core CPU. Usage::

    python benchmarks/nfsp_kuhn.py [seed=0] [threads=1] [any dgsolve override ...]
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from dgsolve.cli import config_dir
from dgsolve.config import register_configs
from dgsolve.run import run


def main(argv: list[str]) -> dict:
    args = dict(a.split("=", 1) for a in argv if a.split("=", 1)[0] in ("seed", "threads"))
    extra = [a for a in argv if a.split("=", 1)[0] not in ("seed", "threads")]
    overrides = [
        "env=openspiel",
        "algo=nfsp",
        "hardware=cpu",
        f"hardware.threads={args.get('threads', '1')}",
        f"seed={args.get('seed', '0')}",
        "task.eval_every=1",
        "task.progress=false",
        "task.render=false",
        *extra,
    ]
    register_configs()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
            summary = run(cfg, Path(tmp))
        history = json.loads((Path(tmp) / "history.json").read_text())
    ev = history["evaluations"]
    key = next(k for k in ev if k.endswith("nash_conv"))
    curve = [
        {"env_step": s, "wall_time_s": round(t, 1), "nash_conv": round(nc, 4)}
        for s, t, nc in zip(ev["env_step"], ev["wall_time_s"], ev[key], strict=True)
    ]
    return {
        "overrides": overrides,
        "curve": curve,
        "final": {
            "nash_conv": summary["eq"]["nash_conv"],
            "env_steps": summary["env_steps"],
            "wall_time_s": summary["wall_time_s"],
        },
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))
