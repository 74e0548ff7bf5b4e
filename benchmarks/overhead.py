"""Solver overhead: dgsolve training steps/s next to raw mpe2 stepping on the same env.

One run times (1) ``num_envs`` copies of the raw PettingZoo ParallelEnv stepped in a plain loop
with uniformly random actions drawn by numpy, and (2) ``dgsolve`` training (rollouts, GAE and PPO
updates, logging) on the same env and number of copies, and prints both rates and their ratio as
one JSON object. Usage::

    python benchmarks/overhead.py [env=simple_adversary] [algo=stackelberg_ppo] [steps=40960]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from dgsolve.cli import config_dir
from dgsolve.config import register_configs
from dgsolve.games.pettingzoo import import_factory
from dgsolve.run import run


def raw_steps_per_s(factory: str, num_envs: int, steps: int, seed: int = 0) -> float:
    """Env steps per second of ``num_envs`` raw copies with random actions."""
    make = import_factory(factory)
    envs = [make(max_cycles=25) for _ in range(num_envs)]
    rng = np.random.default_rng(seed)
    for i, env in enumerate(envs):
        env.reset(seed=seed + i)
    sizes = {a: envs[0].action_space(a).n for a in envs[0].possible_agents}
    done = 0
    start = time.perf_counter()
    while done < steps:
        for env in envs:
            env.step({a: int(rng.integers(sizes[a])) for a in env.agents})
            if not env.agents:
                env.reset()
        done += num_envs
    return done / (time.perf_counter() - start)


def main(argv: list[str]) -> None:
    opts = dict(arg.split("=", 1) for arg in argv)
    env = opts.pop("env", "simple_adversary")
    algo = opts.pop("algo", "stackelberg_ppo")
    steps = int(opts.pop("steps", 40960))
    register_configs()
    overrides = [
        f"env={env}",
        f"algo={algo}",
        f"algo.total_timesteps={steps}",
        "task.progress=false",
        "task.render=false",
        "task.eval_episodes=1",
        *[f"{k}={v}" for k, v in opts.items()],
    ]
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    raw = raw_steps_per_s(cfg.env.factory, cfg.env.num_envs, steps)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run(cfg, tmp)
    train = summary["env_steps"] / summary["wall_time_s"]
    print(
        json.dumps(
            {
                "env": env,
                "algo": algo,
                "num_envs": cfg.env.num_envs,
                "env_steps": summary["env_steps"],
                "torch_threads": torch.get_num_threads(),
                "raw_steps_per_s": round(raw, 1),
                "train_steps_per_s": round(train, 1),
                "ratio": round(train / raw, 3),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
