"""What the results index holds about one run, read from its run directory alone.

A record is built from the files every run writes: ``run_config.yaml`` (the resolved config;
Hydra's ``.hydra/config.yaml`` for older runs), ``.hydra/overrides.yaml`` (the command line) and
``summary.json`` (the outcome). Nothing else is needed, so the index can always be rebuilt from
the directories (``dgsolve-results reindex``). Metric names are dotted paths into
``summary.json`` (``returns.leader``, ``eq.verdict.worst_gap``, ``exploit.nash_conv``).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from dgsolve import lock

#: options that do not change what a run computes: left out of the configuration a leaderboard
#: groups seeds by (``config_key``), and of ``compare``'s differences unless asked
NOT_CONFIGURATION = ("seed", "resume", "logger", "hardware", "task.progress", "task.objective")

#: the headline metrics ``list`` shows where a run has them (the first found of each group)
HEADLINE = (
    ("verdict", ("eq.verdict.equilibrium",)),
    ("gap", ("eq.verdict.worst_gap", "eq.nash_gap")),
    ("nash_conv", ("eq.nash_conv", "exploit.nash_conv", "nash_conv")),
    ("welfare", ("bargain.welfare", "crossplay.meta.welfare")),
)

#: summary sections that are bookkeeping, not results (left out of the metric names)
NOT_METRICS = ("versions", "tiers", "missing", "seed", "iterations")


def _config_path(run_dir: Path) -> Path | None:
    for path in (run_dir / "run_config.yaml", run_dir / ".hydra" / "config.yaml"):
        if path.is_file():
            return path
    return None


def is_run_dir(path: Path) -> bool:
    """A directory that holds a dgsolve run (its config; a summary once it has one)."""
    return _config_path(path) is not None


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:
        return None


def _read_json(path: Path) -> dict:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay leaves."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                out.update(flatten(value, name))
            else:
                out[name] = value
    return out


def numeric_metrics(summary: dict) -> dict[str, float]:
    """Every number (and boolean, as 0/1) in ``summary.json``, by dotted path."""
    out: dict[str, float] = {}
    for name, value in flatten({k: v for k, v in summary.items() if k not in NOT_METRICS}).items():
        if isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = float(value)
    return out


def lookup(summary: dict, metric: str) -> Any:
    """The value at dotted path ``metric`` in ``summary``, or None."""
    node: Any = summary
    for part in metric.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def configuration(config: dict) -> dict[str, Any]:
    """The flattened config without :data:`NOT_CONFIGURATION` (what makes runs comparable)."""
    flat = flatten(config)
    return {
        k: v
        for k, v in flat.items()
        if not any(k == skip or k.startswith(skip + ".") for skip in NOT_CONFIGURATION)
    }


def config_key(config: dict) -> str:
    """A short hash of :func:`configuration`: runs that differ only in seed share it."""
    text = json.dumps(configuration(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def label(overrides: list[str]) -> str:
    """The command line without the seed and Hydra's own options: a configuration's name."""
    skip = ("hydra.", "hydra/", *(f"{k}=" for k in NOT_CONFIGURATION), *NOT_CONFIGURATION)
    keep = [o for o in overrides if not o.lstrip("+~").startswith(skip)]
    return " ".join(sorted(keep)) or "(defaults)"


def started_at(run_dir: Path) -> float:
    """When the run started: Hydra's config copy, written first (else the run's own config)."""
    for path in (run_dir / ".hydra" / "config.yaml", run_dir / "run_config.yaml"):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


#: statuses a run ends with (a summary with another one was written by a run still going, or
#: by one that died before it could say how it ended)
FINAL_STATUSES = ("completed", "incomplete", "interrupted", "diverged", "failed")


def read_run(
    run_dir: Path | str, fallback: str | None = None, overrides: list[str] | None = None
) -> dict | None:
    """The index record of ``run_dir`` (None where it holds no dgsolve run). The status is the
    summary's where it is final (:data:`FINAL_STATUSES`), else ``fallback`` (``running`` at a
    run's start, ``failed`` when it raised before saying how it ended), else ``running`` while a
    process holds the run's lock and ``unfinished`` when none does (a killed run).
    ``overrides``: the command line, where the directory has no ``.hydra/overrides.yaml``."""
    root = Path(run_dir).expanduser().resolve()
    cfg_path = _config_path(root)
    if cfg_path is None:
        return None
    config = _load_yaml(cfg_path)
    if not isinstance(config, dict):
        return None
    summary = _read_json(root / "summary.json")
    saved = _load_yaml(root / ".hydra" / "overrides.yaml")
    if isinstance(saved, list):
        overrides = [str(o) for o in saved]
    overrides = list(overrides or [])
    env = config.get("env") or {}
    algo = config.get("algo") or {}
    task = (config.get("task") or {}).get("name") or summary.get("task") or "train"
    status = summary.get("status")
    if status not in FINAL_STATUSES:
        status = fallback or ("running" if lock.is_held(root) else "unfinished")
    return {
        "run_dir": str(root),
        "name": root.name,
        "task": str(task),
        "env": str(summary.get("env") or env.get("factory") or env.get("name") or ""),
        "algo": str(summary.get("algo") or algo.get("name") or ""),
        "hierarchy": str((config.get("hierarchy") or {}).get("mode") or ""),
        "seed": int(config.get("seed") or 0),
        "overrides": overrides,
        "label": label(overrides),
        "config_key": config_key(config),
        "status": str(status),
        "started_at": started_at(root),
        "wall_time_s": _number(summary.get("wall_time_s")),
        "env_steps": _number(summary.get("env_steps")),
        "summary": summary,
        "config": config,
    }


def headline(record: dict) -> dict[str, Any]:
    """The :data:`HEADLINE` metrics of a record, plus the mean evaluation return per agent."""
    summary = record.get("summary") or {}
    out: dict[str, Any] = {}
    returns = summary.get("returns")
    if isinstance(returns, dict) and returns:
        out["returns"] = {a: r for a, r in returns.items() if isinstance(r, (int, float))}
    random = summary.get("random_returns")
    if isinstance(random, dict) and random:
        out["random_returns"] = random
    for name, paths in HEADLINE:
        for path in paths:
            value = lookup(summary, path)
            if value is not None and not isinstance(value, (dict, list)):
                out[name] = value
                break
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
