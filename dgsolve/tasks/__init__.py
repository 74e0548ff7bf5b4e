"""Tasks: what a run does once :func:`dgsolve.run.run` has validated, locked and guarded it.

Each task module offers ``execute(ctx: RunContext) -> dict`` (the summary it wrote) and declares
``RESUMABLE``. Tasks are found by name in :data:`TASKS`; an unknown name lists the known ones.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from omegaconf import DictConfig

from dgsolve.errors import ConfigError

#: task name -> module path (imported on use, so ``dgsolve --help`` stays fast)
TASKS: dict[str, str] = {
    "train": "dgsolve.tasks.train",
    "crossplay": "dgsolve.tasks.crossplay",
    "exploit": "dgsolve.tasks.exploit",
    "search": "dgsolve.tasks.search",
}


@dataclass
class RunContext:
    """What a task receives: its validated config, its locked directory, its device and the
    signal guard (:class:`dgsolve.run.SignalGuard`).

    ``resumed`` is true for ``resume=``; ``changed`` lists the dotted options a resume overrode;
    ``overrides`` are the command line's (Hydra's ``overrides.task``), for a task that must tell
    an option set there from its default.
    """

    cfg: DictConfig
    dir: Path
    device: torch.device
    signals: Any
    resumed: bool = False
    changed: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)


def get(name: str) -> ModuleType:
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'; known: {sorted(TASKS)}")
    return importlib.import_module(TASKS[name])
