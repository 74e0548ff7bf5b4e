"""The ``dgsolve`` command: compose the config with Hydra, then ``run(cfg)``.

User mistakes (:class:`~dgsolve.errors.DGSolveError`) print one line and exit with status 2 (3
for a diverged run, 1 for a fault such as a full disk or a failed evaluation), without a
traceback. A signal before the run has started (while Python imports or Hydra composes) ends the
command with one line and status 130 (SIGINT) or 143 (SIGTERM); from the run's first step on,
:class:`dgsolve.run.SignalGuard` handles it.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dgsolve.config import register_configs
from dgsolve.errors import DGSolveError, Interrupted


def config_dir() -> str:
    """``conf/`` shipped inside the package (wheel) or beside it (source checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"dgsolve's conf/ directory is missing (looked in {here})")


register_configs()


def _interrupted_early(signum, _frame) -> None:
    raise Interrupted(signum)


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """One run (one job of a sweep); returns ``task.objective`` for sweepers such as Optuna."""
    from dgsolve.launchers import apply_job_threads
    from dgsolve.results.objective import objective_value
    from dgsolve.run import run

    hydra_cfg = HydraConfig.get()
    try:
        apply_job_threads(cfg, hydra_cfg)  # a parallel sweep's job: its share of the cores
        summary = run(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))
        return objective_value(cfg, summary)
    except DGSolveError as err:
        print(f"dgsolve: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except Interrupted as stop:  # before the run installed its own guard: nothing was written
        print("dgsolve: interrupted before the run started; nothing was trained", file=sys.stderr)
        sys.exit(128 + stop.signum)


def entry() -> None:
    """The console script: signals are handled from the first second (see the module doc)."""
    signal.signal(signal.SIGTERM, _interrupted_early)
    signal.signal(signal.SIGINT, _interrupted_early)
    try:
        main()
    except Interrupted as stop:  # while Hydra composed the config
        print("dgsolve: interrupted before the run started; nothing was trained", file=sys.stderr)
        sys.exit(128 + stop.signum)


if __name__ == "__main__":
    entry()
