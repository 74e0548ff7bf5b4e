"""``dgsolve-results``: list, show, compare, rank, export and plot the runs of the results index.

Every command takes ``--json`` (machine-readable output on stdout instead of rich tables) and
``--index PATH`` (default ``$DGSOLVE_INDEX``, else the per-user index). Runs are named by their
directory (absolute, relative to here, or any unique tail of it such as ``12-00-00`` or
``3_seed=2``). Metric names are dotted paths into ``summary.json``; an unknown one is refused
with the list of those the runs have. Mistakes are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

from dgsolve.errors import DGSolveError
from dgsolve.results.index import ResultsIndex
from dgsolve.results.record import configuration, headline, lookup, numeric_metrics

#: metric names that are better when lower (``best`` and ``leaderboard`` rank them ascending)
LOWER_IS_BETTER = re.compile(r"(gap|nash_conv|exploitab|loss|regret|wall_time|gain)", re.I)

#: what a spreadsheet may read as the start of a formula (OWASP, "CSV Injection")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: skipped run directories ``reindex`` names one by one (``--json`` lists them all)
SKIPPED_SHOWN = 10


class UsageError(DGSolveError):
    """A wrong argument: one line, exit 2."""


# --------------------------------------------------------------------------- helpers
def parse_since(text: str) -> float:
    """``2026-12-01``, ``2026-12-01T10:00`` or a span back from now: ``90m``, ``6h``, ``3d``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
        return time.time() - float(match.group(1)) * unit
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither a date (2026-12-01, 2026-12-01T10:00) nor a span "
            "back from now (90m, 6h, 3d)"
        ) from None


def _filtered(index: ResultsIndex, args) -> list[dict]:
    since = parse_since(args.since) if getattr(args, "since", None) else None
    runs = index.runs(
        algo=getattr(args, "algo", None),
        env=getattr(args, "env", None),
        task=getattr(args, "task", None),
        status=getattr(args, "status", None),
        since=since,
    )
    if getattr(args, "under", None):
        root = str(Path(args.under).expanduser().resolve())
        runs = [r for r in runs if r["run_dir"] == root or r["run_dir"].startswith(root + "/")]
    return runs


def resolve_run(index: ResultsIndex, name: str) -> dict:
    """The indexed run named ``name`` (a path, or a unique tail of one)."""
    from dgsolve.results.record import read_run

    runs = index.runs()
    path = Path(name).expanduser()
    if path.is_dir():
        full = str(path.resolve())
        for rec in runs:
            if rec["run_dir"] == full:
                return rec
        rec = read_run(full)  # a run directory that is not indexed (yet): read it directly
        if rec is not None:
            return rec
    tail = name.rstrip("/")
    hits = [r for r in runs if r["run_dir"] == tail or r["run_dir"].endswith("/" + tail)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise UsageError(
            f"no run '{name}' in the results index {index.path} ({len(runs)} runs); give its "
            "directory, or `dgsolve-results reindex <dir>` to add the runs under a directory"
        )
    listed = ", ".join(r["run_dir"] for r in hits[:5])
    raise UsageError(f"'{name}' names {len(hits)} runs ({listed}, ...); give more of the path")


def metric_value(rec: dict, metric: str):
    value = lookup(rec.get("summary") or {}, metric)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def check_metric(runs: list[dict], metric: str) -> None:
    """Refuse a metric none of ``runs`` has, listing the ones they have."""
    if any(metric_value(r, metric) is not None for r in runs):
        return
    have = sorted({m for r in runs for m in numeric_metrics(r.get("summary") or {})})
    if not runs:
        raise UsageError("no runs match (see `dgsolve-results list`)")
    shown = ", ".join(have[:60]) + (f" ... ({len(have)} in all)" if len(have) > 60 else "")
    raise UsageError(f"unknown metric '{metric}' for these runs; available: {shown}")


def lower_is_better(metric: str, direction: str) -> bool:
    if direction == "auto":
        return bool(LOWER_IS_BETTER.search(metric))
    return direction == "min"


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return " ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _brief(rec: dict) -> dict:
    """A run without its full config and summary (for ``list --json``)."""
    out = {k: v for k, v in rec.items() if k not in ("summary", "config")}
    out["metrics"] = headline(rec)
    return out


def _print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    # piped or captured output keeps whole rows instead of wrapping them at 80 columns
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def _emit_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


# --------------------------------------------------------------------------- commands
def cmd_list(index: ResultsIndex, args) -> None:
    runs = _filtered(index, args)
    if args.limit:
        runs = runs[-args.limit :]
    if args.json:
        return _emit_json([_brief(r) for r in runs])
    rows = []
    for r in runs:
        h = headline(r)
        ret = h.get("returns") or {}
        rows.append(
            [
                _short(r["run_dir"]),
                r["task"],
                r["env"],
                r["algo"],
                str(r["seed"]),
                r["status"],
                _when(r["started_at"]),
                f"{r['wall_time_s']:.1f}" if r["wall_time_s"] is not None else "-",
                " ".join(f"{a}={v:.3g}" for a, v in ret.items()) or "-",
                _fmt(h.get("verdict")),
                _fmt(h.get("gap", h.get("nash_conv"))),
            ]
        )
    cols = ["run", "task", "env", "algo", "seed", "status", "started", "wall s", "returns"]
    _print_table(f"{len(runs)} runs ({index.path})", [*cols, "equilibrium", "gap"], rows)


def cmd_show(index: ResultsIndex, args) -> None:
    rec = resolve_run(index, args.run)
    if args.json:
        return _emit_json(rec)
    rows = [
        [k, _fmt(rec.get(k))]
        for k in ("run_dir", "task", "env", "algo", "hierarchy", "seed", "status", "env_steps")
    ]
    rows.append(["started", _when(rec.get("started_at"))])
    rows.append(["wall time s", _fmt(rec.get("wall_time_s"))])
    rows.append(["overrides", " ".join(rec.get("overrides") or []) or "-"])
    for name, value in numeric_metrics(rec.get("summary") or {}).items():
        rows.append([name, _fmt(value)])
    _print_table(f"run {rec['name']}", ["field", "value"], rows)


def cmd_compare(index: ResultsIndex, args) -> None:
    recs = [resolve_run(index, name) for name in args.runs]
    if len(recs) < 2:
        raise UsageError("compare needs two runs or more")
    configs = [_flat_config(r, args.all) for r in recs]
    keys = sorted({k for c in configs for k in c})
    differ = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
    metrics = [numeric_metrics(r.get("summary") or {}) for r in recs]
    names = sorted({k for m in metrics for k in m if not k.startswith("eq.reference")})
    if args.json:
        return _emit_json(
            {
                "runs": [r["run_dir"] for r in recs],
                "config": {k: [c.get(k) for c in configs] for k in differ},
                "metrics": {k: [m.get(k) for m in metrics] for k in names},
            }
        )
    header = ["", *(_short(r["run_dir"]) for r in recs)]
    rows = [[f"[bold]{k}", *(_fmt(c.get(k)) for c in configs)] for k in differ]
    if not differ:
        rows.append(["(configs equal)", *("" for _ in recs)])
    rows += [[k, *(_fmt(m.get(k)) for m in metrics)] for k in names]
    _print_table("config differences (bold), then metrics", header, rows)


def _flat_config(rec: dict, everything: bool) -> dict:
    from dgsolve.results.record import flatten

    config = rec.get("config") or {}
    out = flatten(config) if everything else configuration(config)
    if not everything:
        out["seed"] = config.get("seed")
    return out


def cmd_best(index: ResultsIndex, args) -> None:
    runs = _filtered(index, args)
    check_metric(runs, args.metric)
    lower = lower_is_better(args.metric, args.direction)
    scored = [(metric_value(r, args.metric), r) for r in runs]
    scored = [(v, r) for v, r in scored if v is not None]
    value, best = (min if lower else max)(scored, key=lambda vr: vr[0])
    if args.json:
        return _emit_json(
            {"metric": args.metric, "value": value, "lower_is_better": lower, "run": _brief(best)}
        )
    _print_table(
        f"best {args.metric} ({'lowest' if lower else 'highest'} of {len(scored)} runs)",
        ["run", "algo", "env", "seed", args.metric],
        [[best["run_dir"], best["algo"], best["env"], str(best["seed"]), _fmt(value)]],
    )


def leaderboard(runs: list[dict], metric: str, lower: bool) -> list[dict]:
    """Mean ± std (sample, n-1) of ``metric`` over the seeds of each configuration, best first."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        if metric_value(r, metric) is not None:
            groups.setdefault(r["config_key"], []).append(r)
    rows = []
    for key, members in groups.items():
        values = [metric_value(r, metric) for r in members]
        rows.append(
            {
                "configuration": members[0]["label"],
                "config_key": key,
                "algo": members[0]["algo"],
                "env": members[0]["env"],
                "runs": len(values),
                "seeds": sorted({r["seed"] for r in members}),
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values),
                "max": max(values),
            }
        )
    rows.sort(key=lambda row: row["mean"], reverse=not lower)
    return rows


def cmd_leaderboard(index: ResultsIndex, args) -> None:
    runs = _filtered(index, args)
    check_metric(runs, args.metric)
    lower = lower_is_better(args.metric, args.direction)
    rows = leaderboard(runs, args.metric, lower)
    if args.json:
        return _emit_json({"metric": args.metric, "lower_is_better": lower, "rows": rows})
    table = [
        [
            row["configuration"],
            row["algo"],
            row["env"],
            ",".join(map(str, row["seeds"])),
            str(row["runs"]),
            f"{row['mean']:.4g} ± {row['std']:.2g}",
            f"[{row['min']:.4g}, {row['max']:.4g}]",
        ]
        for row in rows
    ]
    order = "lower is better" if lower else "higher is better"
    _print_table(
        f"leaderboard: {args.metric}, mean ± std over seeds ({order})",
        ["configuration", "algo", "env", "seeds", "runs", args.metric, "range"],
        table,
    )


def cmd_export(index: ResultsIndex, args) -> None:
    from dgsolve.artifacts import atomic_write_bytes

    runs = _filtered(index, args)
    fixed = [
        "run_dir",
        "task",
        "env",
        "algo",
        "hierarchy",
        "seed",
        "status",
        "label",
        "config_key",
        "started_at",
        "wall_time_s",
        "env_steps",
        "overrides",
    ]
    metrics = [numeric_metrics(r.get("summary") or {}) for r in runs]
    names = sorted({k for m in metrics for k in m if not k.startswith("eq.reference")})
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow([csv_cell(c) for c in fixed + names])
    for r, m in zip(runs, metrics, strict=True):
        row = [" ".join(r[c]) if c == "overrides" else r.get(c) for c in fixed]
        writer.writerow([csv_cell(v) for v in row + [m.get(k) for k in names]])
    out = Path(args.file).expanduser()
    atomic_write_bytes(out, buf.getvalue().encode())
    if args.json:
        return _emit_json(
            {"file": str(out.resolve()), "runs": len(runs), "columns": len(fixed) + len(names)}
        )
    print(f"dgsolve-results: {len(runs)} runs, {len(fixed) + len(names)} columns -> {out}")


def csv_cell(value):
    """A CSV cell a spreadsheet shows as written: a string that begins with
    :data:`FORMULA_START` gets a leading ``'`` (OWASP's CSV-injection guidance); numbers stay
    numbers (a negative number is not a formula). The writer quotes every string cell, so a
    ``;`` or ``,`` inside one cannot start a new cell in any locale."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def cmd_plot(index: ResultsIndex, args) -> None:
    from dgsolve.results.curves import curves, read_history, select

    recs = [resolve_run(index, name) for name in args.runs]
    found, available = [], set()
    for rec in recs:
        have = curves(read_history(rec["run_dir"]))
        available |= set(have)
        for name, (x, y) in select(have, args.metric).items():
            found.append((rec, name, x, y))
    if not found:
        shown = ", ".join(sorted(available)) or "none (no history.json)"
        raise UsageError(f"no curve '{args.metric}' in these runs' histories; available: {shown}")
    out = Path(args.out).expanduser() if args.out else Path(f"{args.metric}.png").resolve()
    _plot(found, args.metric, out)
    if args.json:
        return _emit_json({"file": str(out), "curves": [[r["run_dir"], n] for r, n, *_ in found]})
    print(f"dgsolve-results: {len(found)} curves of {args.metric} -> {out}")


def _plot(found, metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dgsolve.artifacts import atomic_write_bytes

    runs = list(dict.fromkeys(r["run_dir"] for r, *_ in found))
    names = list(dict.fromkeys(n for _, n, *_ in found))
    colours = plt.get_cmap("tab10").colors
    styles = ("-", "--", ":", "-.")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for rec, name, x, y in found:
        i, j = runs.index(rec["run_dir"]), names.index(name)
        few = len(x) <= 50
        ax.plot(
            x,
            y,
            color=colours[i % len(colours)],
            linestyle=styles[j % len(styles)],
            marker="o" if few else None,
            markersize=4,
            alpha=0.85,
            label=f"{_short(rec['run_dir'])} {name[len(metric) + 1 :] or name}",
        )
    ax.set_title(f"{metric} over training ({len(runs)} runs)")
    ax.set_xlabel("environment steps (or solver iterations)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())


def cmd_reindex(index: ResultsIndex, args) -> None:
    for name in args.dirs:
        path = Path(name).expanduser()
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise UsageError(f"cannot reindex '{name}': it {what}; give directories of runs")
    roots = args.dirs or ([Path("outputs")] if Path("outputs").is_dir() else [])
    counts = index.reindex(roots)
    skipped = counts["skipped"]
    for item in skipped[:SKIPPED_SHOWN]:
        print(
            f"dgsolve-results: warning: skipped {item['run_dir']}: {item['reason']}",
            file=sys.stderr,
        )
    if len(skipped) > SKIPPED_SHOWN:
        print(
            f"dgsolve-results: warning: skipped {len(skipped) - SKIPPED_SHOWN} more run "
            "directories (--json lists them all)",
            file=sys.stderr,
        )
    if args.json:
        return _emit_json({**counts, "index": str(index.path)})
    note = f", {len(skipped)} skipped: unreadable or hostile files" if skipped else ""
    print(
        f"dgsolve-results: {counts['indexed']} runs indexed ({counts['new']} new, "
        f"{counts['removed']} gone{note}) in {index.path}"
    )


def _short(run_dir: str) -> str:
    """The last two parts of a run directory (``2026-12-01/12-00-00``, ``sweep/3_seed=2``)."""
    parts = Path(run_dir).parts
    return "/".join(parts[-2:])


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="JSON on stdout instead of tables")
    common.add_argument("--index", help="the index file (default $DGSOLVE_INDEX or per user)")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--algo")
    filters.add_argument("--env")
    filters.add_argument("--task")
    filters.add_argument(
        "--status", help="running, completed, incomplete, interrupted, diverged or failed"
    )
    filters.add_argument("--since", help="a date (2026-12-01) or a span back (6h, 3d)")
    filters.add_argument("--under", help="only runs inside this directory (a sweep's)")
    ranked = argparse.ArgumentParser(add_help=False)
    ranked.add_argument("--metric", required=True, help="dotted path into summary.json")
    ranked.add_argument(
        "--direction",
        choices=("auto", "max", "min"),
        default="auto",
        help="auto: lower is better for gaps, NashConv, exploitability and losses",
    )
    parser = argparse.ArgumentParser(
        prog="dgsolve-results", description=__doc__.split("\n\n")[0], parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", parents=[common, filters], help="the runs, oldest first")
    p.add_argument("--limit", type=int, default=0, help="only the last N")
    p = sub.add_parser("show", parents=[common], help="one run: fields and every metric")
    p.add_argument("run")
    p = sub.add_parser("compare", parents=[common], help="config differences and metrics")
    p.add_argument("runs", nargs="+")
    p.add_argument("--all", action="store_true", help="include seed, hardware, logger, ...")
    sub.add_parser("best", parents=[common, filters, ranked], help="the best run by a metric")
    sub.add_parser("leaderboard", parents=[common, filters, ranked], help="mean ± std over seeds")
    p = sub.add_parser("export", parents=[common, filters], help="the runs as CSV")
    p.add_argument("file")
    p = sub.add_parser("plot", parents=[common], help="curves from the histories, one PNG")
    p.add_argument("--metric", required=True, help="returns, returns.<agent>, eq.nash_conv, ...")
    p.add_argument("--out", help="the PNG (default <metric>.png here)")
    p.add_argument("runs", nargs="+")
    p = sub.add_parser("reindex", parents=[common], help="rebuild the index from run dirs")
    p.add_argument("dirs", nargs="*", help="directories to scan (default ./outputs)")
    return parser


COMMANDS = {
    "list": cmd_list,
    "show": cmd_show,
    "compare": cmd_compare,
    "best": cmd_best,
    "leaderboard": cmd_leaderboard,
    "export": cmd_export,
    "plot": cmd_plot,
    "reindex": cmd_reindex,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](ResultsIndex(args.index), args)
    except DGSolveError as err:
        print(f"dgsolve-results: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # `dgsolve-results list | head`
        return 0
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
