"""Reading run directories: their config, checkpoints and policies, as data that never runs code.

Run directories are shared between people, so everything read from one is untrusted:
``torch.load`` always uses ``weights_only=True`` (tensors, numbers, strings and plain containers
only; a pickle that would build any other object is refused), and a file that is truncated,
corrupt, or written for another game, algo or network shape gives one line that names the file
and the reason (:class:`~dgsolve.errors.RunDirError`, exit 2) instead of a torch traceback.

A run keeps its own resolved copy of its config, ``run_config.yaml``, beside Hydra's
``.hydra/config.yaml``: it is what ``resume=`` and :func:`load_policies` read (Hydra's copy is the
fallback for older runs), and it records the overrides a ``resume=`` applied.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dgsolve import games, solvers
from dgsolve.artifacts import atomic_write_bytes
from dgsolve.errors import DGSolveError, RunDirError
from dgsolve.hierarchy import Hierarchy

RUN_CONFIG = "run_config.yaml"
CHECKPOINT_VERSION = 2


def load_run_config(run_dir: Path | str) -> DictConfig:
    """An earlier run's config: its ``run_config.yaml``, else its ``.hydra/config.yaml``."""
    if not OmegaConf.has_resolver("dgsolve.prod"):  # older runs' configs hold interpolations
        from dgsolve.config import register_configs

        register_configs()
    root = Path(run_dir).expanduser().resolve()
    for path in (root / RUN_CONFIG, root / ".hydra" / "config.yaml"):
        if path.is_file():
            try:
                cfg = OmegaConf.load(path)
            except Exception as err:  # yaml errors have many types; all mean a damaged file
                raise RunDirError(f"{path} is not a readable config ({_first_line(err)})") from None
            if not isinstance(cfg, DictConfig) or not {"env", "algo", "task"} <= set(cfg):
                raise RunDirError(f"{path} is not a dgsolve run config (no env/algo/task)")
            return cfg
    raise RunDirError(f"'{run_dir}' is not a dgsolve run directory (no {RUN_CONFIG})")


def save_run_config(run_dir: Path, cfg: DictConfig) -> None:
    """Write the run's own resolved copy of its config, atomically."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    atomic_write_bytes(Path(run_dir) / RUN_CONFIG, text.encode())


def load_tensors(path: Path | str, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; refused or damaged files give one line."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found is None:  # bytes a weights-only load cannot read: damage, or foreign opcodes
            raise RunDirError(
                f"{path}: the {what} is damaged or not a torch file of plain tensor data"
            ) from None
        raise RunDirError(
            f"{path}: refused to load the {what}: it holds objects other than tensors and plain "
            f"data ({found.group(1)}), and loading it could run code"
        ) from None
    except FileNotFoundError:
        raise RunDirError(f"{path}: the {what} is missing") from None
    except Exception as err:  # truncated zips, random bytes, ...: torch raises many types
        raise RunDirError(
            f"{path}: the {what} is damaged or not a torch file ({_first_line(err)})"
        ) from None


def run_identity(cfg: DictConfig, game, hierarchy: Hierarchy) -> dict:
    """What a checkpoint must match to be loaded into a run: the algo, game, agents and tiers."""
    return {
        "algo": str(cfg.algo.name),
        "solver": str(cfg.algo.solver),
        "env": str(cfg.env.get("factory") or cfg.env.name),
        "agents": list(game.agents),
        "tiers": [list(t) for t in hierarchy.tiers],
    }


def load_checkpoint(path: Path, identity: dict) -> dict:
    """A checkpoint written by :mod:`dgsolve.tasks.train`, checked against ``identity``."""
    state = load_tensors(path, "checkpoint")
    if not isinstance(state, dict) or not {"solver", "history", "wall_time_s"} <= set(state):
        raise RunDirError(f"{path} is not a dgsolve checkpoint (no solver/history/wall_time_s)")
    version = state.get("version")
    if version != CHECKPOINT_VERSION:
        raise RunDirError(
            f"{path} has checkpoint version {version}; this dgsolve reads version "
            f"{CHECKPOINT_VERSION} (start a new run, or resume with the dgsolve that wrote it)"
        )
    saved = state.get("identity", {})
    for key, want in identity.items():
        if saved.get(key) != want:
            raise RunDirError(
                f"{path} was written for {key}={saved.get(key)!r}, but this run has "
                f"{key}={want!r}; a checkpoint only resumes the run that wrote it"
            )
    return state


def restore(load, state: Any, path: Path) -> None:
    """``load(state)`` (a ``load_state_dict``), where a mismatch (shapes, keys) becomes one line
    naming ``path``."""
    try:
        load(state)
    except DGSolveError:
        raise
    except Exception as err:
        raise RunDirError(
            f"{path} does not fit this run's networks or game ({_first_line(err)})"
        ) from None


def load_policies(run_dir: Path | str, device: torch.device | str = "cpu", num_envs: int = 1):
    """Rebuild a finished run's trained policies from its config and ``policy.pt`` alone.
    Returns ``(joint_policy, cfg)``; the JointPolicy plays every agent."""
    run_dir = Path(run_dir).expanduser().resolve()
    cfg = load_run_config(run_dir)
    policy_path = run_dir / "policy.pt"
    if not policy_path.is_file():
        raise RunDirError(f"'{run_dir}' has no policy.pt (did the run finish?)")
    device = torch.device(device)
    env_cfg = OmegaConf.merge(cfg.env, {"num_envs": num_envs})
    game = games.make(env_cfg, device)
    try:
        hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
        solver = solvers.make(cfg.algo, game, hierarchy, device, cfg.seed)
        state = load_tensors(policy_path, "policy", map_location=device)
        restore(solver.load_policy_state, state, policy_path)
    finally:
        game.close()
    return solver.joint_policy(), cfg


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
