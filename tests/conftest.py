"""Shared fixtures: composing configs the way the CLI does, and tiny training budgets."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
from hydra import compose, initialize_config_dir

from dgsolve.cli import config_dir
from dgsolve.config import register_configs

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
# every run the suite starts is recorded in a throwaway results index, never the user's, and
# W&B (opt-in, logger.wandb=true) never reaches the network
os.environ["DGSOLVE_INDEX"] = os.path.join(tempfile.mkdtemp(prefix="dgsolve-test-index-"), "i.db")
os.environ.setdefault("WANDB_MODE", "offline")
register_configs()

#: overrides that make any PPO run finish in a second or two
TINY = [
    "algo.total_timesteps=64",
    "algo.num_steps=16",
    "algo.num_epochs=1",
    "algo.num_minibatches=2",
    "env.num_envs=2",
    "task.eval_episodes=2",
    "task.progress=false",
    "hardware=cpu",
]


def compose_config(overrides: list[str] | tuple[str, ...] = ()):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture
def make_cfg():
    return compose_config


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def through_torch(obj):
    """``obj`` after ``torch.save`` and ``torch.load(weights_only=True)``, as a checkpoint is."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)
