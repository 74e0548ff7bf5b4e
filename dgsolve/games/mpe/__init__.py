"""The eight mpe2 scenarios in batched torch (``env.backend=torch``, the default).

``make_torch(scenario, num_envs, device="cpu", **kwargs)`` builds a
:class:`~dgsolve.games.mpe.game.TorchMPEGame` from mpe2's own keyword arguments (``N``,
``max_cycles``, ``continuous_actions``, ``local_ratio``, ...). Each scenario module is the torch
twin of the mpe2 module of the same name; ``backend=mpe2`` runs mpe2 itself through the
PettingZoo adapter, the reference these are tested against (:mod:`dgsolve.games.mpe.compare`).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from dgsolve.games.mpe.game import TorchMPEGame
from dgsolve.games.mpe.scenario import TorchScenario

__all__ = ["SCENARIOS", "TorchMPEGame", "TorchScenario", "make_scenario", "make_torch"]

#: scenario name -> "module:class" of its torch twin
SCENARIOS: dict[str, str] = {
    "simple_adversary": "dgsolve.games.mpe.simple_adversary:SimpleAdversary",
    "simple_crypto": "dgsolve.games.mpe.simple_crypto:SimpleCrypto",
    "simple_push": "dgsolve.games.mpe.simple_push:SimplePush",
    "simple_reference": "dgsolve.games.mpe.simple_reference:SimpleReference",
    "simple_speaker_listener": "dgsolve.games.mpe.simple_speaker_listener:SimpleSpeakerListener",
    "simple_spread": "dgsolve.games.mpe.simple_spread:SimpleSpread",
    "simple_tag": "dgsolve.games.mpe.simple_tag:SimpleTag",
    "simple_world_comm": "dgsolve.games.mpe.simple_world_comm:SimpleWorldComm",
}

#: keyword arguments the game takes (the rest go to the scenario)
_GAME_KWARGS = ("max_cycles", "continuous_actions", "dynamic_rescaling")
#: mpe2 keyword arguments that only change mpe2's drawing or infos, accepted and ignored
_IGNORED = ("render_mode",)
#: mpe2 options the torch backend has only switched off: refused when on, dropped when off
_OFF_ONLY = ("benchmark_data", "curriculum")


def scenario_name(name: str) -> str:
    """``simple_spread`` from ``simple_spread``, ``simple_spread_v3`` or
    ``mpe2.simple_spread_v3``; ``ValueError`` naming the eight otherwise."""
    base = name.rsplit(".", 1)[-1].split(":", 1)[0]
    if base not in SCENARIOS and "_v" in base:
        base = base.rsplit("_v", 1)[0]
    if base not in SCENARIOS:
        raise ValueError(f"no torch MPE scenario '{name}'; known: {sorted(SCENARIOS)}")
    return base


def make_scenario(scenario: str, **kwargs: Any) -> TorchScenario:
    """The torch twin of mpe2 scenario ``scenario`` with its own keyword arguments."""
    module, cls = SCENARIOS[scenario_name(scenario)].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


def make_torch(
    scenario: str,
    num_envs: int,
    device: torch.device | str = "cpu",
    *,
    leader: str | None = None,
    dtype: torch.dtype = torch.float64,
    seed: int | None = None,
    auto_reset: bool = True,
    **kwargs: Any,
) -> TorchMPEGame:
    """``num_envs`` copies of mpe2 scenario ``scenario`` as one batched Game on ``device``.

    ``kwargs`` are mpe2's keyword arguments for that scenario (``max_cycles``,
    ``continuous_actions``, ``N``, ``local_ratio``, ...); one the torch backend does not
    implement is refused with a ``ValueError`` naming those it does. The world is kept in
    ``dtype`` (float64, as mpe2 computes); observations and rewards come out as float32.
    ``auto_reset=False`` keeps finished copies at their end (comparisons with mpe2).
    """
    game_kwargs = {k: kwargs.pop(k) for k in _GAME_KWARGS if k in kwargs}
    for key in _IGNORED:
        kwargs.pop(key, None)
    for key in _OFF_ONLY:
        if kwargs.pop(key, False):
            raise ValueError(f"{scenario} on the torch backend has no {key} (env.backend=mpe2 has)")
    return TorchMPEGame(
        make_scenario(scenario, **kwargs),
        num_envs,
        device,
        leader=leader,
        dtype=dtype,
        seed=seed,
        auto_reset=auto_reset,
        **game_kwargs,
    )
