"""One job of a sweep: its share of the machine, and what becomes of it when it fails.

**Threads.** The share of the machine a job gets comes from the Hydra launcher that runs it.

With ``hardware.threads=0`` (the default) a single run uses every core; a job of a parallel
sweep uses its launcher's share instead, so concurrent jobs do not fight over the cores (torch's
default would start a full-size thread pool in every job):

- ``hydra/launcher=joblib``: the cores divided by ``hydra.launcher.n_jobs`` (-1: one job per
  core), at least one;
- ``submitit_local`` / ``submitit_slurm``: ``hydra.launcher.cpus_per_task`` where set (SLURM's
  ``SLURM_CPUS_PER_TASK`` otherwise);
- ``ray``: ``hydra.launcher.ray.remote.num_cpus`` where set (Ray's own resources otherwise);
- the basic launcher runs one job at a time: every core.

**Failures.** A job that fails does not end the sweep (:meth:`SweepJob.failed`): it prints its
one line naming the job, leaves a record in ``<sweep dir>/failed_jobs/<num>.json``, and the next
job runs. A job that started keeps its directory and its "failed" row in the results index (and
a fault's traceback in its ``errors.log``); a job refused before it started (an option out of
range, a budget below one iteration) leaves neither, its directory removed while it holds
nothing but Hydra's ``.hydra/`` and log. The sweep's own process reads the records when the
sweep ends (they reach it from joblib workers, submitit and Ray jobs alike, through the sweep
directory) and ends the command with one line naming every failed job and a non-zero status
(:func:`sweep_outcome`). Hydra's basic sweeper only runs its list of jobs, so a failed job
returns normally; an optimising sweeper (Optuna) is told the trial failed by an exception, and
``hydra.sweeper.max_failure_rate`` is raised to 1 (unless the command line sets it), so that one
failed trial does not end the study.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: where a sweep's failed jobs leave their records, one ``<job num>.json`` each
FAILED_JOBS = "failed_jobs"

#: Hydra's sweeper that runs a list of jobs fixed in advance (and ignores what they return)
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"

#: what Hydra writes into a job's directory before the job starts (besides ``<job name>.log``)
HYDRA_FILES = frozenset({"config.yaml", "hydra.yaml", "overrides.yaml"})


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _get(node, dotted: str):
    for part in dotted.split("."):
        if node is None:
            return None
        try:
            node = node.get(part) if hasattr(node, "get") else getattr(node, part, None)
        except Exception:  # a missing key of a structured launcher config
            return None
    return node


def job_threads(hydra_cfg, cores: int | None = None) -> int | None:
    """Threads for one job under ``hydra_cfg``'s launcher; None: leave torch's default."""
    cores = cores or cpu_count()
    mode = str(_get(hydra_cfg, "mode") or "")
    if not mode.endswith("MULTIRUN"):
        return None
    target = str(_get(hydra_cfg, "launcher._target_") or "")
    if "joblib" in target.lower():
        n_jobs = int(_get(hydra_cfg, "launcher.n_jobs") or -1)
        n_jobs = cores if n_jobs <= 0 else n_jobs
        return max(1, cores // max(1, n_jobs))
    if "submitit" in target.lower():
        cpus = _get(hydra_cfg, "launcher.cpus_per_task") or os.environ.get("SLURM_CPUS_PER_TASK")
        return max(1, int(cpus)) if cpus else None
    if "ray" in target.lower():
        cpus = _get(hydra_cfg, "launcher.ray.remote.num_cpus")
        return max(1, int(cpus)) if cpus else None
    return None


def apply_job_threads(cfg, hydra_cfg) -> int | None:
    """Set torch's thread count to :func:`job_threads` where ``hardware.threads`` is 0."""
    if int(cfg.hardware.get("threads") or 0) > 0:
        return None
    threads = job_threads(hydra_cfg)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return threads


# --------------------------------------------------------------------------- failed jobs
class JobFailed(Exception):
    """Raised to an optimising sweeper (Optuna) for a failed job, so it records a failed trial;
    the job has printed its line and left its record already."""


@dataclass(frozen=True)
class SweepJob:
    """One job of a sweep, as the process that runs it sees it (:meth:`current`)."""

    num: int
    overrides: tuple[str, ...]
    dir: Path
    sweep_dir: Path
    log_name: str  # Hydra's job log in the job's directory
    basic: bool  # Hydra's basic sweeper: the job list was checked before the sweep started

    @classmethod
    def current(cls, hydra_cfg) -> SweepJob | None:
        """The job ``hydra_cfg`` (Hydra's config of the running job) describes; None for a
        single run."""
        if not str(_get(hydra_cfg, "mode") or "").endswith("MULTIRUN"):
            return None
        return cls(
            num=int(hydra_cfg.job.num),
            overrides=tuple(str(o) for o in hydra_cfg.overrides.task),
            dir=Path(hydra_cfg.runtime.output_dir),
            sweep_dir=Path(str(hydra_cfg.sweep.dir)).absolute(),
            log_name=f"{hydra_cfg.job.name}.log",
            basic=str(_get(hydra_cfg, "sweeper._target_")) == BASIC_SWEEPER,
        )

    def failed(self, err: BaseException) -> None:
        """Report ``err`` as this job's failure and let the sweep go on: one line on stderr,
        the traceback of a fault in ``errors.log``, the record for the end of the sweep.
        Returns (basic sweeper) or raises :class:`JobFailed` (a sweeper that reads results)."""
        from dgsolve.errors import DGSolveError

        user = isinstance(err, DGSolveError)
        reason = str(err) if user else f"{type(err).__name__}: {_first_line(err)}"
        exit_code = int(err.exit_code) if user else 1
        directory: Path | None = self.dir
        line = f"sweep job #{self.num} ({' '.join(self.overrides)}): {reason}"
        if user and self._holds_only_hydra_files():
            shutil.rmtree(self.dir, ignore_errors=True)  # refused before it started
            directory = None
        elif not user:  # a fault: its traceback is kept, wherever it struck
            line += f" (traceback in {self.dir / 'errors.log'})"
            _append_traceback(self.dir / "errors.log", err)
        print(f"dgsolve: error: {line}", file=sys.stderr)
        record = {
            "num": self.num,
            "overrides": list(self.overrides),
            "error": reason,
            "exit_code": exit_code,
            "dir": None if directory is None else str(directory),
            "traceback": directory is not None and not user,
        }
        from dgsolve.artifacts import atomic_write_json

        atomic_write_json(self.sweep_dir / FAILED_JOBS / f"{self.num}.json", record)
        if not self.basic:
            raise JobFailed(line)
        return None

    def _holds_only_hydra_files(self) -> bool:
        try:
            entries = {p.name: p for p in self.dir.iterdir()}
            if set(entries) - {".hydra", self.log_name}:
                return False
            hydra_dir = entries.get(".hydra")
            return hydra_dir is None or {p.name for p in hydra_dir.iterdir()} <= HYDRA_FILES
        except OSError:  # no directory, or not one
            return False


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"


def _append_traceback(path: Path, err: BaseException) -> None:
    """Add ``err``'s traceback to the run's ``errors.log`` (which the run may have begun)."""
    from dgsolve.artifacts import atomic_write_bytes

    try:
        before = path.read_bytes()
    except OSError:
        before = b""
    text = "".join(traceback.format_exception(err))
    try:
        atomic_write_bytes(path, before + f"--- run\n{text}".encode())
    except Exception:  # the job's line and record still say what failed
        pass


#: the sweep this process runs (:func:`begin_sweep`): its directory, the command line's
#: overrides and its number of jobs where known in advance
_sweep: dict = {}


def begin_sweep(sweep_dir: Path | str, overrides: Sequence[str], jobs: int | None) -> None:
    """Remember the sweep this process starts, and forget the failed-job records an earlier
    sweep into the same directory left (that sweep's command has reported them)."""
    path = Path(sweep_dir).absolute()
    shutil.rmtree(path / FAILED_JOBS, ignore_errors=True)
    _sweep.update(sweep_dir=path, common=tuple(overrides), jobs=jobs)


def end_sweep() -> tuple[str, int] | None:
    """:func:`sweep_outcome` of the sweep this process started; None without failures."""
    return sweep_outcome(**_sweep) if _sweep else None


def tolerate_failed_trials(config) -> None:
    """Let an optimising sweeper (Optuna's ``max_failure_rate``, 0 by default: the first
    failed trial ends the study) go on past failed trials, unless the command line sets it."""
    from omegaconf import OmegaConf, open_dict, read_write

    sweeper = config.hydra.sweeper
    if "max_failure_rate" not in sweeper:
        return
    given = OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False)  # as typed
    named = [str(o).lstrip("+~").split("=", 1)[0] for o in given]
    if "hydra.sweeper.max_failure_rate" in named:
        return
    with read_write(sweeper), open_dict(sweeper):
        sweeper.max_failure_rate = 1.0


def failures(sweep_dir: Path | str) -> list[dict]:
    """The records the sweep's failed jobs left, by job number."""
    found = []
    for path in (Path(sweep_dir).absolute() / FAILED_JOBS).glob("*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda r: r.get("num", math.inf))


def sweep_outcome(
    sweep_dir: Path | str, common: Sequence[str] = (), jobs: int | None = None
) -> tuple[str, int] | None:
    """One line naming every failed job of the sweep and the command's exit status, or None
    when no job failed. The status is the one the failed jobs would have had as single runs
    where they all agree (2: every failure was a user mistake; 3: every one diverged), and 1
    (a fault) otherwise. ``common``: the command line's overrides, left out of each job's."""
    failed = failures(sweep_dir)
    if not failed:
        return None
    codes = {int(r.get("exit_code", 1)) for r in failed}
    code = codes.pop() if len(codes) == 1 else 1
    shared = _parsed(common)
    parts = []
    for r in failed:
        overrides = r.get("overrides") or []
        own = [o for o in overrides if not _parsed([o]) or not _parsed([o]) <= shared]
        own = own or overrides  # a job that differs in nothing the command line shows
        where = f"in {r['dir']}" if r.get("dir") else "refused, no directory"
        traceback_in = " (traceback in its errors.log)" if r.get("traceback") else ""
        parts.append(f"#{r.get('num')} ({' '.join(own)}) {where}: {r.get('error')}{traceback_in}")
    of = f" of {jobs}" if jobs else ""
    noun = "jobs" if (jobs or len(failed)) > 1 else "job"
    return f"{len(failed)}{of} sweep {noun} failed: {' | '.join(parts)}", code


def _parsed(overrides) -> set[tuple[str, str]]:
    """``(key, value)`` of each plain override (``x=False`` and ``x=false`` alike); sweeps
    (``x=1,2``) are left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = set()
    for text in overrides:
        try:
            (override,) = OverridesParser.create().parse_overrides([str(text)])
        except Exception:
            continue
        if not override.is_sweep_override():
            out.add((override.get_key_element(), repr(override.value())))
    return out
