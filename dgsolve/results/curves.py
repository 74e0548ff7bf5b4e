"""Curves of a run from its ``history.json``, named like ``summary.json``'s metrics.

``returns.<agent>``: the episodic returns over environment steps (episodes that end in the same
step averaged into one point); ``losses.<learner>.<key>``: what a learner logged per update
(``losses.leader.policy_loss``, ``losses.solver.nash_conv``); ``<prefix>.<...>``: the
evaluations logged every ``task.eval_every`` iterations and at the end (``eq.nash_conv``,
``bargain.self_play.welfare``), the same names as the summary's final figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_history(run_dir: Path | str) -> dict:
    try:
        out = json.loads((Path(run_dir) / "history.json").read_text())
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def curves(history: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every curve of a history: name -> (steps, values)."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    episodes = history.get("episodes") or {}
    env_step = np.asarray(episodes.get("env_step") or [], dtype=np.float64)
    if len(env_step):
        steps, first = np.unique(env_step, return_index=True)
        counts = np.diff(np.append(first, len(env_step)))
        for agent, values in (episodes.get("returns") or {}).items():
            v = np.asarray(values, dtype=np.float64)
            if len(v) == len(env_step):
                out[f"returns.{agent}"] = (steps, np.add.reduceat(v, first) / counts)
    for learner, rec in (history.get("updates") or {}).items():
        steps = np.asarray(rec.get("env_step") or [], dtype=np.float64)
        for key, values in rec.items():
            if key != "env_step" and len(values) == len(steps):
                out[f"losses.{learner}.{key}"] = (steps, _floats(values))
    evaluations = history.get("evaluations") or {}
    steps = np.asarray(evaluations.get("env_step") or [], dtype=np.float64)
    for key, values in evaluations.items():
        if key not in ("env_step", "wall_time_s") and len(values) == len(steps):
            out[key.replace("/", ".")] = (steps, _floats(values))
    return out


def select(available: dict, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The curves named ``metric`` or under it (``returns`` gives one per agent)."""
    if metric in available:
        return {metric: available[metric]}
    return {k: v for k, v in available.items() if k.startswith(metric + ".")}


def _floats(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
