"""Solvers, found by ``algo.solver`` in one table.

Every solver has the same shape: ``step() -> dict`` (one iteration: ``{"episodes": [(env_step,
{agent: return})], "losses": {learner: {name: value}}}``), ``done``, ``iteration``,
``num_iterations``, ``global_step``, ``policies()``, ``joint_policy()``, ``state_dict()`` /
``load_state_dict()``, ``policy_state()`` and ``load_policy_state()`` (what ``policy.pt`` holds,
and how :func:`dgsolve.rundir.load_policies` puts it back); optionally ``summary() -> dict``,
merged into ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dgsolve.errors import ConfigError
from dgsolve.games.base import Game
from dgsolve.hierarchy import Hierarchy


def _ppo(cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
    from dgsolve.solvers.ppo import PPOSolver

    return PPOSolver(cfg, game, hierarchy, device, seed)


def _exact(cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
    from dgsolve.solvers.exact import ExactSolver

    return ExactSolver(cfg, game, hierarchy, device, seed)


def _cfr(cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
    try:
        from dgsolve.solvers.cfr import CFRSolver
    except ModuleNotFoundError as err:
        if err.name not in ("pyspiel", "open_spiel"):
            raise
        raise ConfigError(
            "algo=cfr needs the open_spiel package; install the extra: "
            "pip install 'dgsolve[openspiel]'"
        ) from None

    return CFRSolver(cfg, game, hierarchy, device, seed)


def _deep_cfr(cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
    from dgsolve.solvers.deep_cfr import DeepCFRSolver  # the game brings pyspiel

    return DeepCFRSolver(cfg, game, hierarchy, device, seed)


def _nfsp(cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
    from dgsolve.solvers.nfsp import NFSPSolver

    return NFSPSolver(cfg, game, hierarchy, device, seed)


def _psro(cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
    if getattr(cfg.oracle, "value", cfg.oracle) == "exact":
        from dgsolve.solvers.psro_exact import ExactPSRO  # the game brings pyspiel

        return ExactPSRO(cfg, game, hierarchy, device, seed)
    from dgsolve.solvers.psro import PPOPSRO

    return PPOPSRO(cfg, game, hierarchy, device, seed)


def _ex2psro(cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
    from dgsolve.solvers.ex2psro import Ex2PSRO

    return Ex2PSRO(cfg, game, hierarchy, device, seed)


def _fcp(cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
    from dgsolve.solvers.fcp import FCPSolver

    return FCPSolver(cfg, game, hierarchy, device, seed)


SOLVERS: dict[str, Callable] = {
    "ppo": _ppo,
    "exact": _exact,
    "cfr": _cfr,
    "deep_cfr": _deep_cfr,
    "nfsp": _nfsp,
    "psro": _psro,
    "fcp": _fcp,
    "ex2psro": _ex2psro,
}


#: solver -> the ``algo`` keys that are budgets of PPO learners (PSRO's PPO oracle, Ex²PSRO, FCP)
PPO_BUDGETS = {
    "psro": ("br_steps",),
    "ex2psro": ("br_steps",),
    "fcp": ("partner_steps", "fcp_steps"),
}


def check_budget(cfg) -> None:
    """Refuse a training budget below one PPO iteration from the composed run config alone, as
    the solver would when built, so that the CLI refuses it before the run directory exists."""
    from dgsolve.solvers.ppo import iterations_in_budget, response_learner

    if str(cfg.task.name) != "train":
        return
    algo, num_envs = cfg.algo, int(cfg.env.num_envs)
    if algo.solver == "ppo":
        iterations_in_budget(int(algo.total_timesteps), int(algo.num_steps), num_envs)
    elif algo.solver == "psro" and getattr(algo.oracle, "value", algo.oracle) != "ppo":
        return  # the exact oracle steps no game
    for key in PPO_BUDGETS.get(algo.solver, ()):
        response_learner(algo, key, num_envs)


def make(algo_cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
    """Build the solver that ``algo_cfg.solver`` names."""
    name = algo_cfg.solver
    if name not in SOLVERS:
        raise ConfigError(f"unknown algo.solver '{name}'; known: {sorted(SOLVERS)}")
    return SOLVERS[name](algo_cfg, game, hierarchy, device, seed)
