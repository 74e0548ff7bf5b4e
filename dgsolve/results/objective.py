"""The value a run returns to Hydra, for sweepers that optimise (``hydra/sweeper=optuna``).

``task.objective`` is a dotted path into the run's ``summary.json``; left null, it is the
default of the task and game family below. Directions differ (a gap is minimised, a return or a
welfare maximised): set the sweeper's direction to match (``hydra.sweeper.direction=maximize``).
A run that did not produce the value (it failed, or the path names nothing) returns NaN, which
Optuna records as a failed trial, and the console says which metrics the run has.
"""

from __future__ import annotations

import math
import sys

from dgsolve.results.record import lookup, numeric_metrics

#: (task, env family) -> (summary path, direction); ``None`` as family: any family
DEFAULT_OBJECTIVES: dict[tuple[str, str | None], tuple[str, str]] = {
    ("train", "matrix"): ("eq.verdict.worst_gap", "minimize"),
    ("train", "lq"): ("eq.verdict.worst_gap", "minimize"),
    ("train", "openspiel"): ("eq.nash_conv", "minimize"),
    ("train", "bargain"): ("bargain.self_play.welfare", "maximize"),
    ("train", None): ("mean_return", "maximize"),
    ("exploit", None): ("exploit.nash_conv", "minimize"),
    ("crossplay", None): ("crossplay.meta.welfare", "maximize"),
}


def default_objective(task: str, family: str | None) -> tuple[str, str] | None:
    """The default ``(path, direction)`` of a task on a game family, or None."""
    return DEFAULT_OBJECTIVES.get((task, family)) or DEFAULT_OBJECTIVES.get((task, None))


def objective_path(cfg) -> str | None:
    """``task.objective`` where set, else the default of the run's task and family."""
    chosen = cfg.task.get("objective")
    if chosen:
        return str(chosen)
    default = default_objective(str(cfg.task.name), str(cfg.env.get("family") or ""))
    return default[0] if default else None


def objective_value(cfg, summary: dict | None) -> float | None:
    """The objective of a finished run: a float, NaN where the run lacks it (with one line on
    stderr naming the metrics it has), None where the task has no objective at all."""
    path = objective_path(cfg)
    if path is None:
        return None
    value = lookup(summary or {}, path)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    have = sorted(numeric_metrics(summary or {}))
    shown = ", ".join(have[:30]) + (" ..." if len(have) > 30 else "")
    print(
        f"dgsolve: warning: task.objective={path} is not a number in this run's summary.json; "
        f"the run returns NaN (metrics it has: {shown or 'none'})",
        file=sys.stderr,
    )
    return math.nan
