"""One run per directory: a lock held for the run's whole life, checked before Hydra writes.

A run holds an exclusive ``flock`` on ``<run dir>/.dgsolve.lock`` (released by the kernel when the
process ends, however it ends), so a second run or a ``resume=`` into a directory in use is refused
with one line instead of mixing its files into the live run's. Hydra writes ``.hydra/`` into the
output directory before the task function starts, so :class:`RunDirCallback` (registered in
``conf/config.yaml`` under ``hydra.callbacks``) takes the lock, and checks that the directory can be
written and does not already hold a run, in ``on_run_start``: before Hydra touches the directory.
It also validates every option first, so a run refused at the door leaves no directory behind.
A sweep (``-m``) is refused the same way in ``on_multirun_start``: every job of Hydra's basic
sweeper is composed and validated before the sweep directory or any job directory exists (other
sweepers choose their values as they go; :func:`dgsolve.run.run` validates their jobs).
The lock is re-entrant within one process (the callback and :func:`dgsolve.run.run` both take it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from dgsolve.errors import DGSolveError, OutputError, RunDirError

LOCK_NAME = ".dgsolve.lock"

#: the sweeper whose jobs are all known when the sweep starts
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"

#: files whose presence means a directory already holds a dgsolve run (Hydra's own ``.hydra/``
#: alone does not: a run refused at validation leaves only that)
RUN_MARKERS = ("summary.json", "history.json", "checkpoints/last.pt", "crossplay.json")

_held: dict[Path, tuple[int, int]] = {}  # directory -> (fd, depth)


def prepare_dir(path: Path | str) -> Path:
    """Create ``path`` (and parents) and prove it can be written: one line, exit 2, otherwise."""
    path = Path(path).expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".dgsolve-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        if isinstance(err, (NotADirectoryError, FileExistsError)) or err.errno == errno.ENOTDIR:
            reason = "a path component is a file, not a directory"
        raise OutputError(
            f"cannot write the run directory '{path}': {reason}; choose another hydra.run.dir"
        ) from None
    return path


def holds_run(path: Path) -> str | None:
    """The marker file that shows ``path`` already holds a run, or None."""
    for name in RUN_MARKERS:
        if (path / name).exists():
            return name
    return None


def acquire(path: Path | str) -> Path:
    """Take (or re-enter) the lock of run directory ``path``; refuse if another process holds it."""
    path = Path(path).expanduser().resolve()
    if path in _held:
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
        return path
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunDirError(
            f"run directory '{path}' is in use by a live run (pid {owner}); wait for it to end or "
            "choose another hydra.run.dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held[path] = (fd, 1)
    return path


def is_held(path: Path | str) -> bool:
    """Whether a live process (this one included) holds the lock of run directory ``path``."""
    path = Path(path).expanduser().resolve()
    if path in _held:
        return True
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False  # never locked
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a probe lock this call took
    return False


def release(path: Path | str) -> None:
    path = Path(path).expanduser().resolve()
    if path not in _held:
        return
    fd, depth = _held[path]
    if depth > 1:
        _held[path] = (fd, depth - 1)
        return
    del _held[path]
    os.close(fd)  # closing the last descriptor drops the flock


class RunDirCallback(Callback):
    """Hydra callback: lock and check the run directory before Hydra writes ``.hydra/`` there.

    In single-run mode the directory is resolved once here and pinned in the config (its default
    contains ``${now:...}``, which could otherwise resolve to another second in Hydra's own
    ``run_job``). A ``resume=`` run writes into the resumed directory, which
    :func:`dgsolve.run.run` locks itself; multirun jobs get fresh directories and are locked there.
    """

    def __init__(self) -> None:
        self._dir: Path | None = None

    def on_run_start(self, config, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import read_write

        from dgsolve.validation import validate

        HydraConfig.instance().set_config(config)
        try:
            if not config.get("resume"):
                validate(config)  # a run refused at the door leaves no directory behind
            path = prepare_dir(str(config.hydra.run.dir))
            if not config.get("resume"):
                marker = holds_run(path)
                if marker is not None:
                    raise RunDirError(
                        f"run directory '{path}' already holds a run ({marker}); continue it with "
                        f"resume={path} or choose another hydra.run.dir"
                    )
            self._dir = acquire(path)
        except DGSolveError as err:
            print(f"dgsolve: error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
        with read_write(config.hydra.run):
            config.hydra.run.dir = str(path)

    def on_multirun_start(self, config, **kwargs) -> None:
        """Validate every job of a basic sweep before Hydra creates a directory for any."""
        if OmegaConf.select(config, "hydra.sweeper._target_") != BASIC_SWEEPER:
            return
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from dgsolve.cli import COMPOSITION_ERRORS, composition_error
        from dgsolve.validation import validate

        loader = GlobalHydra.instance().config_loader()
        params = config.hydra.sweeper.params or {}
        arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
        overrides = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        for num, job in enumerate(jobs):
            try:
                job_config = loader.load_sweep_config(config, list(job))
                if job_config.get("resume"):
                    continue  # the resumed run's own config is checked when the job starts
                HydraConfig.instance().set_config(job_config)
                validate(job_config)
            except (DGSolveError, *COMPOSITION_ERRORS) as err:
                # Hydra turns a callback's exception into a warning and goes on: exit here
                reason = composition_error(err) if isinstance(err, COMPOSITION_ERRORS) else err
                print(
                    f"dgsolve: error: {reason} (sweep job #{num}: {' '.join(job)}); "
                    f"none of the {len(jobs)} jobs was started",
                    file=sys.stderr,
                )
                sys.exit(getattr(err, "exit_code", 2))
        HydraConfig.instance().set_config(config)

    def on_run_end(self, config, **kwargs) -> None:
        if self._dir is not None:
            release(self._dir)
            self._dir = None
