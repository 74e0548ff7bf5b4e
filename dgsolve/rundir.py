"""Reading run directories: their config, checkpoints and policies, as data that never runs code.

Run directories are shared between people, so everything read from one is untrusted:
``torch.load`` always uses ``weights_only=True`` (tensors, numbers, strings and plain containers
only; a pickle that would build any other object is refused), and a file that is truncated,
corrupt, or written for another game, algo or network shape gives one line that names the file
and the reason (:class:`~dgsolve.errors.RunDirError`, exit 2) instead of a torch traceback.

A run keeps its own resolved copy of its config, ``run_config.yaml``, beside Hydra's
``.hydra/config.yaml``: it is what ``resume=`` and :func:`load_policies` read (Hydra's copy is the
fallback for older runs), and it records the overrides a ``resume=`` applied.

The config is untrusted too (:mod:`dgsolve.untrusted`): it is parsed with bounded size and alias
expansion, only pure resolvers are honoured, and it is merged over the typed schema of its
groups (:func:`merge_over_schema`), so a directory written before a key existed loads with that
key's default and a hand-edited value of the wrong type is one line. It never names code that
dgsolve imports: an ``env.factory`` other than those of dgsolve's own env configs is refused
unless the caller confirms it (:func:`check_factory`). A checkpoint stores the resolved config it
was trained with, and :func:`check_resumed_config` refuses a ``resume=`` whose directory config
was changed since, key by key.
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
from dgsolve.untrusted import first_line, load_config

RUN_CONFIG = "run_config.yaml"
CHECKPOINT_VERSION = 2


#: options a ``resume=`` may change: evaluation and logging, the hardware (networks, optimisers
#: and game states are moved to it), and a larger training budget; a checkpoint's stored config
#: is compared with the directory's on every other key
SAFE_ON_RESUME = (
    "task.eval_episodes",
    "task.eval_every",
    "task.eval_games",
    "task.eq_tolerance",
    "task.checkpoint_every",
    "task.progress",
    "task.render",
    "algo.total_timesteps",
    "hardware",
    "hardware.device",
    "hardware.threads",
    "task.objective",
    "logger",
    "logger.wandb",
    "logger.wandb_project",
    "logger.wandb_entity",
    "logger.index",
)
#: keys of a run's config that say nothing about what it computes: never compared on resume
NOT_COMPARED = ("resume",)


def load_run_config(run_dir: Path | str, factory: str | None = None) -> DictConfig:
    """An earlier run's config (its ``run_config.yaml``, else its ``.hydra/config.yaml``), read as
    untrusted data and merged over the typed schema. ``factory``: an ``env.factory`` the caller
    confirmed (named on its own command line); any other factory than dgsolve's own is refused."""
    if not OmegaConf.has_resolver("dgsolve.prod"):  # older runs' configs hold interpolations
        from dgsolve.config import register_configs

        register_configs()
    root = Path(run_dir).expanduser().resolve()
    for path in (root / RUN_CONFIG, root / ".hydra" / "config.yaml"):
        if path.exists() or path.is_symlink():  # a FIFO or device is refused, not skipped
            raw = load_config(path)
            if not {"env", "algo", "task"} <= set(raw) or not all(
                isinstance(raw[k], DictConfig) for k in ("env", "algo", "task")
            ):
                raise RunDirError(f"{path} is not a dgsolve run config (no env/algo/task)")
            cfg = merge_over_schema(raw, path)
            check_factory(cfg, path, factory)
            return cfg
    raise RunDirError(f"'{run_dir}' is not a dgsolve run directory (no {RUN_CONFIG})")


def merge_over_schema(raw: DictConfig, path: Path | str) -> DictConfig:
    """``raw`` merged over the typed schema of each of its groups (:data:`dgsolve.config.SCHEMAS`:
    the env's by name, else by family; the algo's by solver; the task's by name): keys added to
    dgsolve since the run was written take their defaults, and a key or value the schema does
    not allow is one line naming it."""
    from dgsolve.config import SCHEMAS, DGSolveConfig, structured_schema

    def schema(group: str, *names) -> type:
        for name in names:
            if name is not None and str(name) in SCHEMAS[group]:
                return SCHEMAS[group][str(name)]
        raise RunDirError(
            f"{path}: {group} {' / '.join(str(n) for n in names if n is not None)} is not one "
            f"this dgsolve knows ({', '.join(sorted(SCHEMAS[group]))})"
        )

    groups = {
        "env": schema("env", raw.env.get("name"), raw.env.get("family")),
        "algo": schema("algo", raw.algo.get("solver")),
        "task": schema("task", raw.task.get("name")),
    }
    try:
        out = OmegaConf.merge(
            OmegaConf.structured(DGSolveConfig), {k: v for k, v in raw.items() if k not in groups}
        )
        for group, cls in groups.items():
            setattr(out, group, OmegaConf.merge(structured_schema(cls), raw[group]))
    except RunDirError:
        raise
    except Exception as err:  # OmegaConf's key and validation errors: the file's to fix
        key = getattr(err, "full_key", None)
        where = f"{key}: " if key else ""
        raise RunDirError(
            f"{path}: {where}{first_line(err)} (hand-edited, or written by another dgsolve?)"
        ) from None
    return out


def check_factory(cfg: DictConfig, path: Path | str, confirmed: str | None = None) -> None:
    """Refuse an ``env.factory`` that a run directory chose: dgsolve would import and call it.
    dgsolve's own factories pass, and so does the one the caller named itself (``confirmed``)."""
    from dgsolve.config import trusted_factories

    factory = cfg.env.get("factory")
    if factory is None or str(factory) in trusted_factories() or str(factory) == confirmed:
        return
    raise RunDirError(
        f"{path} names env.factory={factory!r}, code that dgsolve would import and call; a run "
        "directory's config never chooses code to run. If you trust this directory, confirm the "
        f"factory by naming it on the command line: env.factory='{factory}'"
    )


def confirmed_factory(overrides) -> str | None:
    """The ``env.factory`` named on the command line: the caller's confirmation that a run
    directory target may build its game with it (:func:`check_factory`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    named = [
        o
        for o in OverridesParser.create().parse_overrides(list(overrides))
        if o.key_or_group == "env.factory"
    ]
    return str(named[-1].value()) if named else None


def config_differences(saved: dict, current: DictConfig) -> dict[str, tuple[Any, Any]]:
    """The keys whose value in ``current`` (the config a ``resume=`` would run) differs from
    ``saved`` (the resolved config a checkpoint was written with), with both values (the
    current one None where ``current`` lacks the key). Keys ``saved`` lacks (added to dgsolve
    since), :data:`SAFE_ON_RESUME` and :data:`NOT_COMPARED` are skipped."""
    now = _flatten(OmegaConf.to_container(current, resolve=True, enum_to_str=True))
    skip = (*SAFE_ON_RESUME, *NOT_COMPARED)
    return {
        key: (value, now.get(key))
        for key, value in _flatten(saved).items()
        if not any(key == s or key.startswith(s + ".") for s in skip)
        and (key not in now or now[key] != value)
    }


def check_resumed_config(state: dict, current: DictConfig, path: Path) -> None:
    """Refuse to resume checkpoint ``path`` into ``current`` where the config differs from the
    one it was trained with (checkpoints written before configs were stored pass)."""
    saved = state.get("config")
    if saved is None:
        return
    if not isinstance(saved, dict):
        raise RunDirError(f"{path}: the stored config is not a mapping; the checkpoint is damaged")
    differ = config_differences(saved, current)
    if differ:
        shown = ", ".join(
            f"{k} (trained with {_show(then)}, now {_show(now)})"
            for k, (then, now) in list(differ.items())[:5]
        )
        more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
        raise RunDirError(
            f"{path} was trained with another config than {RUN_CONFIG} now holds: {shown}{more}; "
            f"a resumed run keeps the config it was trained with (restore {RUN_CONFIG}, or "
            "start a new run)"
        )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and empty mappings stay leaves."""
    if not isinstance(tree, dict) or (not tree and prefix):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
            f"{path}: the {what} is damaged or not a torch file ({first_line(err)})"
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


def check_finite(state: Any, path: Path, what: str) -> None:
    """Refuse a file whose floating-point tensors hold NaN or infinity (a trained policy never
    does; playing one would fail deep in sampling), naming the first such entry."""
    stack: list[tuple[str, Any]] = [("", state)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack += [(f"{key}.{k}" if key else str(k), v) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            stack += [(f"{key}.{i}", v) for i, v in enumerate(value)]
        elif torch.is_tensor(value) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                raise RunDirError(
                    f"{path}: the {what} holds non-finite values (NaN or infinity) in '{key}'; "
                    "it is damaged, or was saved from a diverged run"
                )


def restore(load, state: Any, path: Path) -> None:
    """``load(state)`` (a ``load_state_dict``), where a mismatch (shapes, keys) becomes one line
    naming ``path``."""
    try:
        load(state)
    except DGSolveError:
        raise
    except Exception as err:
        raise RunDirError(
            f"{path} does not fit this run's networks or game ({first_line(err)})"
        ) from None


def load_policies(
    run_dir: Path | str,
    device: torch.device | str = "cpu",
    num_envs: int = 1,
    factory: str | None = None,
):
    """Rebuild a finished run's trained policies from its config and ``policy.pt`` alone.
    Returns ``(joint_policy, cfg)``; the JointPolicy plays every agent. ``factory``: an
    ``env.factory`` the caller confirms (see :func:`check_factory`)."""
    run_dir = Path(run_dir).expanduser().resolve()
    cfg = load_run_config(run_dir, factory=factory)
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
        check_finite(state, policy_path, "policy")
        restore(solver.load_policy_state, state, policy_path)
    finally:
        game.close()
    return solver.joint_policy(), cfg
