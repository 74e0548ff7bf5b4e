"""Solver overhead: dgsolve training steps/s next to raw stepping of the same game and batch.

One run times (1) the env alone at ``env.num_envs`` copies with uniformly random actions: the
batched torch MPE game (``env.backend=torch``, the default) stepped in a loop with actions drawn
beforehand, or, with ``env.backend=mpe2``, that many raw mpe2 ParallelEnvs stepped one by one;
and (2) ``dgsolve`` training (rollouts, GAE, PPO updates, logging) on the same env and batch,
under cProfile, and prints both rates, their ratio and where the training time went (the game's
``step``, policy sampling, value estimates for bootstrapping, PPO updates, the rest), as one
JSON object. cProfile slows Python-heavy code more than torch kernels, so the shares lean
towards the Python side; the rates come from the profiled run too. Usage::

    python benchmarks/overhead.py [env=simple_spread] [algo=nash_ppo] [steps=204800] [key=value ...]
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import tempfile
import time

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from dgsolve import games
from dgsolve.cli import config_dir
from dgsolve.config import register_configs
from dgsolve.games.pettingzoo import import_factory
from dgsolve.run import run

#: (label, function name as pstats prints it) of the parts of a PPO iteration
PARTS = [
    ("game step", "step", ("games/mpe/game.py", "games/pettingzoo.py")),
    ("policy sampling", "_sample_joint", ("solvers/ppo.py",)),
    ("bootstrap values", "_values_of", ("solvers/ppo.py",)),
    ("PPO update", "_update", ("solvers/ppo.py",)),
    ("rollout (all)", "_rollout", ("solvers/ppo.py",)),
]


def raw_mpe2_steps_per_s(factory: str, num_envs: int, steps: int, seed: int = 0) -> float:
    """Env steps per second of ``num_envs`` raw mpe2 copies with random actions."""
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


def raw_game_steps_per_s(env_cfg, steps: int, device: str = "cpu", seed: int = 0) -> float:
    """Env steps per second of the batched game ``env_cfg`` builds, random discrete actions."""
    game = games.make(env_cfg, device)
    game.reset(seed=seed)
    gen = torch.Generator(device=game.device).manual_seed(seed)
    B = game.num_envs
    iters = max(1, steps // B)
    plan = [
        {
            a: torch.randint(game.spec(a).num_actions, (B,), generator=gen, device=game.device)
            for a in game.agents
        }
        for _ in range(min(iters, 256))
    ]
    for acts in plan[:10]:  # warm-up
        game.step(acts)
    start = time.perf_counter()
    for k in range(iters):
        game.step(plan[k % len(plan)])
    if game.device.type == "cuda":
        torch.cuda.synchronize()
    return iters * B / (time.perf_counter() - start)


def where_time_went(profile: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds of each of :data:`PARTS` in the profiled run."""
    stats = pstats.Stats(profile).stats
    out = {}
    for label, name, files in PARTS:
        total = 0.0
        for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.items():
            if func == name and any(path.endswith(f) for f in files):
                total += ct
        out[label] = round(total, 2)
    return out


def main(argv: list[str]) -> None:
    opts = dict(arg.split("=", 1) for arg in argv)
    env = opts.pop("env", "simple_spread")
    algo = opts.pop("algo", "nash_ppo")
    steps = int(opts.pop("steps", 204800))
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
    backend = cfg.env.get("backend", "mpe2")
    torch_backend = getattr(backend, "value", backend) == "torch"
    profile = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        profile.enable()
        start = time.perf_counter()
        summary = run(cfg, tmp)
        wall = time.perf_counter() - start
        profile.disable()
    train = summary["env_steps"] / summary["wall_time_s"]
    # the raw rate with the threads the run used (run() applies hardware.threads)
    if torch_backend:
        raw = raw_game_steps_per_s(cfg.env, steps, device="cpu")
    else:
        raw = raw_mpe2_steps_per_s(cfg.env.factory, cfg.env.num_envs, min(steps, 40960))
    parts = where_time_went(profile)
    parts["other (logging, setup, evaluation)"] = round(
        wall - parts["rollout (all)"] - parts["PPO update"], 2
    )
    print(
        json.dumps(
            {
                "env": env,
                "algo": algo,
                "backend": "torch" if torch_backend else "mpe2",
                "num_envs": cfg.env.num_envs,
                "num_steps": cfg.algo.num_steps,
                "env_steps": summary["env_steps"],
                "torch_threads": torch.get_num_threads(),
                "raw_steps_per_s": round(raw, 1),
                "train_steps_per_s": round(train, 1),
                "ratio": round(train / raw, 4),
                "profiled_wall_s": round(wall, 2),
                "seconds_in": parts,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
