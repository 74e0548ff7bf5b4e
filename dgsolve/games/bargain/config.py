"""Configuration of the bargaining game: the rule knobs of BARGAIN.md and the stepping backend.

The defaults are BARGAIN.md's rules exactly; every other value is one of the extensions listed in
its last section. The first four fields are those of :class:`dgsolve.config.EnvConfig`, so the
schema can be registered (``schema_env_bargain``) beside the other game families (it does not
inherit from it, to keep this module free of Hydra and of import cycles with ``dgsolve.config``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from dgsolve.errors import ConfigError

#: the observation carries the whole legal mask, and the torch backend keeps one observation
#: row per (offer, round, turn): these bound the offers and rounds (about 36 MB of tables at most).
MAX_OFFERS = 256
MAX_ROUNDS = 16
#: totals ``M_i = v_i . Q`` and the payoffs are int32 in both backends.
MAX_TOTAL_VALUE = 2**31 - 1


class BargainBackend(str, Enum):
    """What runs :meth:`Game.step`.

    ``auto``: the Triton kernel on a CUDA device, the torch reference elsewhere. ``torch``: the
    batched torch reference (any device). ``triton``: the Triton kernel, CUDA only.
    ``triton_interpret``: the same kernel run by Triton's interpreter on CPU tensors (tests).
    """

    auto = "auto"
    torch = "torch"
    triton = "triton"
    triton_interpret = "triton_interpret"


class OutsideOffer(str, Enum):
    """The law of each player's private outside offer (what WALK pays that player).

    ``uniform``: an integer uniform on ``1..M_i`` (BARGAIN.md rule 3, the default).
    ``none``: 0 for both players, i.e. walking away is the disagreement point of Nash's
    bargaining problem normalised to zero, so every agreement is worth at least as much as WALK.
    """

    uniform = "uniform"
    none = "none"


#: sections of ``conf/env/bargain.yaml`` that hold a solver's tuned settings for this game
#: (read by ``conf/algo/*.yaml`` through ``oc.select``), not rules
SOLVER_SECTIONS = ("ppo", "deep_cfr", "nfsp", "psro", "ex2psro", "fcp")


@dataclass
class BargainConfig:
    """The bargaining game (BARGAIN.md); the action count follows from ``quantities``.

    There are ``prod(q + 1)`` offers, then ACCEPT, then WALK: 80 + 2 = 82 for ``[7, 4, 1]``.
    """

    family: str = "bargain"
    num_envs: int = 4096
    leader: str | None = None
    render: bool = False
    backend: BargainBackend = BargainBackend.auto
    quantities: list[int] = field(default_factory=lambda: [7, 4, 1])
    max_value: int = 100
    rounds: int = 3
    discount: float = 1.0
    outside_offer: OutsideOffer = OutsideOffer.uniform

    @classmethod
    def coerce(cls, cfg: Any = None) -> BargainConfig:
        """A validated copy of ``cfg``: a BargainConfig, a mapping, a DictConfig, or None (the
        ``name`` key and the :data:`SOLVER_SECTIONS` of its config group are ignored)."""
        if cfg is None:
            out = cls()
        elif isinstance(cfg, cls):
            out = cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})
        else:
            items = dict(cfg.items()) if isinstance(cfg, Mapping) else dict(vars(cfg))
            items.pop("name", None)  # a Hydra config group's option name, not a rule
            for section in SOLVER_SECTIONS:  # the group's tuned solver settings, not rules
                items.pop(section, None)
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(items) - known)
            if unknown:
                raise ConfigError(
                    f"unknown bargain setting(s) {unknown}; known settings: {sorted(known)}"
                )
            out = cls(**items)
        out.validate()
        return out

    def validate(self) -> None:
        """Raise ConfigError (one line) on the first unusable value; turn names into enums."""
        if self.family != "bargain":
            raise ConfigError(f"env.family is '{self.family}'; the bargaining game needs 'bargain'")
        if not _is_int(self.num_envs) or self.num_envs < 1:
            raise ConfigError(f"env.num_envs={self.num_envs!r}; use an integer >= 1")
        if self.leader not in (None, "p1", "p2"):
            raise ConfigError(f"env.leader={self.leader!r}; use null, 'p1' or 'p2'")
        if self.render:
            raise ConfigError(
                "env.render=true, but the bargaining game has no frames to render; set it false"
            )
        self.backend = _enum(BargainBackend, self.backend, "env.backend")
        self.outside_offer = _enum(OutsideOffer, self.outside_offer, "env.outside_offer")
        quantities = list(self.quantities) if not isinstance(self.quantities, str) else None
        if not quantities or not all(_is_int(q) and q >= 1 for q in quantities):
            raise ConfigError(
                f"env.quantities={self.quantities!r}; use a non-empty list of integers >= 1"
            )
        self.quantities = [int(q) for q in quantities]
        offers = math.prod(q + 1 for q in self.quantities)
        if offers > MAX_OFFERS:
            raise ConfigError(
                f"env.quantities={self.quantities} make {offers} offers; "
                f"at most {MAX_OFFERS} (the product of quantity+1) are allowed"
            )
        if not _is_int(self.max_value) or self.max_value < 1:
            raise ConfigError(f"env.max_value={self.max_value!r}; use an integer >= 1")
        if self.max_value * sum(self.quantities) > MAX_TOTAL_VALUE:
            raise ConfigError(
                f"env.max_value={self.max_value} with quantities {self.quantities} overflows "
                f"int32 totals; keep max_value * sum(quantities) <= {MAX_TOTAL_VALUE}"
            )
        if not _is_int(self.rounds) or not 1 <= self.rounds <= MAX_ROUNDS:
            raise ConfigError(f"env.rounds={self.rounds!r}; use an integer from 1 to {MAX_ROUNDS}")
        if isinstance(self.discount, bool) or not isinstance(self.discount, (int, float)):
            raise ConfigError(f"env.discount={self.discount!r}; use a number in (0, 1]")
        if not 0.0 < self.discount <= 1.0:
            raise ConfigError(f"env.discount={self.discount}; use a number in (0, 1]")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _enum(kind: type[Enum], value: Any, name: str) -> Any:
    try:
        return kind(value.value if isinstance(value, Enum) else value)
    except (ValueError, TypeError):
        allowed = ", ".join(m.value for m in kind)
        raise ConfigError(f"{name}={value!r} is unknown; use one of: {allowed}") from None
