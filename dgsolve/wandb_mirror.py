"""Weights & Biases, opt-in (``logger.wandb=true``): the run's TensorBoard scalars and its config.

:func:`from_config` returns ``None`` unless W&B is switched on, and only then imports ``wandb``,
so a run without it never loads the package. The W&B run lives in the dgsolve run directory
(``<run dir>/wandb``; offline runs are uploaded later with ``wandb sync <run dir>/wandb``), is
named after that directory, and gets the resolved config. ``WANDB_MODE`` (``online``,
``offline``, ``disabled``) chooses where it goes, as it does for any W&B script.

TensorBoard's step is a solver's ``global_step`` (environment steps, or CFR+ / PSRO iterations),
and tags are not always logged in step order; W&B's own step must only grow, so every value is
logged against a separate ``env_step`` metric instead. A ``resume=`` of a run starts a new W&B
run of the same name, with the scalars from the resumed step on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dgsolve.errors import ConfigError

#: the W&B metric every scalar is plotted against (TensorBoard's step)
STEP_METRIC = "env_step"


class WandbMirror:
    """A started W&B run that takes :meth:`RunArtifacts.scalar`'s calls.

    Scalars of one step are gathered into one ``log`` call (one W&B history row per step rather
    than one per tag); the row goes out when a scalar of another step arrives, or on close.
    """

    def __init__(self, run: Any):
        self.run = run
        self._row: dict[str, float] = {}
        self._step: int | None = None

    def scalar(self, tag: str, value: float, step: int) -> None:
        if step != self._step or tag in self._row:
            self._flush()
            self._step = step
        self._row[tag] = float(value)

    def close(self) -> None:
        self._flush()
        self.run.finish()

    def _flush(self) -> None:
        if self._row:
            self.run.log({**self._row, STEP_METRIC: self._step})
            self._row = {}


def from_config(cfg: DictConfig, run_dir: Path | str) -> WandbMirror | None:
    """The W&B mirror a run's config asks for, started, or ``None`` when ``logger.wandb`` is off
    (or the config predates the ``logger`` section). Raises :class:`ConfigError` when W&B is
    asked for but not installed, or cannot start (not logged in, say)."""
    logger = cfg.get("logger") or {}
    if not logger.get("wandb", False):
        return None
    try:
        import wandb
    except ImportError:
        raise ConfigError(
            "logger.wandb=true needs the wandb package: pip install wandb "
            "(or run with logger.wandb=false)"
        ) from None
    run_dir = Path(run_dir).resolve()
    settings = wandb.Settings(
        console="off",  # the terminal stays dgsolve's; no output.log copy
        save_code=False,
        disable_git=True,
        disable_job_creation=True,
        x_disable_stats=True,  # no system-metrics sampler process
        silent=True,
    )
    try:
        run = wandb.init(
            project=logger.get("wandb_project") or "dgsolve",
            entity=logger.get("wandb_entity"),
            name=run_dir.name,
            dir=str(run_dir),
            config=OmegaConf.to_container(cfg, resolve=True),
            mode=os.environ.get("WANDB_MODE") or None,
            settings=settings,
        )
    except Exception as err:  # wandb's errors (no API key, bad mode) share no base class
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"logger.wandb=true but W&B did not start: {first}; log in with `wandb login`, or "
            "set WANDB_MODE=offline to keep the run local"
        ) from None
    run.define_metric(STEP_METRIC)
    run.define_metric("*", step_metric=STEP_METRIC)
    if run.offline:
        print(f"dgsolve: W&B run offline; upload it with `wandb sync {Path(run.dir).parent}`")
    elif not run.disabled:
        print(f"dgsolve: W&B run {run.url}")
    return WandbMirror(run)
