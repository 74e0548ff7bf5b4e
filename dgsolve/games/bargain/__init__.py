"""The bargaining game with outside options (BARGAIN.md), batched, with three backends.

``make_bargain(cfg, device)`` builds the :class:`~dgsolve.games.base.Game` of a
:class:`BargainConfig` on the backend it names: ``auto`` runs the Triton kernel on a CUDA device
and the torch reference elsewhere; ``torch``; ``triton`` (CUDA only); ``triton_interpret`` (the
kernel in Triton's interpreter, CPU only, for tests). ``parallel_env`` and ``env`` are the
PettingZoo views of one game. Triton and PettingZoo are imported only when asked for.
"""

from __future__ import annotations

from typing import Any

from dgsolve import lazy_import
from dgsolve.errors import ConfigError
from dgsolve.games.bargain.config import BargainBackend, BargainConfig, OutsideOffer
from dgsolve.games.base import Game

# loaded on first use (dgsolve.lazy_import): dgsolve.config imports this package's config schema
torch = lazy_import("torch")

__all__ = [
    "BargainBackend",
    "BargainConfig",
    "BargainGame",
    "BargainRules",
    "OutsideOffer",
    "env",
    "make_bargain",
    "parallel_env",
]


def __getattr__(name: str) -> Any:
    # the torch implementations, imported when first named (the schema needs neither)
    if name == "BargainGame":
        from dgsolve.games.bargain.reference import BargainGame

        return BargainGame
    if name == "BargainRules":
        from dgsolve.games.bargain.rules import BargainRules

        return BargainRules
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_bargain(cfg: Any = None, device: torch.device | str | None = None) -> Game:
    """The batched bargaining game of ``cfg`` (a BargainConfig, a mapping or DictConfig of its
    fields, or None for the defaults) on ``device`` (None: CUDA when available, else the CPU)."""
    cfg = BargainConfig.coerce(cfg)
    cuda = torch.cuda.is_available()
    backend = cfg.backend
    if device is None:
        device = "cpu" if backend is BargainBackend.triton_interpret or not cuda else "cuda"
    device = torch.device(device)
    if backend is BargainBackend.auto:
        backend = BargainBackend.triton if device.type == "cuda" else BargainBackend.torch
    if backend is BargainBackend.torch:
        from dgsolve.games.bargain.reference import BargainGame

        return BargainGame(cfg, device)
    if backend is BargainBackend.triton and (not cuda or device.type != "cuda"):
        where = "no CUDA GPU is visible" if not cuda else f"the device is {device}"
        raise ConfigError(
            f"env.backend=triton needs a CUDA device but {where}; "
            "use backend=torch (any device) or triton_interpret (CPU)"
        )
    if backend is BargainBackend.triton_interpret and device.type != "cpu":
        raise ConfigError(
            f"env.backend=triton_interpret runs on the CPU, not {device}; "
            "use device=cpu, or backend=triton on a GPU"
        )
    from dgsolve.games.bargain.kernel import TritonBargainGame

    return TritonBargainGame(cfg, device, interpret=backend is BargainBackend.triton_interpret)


def parallel_env(**kwargs: Any):
    """One bargaining game as a PettingZoo ParallelEnv (see ``pettingzoo_view``)."""
    from dgsolve.games.bargain.pettingzoo_view import parallel_env as make

    return make(**kwargs)


def env(**kwargs: Any):
    """One bargaining game as a PettingZoo AEC env (see ``pettingzoo_view``)."""
    from dgsolve.games.bargain.pettingzoo_view import env as make

    return make(**kwargs)
