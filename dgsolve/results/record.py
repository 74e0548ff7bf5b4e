"""What the results index holds about one run, read from its run directory alone.

A record is built from the files every run writes: ``run_config.yaml`` (the resolved config;
Hydra's ``.hydra/config.yaml`` for older runs), ``.hydra/overrides.yaml`` (the command line) and
``summary.json`` (the outcome). Nothing else is needed, so the index can always be rebuilt from
the directories (``dgsolve-results reindex``). Metric names are dotted paths into
``summary.json`` (``returns.leader``, ``eq.verdict.worst_gap``, ``exploit.nash_conv``).

A run directory may come from elsewhere, so its files are data (DESIGN.md, "Trust"): YAML is
read by :func:`dgsolve.untrusted.load_yaml` (bounded size and alias expansion, nothing
resolved), ``summary.json`` within :data:`dgsolve.untrusted.MAX_SUMMARY_BYTES`, and a file
that is hostile or damaged makes :func:`read_run` raise one
:class:`~dgsolve.errors.RunDirError` line naming it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from dgsolve import lock
from dgsolve.errors import RunDirError
from dgsolve.untrusted import MAX_SUMMARY_BYTES, load_json_object, load_yaml

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

#: the deepest nesting of mappings and lists a config or summary may have (dgsolve's own: under
#: ten), so that the recursive readers of a record (``flatten``) cannot overflow Python's stack
MAX_DEPTH = 64


def _config_path(run_dir: Path) -> Path | None:
    for path in (run_dir / "run_config.yaml", run_dir / ".hydra" / "config.yaml"):
        if path.is_file():
            return path
    return None


def is_run_dir(path: Path) -> bool:
    """A directory that holds a dgsolve run (its config; a summary once it has one)."""
    return _config_path(path) is not None


def _load_yaml(path: Path) -> Any:
    """The plain data of YAML file ``path``, None where there is no such file."""
    if not os.path.lexists(path):
        return None
    return load_yaml(path)


def _read_json(path: Path) -> dict:
    """The JSON object in ``path`` ({} where there is no such file)."""
    out = load_json_object(path, MAX_SUMMARY_BYTES, "summary")
    _check_depth(out, path)
    return out


def _check_depth(data: Any, path: Path) -> None:
    """Refuse ``data`` (read from ``path``) nested deeper than :data:`MAX_DEPTH`."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            if depth > MAX_DEPTH:
                raise RunDirError(f"{path} is nested more than {MAX_DEPTH} levels deep")
            stack.extend((child, depth + 1) for child in node)


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
#: the status of a run whose process is alive (it holds the run's lock)
RUNNING = "running"
#: the status of a run that stopped without saying how it ended (SIGKILL, a lost node): resumable
#: like one stopped by a signal
KILLED = "interrupted"


def read_run(
    run_dir: Path | str, fallback: str | None = None, overrides: list[str] | None = None
) -> dict | None:
    """The index record of ``run_dir`` (None where it holds no dgsolve run). The status is the
    summary's where it is final (:data:`FINAL_STATUSES`), else ``fallback`` (``running`` at a
    run's start, ``failed`` when it raised before saying how it ended), else ``running`` while a
    process holds the run's lock and ``interrupted`` when none does (a killed run).
    ``overrides``: the command line, where the directory has no ``.hydra/overrides.yaml``.
    A config, overrides or summary file that is hostile or damaged raises :class:`RunDirError`
    (one line naming the file)."""
    root = Path(run_dir).expanduser().resolve()
    cfg_path = _config_path(root)
    if cfg_path is None:
        return None
    try:
        str(root).encode()
    except UnicodeEncodeError:
        raise RunDirError(
            f"{str(root)!r}: the path is not UTF-8, which the index cannot hold"
        ) from None
    config = _load_yaml(cfg_path)
    if not isinstance(config, dict):
        raise RunDirError(f"{cfg_path} is not a dgsolve run config (not a mapping)")
    _check_depth(config, cfg_path)
    config = _plain(config)
    summary = _plain(_read_json(root / "summary.json"))
    saved_path = root / ".hydra" / "overrides.yaml"
    saved = _load_yaml(saved_path)
    if isinstance(saved, list):
        _check_depth(saved, saved_path)
        overrides = [_text(o) for o in saved]
    overrides = list(overrides or [])
    env = _section(config, "env")
    algo = _section(config, "algo")
    task = _section(config, "task").get("name") or summary.get("task") or "train"
    status = summary.get("status")
    if status not in FINAL_STATUSES:
        status = fallback or (RUNNING if lock.is_held(root) else KILLED)
    return {
        "run_dir": str(root),
        "name": root.name,
        "task": _text(task),
        "env": _text(summary.get("env") or env.get("factory") or env.get("name") or ""),
        "algo": _text(summary.get("algo") or algo.get("name") or ""),
        "hierarchy": _text(_section(config, "hierarchy").get("mode") or ""),
        "seed": _seed(config.get("seed")),
        "overrides": overrides,
        "label": _text(label(overrides)),
        "config_key": config_key(config),
        "status": _text(status),
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


def _section(config: dict, key: str) -> dict:
    """``config[key]`` where it is a mapping, else {} (a config from elsewhere may be anything)."""
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _plain(value: Any) -> Any:
    """Data from a run's files as JSON and a terminal can hold it: string keys, strings in
    UTF-8, and dates and other scalars as strings."""
    if isinstance(value, dict):
        return {_text(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _text(value)


def _text(value: Any) -> str:
    """``str(value)`` with what UTF-8 cannot hold (lone surrogates from a JSON or YAML escape)
    replaced, so that SQLite takes it."""
    return str(value).encode("utf-8", errors="replace").decode("utf-8")


def _seed(value: Any) -> int:
    """The config's seed where it is one SQLite can hold (a signed 64-bit integer), else 0."""
    if not isinstance(value, int) or isinstance(value, bool):
        try:
            value = int(str(value).strip())
        except ValueError:
            return 0
    return value if -(1 << 63) <= value < (1 << 63) else 0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
