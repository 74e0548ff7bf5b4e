"""The share of the machine one job of a sweep gets, from the Hydra launcher that runs it.

With ``hardware.threads=0`` (the default) a single run uses every core; a job of a parallel
sweep uses its launcher's share instead, so concurrent jobs do not fight over the cores (torch's
default would start a full-size thread pool in every job):

- ``hydra/launcher=joblib``: the cores divided by ``hydra.launcher.n_jobs`` (-1: one job per
  core), at least one;
- ``submitit_local`` / ``submitit_slurm``: ``hydra.launcher.cpus_per_task`` where set (SLURM's
  ``SLURM_CPUS_PER_TASK`` otherwise);
- ``ray``: ``hydra.launcher.ray.remote.num_cpus`` where set (Ray's own resources otherwise);
- the basic launcher runs one job at a time: every core.
"""

from __future__ import annotations

import os


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
