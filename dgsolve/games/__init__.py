"""Game families, found by ``env.family`` in one table.

``make(env_cfg, device)`` builds a batched :class:`~dgsolve.games.base.Game` on ``device``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from dgsolve import lazy_import
from dgsolve.errors import ConfigError
from dgsolve.games.base import AgentSpec, Game, TimeStep

# loaded on first use (dgsolve.lazy_import): importing the schemas of dgsolve.games.* runs this
torch = lazy_import("torch")

__all__ = ["AgentSpec", "Game", "TimeStep", "make", "FAMILIES"]

#: MPE config fields that are dgsolve's, not the scenario's keyword arguments.
_MPE_OWN_FIELDS = {
    "name",
    "family",
    "num_envs",
    "leader",
    "render",
    "factory",
    "ppo",
    "backend",
    "eval_episodes",  # read by task.eval_episodes
}


def _plain(cfg) -> dict:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return dict(vars(cfg))


def _pettingzoo_game(cfg, device: torch.device, kwargs: dict, label: str, **options) -> Game:
    from dgsolve.games.pettingzoo import PettingZooGame, bind_factory

    factory = bind_factory(cfg.factory, kwargs)
    return PettingZooGame(
        factory,
        cfg.num_envs,
        device,
        leader=cfg.leader,
        can_render=cfg.render,
        label=label,
        **options,
    )


def _make_pettingzoo(cfg, device: torch.device) -> Game:
    kwargs = _plain(cfg.kwargs) if cfg.kwargs else {}
    label = f"env.factory '{cfg.factory}'"
    return _pettingzoo_game(
        cfg, device, kwargs, label, max_cycles=cfg.max_cycles, wrap_aec=cfg.wrap_aec
    )


def _check_mpe2_kwargs(cfg, kwargs: dict) -> None:
    """Refuse, in one line as the torch backend does, a keyword the mpe2 scenario does not take.
    mpe2's ``parallel_env`` takes ``**kwargs``; its module's ``raw_env`` shows the real ones."""
    from dgsolve.games.pettingzoo import import_factory, unknown_keyword

    import_factory(cfg.factory)  # a one-line error where the module is not there
    module_name = cfg.factory.split(":", 1)[0]
    raw_env = getattr(importlib.import_module(module_name), "raw_env", None)
    unknown = None if raw_env is None else unknown_keyword(raw_env, kwargs)
    if unknown is not None:
        key, names = unknown
        scenario = module_name.rsplit(".", 1)[-1]
        raise ConfigError(
            f"env={cfg.name}: {scenario} on the mpe2 backend has no argument '{key}'; it takes: "
            f"{', '.join(names)}"
        )


def _make_mpe(cfg, device: torch.device) -> Game:
    """``env.backend=torch``: the batched torch twin of the scenario that ``env.factory`` names
    (:func:`dgsolve.games.mpe.make_torch`); ``mpe2``: mpe2 itself through the PettingZoo
    adapter. Either refuses a keyword argument the scenario does not take in one line."""
    plain = _plain(cfg)
    kwargs = {k: v for k, v in plain.items() if k not in _MPE_OWN_FIELDS}
    if str(plain.get("backend", "mpe2")) != "torch":
        _check_mpe2_kwargs(cfg, kwargs)
        return _pettingzoo_game(cfg, device, kwargs, f"env={cfg.name} (env.backend=mpe2)")
    from dgsolve.games.mpe import make_torch, scenario_name

    try:
        scenario = scenario_name(cfg.factory.split(":", 1)[0])
        game = make_torch(scenario, cfg.num_envs, device, leader=cfg.leader, **kwargs)
    except ValueError as err:
        raise ConfigError(f"env={cfg.name}: {err}") from None
    game.can_render = bool(cfg.render)
    return game


def _make_matrix(cfg, device: torch.device) -> Game:
    from dgsolve.games.matrix import MatrixGame

    return MatrixGame(cfg, device)


def _make_lq(cfg, device: torch.device) -> Game:
    from dgsolve.games.lq import LQGame

    return LQGame(cfg, device)


def _make_openspiel(cfg, device: torch.device) -> Game:
    from dgsolve.games.openspiel import OpenSpielGame

    return OpenSpielGame(cfg, device)


def _make_bargain(cfg, device: torch.device) -> Game:
    from dgsolve.games.bargain import make_bargain

    game = make_bargain(_plain(cfg), device)
    # BARGAIN.md's five observation blocks are the transformer policy's tokens
    game.token_slices = tuple((s.start, s.stop) for s in game.rules.tokens.values())
    return game


FAMILIES: dict[str, Callable[..., Game]] = {
    "bargain": _make_bargain,
    "pettingzoo": _make_pettingzoo,
    "mpe": _make_mpe,
    "matrix": _make_matrix,
    "lq": _make_lq,
    "openspiel": _make_openspiel,
}


def _check_matrix(plain: dict) -> None:
    from dgsolve.games.matrix import MatrixConfig

    MatrixConfig.coerce(plain).validate()


def _check_lq(plain: dict) -> None:
    from dgsolve.games.lq import lq_matrices

    lq_matrices(plain)  # validates, then the matrices' shapes and definiteness


def _check_bargain(plain: dict) -> None:
    from dgsolve.games.bargain.config import BargainConfig

    BargainConfig.coerce(plain)  # validates as it builds


def _check_openspiel(plain: dict) -> None:
    from dgsolve.games.openspiel import OpenSpielConfig

    OpenSpielConfig.coerce(plain).validate()  # the load string is checked when loaded


#: family -> a check of its config that builds no game; the families absent here (PettingZoo
#: factories, MPE scenario arguments) are checked when their game is built
CONFIG_CHECKS: dict[str, Callable[[dict], None]] = {
    "matrix": _check_matrix,
    "lq": _check_lq,
    "bargain": _check_bargain,
    "openspiel": _check_openspiel,
}


def _family(env_cfg) -> str:
    family = env_cfg.family
    if family not in FAMILIES:
        raise ConfigError(f"unknown env.family '{family}'; known: {sorted(FAMILIES)}")
    return str(family)


def check_config(env_cfg) -> None:
    """Refuse, in one line, an env config whose game could not be built, from the config alone
    (payoff tables, LQ matrices, bargaining rules, names): what the door checks before a run
    directory exists (:data:`CONFIG_CHECKS`)."""
    check = CONFIG_CHECKS.get(_family(env_cfg))
    if check is not None:
        check(_plain(env_cfg))


def make(env_cfg, device: torch.device | str = "cpu") -> Game:
    """Build the game that ``env_cfg.family`` names."""
    family = _family(env_cfg)
    if hasattr(env_cfg, "validate"):
        env_cfg.validate()
    return FAMILIES[family](env_cfg, torch.device(device))
