"""``task=train``: train the configured solver, then evaluate, plot and render, losing nothing.

The stages and what each leaves behind:

1. **training** (or its continuation from ``checkpoints/last.pt``): checkpoints every
   ``task.checkpoint_every`` iterations, atomically. SIGINT/SIGTERM stop it between iterations
   with a checkpoint (a second signal stops it at once; the last checkpoint stays valid).
2. **results**: the final checkpoint, ``policy.pt``, ``history.json``/``.npz`` and a provisional
   ``summary.json`` (``status: evaluating``) are written *before* any evaluation starts.
3. **evaluation**, **plots**, **rollout** (``rollout.gif``): each runs on its own; a failure or a
   signal in one is recorded in ``summary.json`` under ``missing`` (stage -> why) and the run
   goes on to write everything else. ``resume=`` of such a run redoes only what is missing (and
   the evaluation when evaluation options were overridden), without training again.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dgsolve import games, solvers, wandb_mirror
from dgsolve.artifacts import RunArtifacts, atomic_write_bytes, versions
from dgsolve.errors import ConfigError, IncompleteRun, Interrupted, RunDirError, TrainingDiverged
from dgsolve.eval.equilibrium import equilibrium_report
from dgsolve.eval.returns import evaluate_returns, uniform_random_actions
from dgsolve.hierarchy import Hierarchy
from dgsolve.report import print_report
from dgsolve.rundir import (
    CHECKPOINT_VERSION,
    check_resumed_config,
    load_checkpoint,
    restore,
    run_identity,
)

RESUMABLE = True

#: the stages after training, in order; each can be missing from a run and redone by ``resume=``
STAGES = ("evaluation", "plots", "rollout")
#: options whose change on ``resume=`` makes a stage stale
STAGE_OPTIONS = {
    "evaluation": ("task.eval_episodes", "task.eval_games", "task.eq_tolerance"),
    "rollout": ("task.render",),
}
#: summary keys the evaluation stage writes (kept from the earlier summary when not redone)
EVALUATION_KEYS = ("eval_episodes", "returns", "random_returns", "mean_return", "eq")


def execute(ctx) -> dict:
    cfg, device = ctx.cfg, ctx.device
    game = games.make(cfg.env, device)
    try:
        return _train(ctx, cfg, device, game)
    finally:
        game.close()


def _train(ctx, cfg, device: torch.device, game) -> dict:
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    if cfg.env.family in TURN_BASED and not hierarchy.is_simultaneous:
        raise ConfigError(
            f"env={cfg.env.name} is turn-based and evaluated seat by seat, not in tiers; use "
            "hierarchy=simultaneous (e.g. algo=ppo or algo=mappo)"
        )
    solver = solvers.make(cfg.algo, game, hierarchy, device, cfg.seed)
    identity = run_identity(cfg, game, hierarchy)
    learns = getattr(solver, "learns", True)  # False: algo=exact computes, nothing to curve
    art = RunArtifacts(
        ctx.dir, game.agents, tensorboard=learns, mirror=wandb_mirror.from_config(ctx.cfg, ctx.dir)
    )
    wall_before, previous = 0.0, {}
    if ctx.resumed and not learns:
        previous = _previous_summary(ctx.dir)  # no checkpoint: the solution is recomputed
    elif ctx.resumed:
        ckpt_path = art.checkpoint_path
        if not ckpt_path.is_file():
            raise RunDirError(f"cannot resume '{ctx.dir}': it has no checkpoints/last.pt")
        state = load_checkpoint(ckpt_path, identity)
        check_resumed_config(state, cfg, ckpt_path)
        restore(solver.load_state_dict, state["solver"], ckpt_path)
        restore(art.history.load_state_dict, state["history"], ckpt_path)
        wall_before = float(state["wall_time_s"])
        previous = _previous_summary(ctx.dir)
    started = time.perf_counter()
    trained_with = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)

    def wall() -> float:
        return wall_before + time.perf_counter() - started

    def checkpoint_state() -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "identity": identity,
            "config": trained_with,
            "solver": solver.state_dict(),
            "history": art.history.state_dict(),
            "wall_time_s": wall(),
            "env_step": solver.global_step,
        }

    print(
        f"dgsolve: {cfg.algo.name} on {game_name(cfg)} | tiers {hierarchy.describe()} | "
        f"{device} | run dir {art.dir}"
    )
    trained_now = not solver.done
    finished = not trained_now or not learns
    if ctx.resumed and finished and previous.get("status") == "completed":
        if not _stages_to_run(False, previous, ctx.changed):
            more = (
                "; to train on, resume with a larger algo.total_timesteps"
                if "total_timesteps" in cfg.algo
                else ""
            )
            print(
                f"dgsolve: {art.dir} is complete ({solver.global_step:,} environment steps, "
                f"nothing missing); nothing was changed{more}"
            )
            art.close()
            return previous
    try:
        if trained_now and not learns:
            while not solver.done:
                solver.step()
        elif trained_now:
            _training_loop(ctx, cfg, solver, art, device, checkpoint_state, wall)
    except Interrupted as stop:
        base = _summary_base(cfg, solver, hierarchy, device)
        return _stopped(ctx, art, solver, base, wall(), stop, checkpoint_state)
    except TrainingDiverged as err:
        _diverged(art, solver, _summary_base(cfg, solver, hierarchy, device), wall(), err)
        raise
    base = _summary_base(cfg, solver, hierarchy, device)

    # RESULTS before anything that could fail: checkpoint, policy, history, provisional summary
    if learns:
        art.save_checkpoint(checkpoint_state())
    art.save_policy(solver.policy_state())
    if learns:
        art.write_history()
    todo = _stages_to_run(trained_now and learns, previous, ctx.changed)
    if not learns:
        todo = [s for s in todo if s != "plots"]  # no curves: no empty plots
    summary = {**base, "status": "evaluating", "wall_time_s": wall()}
    summary["steps_per_s"] = solver.global_step / max(summary["wall_time_s"], 1e-9)
    if not trained_now:
        summary.update({k: previous[k] for k in previous if k in EVALUATION_KEYS})
        summary.update({k: previous[k] for k in (cfg.env.family,) if k in previous})
    missing = {s: "not run yet" for s in todo}
    summary["missing"] = dict(missing)
    art.write_summary(summary)

    # STAGES: each on its own; a signal now stops the stage at once
    interrupted = ctx.signals.start_raising()  # a signal that came while results were written
    errors: dict[str, str] = {}
    stages = {
        "evaluation": lambda: summary.update(_evaluate(cfg, solver, hierarchy, device, art, wall)),
        "plots": lambda: art.write_plots(
            getattr(solver, "step_unit", "environment steps"),
            algo=cfg.algo.name,
            env=game_name(cfg),
        ),
        "rollout": lambda: _rollout_gif(cfg, game, solver, art),
    }
    for stage in STAGES:
        if stage not in todo:
            continue
        if interrupted is not None:
            missing[stage] = "not run: the run was interrupted"
            continue
        try:
            stages[stage]()
            del missing[stage]
        except Interrupted as stop:
            interrupted = stop
            missing[stage] = f"interrupted by {ctx.signals.name(stop.signum)}"
        except Exception as err:  # a fault in one stage must not strand the others
            missing[stage] = f"failed: {type(err).__name__}: {_first_line(err)}"
            errors[stage] = traceback.format_exc()
    ctx.signals.stop_raising()
    if errors:
        log = "".join(f"--- {stage}\n{text}" for stage, text in errors.items())
        atomic_write_bytes(art.dir / "errors.log", log.encode())
    summary["missing"] = missing
    summary["status"] = "interrupted" if interrupted else ("incomplete" if missing else "completed")
    if learns:
        art.write_history()
    art.write_summary(summary)
    art.close()
    print_report(summary, hierarchy, art.dir)
    if interrupted is not None:
        print(
            f"dgsolve: interrupted after training ({', '.join(missing)} missing); everything "
            f"trained is saved; finish it with resume={art.dir}"
        )
    elif missing:
        parts = "; ".join(f"{s} {why}" for s, why in missing.items())
        raise IncompleteRun(
            f"training finished and was saved, but {parts} (traceback in {art.dir}/errors.log); "
            f"redo the missing parts with resume={art.dir}"
        )
    return summary


def _training_loop(ctx, cfg, solver, art: RunArtifacts, device, checkpoint_state, wall) -> None:
    with progress_bar(cfg.task.progress) as progress:
        bar = progress.add_task(
            "training",
            total=solver.num_iterations,
            completed=solver.iteration,
            rate="-",
            returns="",
        )
        step_start, t_start = solver.global_step, time.perf_counter()
        while not solver.done:
            ctx.signals.check()
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
                log_game_evaluation(cfg, solver, art, device, wall())
            if solver.iteration % cfg.task.checkpoint_every == 0:
                art.save_checkpoint(checkpoint_state())
            ctx.signals.check()


def _stopped(ctx, art, solver, base, wall_time, stop: Interrupted, checkpoint_state) -> dict:
    """A signal during training: checkpoint where the solver stands between iterations (a second
    signal, mid-iteration, keeps the last checkpoint), and write what was learned so far."""
    between = ctx.signals.between_iterations
    if between:
        art.save_checkpoint(checkpoint_state())
    if solver.iteration > 0:
        art.save_policy(solver.policy_state())
    art.write_history()
    at = solver.global_step if between else _checkpoint_step(art)
    summary = {**base, "status": "interrupted", "wall_time_s": wall_time}
    summary["checkpoint_env_step"] = at
    summary["missing"] = {"training": f"interrupted by {ctx.signals.name(stop.signum)}"}
    art.write_summary(summary)
    art.close()
    if at is None:
        then = "no checkpoint was written yet, so there is nothing to resume: start it again"
    else:
        then = f"checkpoint at env step {at:,}; continue with resume={art.dir}"
    print(f"dgsolve: interrupted at env step {solver.global_step:,}; {then}")
    return summary


def _diverged(art: RunArtifacts, solver, base, wall_time, err: TrainingDiverged) -> None:
    """Say which checkpoint exists (the solver cannot know) and keep the history."""
    at = _checkpoint_step(art)
    if at is None:
        where = "no checkpoint was written yet (it diverged before the first one)"
    else:
        where = f"the last good checkpoint ({art.checkpoint_path}, env step {at:,}) is kept"
    err.args = (f"{err.args[0]}; {where}",)
    art.write_history()
    summary = {**base, "status": "diverged", "wall_time_s": wall_time, "error": str(err)}
    summary["checkpoint_env_step"] = at
    art.write_summary(summary)
    art.close()


def _checkpoint_step(art: RunArtifacts) -> int | None:
    """The env step of the checkpoint on disk (None where there is none or it is unreadable)."""
    if not art.checkpoint_path.is_file():
        return None
    try:
        state = torch.load(art.checkpoint_path, map_location="cpu", weights_only=True)
        return int(state.get("env_step", state["solver"]["global_step"]))
    except Exception:
        return None


def _stages_to_run(trained_now: bool, previous: dict, changed: list[str]) -> list[str]:
    """Every stage after training; on a resume that did not train, only the missing or stale."""
    if trained_now or not previous:
        return list(STAGES)
    todo = set(previous.get("missing") or {})
    if previous.get("status") not in ("completed", "incomplete", "interrupted", "evaluating"):
        todo = set(STAGES)
    for stage, options in STAGE_OPTIONS.items():
        if any(opt in changed for opt in options):
            todo.add(stage)
    if "evaluation" in todo:
        todo.add("plots")  # the plots show the history, which the evaluation extends
    return [s for s in STAGES if s in todo]


def _previous_summary(run_dir: Path) -> dict:
    from dgsolve.untrusted import MAX_SUMMARY_BYTES, load_json_object

    try:
        return load_json_object(Path(run_dir) / "summary.json", MAX_SUMMARY_BYTES, "summary")
    except RunDirError:
        return {}  # unreadable, or not a summary dgsolve wrote: every stage is redone


def _summary_base(cfg, solver, hierarchy: Hierarchy, device) -> dict:
    out = {
        "algo": cfg.algo.name,
        "env": game_name(cfg),
        "tiers": [list(t) for t in hierarchy.tiers],
        "seed": int(cfg.seed),
        "env_steps": int(solver.global_step),
        "iterations": int(solver.iteration),
        "device": str(device),
        "versions": versions(),
    }
    if hasattr(solver, "summary"):
        out.update(solver.summary())
    return out


def _evaluate(cfg, solver, hierarchy: Hierarchy, device, art: RunArtifacts, wall) -> dict:
    out = final_evaluation(cfg, solver, hierarchy, device)
    game_eval = log_game_evaluation(cfg, solver, art, device, wall(), eq=out.get("eq", {}))
    if cfg.env.family in SUMMARY_SECTIONS:
        out[cfg.env.family] = game_eval[cfg.env.family]
    if cfg.env.family == "openspiel":
        from dgsolve.eval.openspiel_eq import policy_table, write_policy_table

        table = policy_table(str(cfg.env.game), solver.joint_policy(), device)
        write_policy_table(art.dir / "policy_table.json", str(cfg.env.game), table)
    for a, r in out["returns"].items():
        art.scalar(f"eval/return/{a}", r, solver.global_step)
    for tag, value in flatten(out.get("eq", {}), "eq").items():
        art.scalar(tag, value, solver.global_step)
    return out


def _rollout_gif(cfg, game, solver, art: RunArtifacts) -> None:
    if cfg.task.render and getattr(game, "can_render", False):
        art.write_gif(render_rollout(game, solver, cfg))


def progress_bar(enabled: bool):
    """The rich progress bar of training: iterations, steps/s, time left and recent returns
    (fields ``rate`` and ``returns`` of each bar)."""
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


def game_name(cfg) -> str:
    if cfg.env.family == "pettingzoo":
        return str(cfg.env.factory)
    return str(cfg.env.name)


def final_evaluation(cfg, solver, hierarchy: Hierarchy, device: torch.device) -> dict:
    """Mean returns of the trained policies and of uniformly random ones, on fresh games."""
    episodes = int(cfg.task.eval_episodes)
    eval_cfg = OmegaConf.merge(cfg.env, {"num_envs": min(int(cfg.env.num_envs), episodes)})
    game = games.make(eval_cfg, device)
    try:
        joint = solver.joint_policy()
        seed = 10_000 + int(cfg.seed)
        returns = evaluate_returns(game, lambda ts: joint.act(ts), episodes, seed)
        gen = torch.Generator(device=device).manual_seed(seed)
        random_returns = evaluate_returns(game, uniform_random_actions(game, gen), episodes, seed)
    finally:
        game.close()
    out = {"eval_episodes": episodes, "returns": returns, "random_returns": random_returns}
    out["mean_return"] = sum(returns.values()) / max(1, len(returns))  # the default objective
    eq = equilibrium_report(cfg, joint, hierarchy, device)
    if eq is not None:
        out["eq"] = eq
    return out


def _bargain_evaluation(cfg, solver, device: torch.device) -> dict:
    from dgsolve.eval.bargain import bargain_report

    games_per_match = int(cfg.task.eval_games)
    return bargain_report(solver.policies(), cfg.env, games_per_match, 20_000 + cfg.seed, device)


#: the ``eq`` figures logged over training (exact NashConv where the game has it: OpenSpiel games
#: and small bargaining variants); the summary's ``eq`` section holds them and the verdict
EQ_CURVE_KEYS = ("nash_conv", "exploitability", "deviation_gain", "values")


def eq_curve(eq: dict | None) -> dict:
    """The :data:`EQ_CURVE_KEYS` of an ``eq`` section (nothing where there is none)."""
    return {k: eq[k] for k in EQ_CURVE_KEYS if k in (eq or {})}


def _eq_evaluation(cfg, solver, device: torch.device) -> dict:
    """The exact figures of the policy the solver says converges (the average policy for NFSP
    and CFR methods), as the final ``eq`` section computes them."""
    return eq_curve(equilibrium_report(cfg, solver.joint_policy(), solver.hierarchy, device))


#: evaluations that only some game families have, run every ``task.eval_every`` iterations and
#: at the end; their results go to TensorBoard and the history (with the run's wall time) under
#: their prefix. ``bargain`` also goes to ``summary.json`` as ``bargain``; the final ``eq``
#: figures are the summary's ``eq`` section (:mod:`dgsolve.eval.equilibrium`), computed once.
GAME_EVALUATIONS = {
    "bargain": (("bargain", _bargain_evaluation), ("eq", _eq_evaluation)),
    "openspiel": (("eq", _eq_evaluation),),
}
SUMMARY_SECTIONS = ("bargain",)
#: families whose games are turn-based and are evaluated seat by seat: one tier only
TURN_BASED = ("bargain", "openspiel")


def log_game_evaluation(
    cfg, solver, art: RunArtifacts, device: torch.device, wall_time_s: float, eq=None
) -> dict[str, dict]:
    """Run the family's :data:`GAME_EVALUATIONS` and log them; ``eq``: the final evaluation's
    ``eq`` section, used instead of computing it again. Returns the reports by prefix."""
    reports, values = {}, {}
    for prefix, evaluate in GAME_EVALUATIONS.get(cfg.env.family, ()):
        if prefix == "eq" and eq is not None:
            reports[prefix] = eq_curve(eq)
        else:
            reports[prefix] = evaluate(cfg, solver, device)
        values.update(flatten(reports[prefix], prefix))
    if values:
        for tag, value in values.items():
            art.scalar(tag, value, solver.global_step)
        art.history.add_evaluation(solver.global_step, {**values, "wall_time_s": wall_time_s})
    return reports


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


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""
