"""What a training run found, said in a few console lines when it ends.

The lines: the evaluation returns of every agent beside those of uniformly random play (the
same episodes' seeds), the equilibrium verdict where the game has a reference, the learned
exploitability (NashConv) where one was computed, and where the artifacts are. They are read
from the run's ``summary.json`` contents, so the console and the file never disagree.
"""

from __future__ import annotations

from pathlib import Path

#: files and folders of a run directory worth naming, in this order
ARTIFACTS = (
    "summary.json",
    "policy.pt",
    "history.json",
    "checkpoints",
    "plots",
    "rollout.gif",
    "tb",
    "policy_table.json",
    "wandb",
)


def report_lines(summary: dict, hierarchy, run_dir: Path | str) -> list[str]:
    """The report of a finished (or partly finished) training run, one string per line."""
    from dgsolve.eval.equilibrium import verdict_line

    lines = [_headline(summary)]
    returns, random = summary.get("returns") or {}, summary.get("random_returns") or {}
    if returns:
        cells = []
        for agent, value in returns.items():
            cell = f"{agent} {value:.3f}"
            if agent in random:
                cell += f" (random {random[agent]:.3f}, {value - random[agent]:+.3f})"
            cells.append(cell)
        episodes = summary.get("eval_episodes")
        lines.append(
            f"  returns      {'; '.join(cells)}"
            + (f" over {episodes} episodes" if episodes else "")
        )
    eq = summary.get("eq") or {}
    if eq:
        lines.append(f"  equilibrium  {verdict_line(eq, hierarchy)}")
    exploit = [f"{k} {eq[k]:.4g}" for k in ("nash_conv", "exploitability") if _number(eq.get(k))]
    if exploit:
        lines.append(f"  exploitable  {', '.join(exploit)} (exact, of the learned policies)")
    bargain = (summary.get("bargain") or {}).get("self_play") or {}
    if _number(bargain.get("welfare")):
        rate = bargain.get("agreement_rate")
        lines.append(
            f"  bargaining   self-play welfare {bargain['welfare']:.3f}"
            + (f", agreement rate {rate:.2f}" if _number(rate) else "")
        )
    missing = summary.get("missing") or {}
    if missing:
        lines.append("  missing      " + "; ".join(f"{k} ({v})" for k, v in missing.items()))
    lines.append(f"  artifacts    {artifact_list(run_dir)}")
    return lines


def print_report(summary: dict, hierarchy, run_dir: Path | str) -> None:
    print("\n".join(report_lines(summary, hierarchy, run_dir)), flush=True)


def artifact_list(run_dir: Path | str) -> str:
    """``<run dir>: summary.json, policy.pt, plots/, ...`` (what exists, folders with ``/``)."""
    root = Path(run_dir)
    names = []
    for name in ARTIFACTS:
        path = root / name
        if path.is_dir():
            names.append(name + "/")
        elif path.is_file():
            names.append(name)
    return f"{root}: {', '.join(names) or 'nothing'}"


def _headline(summary: dict) -> str:
    steps = summary.get("env_steps")
    wall = summary.get("wall_time_s")
    status = summary.get("status", "finished")
    parts = [f"dgsolve: {status}: {summary.get('algo', '?')} on {summary.get('env', '?')}"]
    if _number(steps) and steps:
        parts.append(f"{int(steps):,} environment steps")
    if _number(wall):
        parts.append(f"{wall:.1f} s")
    return ", ".join(parts)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
