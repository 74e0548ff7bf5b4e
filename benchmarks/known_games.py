"""Games with known answers: learned equilibria next to the exact ones (issues 3 and 7).

One command trains PPO on games whose equilibria are known exactly and reads each run's ``eq``
section (:mod:`dgsolve.eval.equilibrium`) against the references of :mod:`dgsolve.eval.exact`.
Every run is ``dgsolve`` with the game family's own settings (``conf/env/<family>.yaml``,
section ``ppo``) or a committed experiment file, so ``dgsolve <overrides> seed=<s>`` reproduces
any row. Parts:

1. ``commitment``: three one-shot games where mixed commitment > pure commitment > Nash (below),
   each with Stackelberg-PPO observing actions (target: the pure-commitment value, within
   0.05), Stackelberg-PPO observing query answers (target: the mixed-commitment value, within
   0.1) and Nash-PPO (target: the Nash value, within 0.05);
2. ``repeated``: the twelve 2x2 games of Gerstgrasser & Parkes, "Oracles & Followers" (ICML
   2023) repeated for 10 rounds (``+experiment=<game>_repeated``): the leader's exact value as
   played against the leader-optimal memory-1 commitment (target: within 0.5);
3. ``lq``: the default 2-D LQ game (``env=lq``): Nash-PPO's fitted gains against the feedback
   Nash gains (target: 10%), Stackelberg-PPO's leader gain and the follower's reaction to the
   leader's action against the feedback Stackelberg solution (target: 15%) (Başar & Olsder,
   "Dynamic Noncooperative Game Theory", 1999, ch. 6-7);
4. ``canonical`` (not in ``all``): the twelve 2x2 games one-shot, Stackelberg-PPO (actions)
   against the pure-commitment value and Nash-PPO's Nash gap.

Runs go through ``dgsolve.run.run`` exactly as the CLI's would, in temporary directories,
``jobs`` at a time (one thread each). It prints readable tables, then one JSON object with
every run. Usage::

    python benchmarks/known_games.py [part=all|commitment|repeated|lq|canonical] [seeds=3] [jobs=2]
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from multiprocessing import get_context

from hydra import compose, initialize_config_dir

from dgsolve.cli import config_dir
from dgsolve.config import register_configs
from dgsolve.games.matrix import CANONICAL_GAMES
from dgsolve.run import run

COMMON = ["task.progress=false", "task.render=false", "task.eval_episodes=64", "hardware=cpu"]

#: One-shot games where the leader gains from committing, and more from mixing; rows are the
#: leader's actions, entries [leader payoff, follower payoff].
COMMITMENT_GAMES = {
    # Row 0 dominates: Nash (0, 0) = 1. Row 1 committed to is answered with column 1: 2. Any
    # p <= 1/2 on row 0 keeps column 1 a best reply: 2 + p, so 2.5 (Conitzer & Sandholm 2006).
    "commitment_2x2": [[[1, 1], [3, 0]], [[0, 0], [2, 1]]],
    # Row 0 dominates (1 > 0, 5 > 3) and column 0 answers it: Nash 1. Row 1 committed to is
    # answered with column 1 (5 > 1): 3. Column 1 stays the follower's reply while
    # 5 (1 - p) >= 1, i.e. p <= 0.8 on row 0: 3 + 2p, so 4.6 at p = 0.8.
    "deterrence_2x2": [[[1, 1], [5, 0]], [[0, 1], [3, 5]]],
    # Row 1 dominates (9 > 7 > 4, 4 > 1 > 0, 8 > 6 > 4), answered with column 1: Nash 4. Row 0
    # committed to is answered with column 0 (7 > 5 > 2): 7. Column 0 stays a best reply while
    # p0 >= 3/8, so (3/8, 5/8, 0) is worth 7 * 3/8 + 9 * 5/8 = 8.25.
    "dominated_3x3": [
        [[7, 7], [1, 2], [6, 5]],
        [[9, 2], [4, 5], [8, 0]],
        [[4, 2], [0, 5], [4, 1]],
    ],
}

#: the three ways of playing each commitment game: overrides, and the reference they target.
MODES = {
    "stackelberg (actions)": (["algo=stackelberg_ppo"], "stackelberg", 0.05),
    "stackelberg (queries)": (
        ["algo=stackelberg_ppo", "hierarchy.follower_observes=queries"],
        "stackelberg_mixed",
        0.1,
    ),
    "nash": (["algo=nash_ppo"], "nash", 0.05),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train(overrides: list[str]) -> dict:
    """One run in a temporary directory (its own lines muted); returns its summary."""
    register_configs()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[*COMMON, "hardware.threads=1", *overrides])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        summary = run(cfg, tmp)
    summary["benchmark_wall_s"] = time.perf_counter() - started
    return summary


def _job(spec: tuple[str, dict, list[str]]) -> tuple[str, dict, dict]:
    part, meta, overrides = spec
    summary = train(overrides)
    log(f"{part:10s} {json.dumps(meta)}: {summary['benchmark_wall_s']:.0f} s")
    return part, meta, summary


# --------------------------------------------------------------------------- the runs
def specs(part: str, seeds: list[int]) -> list[tuple[str, dict, list[str]]]:
    out = []
    if part in ("all", "commitment"):
        for game, table in COMMITMENT_GAMES.items():
            payoffs = json.dumps(table).replace(" ", "")
            for mode, (overrides, _, _) in MODES.items():
                for seed in seeds:
                    meta = {"game": game, "mode": mode, "seed": seed}
                    base = ["env=matrix", f"env.payoffs={payoffs}", f"seed={seed}"]
                    out.append(("commitment", meta, [*base, *overrides]))
    if part in ("all", "repeated"):
        for game in CANONICAL_GAMES:
            for seed in seeds:
                meta = {"game": game, "seed": seed}
                out.append(("repeated", meta, [f"+experiment={game}_repeated", f"seed={seed}"]))
    if part in ("all", "lq"):
        for algo in ("nash_ppo", "stackelberg_ppo"):
            for seed in seeds:
                overrides = ["env=lq", f"algo={algo}", f"seed={seed}"]
                out.append(("lq", {"algo": algo, "seed": seed}, overrides))
    if part == "canonical":
        for game in CANONICAL_GAMES:
            for algo in ("stackelberg_ppo", "nash_ppo"):
                for seed in seeds:
                    meta = {"game": game, "algo": algo, "seed": seed}
                    base = ["env=matrix", f"env.game={game}", f"algo={algo}", f"seed={seed}"]
                    out.append(("canonical", meta, base))
    return out


# --------------------------------------------------------------------------- the tables
def commitment_rows(results) -> list[dict]:
    rows = []
    for meta, summary in results:
        eq = summary["eq"]
        _, key, tolerance = MODES[meta["mode"]]
        leader = "row"
        if key == "nash":
            values = [e["payoffs"][leader] for e in eq["reference"]["nash"]]
            target = min(values, key=lambda v: abs(v - eq["payoffs"][leader]))
        else:
            target = eq["reference"][key]["payoffs"][leader]
        payoff = eq["payoffs"][leader]
        rows.append(
            {
                **meta,
                "leader_payoff": payoff,
                "target": target,
                "distance": abs(payoff - target),
                "ok": abs(payoff - target) <= tolerance,
                "tolerance": tolerance,
                "verdict": eq["verdict"],
                "wall_s": summary["benchmark_wall_s"],
            }
        )
    return rows


def print_commitment(rows: list[dict]) -> None:
    print("\nOne-shot games where mixed > pure > Nash (leader = row; env=matrix defaults)")
    print(
        f"{'game':15s} {'mode':22s} {'seed':>4s} {'leader':>7s} {'target':>7s} {'|diff|':>7s} "
        f"{'ok':>3s} {'verdict (worst gap)':>22s}"
    )
    for r in rows:
        v = r["verdict"]
        verdict = f"{'yes' if v['equilibrium'] else 'no'} ({v['worst_gap']:.3f})"
        print(
            f"{r['game']:15s} {r['mode']:22s} {r['seed']:4d} {r['leader_payoff']:7.3f} "
            f"{r['target']:7.3f} {r['distance']:7.3f} {'yes' if r['ok'] else 'NO':>3s} "
            f"{verdict:>22s}"
        )
    for mode, (_, _, tolerance) in MODES.items():
        mine = [r for r in rows if r["mode"] == mode]
        ok = sum(r["ok"] for r in mine)
        print(f"  {mode}: within {tolerance} of its target in {ok}/{len(mine)} runs")


def repeated_rows(results) -> list[dict]:
    rows = []
    for meta, summary in results:
        eq = summary["eq"]
        exact = eq["reference"]["stackelberg"]["payoffs"]["row"]
        value = eq["values"]["row"]
        rows.append(
            {
                **meta,
                "leader_value": value,
                "leader_sampled_return": eq["returns"]["row"],
                "follower_value": eq["values"]["column"],
                "exact": exact,
                "distance": abs(value - exact),
                "ok": abs(value - exact) <= 0.5,
                "deviation_gain": eq["deviation_gain"],
                "verdict": eq["verdict"],
                "wall_s": summary["benchmark_wall_s"],
            }
        )
    return rows


def print_repeated(rows: list[dict]) -> None:
    print("\nTwelve 2x2 games repeated 10 rounds, offset -2.5, pure memory-1 commitments")
    print(
        f"{'game':18s} {'seed':>4s} {'leader':>7s} {'sampled':>8s} {'exact':>6s} {'ok':>3s} "
        f"{'leader gain':>11s} {'follower gain':>13s} {'verdict':>7s}"
    )
    for r in rows:
        gains = r["deviation_gain"]
        print(
            f"{r['game']:18s} {r['seed']:4d} {r['leader_value']:7.2f} "
            f"{r['leader_sampled_return']:8.2f} {r['exact']:6.1f} {'yes' if r['ok'] else 'NO':>3s} "
            f"{gains.get('row', float('nan')):11.2f} {gains.get('column', float('nan')):13.2f} "
            f"{'yes' if r['verdict']['equilibrium'] else 'no':>7s}"
        )
    ok = sum(r["ok"] for r in rows)
    print(f"  leader within 0.5 of the optimal memory-1 commitment: {ok}/{len(rows)}")


def lq_rows(results) -> list[dict]:
    rows = []
    for meta, summary in results:
        eq = summary["eq"]
        rows.append(
            {
                **meta,
                "reference": eq["reference"]["equilibrium"],
                "gain_error": eq["gain_error"],
                "reaction_error": eq.get("reaction_error", {}),
                "deviation_gain": eq["deviation_gain"],
                "cost_gap": eq["cost_gap"],
                "verdict": eq["verdict"],
                "wall_s": summary["benchmark_wall_s"],
            }
        )
    return rows


def print_lq(rows: list[dict]) -> None:
    print("\nDefault 2-D LQ game (env=lq): fitted gains vs exact feedback gains (relative errors)")
    print(
        f"{'algo':16s} {'seed':>4s} {'err p1':>7s} {'err p2':>7s} {'reaction':>8s} "
        f"{'gain p1':>8s} {'gain p2':>8s} {'verdict':>7s}"
    )
    for r in rows:
        reaction = r["reaction_error"].get("p2")
        gains = r["deviation_gain"]
        print(
            f"{r['algo']:16s} {r['seed']:4d} {r['gain_error']['p1']:7.3f} "
            f"{r['gain_error']['p2']:7.3f} {'-' if reaction is None else f'{reaction:.3f}':>8s} "
            f"{gains['p1'] or 0:8.4f} {gains['p2'] or 0:8.4f} "
            f"{'yes' if r['verdict']['equilibrium'] else 'no':>7s}"
        )


def canonical_rows(results) -> list[dict]:
    rows = []
    for meta, summary in results:
        eq = summary["eq"]
        row = {**meta, "verdict": eq["verdict"], "wall_s": summary["benchmark_wall_s"]}
        if meta["algo"] == "stackelberg_ppo":
            row["leader_payoff"] = eq["payoffs"]["row"]
            row["target"] = eq["reference"]["stackelberg"]["payoffs"]["row"]
            row["ok"] = eq["stackelberg_gap"] <= 0.05
        else:
            row["nash_gap"] = eq["nash_gap"]
            row["ok"] = eq["nash_gap"] < 0.05
        rows.append(row)
    return rows


def print_canonical(rows: list[dict]) -> None:
    print("\nTwelve canonical 2x2 games, one-shot (env=matrix defaults)")
    for r in rows:
        what = (
            f"leader {r['leader_payoff']:.3f} (exact {r['target']:g})"
            if "leader_payoff" in r
            else f"nash gap {r['nash_gap']:.4f}"
        )
        print(f"{r['game']:18s} {r['algo']:16s} {r['seed']:4d} {what} {'ok' if r['ok'] else 'NO'}")
    print(f"  within 0.05: {sum(r['ok'] for r in rows)}/{len(rows)}")


TABLES = {
    "commitment": (commitment_rows, print_commitment),
    "repeated": (repeated_rows, print_repeated),
    "lq": (lq_rows, print_lq),
    "canonical": (canonical_rows, print_canonical),
}


def main(argv: list[str]) -> None:
    opts = dict(arg.split("=", 1) for arg in argv)
    part = opts.pop("part", "all")
    seeds = list(range(int(opts.pop("seeds", 3))))
    jobs = int(opts.pop("jobs", 2))
    if opts or part not in ("all", *TABLES):
        raise SystemExit(
            "usage: python benchmarks/known_games.py "
            "[part=all|commitment|repeated|lq|canonical] [seeds=3] [jobs=2]"
        )
    started = time.perf_counter()
    todo = specs(part, seeds)
    with get_context("spawn").Pool(jobs) as pool:
        done = pool.map(_job, todo, chunksize=1)
    out: dict = {"seeds": seeds, "jobs": jobs}
    for name, (rows_of, _) in TABLES.items():
        results = [(meta, summary) for p, meta, summary in done if p == name]
        if results:
            out[name] = rows_of(results)
    out["wall_time_s"] = time.perf_counter() - started
    for name, (_, printer) in TABLES.items():
        if name in out:
            printer(out[name])
    print(f"\nwall time {out['wall_time_s']:.0f} s with {jobs} jobs")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
