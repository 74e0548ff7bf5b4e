"""The long equivalence check of the torch MPE backend against mpe2 itself.

For every scenario of ``dgsolve.games.mpe.SCENARIOS`` (or those named by ``scenarios=``) and
both action kinds (``continuous_actions`` False and True), runs
:func:`dgsolve.games.mpe.compare.agreement`: ``episodes`` seeded episodes played in mpe2 and
in the torch game from the same initial worlds with the same uniformly random actions, and
prints the largest observation and reward differences found, the episodes whose ends differ,
and whether all lie within ``tol``. A scenario whose torch module cannot be imported yet is
skipped, and said so (``strict=true`` counts a skip as a failure); an error while comparing
counts as a failure. Prints a table (rich, on stdout; progress goes to stderr), then one JSON
object on the last line; exits with status 1 if any check fails. Usage::

    python benchmarks/mpe_equivalence.py [episodes=500] [seed=0] [tol=1e-4]
        [scenarios=all|simple_spread,simple_tag,...] [continuous=both|false|true]
        [strict=false]

The quick version of this check is in ``tests/games/test_mpe_torch.py``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from typing import Any

from _options import parse_options  # benchmarks/ is the script's folder
from rich.console import Console
from rich.table import Table

from dgsolve.games.mpe import SCENARIOS, scenario_name
from dgsolve.games.mpe.compare import agreement

DEFAULTS: dict[str, str] = {
    "episodes": "500",
    "seed": "0",
    "tol": "1e-4",
    "scenarios": "all",
    "continuous": "both",
    "strict": "false",
}
KINDS = {"both": (False, True), "false": (False,), "true": (True,)}


def parse(argv: list[str]) -> dict[str, str]:
    opts = parse_options(argv, DEFAULTS)
    if opts["continuous"].lower() not in KINDS:
        raise SystemExit(f"continuous must be one of {sorted(KINDS)}, not '{opts['continuous']}'")
    return opts


def importable(scenario: str) -> str | None:
    """``None`` if the torch twin of ``scenario`` imports, else why not."""
    try:
        importlib.import_module(SCENARIOS[scenario].split(":")[0])
    except Exception as err:  # not written yet, or half written
        return f"{type(err).__name__}: {err}"
    return None


def main(argv: list[str]) -> int:
    opts = parse(argv)
    episodes, seed, tol = int(opts["episodes"]), int(opts["seed"]), float(opts["tol"])
    strict = opts["strict"].lower() in ("1", "true", "yes")
    names = (
        sorted(SCENARIOS)
        if opts["scenarios"] == "all"
        else [scenario_name(s) for s in opts["scenarios"].split(",") if s]
    )
    console = Console(stderr=True)
    checks: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name in names:
        why = importable(name)
        if why is not None:
            skipped[name] = why
            console.print(f"[yellow]skipping {name}[/]: module not importable ({why})")
            continue
        for continuous in KINDS[opts["continuous"].lower()]:
            console.print(f"{name}, continuous_actions={continuous} ...", highlight=False)
            start = time.perf_counter()
            row: dict[str, Any] = {"scenario": name, "continuous_actions": continuous}
            try:
                res = agreement(name, episodes=episodes, seed=seed, continuous_actions=continuous)
            except Exception as err:
                sys.stderr.write(traceback.format_exc())
                row.update(error=f"{type(err).__name__}: {err}", ok=False)
            else:
                row.update(
                    episodes=res.episodes,
                    steps=res.steps,
                    obs_gap=res.obs,
                    reward_gap=res.reward,
                    ends_differ=res.ends_differ,
                    ok=res.within(tol),
                )
            row["time_s"] = round(time.perf_counter() - start, 1)
            checks.append(row)

    table = Table(title=f"torch MPE vs mpe2: {episodes} episodes, seed {seed}, tolerance {tol:g}")
    for col in ("scenario", "actions", "max obs gap", "max reward gap", "ends differ", "ok"):
        table.add_column(col, justify="left" if col in ("scenario", "actions") else "right")
    table.add_column("note")
    for row in checks:
        kind = "continuous" if row["continuous_actions"] else "discrete"
        verdict = "[green]yes[/]" if row["ok"] else "[red]NO[/]"
        if "error" in row:
            table.add_row(row["scenario"], kind, "", "", "", verdict, row["error"][:80])
        else:
            table.add_row(
                row["scenario"],
                kind,
                f"{row['obs_gap']:.2e}",
                f"{row['reward_gap']:.2e}",
                str(row["ends_differ"]),
                verdict,
                f"{row['steps']} steps, {row['time_s']} s",
            )
    for name, why in skipped.items():
        verdict = "[red]NO[/]" if strict else "-"
        table.add_row(name, "-", "", "", "", verdict, f"skipped: {why}"[:80])
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    failed = [f"{r['scenario']}/{r['continuous_actions']}" for r in checks if not r["ok"]]
    if strict:
        failed += list(skipped)
    summary = {
        "episodes": episodes,
        "seed": seed,
        "tol": tol,
        "checks": checks,
        "skipped": skipped,
        "failed": failed,
        "ok": not failed,
    }
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
