"""``run(cfg, run_dir)``: one lifecycle for every task.

In order: a ``resume=`` is resolved to the run it continues (its own config, with the overrides
that are safe to change on resume), every option is validated, the device is resolved, the run
directory is checked and locked (one run per directory), SIGINT/SIGTERM are guarded, and the task
(:mod:`dgsolve.tasks`) runs. Nothing here knows what a task does.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from dgsolve import lock, memory, tasks
from dgsolve.errors import ConfigError, Interrupted, RunDirError
from dgsolve.results.index import record_run
from dgsolve.rundir import (
    SAFE_ON_RESUME,
    confirmed_factory,
    load_policies,
    load_run_config,
    save_run_config,
)
from dgsolve.validation import check_device

__all__ = [
    "run",
    "load_policies",
    "load_run_config",
    "resolve_device",
    "SignalGuard",
    "SAFE_ON_RESUME",
]


def resolve_device(hardware) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a user error."""
    name = check_device(hardware)
    if hardware.threads and hardware.threads > 0:
        torch.set_num_threads(int(hardware.threads))
    return torch.device(name)


class SignalGuard:
    """SIGINT/SIGTERM for a run's whole life.

    While training, the first signal is recorded and :meth:`check` raises
    :class:`~dgsolve.errors.Interrupted` between iterations (where a checkpoint is consistent);
    a second signal raises at once. After :meth:`start_raising` (evaluation, plots, rendering)
    every signal raises at once, so those stages stop and the run records what is missing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: list[int] = []
        self.raising = False
        self.between_iterations = True

    def _handler(self, signum, _frame) -> None:
        self.received.append(signum)
        if self.raising or len(self.received) > 1:
            self.between_iterations = False
            raise Interrupted(signum)

    def check(self) -> None:
        """Raise where a signal came since the last check (a consistent point of training)."""
        if self.received:
            self.between_iterations = True
            raise Interrupted(self.received[0])

    def start_raising(self) -> Interrupted | None:
        """From now on a signal raises at once; returns the signal that came before, if any."""
        self.raising = True
        return Interrupted(self.received[0]) if self.received else None

    def stop_raising(self) -> None:
        self.raising = False

    @staticmethod
    def name(signum: int) -> str:
        try:
            return signal.Signals(signum).name
        except ValueError:
            return f"signal {signum}"

    @contextmanager
    def installed(self):
        previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def run(cfg: DictConfig, run_dir: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Run the configured task (or resume a run) and write every artifact into ``run_dir``.

    ``overrides`` are the command line's (Hydra's ``overrides.task``); on ``resume=`` only those
    in :data:`SAFE_ON_RESUME` are accepted and applied to the resumed run's own config.
    Returns the summary the task wrote.
    """
    guard = SignalGuard()
    with guard.installed():
        resumed, changed = False, []
        if cfg.get("resume"):
            run_dir, cfg, changed = resume_target(cfg, overrides)
            resumed = True
        lock.door_check(cfg)
        task = tasks.get(str(cfg.task.name))
        if resumed and not getattr(task, "RESUMABLE", False):
            raise RunDirError(f"task={cfg.task.name} runs cannot be resumed; start a new one")
        device = resolve_device(cfg.hardware)
        path = lock.prepare_dir(run_dir)
        path = lock.acquire(path)
        indexed, outcome = False, None
        try:
            if not resumed and (marker := lock.holds_run(path)) is not None:
                raise RunDirError(
                    f"run directory '{path}' already holds a run ({marker}); continue it with "
                    f"resume={path} or choose another directory"
                )
            if not resumed or changed:  # a plain resume runs on the saved config as it is
                save_run_config(path, cfg)
            indexed = bool((cfg.get("logger") or {}).get("index", True))
            if indexed:
                record_run(path, fallback="running", overrides=list(overrides))
            ctx = tasks.RunContext(cfg, path, device, guard, resumed, changed, list(overrides))
            try:
                return task.execute(ctx)
            except (MemoryError, RuntimeError) as err:  # torch's OutOfMemoryError among them
                oom = memory.allocation_failure(err, cfg)
                if oom is None:
                    raise
            raise oom  # outside the handler, so the failed allocation's frames are let go first
        except Interrupted:
            outcome = "interrupted"
            raise
        except BaseException:
            outcome = "failed"
            raise
        finally:
            lock.release(path)
            if indexed:
                record_run(path, fallback=outcome, overrides=list(overrides))


def resume_target(cfg: DictConfig, overrides) -> tuple[Path, DictConfig, list[str]]:
    """The directory and config a ``resume=`` continues, with the safe overrides applied."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    resume_dir = Path(cfg.resume).expanduser().resolve()
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    confirmed = confirmed_factory(overrides)
    saved = load_run_config(resume_dir, factory=confirmed)
    # logging is the caller's choice, not the directory's (a config from elsewhere could
    # otherwise send this run's metrics to someone else's W&B project)
    saved.logger = cfg.logger
    changed: list[str] = []
    for override in parsed:
        key = override.key_or_group
        if key == "resume" or key.startswith("hydra.") or key == "hydra":
            continue
        if key == "env.factory" and confirmed == str(saved.env.get("factory")):
            continue  # the caller confirms the factory the run was trained with
        if key not in SAFE_ON_RESUME:
            raise ConfigError(
                f"'{override.input_line}' cannot change on resume=; a resumed run keeps its own "
                f"config except {', '.join(SAFE_ON_RESUME)}"
            )
        value = OmegaConf.select(cfg, key)
        if key == "algo.total_timesteps":
            before = int(OmegaConf.select(saved, key))
            if int(value) < before:
                raise ConfigError(
                    f"algo.total_timesteps={value} is below the run's budget of {before}; a "
                    "resumed run can only train on (a larger budget) or keep its own"
                )
        OmegaConf.update(saved, key, value, merge=False)
        changed.append(key)
    saved.resume = None
    return resume_dir, saved, changed
