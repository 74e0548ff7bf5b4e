"""``task=crossplay``: every ordered pair of bargaining policies, as a payoff matrix.

Policies are baseline names (``random``, ``always_walk``, ``greedy``, ``fair_split``) or run
directories of trained bargaining runs. Writes ``crossplay.json`` (``{"policies": [...], "p1": M,
"p2": M, "welfare": M, "agreement_rate": M, "walk_rate": M}``, ``M[i][j]`` = policy i as P1
against policy j as P2), ``crossplay.csv`` (one row per ordered pair) and a welfare heatmap
``crossplay.png`` into the run directory.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from dgsolve.artifacts import atomic_write_bytes, atomic_write_json
from dgsolve.errors import ConfigError, RunDirError
from dgsolve.eval.bargain import seated
from dgsolve.eval.crossplay import crossplay_matrix
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
    table = run_crossplay(cfg, ctx.dir, ctx.device)
    print_crossplay(table)
    print(f"dgsolve: cross-play table written to {ctx.dir}/crossplay.{{json,csv,png}}")
    return {"crossplay": table}


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
    Console().print(out)


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = table["policies"]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 1.3 * len(names) + 1.5))
    image = ax.imshow(table["welfare"], cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("as P2")
    ax.set_ylabel("as P1")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{table['welfare'][i][j]:.2f}", ha="center", va="center", color="w")
    fig.colorbar(image, ax=ax, label="welfare (P1 + P2, normalised)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
