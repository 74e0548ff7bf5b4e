"""``task=search``: a trained policy played with IS-MCTS, against the raw policy, on paired games.

The target (a run directory, or ``random``) gives the search its prior, its opponent model and
its leaf values (:mod:`dgsolve.search.ismcts`: single-observer IS-MCTS with PUCT, or a Gumbel
root). For every opponent and seat the raw policy and the searched policy, at each count of
``task.simulations``, play ``task.games`` games on the same deals (common random numbers:
the deals, the game's chance and the opponents' draws come from generators seeded alike), and
the report gives each one's mean payoff and the searched policy's gain over the raw one, with
95% confidence intervals ``1.96 sd / sqrt(n)`` (of the per-game differences for the gains).

Opponents: on ``env=bargain`` the four baselines (:mod:`dgsolve.games.bargain.baselines`); on
OpenSpiel games ``self`` (the target's own policy in the other seats, sampled) and ``random``.
On OpenSpiel games whose tree can be walked (``task.exact``), the searched policy is also
tabulated at every information state (its search distribution there: visit frequencies, or
the Gumbel improved policy) and its exact NashConv given next to the raw policy's
(:mod:`dgsolve.eval.openspiel_eq`); the tables are written as ``policy_table_<sims>.json``.

Writes ``search.json`` (everything) and ``summary.json`` (``search.payoffs``, ``search.exact``).
Not resumable: a stopped run is started again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dgsolve import games
from dgsolve.artifacts import atomic_write_json, versions
from dgsolve.errors import CapabilityError, ConfigError
from dgsolve.search import Leaf, Root
from dgsolve.search.determinise import TreeGame, make_tree
from dgsolve.search.ismcts import ISMCTS, SearchConfig
from dgsolve.search.model import PolicyModel, sample_rows
from dgsolve.tasks.exploit import Z95, game_label, load_target, target_game_config
from dgsolve.validation import validate

RESUMABLE = False

#: the games' seeds start here (+ seed): apart from training's and exploit's
PLAY_SEED = 40_000
#: the most information states searched for an exact table (each is one search)
MAX_TABLE_STATES = 5_000

#: an opponent: (tree, states, rows, player) -> actions of ``player`` at those rows
Opponent = Callable[[TreeGame, object, np.ndarray, int], np.ndarray]


def execute(ctx) -> dict:
    """Play the matches, tabulate where exact, write the files and say so in one line."""
    cfg = ctx.cfg
    spec = cfg.task.target
    if spec is None or not str(spec).strip():
        raise ConfigError(
            "task=search needs task.target=<run directory>, e.g. "
            "task.target=outputs/2026-01-01/12-00-00 (or task.target=random with "
            "task.leaf=rollout)"
        )
    spec = str(spec)
    if spec != "random" and not Path(spec).expanduser().is_dir():
        raise ConfigError(
            f"task.target='{spec}' is not a run directory (task=search searches with a trained "
            "policy; task.target=random searches with a uniform prior)"
        )
    cfg = target_game_config(cfg, spec, ctx.overrides)
    validate(cfg)
    from dgsolve.rundir import save_run_config

    save_run_config(ctx.dir, cfg)
    started = time.perf_counter()
    report = run_search(cfg, spec, ctx.device, ctx.dir, ctx.signals)
    report["wall_time_s"] = time.perf_counter() - started
    summary = {
        "task": "search",
        "status": "completed",
        "target": spec,
        "env": game_label(cfg),
        "seed": int(cfg.seed),
        "device": str(ctx.device),
        "wall_time_s": report["wall_time_s"],
        "versions": versions(),
        "search": {k: report[k] for k in ("settings", "payoffs", "gains", "exact") if k in report},
    }
    atomic_write_json(ctx.dir / "search.json", report)
    atomic_write_json(ctx.dir / "summary.json", summary)
    print(f"dgsolve: {report_line(report)}; written to {ctx.dir / 'search.json'}")
    return summary


# --------------------------------------------------------------------------- the measurement
def search_config(task: DictConfig, simulations: int) -> SearchConfig:
    return SearchConfig(
        simulations=int(simulations),
        c_puct=float(task.c_puct),
        root=Root(task.root),
        considered=int(task.considered),
        c_visit=float(task.c_visit),
        c_scale=float(task.c_scale),
        leaf=Leaf(task.leaf),
        greedy=bool(task.greedy),
    )


def run_search(cfg: DictConfig, spec: str, device: torch.device, run_dir: Path, signals) -> dict:
    """Every match and (where exact) every table; returns the report (``search.json``)."""
    from dgsolve.tasks.train import progress_bar

    task = cfg.task
    counts = [int(n) for n in task.simulations]
    if cfg.env.family not in ("bargain", "openspiel"):
        raise CapabilityError(
            f"task=search needs a game tree: env=bargain or env=openspiel, not env={cfg.env.name}"
        )
    env_cfg = OmegaConf.merge(cfg.env, {"num_envs": 1})
    if cfg.env.family == "bargain" and device.type == "cpu":
        env_cfg.backend = "torch"
    game = games.make(env_cfg, device)
    try:
        joint = load_target(spec, cfg, game, device)
        tree = make_tree(game)
    finally:
        game.close()
    model = PolicyModel(joint, tree.agents)
    if Leaf(task.leaf) is Leaf.critic:
        for p in range(len(tree.agents)):
            model.check_value(p)
    opponents = make_opponents(cfg, tree, model)
    n, seed = int(task.games), PLAY_SEED + int(cfg.seed)
    report: dict = {
        "target": spec,
        "env": game_label(cfg),
        "agents": list(tree.agents),
        "settings": {
            "simulations": counts,
            "root": str(Root(task.root).value),
            "leaf": str(Leaf(task.leaf).value),
            "c_puct": float(task.c_puct),
            "considered": int(task.considered),
            "c_visit": float(task.c_visit),
            "c_scale": float(task.c_scale),
            "games": n,
            "greedy": bool(task.greedy),
            "opponent_model": "the target's policies, sampled",
        },
        "payoffs": {},
        "gains": {},
        "search_time_s": {},
    }
    print(
        f"dgsolve: search {spec} on {game_label(cfg)} | {Root(task.root).value} root, "
        f"simulations {counts}, {n:,} games per opponent and seat | {device} | run dir {run_dir}"
    )
    matches = len(opponents) * len(tree.agents) * (1 + len(counts))
    with progress_bar(task.progress) as progress:
        bar = progress.add_task("matches", total=matches, rate="-", returns="")
        for name, opponent in opponents.items():
            report["payoffs"][name], report["gains"][name] = {}, {}
            for seat, agent in enumerate(tree.agents):
                signals.check()
                raw = play(
                    tree, seat, raw_chooser(model, bool(task.greedy), seed), opponent, n, seed
                )
                progress.advance(bar)
                cell = {"raw": summarise(raw)}
                gains = {}
                for count in counts:
                    signals.check()
                    started = time.perf_counter()
                    searcher = ISMCTS(tree, model, search_config(task, count))
                    chooser = search_chooser(searcher, seed)
                    searched = play(tree, seat, chooser, opponent, n, seed)
                    elapsed = time.perf_counter() - started
                    key = str(count)
                    report["search_time_s"][key] = report["search_time_s"].get(key, 0.0) + elapsed
                    cell[key] = summarise(searched)
                    gains[key] = summarise(searched - raw)
                    progress.update(
                        bar, advance=1, rate=f"{n / max(elapsed, 1e-9):,.0f}", returns=""
                    )
                report["payoffs"][name][agent] = cell
                report["gains"][name][agent] = gains
    if cfg.env.family == "openspiel" and bool(task.exact):
        report["exact"] = exact_tables(cfg, tree, model, counts, run_dir)
    return report


def summarise(values: np.ndarray) -> dict[str, float]:
    """Mean and the half-width of its 95% normal confidence interval."""
    ci = Z95 * float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return {"mean": float(values.mean()), "ci95": ci}


# --------------------------------------------------------------------------- players
def raw_chooser(model: PolicyModel, greedy: bool, seed: int):
    """The raw policy: a sample of its distribution (or its mode)."""
    rng = np.random.default_rng([seed, 1])

    def choose(tree: TreeGame, states, rows: np.ndarray, player: int) -> np.ndarray:
        probs = model.probs(player, tree.observe(states, rows, player), tree.legal(states, rows))
        return probs.argmax(1) if greedy else sample_rows(probs, rng)

    return choose


def search_chooser(searcher: ISMCTS, seed: int):
    """The searched policy: one search per decision, the searches of a step batched; its
    played actions are drawn with the raw policy's generator (see :meth:`ISMCTS.search`)."""
    rng, play_rng = np.random.default_rng([seed, 2]), np.random.default_rng([seed, 1])

    def choose(tree: TreeGame, states, rows: np.ndarray, player: int) -> np.ndarray:
        roots = tree.select(states, rows)
        return searcher.search(roots, np.full(len(rows), player), rng, play_rng).action

    return choose


def make_opponents(cfg: DictConfig, tree: TreeGame, model: PolicyModel) -> dict[str, Opponent]:
    """Bargaining: the four baselines; OpenSpiel: the target itself (``self``) and ``random``."""
    seed = PLAY_SEED + int(cfg.seed)
    if cfg.env.family == "bargain":
        from dgsolve.games.bargain.baselines import BASELINES, make_baseline
        from dgsolve.games.bargain.rules import BargainRules

        rules = BargainRules.from_config(dict(cfg.env.items()))

        def baseline(name: str) -> Opponent:
            def act(tree, states, rows, player):
                obs, legal = tree.observe(states, rows, player), tree.legal(states, rows)
                return act.policy.act(obs, legal, False).cpu().numpy()

            def restart():  # every match: ``random`` draws the same stream
                act.policy = make_baseline(name, rules, seed=seed)

            act.restart = restart
            restart()
            return act

        return {name: baseline(name) for name in BASELINES}

    def sampled(probs_of) -> Opponent:
        def act(tree, states, rows, player):
            obs, legal = tree.observe(states, rows, player), tree.legal(states, rows)
            return sample_rows(probs_of(player, obs, legal), act.rng)

        def restart():
            act.rng = np.random.default_rng([seed, 3])

        act.restart = restart
        restart()
        return act

    def uniform(player, obs, legal):
        mask = legal.double().cpu().numpy()
        return mask / mask.sum(1, keepdims=True)

    return {"self": sampled(model.probs), "random": sampled(uniform)}


def play(tree: TreeGame, seat: int, choose, opponent: Opponent, n: int, seed: int) -> np.ndarray:
    """``n`` games from the roots of ``seed``, ``choose`` in seat ``seat`` and ``opponent`` in
    the others; returns the seat's payoffs ``[n]``. The deals, chance and the opponent's draws
    restart from the same seeds in every call (common random numbers)."""
    rng = np.random.default_rng([seed, 0])
    states = tree.roots(n, rng)
    opponent.restart()
    total = np.zeros(n)
    rows = np.arange(n)
    while True:
        mover = tree.player(states, rows)
        if (mover < 0).all():
            return total
        actions = np.zeros(n, dtype=np.int64)
        for p in np.unique(mover[mover >= 0]):
            at = rows[mover == p]
            chooser = choose if p == seat else opponent
            actions[at] = chooser(tree, states, at, int(p))
        live = rows[mover >= 0]
        legal = tree.legal(states, live).cpu().numpy()
        if not legal[np.arange(len(live)), actions[live]].all():
            raise RuntimeError("search chose an illegal action")  # never: a broken invariant
        total[live] += tree.step(states, live, actions[live], rng)[:, seat]


# --------------------------------------------------------------------------- exact tables
def representatives(os_game) -> dict[str, object]:
    """One state for each information state of the game (a depth-first walk)."""
    out: dict[str, object] = {}
    stack = [os_game.new_initial_state()]
    while stack:
        state = stack.pop()
        if state.is_terminal():
            continue
        if state.is_chance_node():
            stack.extend(state.child(a) for a, _ in state.chance_outcomes())
            continue
        key = state.information_state_string(state.current_player())
        out.setdefault(key, state)
        stack.extend(state.child(a) for a in state.legal_actions())
    return out


def exact_tables(cfg, tree, model: PolicyModel, counts: list[int], run_dir: Path) -> dict:
    """Exact NashConv of the raw policy and of the searched policy at each count, from their
    tables over every information state; or ``reference_error`` where there is none."""
    from dgsolve.eval.openspiel_eq import (
        information_states,
        nash_conv_of_table,
        write_policy_table,
    )

    load_string = str(cfg.env.game)
    try:
        info = information_states(load_string)
    except CapabilityError as err:
        return {"reference_error": str(err)}
    if len(info) > MAX_TABLE_STATES:
        return {
            "reference_error": (
                f"{load_string} has {len(info):,} information states; tables of searched "
                f"policies are made for at most {MAX_TABLE_STATES:,}"
            )
        }
    found = representatives(tree.os_game)
    keys = list(info.keys)
    states = [found[k] for k in keys]
    players = info.player.copy()
    out: dict = {"num_info_states": len(keys)}
    for count in counts:
        rng = np.random.default_rng([PLAY_SEED + int(cfg.seed), 4, count])
        searcher = ISMCTS(tree, model, search_config(cfg.task, count))
        policy = np.zeros((len(keys), info.num_actions))
        for p in np.unique(players):
            rows = np.flatnonzero(players == p)
            result = searcher.search([states[i].clone() for i in rows], players[rows], rng)
            policy[rows] = result.policy
        policy = np.where(info.legal, policy, 0.0)
        policy /= policy.sum(1, keepdims=True)
        table = dict(zip(keys, policy.tolist(), strict=True))
        write_policy_table(Path(run_dir) / f"policy_table_{count}.json", load_string, table)
        figures = nash_conv_of_table(load_string, table)
        out[str(count)] = {k: figures[k] for k in ("nash_conv", "exploitability") if k in figures}
        if count == 0:
            out["raw"] = out["0"]
    if "raw" not in out:
        from dgsolve.eval.openspiel_eq import policy_table

        figures = nash_conv_of_table(load_string, policy_table(load_string, model.joint))
        out["raw"] = {k: figures[k] for k in ("nash_conv", "exploitability") if k in figures}
    return out


def report_line(report: dict) -> str:
    """The figures in one line: the mean gain over opponents and seats per count, and the
    exact NashConv raw → searched where there is one."""
    counts = report["settings"]["simulations"]
    parts = []
    for count in counts:
        gains = [
            seat[str(count)]["mean"] for opp in report["gains"].values() for seat in opp.values()
        ]
        parts.append(f"{count}: {np.mean(gains):+.4f}")
    line = (
        f"search of {report['target']} on {report['env']} ({report['settings']['root']}): mean "
        f"payoff gain over the raw policy by simulations {', '.join(parts)}"
    )
    exact = report.get("exact", {})
    if "raw" in exact:
        searched = ", ".join(f"{c}: {exact[str(c)]['nash_conv']:.4f}" for c in counts)
        line += f"; NashConv raw {exact['raw']['nash_conv']:.4f}, searched {searched}"
    return line
