"""One run per directory: a lock held for the run's whole life, checked before Hydra writes.

A run holds an exclusive ``flock`` on ``<run dir>/.dgsolve.lock`` (released by the kernel when the
process ends, however it ends), so a second run or a ``resume=`` into a directory in use is refused
with one line instead of mixing its files into the live run's. Hydra writes ``.hydra/`` into the
output directory before the task function starts, so :class:`RunDirCallback` (registered in
``conf/config.yaml`` under ``hydra.callbacks``) takes the lock, and checks that the directory can be
written and does not already hold a run, in ``on_run_start``: before Hydra touches the directory.
It also runs the checks of :func:`door_check` first (every option's range, a training budget below
one iteration), so a run refused at the door leaves no directory behind. A sweep (``-m``) is
refused the same way in ``on_multirun_start``: every job of Hydra's basic sweeper, whichever
launcher runs it, is composed and checked before the sweep directory or any job directory exists
(the sweeper, not the launcher, decides the job list). Other sweepers choose their values as
they go: each of their jobs is checked as it starts (:mod:`dgsolve.cli`), and one refused leaves
no directory. ``on_multirun_end`` ends the command with one line naming the sweep's failed jobs
(:func:`dgsolve.launchers.sweep_outcome`). The lock is re-entrant within one process (the
callback and :func:`dgsolve.run.run` both take it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from dgsolve import launchers
from dgsolve.errors import DGSolveError, OutputError, RunDirError

LOCK_NAME = ".dgsolve.lock"

#: files whose presence means a directory already holds a dgsolve run (Hydra's own ``.hydra/``
#: alone does not: a run refused at validation leaves only that)
RUN_MARKERS = ("summary.json", "history.json", "checkpoints/last.pt", "crossplay.json")

_held: dict[Path, tuple[int, int]] = {}  # directory -> (fd, depth)


def door_check(cfg) -> None:
    """Refuse, from its composed config alone, a run that would refuse itself once started:
    every option's range (:func:`dgsolve.validation.validate`), a game that could not be built
    from its config (:func:`dgsolve.games.check_config`), a training budget below one iteration
    (:func:`dgsolve.solvers.check_budget`) and a device that is not there. Raises the run's
    one-line error."""
    from dgsolve.games import check_config
    from dgsolve.solvers import check_budget
    from dgsolve.validation import check_device, validate

    validate(cfg)
    check_config(cfg.env)
    check_budget(cfg)
    check_device(cfg.hardware)


def prepare_dir(path: Path | str) -> Path:
    """Create ``path`` (and parents) and prove it can be written: one line, exit 2, otherwise."""
    path = Path(path).expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".dgsolve-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason, fix = err.strerror or type(err).__name__, ""
        if isinstance(err, (NotADirectoryError, FileExistsError)) or err.errno == errno.ENOTDIR:
            reason = "a path component is a file, not a directory"
        link = _dangling_link(path)
        if link is not None:
            target = link.parent / os.readlink(link)
            which = "it" if link == path else f"'{link}'"
            reason = f"{which} is a symbolic link to a missing path, '{target}'"
            fix = f"create '{target}' or "
        raise OutputError(
            f"cannot write the run directory '{path}': {reason}; {fix}choose another hydra.run.dir"
        ) from None
    return path


def _dangling_link(path: Path) -> Path | None:
    """``path`` or the first of its parents that is a symbolic link to a missing path."""
    for candidate in (path, *path.parents):
        try:
            if candidate.is_symlink() and not candidate.exists():
                return candidate
        except OSError:  # a name too long, a loop: not a dangling link
            continue
    return None


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
    fd = _open_lock(path, os.O_RDWR | os.O_CREAT)
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
        fd = _open_lock(path, os.O_RDONLY)
    except FileNotFoundError:
        return False  # never locked
    except RunDirError:
        return False  # not a lock file a run could hold (a FIFO, a link)
    except OSError:
        return True  # cannot be probed: a live run is never called dead
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True  # e.g. EBADF for an exclusive probe on NFS: as above
    finally:
        os.close(fd)  # closing drops a probe lock this call took
    return False


def _open_lock(path: Path, flags: int) -> int:
    """Open ``path``'s lock file without blocking on, or following, what a hostile directory may
    hold there (a FIFO, a symbolic link); anything but a regular file is one line."""
    what = None
    try:
        fd = os.open(path / LOCK_NAME, flags | os.O_NONBLOCK | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        what = "a symbolic link"
    else:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            what = "not a regular file"
    if what is not None:
        raise RunDirError(
            f"'{path / LOCK_NAME}' is {what}; it is not a lock dgsolve wrote (remove it, or "
            "choose another directory)"
        )
    return fd


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

        HydraConfig.instance().set_config(config)
        try:
            if not config.get("resume"):
                door_check(config)  # a run refused at the door leaves no directory behind
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
        """Check every job of a basic sweep before Hydra creates a directory for any; let an
        optimising sweeper go on past a failed trial; forget an earlier sweep's failures."""
        jobs = None
        if OmegaConf.select(config, "hydra.sweeper._target_") == launchers.BASIC_SWEEPER:
            jobs = self._check_jobs(config)
        else:
            launchers.tolerate_failed_trials(config)
        overrides = [str(o) for o in config.hydra.overrides.task]
        launchers.begin_sweep(str(config.hydra.sweep.dir), overrides, jobs)

    def on_multirun_end(self, config, **kwargs) -> None:
        """End the command with one line naming the failed jobs, if any job failed."""
        outcome = launchers.end_sweep()
        if outcome is not None:
            line, code = outcome
            print(f"dgsolve: error: {line}", file=sys.stderr)
            sys.exit(code)  # a SystemExit passes through Hydra's callback guard

    @staticmethod
    def _check_jobs(config) -> int:
        """Compose and :func:`door_check` every job of a basic sweep, and refuse a job whose
        directory already holds a run; returns the number of jobs."""
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import open_dict

        from dgsolve.cli import COMPOSITION_ERRORS, composition_error

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
                with open_dict(job_config):  # as the basic launcher numbers it
                    job_config.hydra.job.num = num
                    job_config.hydra.job.id = f"job_id_for_{num}"
                HydraConfig.instance().set_config(job_config)
                door_check(job_config)
                marker, path = _job_dir_holds_run(job_config)
                if marker is not None:
                    raise RunDirError(
                        f"the job's directory '{path}' already holds a run ({marker}); choose "
                        "another hydra.sweep.dir"
                    )
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
        return len(jobs)

    def on_run_end(self, config, **kwargs) -> None:
        if self._dir is not None:
            release(self._dir)
            self._dir = None


def _job_dir_holds_run(job_config) -> tuple[str | None, Path | None]:
    """The marker of a run already in a sweep job's directory (a sweep into a directory used
    before), and the directory; ``(None, None)`` where it holds none or cannot be named here."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        sweep = job_config.hydra.sweep
        path = Path(str(sweep.dir), str(sweep.subdir)).absolute()
    except OmegaConfBaseException:  # a subdir naming what only the launcher sets
        return None, None
    return holds_run(path), path
