"""Games with known answers: learned equilibria next to the exact ones (issue 3).

One command trains PPO on games whose equilibria are known exactly and reads each run's ``eq``
section (:mod:`dgsolve.eval.equilibrium`) against the references of :mod:`dgsolve.eval.exact`:

1. the twelve canonical 2x2 games of Gerstgrasser & Parkes, "Oracles & Followers: Stackelberg
   Equilibria in Deep Multi-Agent Reinforcement Learning" (ICML 2023), one-shot, on every seed:
   ``algo=stackelberg_ppo`` (``hierarchy=leader_follower``, the follower sees the leader's
   action) — the leader's expected payoff against the pure-commitment Stackelberg value, success
   when within 0.05 — and ``algo=nash_ppo`` — the Nash gap (best-response gain), success below
   0.05, in the games with a pure Nash equilibrium;
2. bimatrix games where commitment pays, so the Stackelberg payoff differs from every Nash
   payoff (a 2x2 and a 3x3 one, below): both algorithms, leader payoffs against both references;
3. the default 2-D LQ game (``conf/env/lq.yaml``): fitted feedback gains of Nash-PPO against the
   coupled-Riccati Nash gains and of Stackelberg-PPO against the feedback Stackelberg gains
   (Başar & Olsder, "Dynamic Noncooperative Game Theory", 1999, ch. 6-7);
4. only with ``part=repeated`` (not in ``all``: about 45 s a run): the twelve games repeated for
   10 rounds in the setting of that paper (``conf/experiment/<game>_repeated.yaml``), the greedy
   leader return against the leader-optimal memory-1 commitment.

The budgets are the experiment configs ``one_shot_matrix``, ``lq_gains`` and
``oracles_followers``, so ``dgsolve +experiment=... seed=...`` reproduces any row. It prints
readable tables, then one JSON object with every run and the composed budgets. Runs go through
``dgsolve.run.run`` exactly as the CLI's would, in temporary directories. Usage::

    python benchmarks/known_games.py [part=all|canonical|bimatrix|lq|repeated] [seeds=3]
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dgsolve.cli import config_dir
from dgsolve.config import register_configs
from dgsolve.games.matrix import CANONICAL_GAMES
from dgsolve.run import run

#: a learned payoff or gap within this of the exact value counts as a success.
TOLERANCE = 0.05

#: the budgets live in conf/experiment/ so that one ``dgsolve +experiment=...`` reproduces a row:
#: one-shot games (64 one-round games an iteration, 60 iterations of full-batch updates) and the
#: LQ game (linear actor, 300 iterations of 64 x 50 steps).
ONE_SHOT = "+experiment=one_shot_matrix"
LQ = "+experiment=lq_gains"

COMMON = ["task.progress=false", "task.render=false", "task.eval_episodes=64", "hardware=cpu"]

#: Bimatrix games where the leader's commitment changes the outcome; rows are the leader's
#: actions, entries [leader payoff, follower payoff].
BIMATRIX = {
    # Row 0 strictly dominates (1 > 0, 3 > 2): the unique Nash equilibrium is (0, 0) = (1, 1).
    # Committing to row 1 makes column 1 the follower's best reply (1 > 0): (2, 1). A mixed
    # commitment (1/2, 1/2) would get 2.5 (Conitzer & Sandholm, EC 2006).
    "commitment_2x2": [[[1, 1], [3, 0]], [[0, 0], [2, 1]]],
    # Row 1 strictly dominates (9 > 7 > 4, 4 > 1 > 0, 8 > 6 > 4) and the follower answers it with
    # column 1 (5 > 2 > 0): Nash (1, 1) = (4, 5), unique. Committed to, row 0 is answered with
    # column 0 (7 > 5 > 2), worth 7 to the leader; row 2 with column 1, worth 0.
    "dominated_commitment_3x3": [
        [[7, 7], [1, 2], [6, 5]],
        [[9, 2], [4, 5], [8, 0]],
        [[4, 2], [0, 5], [4, 1]],
    ],
}


#: the composed algo and env settings of the first run of each kind, printed with the results.
BUDGETS: dict[str, dict] = {}


def train(overrides: list[str], kind: str) -> dict:
    """One run in a temporary directory; returns its summary (the run's own lines muted)."""
    cfg = compose("config", overrides=[*COMMON, *overrides])
    BUDGETS.setdefault(
        kind,
        {
            "overrides": [*COMMON, *overrides],
            "algo": OmegaConf.to_container(cfg.algo, enum_to_str=True),
            "env.num_envs": cfg.env.num_envs,
        },
    )
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        return run(cfg, tmp)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- part 1
def canonical(seeds: list[int]) -> list[dict]:
    rows = []
    for game in CANONICAL_GAMES:
        for seed in seeds:
            base = [ONE_SHOT, f"env.game={game}", f"seed={seed}"]
            lead = train([*base, "algo=stackelberg_ppo"], "one_shot stackelberg_ppo")["eq"]
            nash = train([*base, "algo=nash_ppo"], "one_shot nash_ppo")["eq"]
            exact = lead["reference"]["stackelberg"]["payoffs"]["row"]
            pure_nash = any(
                max(e["strategies"]["row"]) == 1.0 and max(e["strategies"]["column"]) == 1.0
                for e in nash["reference"]["nash"]
            )
            row = {
                "game": game,
                "seed": seed,
                "stackelberg_leader_payoff": lead["payoffs"]["row"],
                "stackelberg_exact": exact,
                "stackelberg_gap": lead["stackelberg_gap"],
                "stackelberg_ok": lead["stackelberg_gap"] <= TOLERANCE,
                "stackelberg_nash_gap": lead["nash_gap"],
                "pure_nash_exists": pure_nash,
                "nash_gap": nash["nash_gap"],
                "nash_ok": nash["nash_gap"] < TOLERANCE if pure_nash else None,
                "nash_payoffs": nash["payoffs"],
            }
            rows.append(row)
            log(
                f"{game:18s} seed {seed}: leader {row['stackelberg_leader_payoff']:.3f} "
                f"(exact {exact:g}), nash gap {row['nash_gap']:.4f}"
            )
    return rows


def print_canonical(rows: list[dict]) -> None:
    print("\nTwelve canonical 2x2 games, one-shot (leader = row)")
    print(
        f"{'game':18s} {'seed':>4s} {'S-PPO leader':>12s} {'exact SSE':>9s} {'|gap|':>7s} "
        f"{'ok':>3s} {'N-PPO nash gap':>14s} {'ok':>3s}"
    )
    for r in rows:
        nash_ok = "-" if r["nash_ok"] is None else ("yes" if r["nash_ok"] else "NO")
        print(
            f"{r['game']:18s} {r['seed']:4d} {r['stackelberg_leader_payoff']:12.3f} "
            f"{r['stackelberg_exact']:9.1f} {r['stackelberg_gap']:7.3f} "
            f"{'yes' if r['stackelberg_ok'] else 'NO':>3s} {r['nash_gap']:14.4f} {nash_ok:>3s}"
        )
    ok_s = sum(r["stackelberg_ok"] for r in rows)
    judged = [r for r in rows if r["nash_ok"] is not None]
    ok_n = sum(r["nash_ok"] for r in judged)
    print(
        f"Stackelberg-PPO within {TOLERANCE}: {ok_s}/{len(rows)};  "
        f"Nash-PPO gap < {TOLERANCE}: {ok_n}/{len(judged)}"
    )


# --------------------------------------------------------------------------- part 2
def bimatrix(seeds: list[int]) -> list[dict]:
    rows = []
    for name, payoffs in BIMATRIX.items():
        table = json.dumps(payoffs).replace(" ", "")
        for seed in seeds:
            base = [ONE_SHOT, f"env.payoffs={table}", f"seed={seed}"]
            lead = train([*base, "algo=stackelberg_ppo"], "one_shot stackelberg_ppo")["eq"]
            nash = train([*base, "algo=nash_ppo"], "one_shot nash_ppo")["eq"]
            ref = lead["reference"]
            row = {
                "game": name,
                "seed": seed,
                "nash_leader_values": sorted({e["payoffs"]["row"] for e in ref["nash"]}),
                "stackelberg_exact": ref["stackelberg"]["payoffs"]["row"],
                "stackelberg_mixed_exact": ref["stackelberg_mixed"]["payoffs"]["row"],
                "stackelberg_leader_payoff": lead["payoffs"]["row"],
                "stackelberg_gap": lead["stackelberg_gap"],
                "stackelberg_ok": lead["stackelberg_gap"] <= TOLERANCE,
                "nash_ppo_leader_payoff": nash["payoffs"]["row"],
                "nash_gap": nash["nash_gap"],
                "nash_ok": nash["nash_gap"] < TOLERANCE,
            }
            rows.append(row)
            log(
                f"{name:24s} seed {seed}: S-PPO leader {row['stackelberg_leader_payoff']:.3f}, "
                f"N-PPO leader {row['nash_ppo_leader_payoff']:.3f}"
            )
    return rows


def print_bimatrix(rows: list[dict]) -> None:
    print("\nBimatrix games where commitment pays (leader = row)")
    print(
        f"{'game':24s} {'seed':>4s} {'Nash':>6s} {'SSE':>5s} {'mixed':>5s} "
        f"{'S-PPO leader':>12s} {'ok':>3s} {'N-PPO leader':>12s} {'nash gap':>8s} {'ok':>3s}"
    )
    for r in rows:
        nash_values = ",".join(f"{v:g}" for v in r["nash_leader_values"])
        print(
            f"{r['game']:24s} {r['seed']:4d} {nash_values:>6s} {r['stackelberg_exact']:5g} "
            f"{r['stackelberg_mixed_exact']:5.2f} {r['stackelberg_leader_payoff']:12.3f} "
            f"{'yes' if r['stackelberg_ok'] else 'NO':>3s} {r['nash_ppo_leader_payoff']:12.3f} "
            f"{r['nash_gap']:8.4f} {'yes' if r['nash_ok'] else 'NO':>3s}"
        )


# --------------------------------------------------------------------------- part 3
def lq(seeds: list[int]) -> list[dict]:
    rows = []
    for algo in ("nash_ppo", "stackelberg_ppo"):
        for seed in seeds:
            summary = train([LQ, f"algo={algo}", f"seed={seed}"], f"lq {algo}")
            eq = summary["eq"]
            row = {
                "algo": algo,
                "reference": eq["reference"]["equilibrium"],
                "seed": seed,
                "gain_error": eq["gain_error"],
                "cost_gap": eq["cost_gap"],
                "fit_r2": eq["fit_r2"],
                "gains": eq["gains"],
                "reference_gains": eq["reference"]["gains"],
                "wall_time_s": summary["wall_time_s"],
            }
            rows.append(row)
            log(f"lq {algo} seed {seed}: gain errors {eq['gain_error']}")
    return rows


def print_lq(rows: list[dict]) -> None:
    print("\nDefault 2-D LQ game: fitted gains vs exact feedback gains (relative Frobenius error)")
    agents = list(rows[0]["gain_error"]) if rows else []
    head = " ".join(f"{'err ' + a:>8s}" for a in agents)
    cost = " ".join(f"{'cost ' + a:>9s}" for a in agents)
    print(f"{'algo':16s} {'reference':21s} {'seed':>4s} {head} {cost}")
    for r in rows:
        errs = " ".join(f"{r['gain_error'][a]:8.3f}" for a in agents)
        costs = " ".join(
            f"{r['cost_gap'][a]:+9.3f}" if r["cost_gap"][a] is not None else f"{'inf':>9s}"
            for a in agents
        )
        print(f"{r['algo']:16s} {r['reference']:21s} {r['seed']:4d} {errs} {costs}")


# --------------------------------------------------------------------------- part 4
def repeated(seeds: list[int]) -> list[dict]:
    rows = []
    for game in CANONICAL_GAMES:
        for seed in seeds:
            eq = train([f"+experiment={game}_repeated", f"seed={seed}"], "repeated")["eq"]
            exact = eq["reference"]["stackelberg"]["payoffs"]["row"]
            row = {
                "game": game,
                "seed": seed,
                "leader_return_greedy": eq["greedy_returns"]["row"],
                "leader_return_sampled": eq["returns"]["sampled"]["row"],
                "follower_return_greedy": eq["greedy_returns"]["column"],
                "stackelberg_exact": exact,
                "stackelberg_gap": eq["stackelberg_gap"],
                "stackelberg_ok": eq["stackelberg_gap"] <= TOLERANCE,
                "deviation_gain": eq["deviation_gain"],
                "nash_leader_values": sorted(
                    {e["payoffs"]["row"] for e in eq["reference"]["nash"]}
                ),
            }
            rows.append(row)
            log(f"{game:18s} seed {seed}: greedy leader return {row['leader_return_greedy']:g}")
    return rows


def print_repeated(rows: list[dict]) -> None:
    print("\nTwelve 2x2 games repeated 10 rounds, offset -2.5, follower sees query answers")
    print(
        f"{'game':18s} {'seed':>4s} {'leader (greedy)':>15s} {'sampled':>8s} {'exact':>6s} "
        f"{'ok':>3s} {'leader gain':>11s} {'follower gain':>13s}"
    )
    for r in rows:
        gains = r["deviation_gain"]
        print(
            f"{r['game']:18s} {r['seed']:4d} {r['leader_return_greedy']:15.2f} "
            f"{r['leader_return_sampled']:8.2f} {r['stackelberg_exact']:6.1f} "
            f"{'yes' if r['stackelberg_ok'] else 'NO':>3s} {gains.get('row', float('nan')):11.2f} "
            f"{gains.get('column', float('nan')):13.2f}"
        )
    ok = sum(r["stackelberg_ok"] for r in rows)
    print(f"Greedy leader return within {TOLERANCE} of the commitment value: {ok}/{len(rows)}")


def main(argv: list[str]) -> None:
    opts = dict(arg.split("=", 1) for arg in argv)
    part = opts.pop("part", "all")
    seeds = list(range(int(opts.pop("seeds", 3))))
    if opts or part not in ("all", "canonical", "bimatrix", "lq", "repeated"):
        raise SystemExit(
            "usage: python benchmarks/known_games.py "
            "[part=all|canonical|bimatrix|lq|repeated] [seeds=3]"
        )
    register_configs()
    started = time.perf_counter()
    out: dict = {
        "tolerance": TOLERANCE,
        "seeds": seeds,
    }
    with initialize_config_dir(config_dir(), version_base="1.3"):
        if part in ("all", "canonical"):
            out["canonical"] = canonical(seeds)
        if part in ("all", "bimatrix"):
            out["bimatrix"] = bimatrix(seeds)
        if part in ("all", "lq"):
            out["lq"] = lq(seeds)
        if part == "repeated":
            out["repeated"] = repeated(seeds)
    out["budgets"] = BUDGETS
    out["wall_time_s"] = time.perf_counter() - started
    if "canonical" in out:
        print_canonical(out["canonical"])
    if "bimatrix" in out:
        print_bimatrix(out["bimatrix"])
    if "lq" in out:
        print_lq(out["lq"])
    if "repeated" in out:
        print_repeated(out["repeated"])
    print("\nBudgets (composed):")
    for kind, budget in BUDGETS.items():
        algo = budget["algo"]
        keys = ("total_timesteps", "num_steps", "num_epochs", "num_minibatches", "lr", "ent_coef")
        settings = ", ".join(f"{k}={algo[k]}" for k in keys)
        print(
            f"  {kind}: {' '.join(budget['overrides'][len(COMMON) :])} -> {settings}, "
            f"num_envs={budget['env.num_envs']}, hidden={algo['hidden_sizes']}, "
            f"policy={algo['policy']}, follower_updates_per_leader="
            f"{algo['follower_updates_per_leader']}"
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
