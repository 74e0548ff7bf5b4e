"""Everything a run writes: TensorBoard, history.json/.npz, checkpoints, summary, plots, GIF.

All files go under one run directory (Hydra's output directory) and are written atomically: to a
temporary file in the same directory, then renamed, so an interrupted run never leaves a torn
file behind.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dgsolve.errors import DiskWriteError

SMOOTHING = 0.9  # weight of the past in the smoothed return curve


def file_mode() -> int:
    """The mode a plainly created file gets: ``0o666`` less the process's umask (``0o644``
    under the usual ``022``). Read from ``/proc/self/status`` where Linux gives it, so no
    thread sees a changed umask; elsewhere by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over
    ``path``: readers see the old file or the new one, never a torn one. The file gets the mode
    of a plainly created one (:func:`file_mode`; ``mkstemp`` alone makes it ``0600``, unreadable
    by the group that shares the results). An OS error (a full disk, a vanished or read-only
    directory) becomes :class:`~dgsolve.errors.DiskWriteError`."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise DiskWriteError(
            f"cannot write {path}: {err.strerror or err}; the files written before it (the last "
            "complete checkpoint among them) are intact"
        ) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(_jsonable(obj), indent=2) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def versions() -> dict[str, str]:
    """The versions of dgsolve, Python and the packages a run's results depend on."""
    import importlib.metadata as md
    import platform

    from dgsolve import __version__

    out = {"dgsolve": __version__, "python": platform.python_version()}
    for pkg in ("torch", "pettingzoo", "mpe2", "hydra-core", "numpy", "triton"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def _jsonable(obj: Any) -> Any:
    """Plain JSON: tensors and arrays to lists, non-finite floats to null."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, np.integer)):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class History:
    """Episode returns per agent and per-update losses, keyed by environment step."""

    def __init__(self, agents: tuple[str, ...]):
        self.agents = agents
        self.episodes: dict[str, Any] = {"env_step": [], "returns": {a: [] for a in agents}}
        self.updates: dict[str, dict[str, list[float]]] = {}
        self.evaluations: dict[str, list[float]] = {}

    def add_episode(self, env_step: int, returns: dict[str, float]) -> None:
        self.episodes["env_step"].append(env_step)
        for a in self.agents:
            self.episodes["returns"][a].append(returns[a])

    def add_update(self, learner: str, env_step: int, losses: dict[str, float]) -> None:
        rec = self.updates.setdefault(learner, {"env_step": []})
        rec["env_step"].append(env_step)
        for k, v in losses.items():
            rec.setdefault(k, []).append(v)

    def add_evaluation(self, env_step: int, values: dict[str, float]) -> None:
        self.evaluations.setdefault("env_step", []).append(env_step)
        for k, v in values.items():
            self.evaluations.setdefault(k, []).append(v)

    def state_dict(self) -> dict:
        return {"episodes": self.episodes, "updates": self.updates, "evaluations": self.evaluations}

    def load_state_dict(self, state: dict) -> None:
        self.episodes = state["episodes"]
        self.updates = state["updates"]
        self.evaluations = state.get("evaluations", {})

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat numeric arrays for history.npz (``episodes/returns/<agent>`` and so on)."""
        out = {"episodes/env_step": np.asarray(self.episodes["env_step"], dtype=np.int64)}
        for a, v in self.episodes["returns"].items():
            out[f"episodes/returns/{a}"] = np.asarray(v, dtype=np.float64)
        for learner, rec in self.updates.items():
            for k, v in rec.items():
                dtype = np.int64 if k == "env_step" else np.float64
                out[f"updates/{learner}/{k}"] = np.asarray(v, dtype=dtype)
        for k, v in self.evaluations.items():
            out[f"evaluations/{k}"] = np.asarray(v, dtype=np.float64)
        return out


class RunArtifacts:
    """The run directory and its writers."""

    def __init__(
        self,
        run_dir: Path | str,
        agents: tuple[str, ...],
        tensorboard: bool = True,
        mirror: Any = None,
    ):
        """``mirror``, where given (an object with ``scalar(tag, value, step)`` and ``close()``),
        gets every scalar TensorBoard gets, same tag and step, and is closed with the run
        (:func:`dgsolve.wandb_mirror.from_config` makes the W&B one)."""
        self.dir = Path(run_dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.history = History(agents)
        self._smoothed: dict[str, float] = {}
        self._tensorboard = tensorboard
        self._writer = None  # opened with the first scalar: a run that logs none writes no tb/
        self._mirror = mirror

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoints" / "last.pt"

    # ------------------------------------------------------------------ logging
    def scalar(self, tag: str, value: float, step: int) -> None:
        if value is None or not math.isfinite(value) or not self._tensorboard:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.dir / "tb"))
        self._writer.add_scalar(tag, value, step)
        if self._mirror is not None:
            self._mirror.scalar(tag, value, step)

    def log_episodes(self, episodes: list[tuple[int, dict[str, float]]]) -> None:
        """Every episode goes to the history; TensorBoard gets one point per call (an
        iteration): the mean return of the episodes that finished, and its running EMA."""
        for env_step, returns in episodes:
            self.history.add_episode(env_step, returns)
        if not episodes:
            return
        env_step = episodes[-1][0]
        for a in episodes[0][1]:
            mean = sum(r[a] for _, r in episodes) / len(episodes)
            prev = self._smoothed.get(a)
            self._smoothed[a] = mean if prev is None else SMOOTHING * prev + (1 - SMOOTHING) * mean
            self.scalar(f"charts/episodic_return/{a}", mean, env_step)
            self.scalar(f"charts/smoothed_return/{a}", self._smoothed[a], env_step)

    def log_losses(self, env_step: int, losses: dict[str, dict[str, float]]) -> None:
        for learner, values in losses.items():
            if not values:
                continue
            self.history.add_update(learner, env_step, values)
            for k, v in values.items():
                self.scalar(f"losses/{learner}/{k}", v, env_step)

    def recent_returns(self, window: int = 20) -> dict[str, float]:
        out = {}
        for a, v in self.history.episodes["returns"].items():
            if v:
                tail = v[-window:]
                out[a] = sum(tail) / len(tail)
        return out

    # ------------------------------------------------------------------ files
    def write_history(self) -> None:
        atomic_write_json(self.dir / "history.json", self.history.state_dict())
        buf = io.BytesIO()
        np.savez(buf, **self.history.arrays())
        atomic_write_bytes(self.dir / "history.npz", buf.getvalue())

    def save_checkpoint(self, state: dict) -> None:
        atomic_torch_save(self.checkpoint_path, state)

    def save_policy(self, state: dict) -> None:
        atomic_torch_save(self.dir / "policy.pt", state)

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.dir / "summary.json", summary)

    def write_plots(
        self,
        step_unit: str = "environment steps",
        *,
        algo: str | None = None,
        env: str | None = None,
    ) -> None:
        """``plots/returns.png`` and ``plots/losses.png``; ``step_unit`` names the losses'
        x-axis (a solver's ``global_step``: environment steps, or CFR+ / PSRO iterations), and
        ``algo`` and ``env``, where given, go into the titles."""
        plots = self.dir / "plots"
        plots.mkdir(exist_ok=True)
        _save_fig(returns_figure(self.history, algo=algo, env=env), plots / "returns.png")
        fig = losses_figure(self.history, step_unit, algo=algo, env=env)
        _save_fig(fig, plots / "losses.png")

    def write_gif(self, frames: list[np.ndarray], fps: int = 10) -> None:
        from PIL import Image

        if not frames:
            return
        images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
        buf = io.BytesIO()
        images[0].save(
            buf, format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0
        )
        atomic_write_bytes(self.dir / "rollout.gif", buf.getvalue())

    def close(self) -> None:
        self._tensorboard = False
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
        if self._mirror is not None:
            mirror, self._mirror = self._mirror, None  # closed once, even if closing fails
            mirror.close()


#: PSRO's curves in ``plots/losses.png``, per iteration
PSRO_CURVES = ("nash_conv", "meta_welfare", "population")


def _ema(values: np.ndarray) -> np.ndarray:
    out = np.empty_like(values, dtype=np.float64)
    acc = values[0] if len(values) else 0.0
    for i, v in enumerate(values):
        acc = SMOOTHING * acc + (1 - SMOOTHING) * v if i else v
        out[i] = acc
    return out


def _save_fig(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def returns_figure(history: History, *, algo: str | None = None, env: str | None = None):
    """The figure of ``plots/returns.png``: each agent's mean episodic return per logged step
    (episodes that end in the same step averaged), smoothed by an EMA."""
    from dgsolve.plots import agent_styles, new_figure, title

    fig = new_figure(figsize=(7, 4))
    ax = fig.add_subplot()
    returns = history.episodes["returns"]
    styles = agent_styles(history.agents, returns)
    # episodes that end in the same step (copies finish together) become one point
    steps, first = np.unique(np.asarray(history.episodes["env_step"]), return_index=True)
    for a, v in returns.items():
        if v:
            means = np.add.reduceat(np.asarray(v, dtype=np.float64), first)
            means /= np.diff(np.append(first, len(v)))
            ax.plot(steps, _ema(means), label=a, **styles[a].line(len(steps)))
    if len(steps):
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no episodes logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title("episodic return per agent", algo, env))
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"mean episodic return (EMA {SMOOTHING})")
    fig.tight_layout()
    return fig


def losses_figure(
    history: History,
    step_unit: str = "environment steps",
    *,
    algo: str | None = None,
    env: str | None = None,
):
    """The figure of ``plots/losses.png``: PPO's three curves, or PSRO's (NashConv, the
    meta-game's welfare, the populations), or the first three a solver logs (CFR's
    ``nash_conv``), one curve per learner."""
    from dgsolve.plots import agent_styles, new_figure, title

    logged = {k for rec in history.updates.values() for k in rec if k != "env_step"}
    keys = []
    for preferred in (("policy_loss", "value_loss", "entropy"), PSRO_CURVES):
        keys = keys or [k for k in preferred if k in logged]
    keys = keys or sorted(logged)[:3] or ["policy_loss"]
    styles = agent_styles(history.agents, history.updates)
    fig = new_figure(figsize=(4 * len(keys), 3.8))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=True):
        for learner, rec in history.updates.items():
            if key in rec:
                ax.plot(
                    rec["env_step"], rec[key], label=learner, **styles[learner].line(len(rec[key]))
                )
        ax.set_title(key)
        ax.set_xlabel(step_unit)
    if history.updates:
        axes[0].legend(fontsize="small")
    else:
        axes[0].text(
            0.5, 0.5, "no updates logged", ha="center", va="center", transform=axes[0].transAxes
        )
    fig.suptitle(title("training curves per learner", algo, env))
    fig.tight_layout()
    return fig
