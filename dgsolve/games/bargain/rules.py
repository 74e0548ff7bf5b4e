"""The rules of the bargaining game (BARGAIN.md), shared by every backend.

Sizes, the offer encoding, the observation layout and the legal-mask rules live here, once, so
the torch reference, the Triton kernel, the baselines and the PettingZoo view cannot drift apart.

Offer encoding (BARGAIN.md rule 6): an offer is the bundle ``n`` that goes to P2, written in mixed
radix with item 0 most significant, ``a = sum_k n_k * stride_k`` with
``stride_k = prod_{j > k} (Q_j + 1)``; for ``Q = [7, 4, 1]`` that is ``a = n0*10 + n1*2 + n2``.

Observation layout (BARGAIN.md table), for ``K`` item types and ``A`` actions:
``[0, K)`` own values / max_value, ``K`` own outside offer / M_own, ``[K+1, 2K+1)`` the offer on
the table as the viewer's own share (P2 ``n/Q``, P1 ``(Q-n)/Q``, -1 when none), ``2K+1`` offer on
the table, ``2K+2`` round / (rounds - 1), ``2K+3`` current player, then the ``A``-entry legal mask
(zeros when it is not the viewer's turn). The defaults give 92 = 10 + 82.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dgsolve.games.bargain.config import BargainConfig, OutsideOffer

AGENTS: tuple[str, str] = ("p1", "p2")

# Mask kinds: the legal set of the viewer at a decision point, one row of the mask tables.
#: not the viewer's turn: empty mask in the observation; ``legal`` holds WALK alone.
IDLE = 0
#: no offer on the table (P1's first turn): every offer and WALK.
PROPOSE = 1
#: an offer on the table and a counteroffer still allowed: every action.
RESPOND = 2
#: P2 in the last round: ACCEPT or WALK only.
FINAL = 3
NUM_KINDS = 4


@dataclass(frozen=True)
class BargainRules:
    """The game's constants, derived from the rule knobs of a :class:`BargainConfig`."""

    quantities: tuple[int, ...] = (7, 4, 1)
    max_value: int = 100
    rounds: int = 3
    discount: float = 1.0
    outside_offer: OutsideOffer = OutsideOffer.uniform

    @classmethod
    def from_config(cls, cfg: Any = None) -> BargainRules:
        """The rules of a (validated) config; ``cfg`` is anything BargainConfig.coerce takes."""
        cfg = BargainConfig.coerce(cfg)
        return cls(
            quantities=tuple(cfg.quantities),
            max_value=cfg.max_value,
            rounds=cfg.rounds,
            discount=float(cfg.discount),
            outside_offer=cfg.outside_offer,
        )

    # ------------------------------------------------------------------ sizes
    @property
    def num_items(self) -> int:
        return len(self.quantities)

    @functools.cached_property
    def num_offers(self) -> int:
        return math.prod(q + 1 for q in self.quantities)

    @property
    def accept(self) -> int:
        """Action id of ACCEPT (80 by default)."""
        return self.num_offers

    @property
    def walk(self) -> int:
        """Action id of WALK (81 by default)."""
        return self.num_offers + 1

    @property
    def num_actions(self) -> int:
        return self.num_offers + 2

    @functools.cached_property
    def strides(self) -> tuple[int, ...]:
        """Place value of each item in an offer id: (10, 2, 1) by default."""
        out = [1] * self.num_items
        for k in range(self.num_items - 2, -1, -1):
            out[k] = out[k + 1] * (self.quantities[k + 1] + 1)
        return tuple(out)

    # ------------------------------------------------------------------ observation layout
    @property
    def values_slice(self) -> slice:
        return slice(0, self.num_items)

    @property
    def outside_index(self) -> int:
        return self.num_items

    @property
    def offer_slice(self) -> slice:
        return slice(self.num_items + 1, 2 * self.num_items + 1)

    @property
    def has_offer_index(self) -> int:
        return 2 * self.num_items + 1

    @property
    def round_index(self) -> int:
        return 2 * self.num_items + 2

    @property
    def player_index(self) -> int:
        return 2 * self.num_items + 3

    @property
    def state_slice(self) -> slice:
        """Offer-on-table flag, round fraction and current player."""
        return slice(2 * self.num_items + 1, 2 * self.num_items + 4)

    @property
    def header_size(self) -> int:
        """Entries before the mask block (10 by default)."""
        return 2 * self.num_items + 4

    @property
    def mask_slice(self) -> slice:
        return slice(self.header_size, self.header_size + self.num_actions)

    @property
    def obs_dim(self) -> int:
        return self.header_size + self.num_actions

    @property
    def tokens(self) -> dict[str, slice]:
        """The five blocks a transformer may embed as tokens (BARGAIN.md)."""
        return {
            "values": self.values_slice,
            "outside": slice(self.outside_index, self.outside_index + 1),
            "offer": self.offer_slice,
            "state": self.state_slice,
            "mask": self.mask_slice,
        }

    def round_fraction(self, round_: int) -> float:
        """The round as the observation shows it: 0, 0.5, 1 for three rounds."""
        return round_ / (self.rounds - 1) if self.rounds > 1 else 0.0

    # ------------------------------------------------------------------ offers
    def encode(self, bundle: Sequence[int]) -> int:
        """Offer id of the bundle ``n`` that goes to P2."""
        if len(bundle) != self.num_items or not all(
            0 <= n <= q for n, q in zip(bundle, self.quantities, strict=True)
        ):
            raise ValueError(f"bundle {list(bundle)} is not within quantities {self.quantities}")
        return sum(n * s for n, s in zip(bundle, self.strides, strict=True))

    def decode(self, offer: int) -> tuple[int, ...]:
        """The bundle ``n`` (P2's share) of an offer id."""
        if not 0 <= offer < self.num_offers:
            raise ValueError(f"offer id {offer} is outside 0..{self.num_offers - 1}")
        return tuple(
            (offer // s) % (q + 1) for s, q in zip(self.strides, self.quantities, strict=True)
        )

    def encode_batch(self, bundles: torch.Tensor) -> torch.Tensor:
        """Offer ids of bundles ``[..., K]`` (integer tensor)."""
        strides = torch.tensor(self.strides, dtype=bundles.dtype, device=bundles.device)
        return (bundles * strides).sum(-1)

    def decode_batch(self, offers: torch.Tensor) -> torch.Tensor:
        """Bundles ``[..., K]`` of offer ids ``[...]`` (integer tensor)."""
        strides = torch.tensor(self.strides, dtype=offers.dtype, device=offers.device)
        radix = torch.tensor(self.quantities, dtype=offers.dtype, device=offers.device) + 1
        return torch.div(offers.unsqueeze(-1), strides, rounding_mode="floor") % radix

    def offer_table(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Bundle of every offer id, ``[num_offers, K]`` int32."""
        ids = torch.arange(self.num_offers, dtype=torch.int32, device=device)
        return self.decode_batch(ids)

    # ------------------------------------------------------------------ situations
    @property
    def num_situations(self) -> int:
        """Decision points: (offer on the table, completed rounds, whose turn)."""
        return (self.num_offers + 1) * self.rounds * 2

    def situation(self, offer: Any, round_: Any, p2: Any) -> Any:
        """Code of a decision point (ints or integer tensors): ``offer`` is the offer id + 1
        on the table (0: none), ``p2`` 1 on P2's turn. Code 0 is a game's first decision."""
        return (offer * self.rounds + round_) * 2 + p2

    def split_situation(self, code: Any) -> tuple[Any, Any, Any]:
        """``(offer id + 1, round, p2)`` of a situation code (inverse of :meth:`situation`)."""
        return code // (2 * self.rounds), (code // 2) % self.rounds, code % 2

    # ------------------------------------------------------------------ legality
    def mask_kind(self, acting: bool, has_offer: bool, player: int, round_: int) -> int:
        """Which legal set the viewer has (IDLE, PROPOSE, RESPOND or FINAL)."""
        if not acting:
            return IDLE
        if player == 1 and round_ == self.rounds - 1:
            return FINAL
        return RESPOND if has_offer else PROPOSE

    def mask_rows(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The observation's mask block of each kind, ``[NUM_KINDS, num_actions]`` bool.

        WALK is always legal to the player who decides; ACCEPT needs an offer on the table; offers
        are barred only to P2 in the last round (BARGAIN.md rule 5). The IDLE row is empty.
        """
        rows = torch.zeros(NUM_KINDS, self.num_actions, dtype=torch.bool, device=device)
        rows[PROPOSE, : self.num_offers] = True
        rows[RESPOND, :] = True
        rows[FINAL, self.accept] = True
        rows[[PROPOSE, RESPOND, FINAL], self.walk] = True
        return rows

    def legal_rows(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``TimeStep.legal`` of each kind: the mask rows, with WALK alone for IDLE.

        The idle player's action is ignored by ``step``; a WALK-only mask lets a policy sample
        something harmless there without special cases.
        """
        rows = self.mask_rows(device)
        rows[IDLE, self.walk] = True
        return rows

    def discounts(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``discount ** completed_rounds`` for each round, float32 ``[rounds]``."""
        powers = torch.arange(self.rounds, dtype=torch.float64)
        return (self.discount**powers).to(torch.float32).to(device)


#: BARGAIN.md's defaults: 3 item types, 80 offers, 82 actions, 92 observation entries.
DEFAULT_RULES = BargainRules()
NUM_OFFERS = DEFAULT_RULES.num_offers
ACCEPT = DEFAULT_RULES.accept
WALK = DEFAULT_RULES.walk
NUM_ACTIONS = DEFAULT_RULES.num_actions
OBS_DIM = DEFAULT_RULES.obs_dim
