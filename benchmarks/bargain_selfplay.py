"""The README's bargaining example as typed: ``dgsolve env=bargain algo=ppo`` (issue 7).

Trains self-play PPO with the bargaining family's own settings (conf/env/bargain.yaml, section
``ppo``: 10M decisions) and prints the final self-play welfare of summary.json next to the
target (at least 1.15; walking away at once gives about 1.00, BARGAIN.md). About 20 minutes on
a 2-core CPU. Usage: ``python benchmarks/bargain_selfplay.py [seed=0] [key=value ...]``
(further overrides go to dgsolve, e.g. ``algo.total_timesteps=...``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

from hydra import compose, initialize_config_dir

from dgsolve.cli import config_dir
from dgsolve.config import register_configs
from dgsolve.run import run

TARGET = 1.15


def main(argv: list[str]) -> None:
    register_configs()
    overrides = ["env=bargain", "algo=ppo", "task.progress=false", "hardware=cpu", *argv]
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run(cfg, tmp)
    welfare = summary["bargain"]["self_play"]["welfare"]
    print(
        json.dumps(
            {
                "overrides": overrides,
                "env_steps": summary["env_steps"],
                "self_play_welfare": welfare,
                "target": TARGET,
                "reached": welfare >= TARGET,
                "vs_baselines": summary["bargain"]["vs_baselines"],
                "wall_time_s": time.perf_counter() - started,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
