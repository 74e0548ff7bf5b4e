"""``run(cfg, run_dir)``: the one place where game, hierarchy, solver and artifacts meet."""

from __future__ import annotations

import platform
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from dgsolve import __version__, games, solvers
from dgsolve.artifacts import RunArtifacts
from dgsolve.errors import ConfigError, Interrupted, RunDirError, TrainingDiverged
from dgsolve.eval.equilibrium import equilibrium_report, verdict_line
from dgsolve.eval.returns import evaluate_returns, uniform_random_actions
from dgsolve.hierarchy import Hierarchy

CHECKPOINT_VERSION = 1


def resolve_device(hardware) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a user error."""
    name = getattr(hardware.device, "value", hardware.device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hardware=cuda but no CUDA device is visible; use hardware=cpu or auto")
    if hardware.threads and hardware.threads > 0:
        torch.set_num_threads(int(hardware.threads))
    return torch.device(name)


def load_run_config(run_dir: Path | str) -> DictConfig:
    """The composed config of an earlier run, from its ``.hydra/config.yaml``."""
    path = Path(run_dir).expanduser().resolve() / ".hydra" / "config.yaml"
    if not path.is_file():
        raise RunDirError(f"'{run_dir}' is not a dgsolve run directory (no .hydra/config.yaml)")
    return OmegaConf.load(path)


def load_policies(run_dir: Path | str, device: torch.device | str = "cpu", num_envs: int = 1):
    """Rebuild a finished run's trained policies from its ``.hydra/config.yaml`` and
    ``policy.pt`` alone. Returns ``(joint_policy, cfg)``; the JointPolicy plays every agent."""
    run_dir = Path(run_dir).expanduser().resolve()
    cfg = load_run_config(run_dir)
    policy_path = run_dir / "policy.pt"
    if not policy_path.is_file():
        raise RunDirError(f"'{run_dir}' has no policy.pt (did the run finish?)")
    device = torch.device(device)
    env_cfg = OmegaConf.merge(cfg.env, {"num_envs": num_envs})
    game = games.make(env_cfg, device)
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    solver = solvers.make(cfg.algo, game, hierarchy, device, cfg.seed)
    solver.load_policy_state(torch.load(policy_path, map_location=device, weights_only=True))
    game.close()
    return solver.joint_policy(), cfg


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"dgsolve": __version__, "python": platform.python_version()}
    for pkg in ("torch", "pettingzoo", "mpe2", "hydra-core", "numpy", "triton"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


@contextmanager
def interruptible():
    """Turn SIGINT/SIGTERM into a flag the training loop checks between iterations."""
    received: list[int] = []

    def handler(signum, _frame):
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} steps/s"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[returns]}"),
        disable=not enabled,
        transient=False,
    )


def run(cfg: DictConfig, run_dir: Path | str) -> dict:
    """Train (or resume) the configured solver and write every artifact into ``run_dir``.

    Returns the summary that was written to ``summary.json``.
    """
    checkpoint = None
    if cfg.get("resume"):
        resume_dir = Path(cfg.resume).expanduser().resolve()
        cfg = load_run_config(resume_dir)
        ckpt_path = resume_dir / "checkpoints" / "last.pt"
        if not ckpt_path.is_file():
            raise RunDirError(f"cannot resume '{resume_dir}': it has no checkpoints/last.pt")
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        run_dir = resume_dir
    task_name = cfg.task.name
    if task_name not in ("train", "crossplay"):
        raise ConfigError(f"unknown task '{task_name}'; known: ['crossplay', 'train']")
    device = resolve_device(cfg.hardware)
    if task_name == "crossplay":
        from dgsolve.crossplay_task import run_crossplay

        table = run_crossplay(cfg, run_dir, device)
        print_crossplay(table)
        return {"crossplay": table}

    game = games.make(cfg.env, device)
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    if cfg.env.family in GAME_EVALUATIONS and not hierarchy.is_simultaneous:
        raise ConfigError(
            f"env={cfg.env.name} is turn-based and evaluated seat by seat, not in tiers; use "
            "hierarchy=simultaneous (e.g. algo=ppo or algo=mappo)"
        )
    solver = solvers.make(cfg.algo, game, hierarchy, device, cfg.seed)
    art = RunArtifacts(run_dir, game.agents)
    wall_before = 0.0
    if checkpoint is not None:
        solver.load_state_dict(checkpoint["solver"])
        art.history.load_state_dict(checkpoint["history"])
        wall_before = float(checkpoint["wall_time_s"])

    started = time.perf_counter()
    status = "completed"

    def wall() -> float:
        return wall_before + time.perf_counter() - started

    def checkpoint_state() -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "solver": solver.state_dict(),
            "history": art.history.state_dict(),
            "wall_time_s": wall(),
        }

    print(
        f"dgsolve: {cfg.algo.name} on {game_name(cfg)} | tiers {hierarchy.describe()} | "
        f"{device} | run dir {art.dir}"
    )
    try:
        with interruptible() as signals, _progress(cfg.task.progress) as progress:
            bar = progress.add_task(
                "training",
                total=solver.num_iterations,
                completed=solver.iteration,
                rate="-",
                returns="",
            )
            step_start, t_start = solver.global_step, time.perf_counter()
            while not solver.done:
                metrics = solver.step()
                art.log_episodes(metrics["episodes"])
                art.log_losses(solver.global_step, metrics["losses"])
                rate = (solver.global_step - step_start) / max(1e-9, time.perf_counter() - t_start)
                art.scalar("charts/steps_per_s", rate, solver.global_step)
                recent = art.recent_returns()
                progress.update(
                    bar,
                    completed=solver.iteration,
                    rate=f"{rate:,.0f}",
                    returns=" ".join(f"{a}={r:.2f}" for a, r in recent.items()),
                )
                every = int(cfg.task.get("eval_every", 0))
                if every and solver.iteration % every == 0 and not solver.done:
                    log_game_evaluation(cfg, solver, art, device)
                if solver.iteration % cfg.task.checkpoint_every == 0:
                    art.save_checkpoint(checkpoint_state())
                if signals:
                    raise Interrupted
    except Interrupted:
        status = "interrupted"
        art.save_checkpoint(checkpoint_state())
        print(
            f"dgsolve: interrupted at env step {solver.global_step}; checkpoint saved, "
            f"continue with resume={art.dir}"
        )
    except TrainingDiverged:
        art.write_history()
        art.close()
        raise

    if status == "completed":
        art.save_checkpoint(checkpoint_state())
    art.save_policy(solver.policy_state())
    wall_time = wall()
    summary = {
        "status": status,
        "algo": cfg.algo.name,
        "env": game_name(cfg),
        "tiers": [list(t) for t in hierarchy.tiers],
        "seed": int(cfg.seed),
        "env_steps": int(solver.global_step),
        "iterations": int(solver.iteration),
        "wall_time_s": wall_time,
        "steps_per_s": solver.global_step / max(wall_time, 1e-9),
        "device": str(device),
        "versions": versions(),
    }
    if hasattr(solver, "summary"):
        summary.update(solver.summary())
    if status == "completed":
        summary.update(final_evaluation(cfg, solver, hierarchy, device))
        game_eval = log_game_evaluation(cfg, solver, art, device)
        if game_eval is not None:
            summary[cfg.env.family] = game_eval
        for a, r in summary["returns"].items():
            art.scalar(f"eval/return/{a}", r, solver.global_step)
        for tag, value in flatten(summary.get("eq", {}), "eq").items():
            art.scalar(tag, value, solver.global_step)
    art.write_history()
    art.write_summary(summary)
    art.write_plots()
    if status == "completed" and cfg.task.render and getattr(game, "can_render", False):
        art.write_gif(render_rollout(game, solver, cfg))
    art.close()
    game.close()
    if "eq" in summary:
        print(f"dgsolve: {verdict_line(summary['eq'], hierarchy)}")
    return summary


def print_crossplay(table: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title="cross-play welfare (agreement rate); row as P1, column as P2")
    out.add_column("P1 \\ P2")
    for name in table["policies"]:
        out.add_column(name, justify="right")
    for i, name in enumerate(table["policies"]):
        cells = [
            f"{table['welfare'][i][j]:.3f} ({table['agreement_rate'][i][j]:.2f})"
            for j in range(len(table["policies"]))
        ]
        out.add_row(name, *cells)
    Console().print(out)


def game_name(cfg) -> str:
    if cfg.env.family == "pettingzoo":
        return str(cfg.env.factory)
    return str(cfg.env.name)


def final_evaluation(cfg, solver, hierarchy: Hierarchy, device: torch.device) -> dict:
    """Mean returns of the trained policies and of uniformly random ones, on fresh games."""
    episodes = int(cfg.task.eval_episodes)
    eval_cfg = OmegaConf.merge(cfg.env, {"num_envs": min(int(cfg.env.num_envs), episodes)})
    game = games.make(eval_cfg, device)
    joint = solver.joint_policy()
    seed = 10_000 + int(cfg.seed)
    returns = evaluate_returns(game, lambda ts: joint.act(ts), episodes, seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    random_returns = evaluate_returns(game, uniform_random_actions(game, gen), episodes, seed)
    game.close()
    out = {"eval_episodes": episodes, "returns": returns, "random_returns": random_returns}
    eq = equilibrium_report(cfg, joint, hierarchy, device)
    if eq is not None:
        out["eq"] = eq
    return out


def _bargain_evaluation(cfg, solver, device: torch.device) -> dict:
    from dgsolve.eval.bargain import bargain_report

    games_per_match = int(cfg.task.eval_games)
    return bargain_report(solver.policies(), cfg.env, games_per_match, 20_000 + cfg.seed, device)


#: evaluations that only some game families have, run every ``task.eval_every`` iterations and
#: at the end; their results go to TensorBoard and the history under the family's name, and to
#: ``summary.json`` as ``<family>``.
GAME_EVALUATIONS = {"bargain": _bargain_evaluation}


def log_game_evaluation(cfg, solver, art: RunArtifacts, device: torch.device) -> dict | None:
    evaluate = GAME_EVALUATIONS.get(cfg.env.family)
    if evaluate is None:
        return None
    report = evaluate(cfg, solver, device)
    values = flatten(report, cfg.env.family)
    for tag, value in values.items():
        art.scalar(tag, value, solver.global_step)
    art.history.add_evaluation(solver.global_step, values)
    return report


def flatten(tree: dict, prefix: str) -> dict[str, float]:
    """``{"a": {"b": 1.0}}`` → ``{"prefix/a/b": 1.0}`` for the numeric leaves."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        tag = f"{prefix}/{key}"
        if isinstance(value, dict):
            out.update(flatten(value, tag))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[tag] = float(value)
    return out


def render_rollout(game, solver, cfg) -> list:
    joint = solver.joint_policy()
    steps = int(cfg.env.get("max_cycles") or 200)
    return game.render_episode(lambda ts: joint.act(ts, greedy=True), steps, int(cfg.seed))
