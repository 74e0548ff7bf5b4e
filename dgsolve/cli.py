"""The ``dgsolve`` command: compose the config with Hydra, then ``run(cfg)``.

User mistakes (:class:`~dgsolve.errors.DGSolveError`) print one line and exit with status 2 (3
for a diverged run), without a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dgsolve.config import register_configs
from dgsolve.errors import DGSolveError


def config_dir() -> str:
    """``conf/`` shipped inside the package (wheel) or beside it (source checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"dgsolve's conf/ directory is missing (looked in {here})")


register_configs()


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from dgsolve.run import run

    try:
        run(cfg, HydraConfig.get().runtime.output_dir)
    except DGSolveError as err:
        print(f"dgsolve: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
