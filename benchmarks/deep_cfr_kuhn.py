"""Deep CFR on Kuhn poker: exact NashConv of the average-strategy networks against wall time.

Runs ``dgsolve env=openspiel algo=deep_cfr`` (the defaults of ``conf/algo/deep_cfr.yaml``, plus
the overrides given) through ``dgsolve.run.run`` exactly as the CLI would, in a temporary
directory, with ``task.eval_every`` set so the history records ``eq/nash_conv`` and the run's
wall time at each evaluation (an evaluation trains the strategy networks, so its time is in the
curve). The issue's target on a 2-core CPU: NashConv ≤ 0.03 within 300 s (OpenSpiel's own
Deep CFR: 0.048 in 282 s). Prints one JSON object. Usage::

    python benchmarks/deep_cfr_kuhn.py [seed=0] [eval_every=10] [threads=1] [<dgsolve overrides>]
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from dgsolve.cli import config_dir
from dgsolve.config import register_configs
from dgsolve.run import run


def main(argv: list[str]) -> dict:
    options = {"seed": "0", "eval_every": "10", "threads": "1"}
    overrides = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in options:
            options[key] = value
        else:
            overrides.append(arg)
    register_configs()
    command = [
        "env=openspiel",
        "algo=deep_cfr",
        "hardware=cpu",
        f"hardware.threads={options['threads']}",
        f"seed={options['seed']}",
        f"task.eval_every={options['eval_every']}",
        "task.progress=false",
        "task.render=false",
        *overrides,
    ]
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=command)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            summary = run(cfg, Path(tmp))
        elapsed = time.perf_counter() - started
        history = json.loads((Path(tmp) / "history.json").read_text())["evaluations"]
    curve = [
        {"iteration": int(i), "wall_time_s": round(w, 2), "nash_conv": n}
        for i, w, n in zip(
            history["env_step"], history["wall_time_s"], history["eq/nash_conv"], strict=True
        )
    ]
    return {
        "command": "dgsolve " + " ".join(command),
        "seed": int(options["seed"]),
        "status": summary["status"],
        "final_nash_conv": summary["eq"]["nash_conv"],
        "final_exploitability": summary["eq"].get("exploitability"),
        "training_wall_time_s": round(summary["wall_time_s"], 2),
        "total_wall_time_s": round(elapsed, 2),
        "curve": curve,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
