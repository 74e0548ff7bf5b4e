"""Throughput of the batched torch MPE backend next to raw mpe2, environment alone.

For each scenario and number of copies, one run measures:

- ``mpe2_steps_per_s``: ``copies`` independent mpe2 ParallelEnvs (the module named by the torch
  scenario's ``mpe2_module``, ``parallel_env(max_cycles=25)``) stepped one after the other in a
  plain Python loop with uniformly random discrete actions pre-drawn by numpy (the joint-action
  dicts are built before the clock starts), each copy reset when its episode ends. mpe2 steps its
  copies one by one, so its rate hardly depends on the copy count (only through memory and
  caches): by default it is measured at 1 and 64 copies only (``mpe2_copies=1,64``), and every
  larger copy count is compared with the rate measured at the largest measured count not above
  it (the ``mpe2 at`` column says which). ``mpe2_copies=all`` measures every copy count (8192
  mpe2 envs take a while to build and hold much memory).
- ``torch_steps_per_s``: ``make_torch(scenario, copies, device, dtype=..., max_cycles=25)``
  stepped with random discrete actions pre-generated on the device by ``torch.randint`` (a
  block of ``action_blocks`` joint actions, cycled), after ``warmup`` untimed steps; auto-reset
  is on, as in training.

One step of one copy is one env step (a joint step: every agent acts once). Each figure is the
best of ``repeats`` timed windows; a window lasts at least ``seconds`` and ``min_batches``
batched steps for torch, at least ``mpe2_seconds`` and ``mpe2_min_steps`` env steps for mpe2,
whichever ends later (so by default each mpe2 figure rests on at least 2.1 s and 2100 steps).
The mean over all windows is in the JSON too; the machine may be shared, which is why the best
window is the headline figure. ``ratio`` is torch over mpe2. Prints a table (rich, on stdout;
progress goes to stderr), then one JSON object on the last line. Never asserts on time
(DESIGN.md, Testing). Usage::

    python benchmarks/mpe_throughput.py [scenarios=simple_spread,simple_adversary,simple_tag]
        [copies=1,64,1024,8192] [mpe2_copies=1,64|all] [device=cpu|cuda]
        [dtype=float64|float32] [threads=N] [one_thread=largest|all|none] [seconds=0.5]
        [min_batches=3] [mpe2_seconds=0.7] [mpe2_min_steps=700] [repeats=3] [warmup=3]
        [action_blocks=16] [seed=0]

``threads=N`` calls ``torch.set_num_threads(N)`` first (default: torch's own choice, reported
as ``torch_threads``). Where that is more than one thread, the torch figure is repeated on one
thread (``torch_one_thread_steps_per_s``) for the largest copy count (``one_thread=largest``),
for every one (``all``) or for none (``none``): on a machine whose cores are busy with other
work, torch's threads wait on each other and one thread can be many times faster. The default
run (three scenarios, four copy counts) takes about a minute on two busy CPU cores.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from typing import Any

import numpy as np
import torch
from _options import parse_options  # benchmarks/ is the script's folder
from rich.console import Console
from rich.table import Table

from dgsolve.games.mpe import SCENARIOS, make_torch, scenario_name

DEFAULTS: dict[str, str] = {
    "scenarios": "simple_spread,simple_adversary,simple_tag",
    "copies": "1,64,1024,8192",
    "mpe2_copies": "1,64",
    "device": "cpu",
    "dtype": "float64",
    "threads": "",
    "one_thread": "largest",
    "seconds": "0.5",
    "min_batches": "3",
    "mpe2_seconds": "0.7",
    "mpe2_min_steps": "700",
    "repeats": "3",
    "warmup": "3",
    "action_blocks": "16",
    "seed": "0",
}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
MAX_CYCLES = 25


def parse(argv: list[str]) -> dict[str, str]:
    opts = parse_options(argv, DEFAULTS)
    return opts


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def windows(step, per_call: int, seconds: float, min_steps: int, repeats: int) -> list[float]:
    """Env steps/s of each of ``repeats`` windows: ``step()`` (``per_call`` env steps) is
    called until the window has lasted ``seconds`` and counted ``min_steps``."""
    rates = []
    for _ in range(repeats):
        done = 0
        start = time.perf_counter()
        while True:
            step()
            done += per_call
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and done >= min_steps:
                break
        rates.append(done / elapsed)
    return rates


def mpe2_rates(module: Any, copies: int, opts: dict[str, str], seed: int) -> list[float]:
    """Windows of ``copies`` raw mpe2 ParallelEnvs stepped in a Python loop."""
    envs = [module.parallel_env(max_cycles=MAX_CYCLES) for _ in range(copies)]
    for i, env in enumerate(envs):
        env.reset(seed=seed + i)
    agents = list(envs[0].possible_agents)
    sizes = {a: int(envs[0].action_space(a).n) for a in agents}
    rng = np.random.default_rng(seed)
    # enough pre-drawn joint actions for about 4096 env steps, cycled
    rows = max(4, 4096 // copies)
    drawn = {a: rng.integers(sizes[a], size=(rows, copies)).tolist() for a in agents}
    joint = [[{a: drawn[a][t][k] for a in agents} for k in range(copies)] for t in range(rows)]
    t = 0

    def step() -> None:
        nonlocal t
        row = joint[t]
        for k, env in enumerate(envs):
            env.step(row[k])
            if not env.agents:
                env.reset()
        t = (t + 1) % rows

    rates = windows(
        step,
        copies,
        float(opts["mpe2_seconds"]),
        int(opts["mpe2_min_steps"]),
        int(opts["repeats"]),
    )
    for env in envs:
        env.close()
    return rates


def torch_rates(scenario: str, copies: int, opts: dict[str, str], seed: int) -> list[float]:
    """Windows of one batched torch game of ``copies`` copies."""
    device = torch.device(opts["device"])
    game = make_torch(
        scenario,
        copies,
        device,
        dtype=DTYPES[opts["dtype"]],
        seed=seed,
        max_cycles=MAX_CYCLES,
    )
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    blocks = max(1, int(opts["action_blocks"]))
    acts = {
        a: torch.randint(game.spec(a).num_actions, (blocks, copies), generator=gen, device=device)
        for a in game.agents
    }
    joint = [{a: acts[a][t] for a in game.agents} for t in range(blocks)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t = 0

    def step() -> None:
        nonlocal t
        game.step(joint[t])
        t = (t + 1) % blocks

    for _ in range(int(opts["warmup"])):
        step()
    sync()

    def timed() -> None:
        step()
        sync()  # a step is done when its results exist (a no-op on the CPU)

    min_steps = int(opts["min_batches"]) * copies
    return windows(timed, copies, float(opts["seconds"]), min_steps, int(opts["repeats"]))


def mpe2_module_of(scenario: str) -> Any:
    """The mpe2 module of ``scenario``, named by its torch twin."""
    probe = make_torch(scenario, 1, max_cycles=MAX_CYCLES)
    return importlib.import_module(probe.scenario.mpe2_module)


def main(argv: list[str]) -> None:
    opts = parse(argv)
    if opts["dtype"] not in DTYPES:
        raise SystemExit(f"dtype must be one of {sorted(DTYPES)}, not '{opts['dtype']}'")
    if opts["one_thread"] not in ("largest", "all", "none"):
        raise SystemExit(f"one_thread must be largest, all or none, not '{opts['one_thread']}'")
    if opts["threads"]:
        torch.set_num_threads(int(opts["threads"]))
    console = Console(stderr=True)
    copies = ints(opts["copies"])
    mpe2_at = copies if opts["mpe2_copies"] == "all" else ints(opts["mpe2_copies"])
    mpe2_at = sorted(set(mpe2_at) & set(copies)) or [min(copies)]
    seed = int(opts["seed"])
    threads = torch.get_num_threads()
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    for raw_name in opts["scenarios"].split(","):
        scenario = scenario_name(raw_name)
        try:
            importlib.import_module(SCENARIOS[scenario].split(":")[0])
            module = mpe2_module_of(scenario)
        except Exception as err:  # not written yet, or not importable: say so and go on
            skipped[scenario] = f"{type(err).__name__}: {err}"
            console.print(f"[yellow]skipping {scenario}[/]: {skipped[scenario]}")
            continue
        rows: dict[int, dict[str, Any]] = {}
        measured: dict[int, list[float]] = {}
        for n in copies:
            console.print(f"{scenario}: {n} copies ...", highlight=False)
            if n in mpe2_at:
                measured[n] = mpe2_rates(module, n, opts, seed)
            basis = max((m for m in measured if m <= n), default=min(measured))
            raw = max(measured[basis])
            fast = torch_rates(scenario, n, opts, seed)
            one = None
            if (
                threads > 1
                and torch.device(opts["device"]).type == "cpu"
                and (
                    opts["one_thread"] == "all"
                    or (opts["one_thread"] == "largest" and n == max(copies))
                )
            ):
                torch.set_num_threads(1)
                one = max(torch_rates(scenario, n, opts, seed))
                torch.set_num_threads(threads)
            rows[n] = {
                "mpe2_steps_per_s": round(raw, 1),
                "mpe2_measured_at": basis,
                "torch_steps_per_s": round(max(fast), 1),
                "ratio": round(max(fast) / raw, 3),
                "mpe2_mean_steps_per_s": round(float(np.mean(measured[basis])), 1),
                "torch_mean_steps_per_s": round(float(np.mean(fast)), 1),
                "torch_one_thread_steps_per_s": None if one is None else round(one, 1),
            }
        results[scenario] = rows
    wall = time.perf_counter() - started

    table = Table(
        title=(
            f"MPE env steps/s (best of {opts['repeats']} windows), torch on {opts['device']}, "
            f"{opts['dtype']}, {threads} torch threads"
        )
    )
    cols = ["scenario", "copies", "mpe2 steps/s", "mpe2 at", "torch steps/s", "torch/mpe2"]
    singles = any(
        r["torch_one_thread_steps_per_s"] is not None
        for rows in results.values()
        for r in rows.values()
    )
    if singles:
        cols += ["torch 1 thread", "1 thread/mpe2"]
    for col in cols:
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for scenario, rows in results.items():
        for n, row in rows.items():
            cells = [
                scenario,
                str(n),
                f"{row['mpe2_steps_per_s']:,.0f}",
                str(row["mpe2_measured_at"]),
                f"{row['torch_steps_per_s']:,.0f}",
                f"{row['ratio']:.2f}",
            ]
            if singles:
                one = row["torch_one_thread_steps_per_s"]
                cells += (
                    ["-", "-"]
                    if one is None
                    else [f"{one:,.0f}", f"{one / row['mpe2_steps_per_s']:.2f}"]
                )
            table.add_row(*cells)
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    summary = {
        "device": opts["device"],
        "dtype": opts["dtype"],
        "torch_threads": threads,
        "max_cycles": MAX_CYCLES,
        "repeats": int(opts["repeats"]),
        "mpe2_measured_copies": mpe2_at,
        "results": {s: {str(n): r for n, r in rows.items()} for s, rows in results.items()},
        "skipped": skipped,
        "wall_time_s": round(wall, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1:])
