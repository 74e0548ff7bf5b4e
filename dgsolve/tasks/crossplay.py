"""``task=crossplay``: every ordered pair of bargaining policies, as a payoff matrix.

Policies are baseline names (``random``, ``always_walk``, ``greedy``, ``fair_split``) or run
directories of trained bargaining runs. Writes ``crossplay.json`` (``{"policies": [...], "p1": M,
"p2": M, "welfare": M, "agreement_rate": M, "walk_rate": M, "meta": {...}}``, ``M[i][j]`` =
policy i as P1 against policy j as P2), ``crossplay.csv`` (one row per ordered pair) and a
welfare heatmap ``crossplay.png`` into the run directory.

``meta`` is the meta-game analysis of the table as an empirical game between the listed
policies, one per seat (:func:`dgsolve.eval.meta_game.analyse`, after PSRO's meta-game: Lanctot
et al., NeurIPS 2017): a Nash equilibrium over the policies (the highest-welfare extreme one for
small tables), each policy's regret against it, its support and welfare, α-Rank, and the
equilibrium without each policy. The heatmap shows each seat's equilibrium probabilities beside
it and outlines the cells of the support.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np
import torch

from dgsolve.artifacts import atomic_write_bytes, atomic_write_json, versions
from dgsolve.errors import ConfigError, RunDirError
from dgsolve.eval.bargain import seated
from dgsolve.eval.crossplay import crossplay_matrix
from dgsolve.eval.meta_game import analyse
from dgsolve.games.bargain.baselines import BASELINES, make_baseline
from dgsolve.games.bargain.rules import BargainRules
from dgsolve.rundir import load_policies

CSV_KEYS = ("p1", "p2", "welfare", "agreement_rate", "walk_rate")
RESUMABLE = False


def load_player(spec: str, env_cfg, device: torch.device, seed: int):
    """A baseline by name, or the trained policy of a run directory trained on the same rules."""
    rules = BargainRules.from_config(dict(env_cfg.items()))
    if spec in BASELINES:
        return make_baseline(spec, rules, seed=seed)
    if not Path(spec).expanduser().is_dir():
        raise ConfigError(
            f"crossplay policy '{spec}' is neither a baseline {sorted(BASELINES)} nor a run "
            "directory"
        )
    from dgsolve.rundir import load_run_config

    run_cfg = load_run_config(spec)
    if run_cfg.env.get("family") != "bargain":
        raise RunDirError(f"run '{spec}' trained on env '{run_cfg.env.name}', not on bargain")
    trained = BargainRules.from_config(dict(run_cfg.env.items()))
    if trained != rules:
        differ = [
            f"{k}={getattr(trained, k)} (here {getattr(rules, k)})"
            for k in trained.__dataclass_fields__
            if getattr(trained, k) != getattr(rules, k)
        ]
        raise RunDirError(
            f"run '{spec}' was trained on other bargaining rules: {', '.join(differ)}; cross-play "
            "pits policies of one game against each other (set env.* to the run's rules)"
        )
    joint, run_cfg = load_policies(spec, device)
    return seated(joint.policies, run_cfg.env)


def execute(ctx) -> dict:
    """Play the table, write its files, print it and say where they went."""
    cfg = ctx.cfg
    started = time.perf_counter()
    table = run_crossplay(cfg, ctx.dir, ctx.device)
    files = [str(ctx.dir / f"crossplay.{ext}") for ext in ("json", "csv", "png")]
    summary = {
        "task": "crossplay",
        "status": "completed",
        "env": str(cfg.env.name),
        "algo": "crossplay",
        "seed": int(cfg.seed),
        "device": str(ctx.device),
        "wall_time_s": time.perf_counter() - started,
        "versions": versions(),
        "policies": table["policies"],
        "games": int(cfg.task.games),
        "crossplay": {"meta": table.get("meta", {})},
        "files": files,
    }
    atomic_write_json(ctx.dir / "summary.json", summary)
    print_crossplay(table)
    print(
        f"dgsolve: cross-play of {len(table['policies'])} policies written to "
        f"{ctx.dir}: crossplay.json (the tables), crossplay.csv, crossplay.png (heat map), "
        "summary.json"
    )
    return {**summary, "crossplay": table}


def print_crossplay(table: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title="cross-play welfare (agreement rate); row as P1, column as P2")
    out.add_column("P1 \\ P2")
    for name in table["policies"]:
        out.add_column(name, justify="right")
    for i, name in enumerate(table["policies"]):
        cells = [
            f"{table['welfare'][i][j]:.3f} ({table['agreement_rate'][i][j]:.2f})"
            for j in range(len(table["policies"]))
        ]
        out.add_row(name, *cells)
    console = Console()
    console.print(out)
    if "meta" in table:
        meta = table["meta"]
        console.print(
            f"Nash support: P1 {{{', '.join(meta['support']['p1'])}}}, "
            f"P2 {{{', '.join(meta['support']['p2'])}}}; welfare {meta['welfare']:.3f}",
            highlight=False,
        )


def run_crossplay(cfg, run_dir: Path | str, device: torch.device) -> dict:
    if cfg.env.family != "bargain":
        raise ConfigError(f"task=crossplay plays the bargaining game; got env={cfg.env.name}")
    specs = list(cfg.task.policies)
    if len(specs) < 1:
        raise ConfigError("task.policies is empty; list baseline names or run directories")
    names = [Path(s).name if s not in BASELINES else s for s in specs]
    if len(set(names)) != len(names):
        names = specs
    players = {
        name: load_player(spec, cfg.env, device, cfg.seed)
        for name, spec in zip(names, specs, strict=True)
    }
    fields = dict(cfg.env.items())
    if device.type == "cpu":
        fields["backend"] = "torch"
    table = crossplay_matrix(players, int(cfg.task.games), int(cfg.seed), device, fields)
    table["meta"] = analyse(np.array(table["p1"]), np.array(table["p2"]), table["policies"])
    out = Path(run_dir)
    atomic_write_json(out / "crossplay.json", table)
    atomic_write_bytes(out / "crossplay.csv", _csv(table).encode())
    _heatmap(table, out / "crossplay.png")
    return table


def _csv(table: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["p1_policy", "p2_policy", *CSV_KEYS])
    for i, row in enumerate(table["policies"]):
        for j, col in enumerate(table["policies"]):
            writer.writerow([row, col, *(f"{table[k][i][j]:.6f}" for k in CSV_KEYS)])
    return buf.getvalue()


def _heatmap(table: dict, path: Path) -> None:
    """``crossplay.png``: :func:`crossplay_figure` of ``table``."""
    fig = crossplay_figure(table)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def crossplay_figure(table: dict, env: str | None = "bargain"):
    """Welfare of every cell; beside it each seat's Nash probabilities (P1's by the rows, P2's
    under the columns) in that seat's agent colour, support bars solid and the others faint,
    and the cells of the equilibrium's support outlined."""
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    from dgsolve.games.bargain.rules import AGENTS
    from dgsolve.plots import agent_styles, new_figure, title

    names = table["policies"]
    k = len(names)
    meta = table["meta"]
    seat_colour = {seat: style.colour for seat, style in agent_styles(AGENTS).items()}
    fig = new_figure(figsize=(1.6 * k + 3.2, 1.3 * k + 2.6))
    grid = fig.add_gridspec(
        2, 3, width_ratios=[k, 1.3, 0.25], height_ratios=[k, 1.3], wspace=0.08, hspace=0.08
    )
    ax = fig.add_subplot(grid[0, 0])
    rows_ax = fig.add_subplot(grid[0, 1], sharey=ax)
    cols_ax = fig.add_subplot(grid[1, 0], sharex=ax)
    image = ax.imshow(table["welfare"], cmap="viridis", aspect="auto")
    for i in range(k):
        for j in range(k):
            value = table["welfare"][i][j]
            colour = "k" if image.norm(value) > 0.6 else "w"  # dark on viridis' light end
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color=colour)
    support = {seat: {names.index(n) for n in meta["support"][seat]} for seat in ("p1", "p2")}
    for i in sorted(support["p1"]):
        for j in sorted(support["p2"]):
            ax.add_patch(
                Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=3)
            )
    ax.set_yticks(range(k), names)
    ax.set_ylabel("as P1", color=seat_colour["p1"])
    ax.tick_params(axis="x", labelbottom=False)
    # each seat's equilibrium probabilities in its colour, faint outside the support
    p1, p2 = meta["nash"]["p1"], meta["nash"]["p2"]
    colours = {
        seat: [to_rgba(seat_colour[seat], 1.0 if x in support[seat] else 0.3) for x in range(k)]
        for seat in support
    }
    rows_ax.barh(range(k), p1, color=colours["p1"], edgecolor=seat_colour["p1"], height=0.6)
    rows_ax.set_xlim(0, 1)
    rows_ax.set_xlabel("Nash P1", color=seat_colour["p1"])
    rows_ax.tick_params(axis="y", labelleft=False)
    cols_ax.bar(range(k), p2, color=colours["p2"], edgecolor=seat_colour["p2"], width=0.6)
    for i in range(k):
        rows_ax.text(min(p1[i], 0.62) + 0.03, i, f"{p1[i]:.2f}", va="center", fontsize=8)
        cols_ax.text(i, min(p2[i], 0.62) + 0.05, f"{p2[i]:.2f}", ha="center", va="top", fontsize=8)
    cols_ax.set_ylim(1, 0)
    cols_ax.set_ylabel("Nash P2", color=seat_colour["p2"])
    cols_ax.set_xticks(range(k), names, rotation=30, ha="right")
    cols_ax.set_xlabel("as P2", color=seat_colour["p2"])
    ax.set_xlim(-0.5, k - 0.5)  # the bars' autoscaling would move the shared limits
    ax.set_ylim(k - 0.5, -0.5)
    fig.colorbar(image, cax=fig.add_subplot(grid[0, 2]), label="welfare (P1 + P2, normalised)")
    what = f"cross-play welfare of {k} policies, P1 (rows) against P2 (columns)"
    fig.suptitle(f"{title(what, env=env)}\noutlined: Nash support (welfare {meta['welfare']:.3f})")
    return fig
