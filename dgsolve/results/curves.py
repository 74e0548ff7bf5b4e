"""Curves of a run from its ``history.json``, named like ``summary.json``'s metrics.

``returns.<agent>``: the episodic returns over environment steps (episodes that end in the same
step averaged into one point); ``losses.<learner>.<key>``: what a learner logged per update
(``losses.leader.policy_loss``, ``losses.solver.nash_conv``); ``<prefix>.<...>``: the
evaluations logged every ``task.eval_every`` iterations and at the end (``eq.nash_conv``,
``bargain.self_play.welfare``), the same names as the summary's final figures.

A history may come from elsewhere: it is read within :data:`MAX_HISTORY_BYTES`, and a part that
is not a list of numbers where one belongs is left out instead of failing the plot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dgsolve.untrusted import load_json_object

#: the largest history.json read: a default bargaining run (10M decisions, 1.25M games) writes
#: about 90 MB, a 2M-step MPE run about 10 MB
MAX_HISTORY_BYTES = 512 << 20


def read_history(run_dir: Path | str) -> dict:
    """The run's ``history.json`` ({} where it has none); one that is too large, not a regular
    file or not a JSON object is a :class:`RunDirError` naming it."""
    return load_json_object(Path(run_dir) / "history.json", MAX_HISTORY_BYTES, "history")


def curves(history: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every curve of a history: name -> (steps, values)."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    episodes = _dict(history.get("episodes"))
    env_step = _floats(episodes.get("env_step"))
    if env_step is not None and len(env_step):
        steps, first = np.unique(env_step, return_index=True)
        counts = np.diff(np.append(first, len(env_step)))
        for agent, values in _dict(episodes.get("returns")).items():
            v = _floats(values)
            if v is not None and len(v) == len(env_step):
                out[f"returns.{agent}"] = (steps, np.add.reduceat(v, first) / counts)
    for learner, rec in _dict(history.get("updates")).items():
        for key, (x, y) in _series(_dict(rec), ("env_step",)):
            out[f"losses.{learner}.{key}"] = (x, y)
    for key, (x, y) in _series(_dict(history.get("evaluations")), ("env_step", "wall_time_s")):
        out[key.replace("/", ".")] = (x, y)
    return out


def _series(rec: dict, skip: tuple[str, ...]):
    """``(key, (steps, values))`` for each list of numbers in ``rec`` as long as its
    ``env_step``, the keys in ``skip`` left out."""
    steps = _floats(rec.get("env_step"))
    if steps is None:
        return
    for key, values in rec.items():
        v = _floats(values)
        if key not in skip and v is not None and len(v) == len(steps):
            yield key, (steps, v)


def select(available: dict, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The curves named ``metric`` or under it (``returns`` gives one per agent)."""
    if metric in available:
        return {metric: available[metric]}
    return {k: v for k, v in available.items() if k.startswith(metric + ".")}


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _floats(values) -> np.ndarray | None:
    """A list of numbers (None as NaN) as a 1-D array; None where it is not one."""
    if not isinstance(values, list):
        return None
    try:
        v = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    return v if v.ndim == 1 else None
