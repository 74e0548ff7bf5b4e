"""Scripted policies for the bargaining game (BARGAIN.md, "Baseline policies").

Each reads the batched observation alone (own values, own outside offer, the offer on the table as
its own share, whose turn it is, the mask) and answers ``act(obs, legal, greedy) -> [B]`` action
ids, the interface of :class:`dgsolve.policy.Policy`, so cross-play treats them like learned
policies. Where the agent is not the one to move, the answer is WALK, which ``step`` ignores.

- ``random``: uniform over the legal actions.
- ``always_walk``: WALK.
- ``greedy`` (myopic): as P1 the legal offer keeping the most value for itself; as P2 ACCEPT if
  the offer is worth at least its outside offer, else WALK.
- ``fair_split`` (approximates Nash bargaining): as P1 the legal offer whose value share for P1 is
  closest to 1/2; as P2 ACCEPT if the offer is worth at least 0.4 M, else WALK.

Greedy and FairSplit never accept as P1 nor counteroffer as P2; ties between offers go to the
lowest action id. Values, totals and outside offers are recovered as integers from the
observation (exact while totals stay below 2^23, always so for the default rules), so the
comparisons above are made exactly, not on rounded fractions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from dgsolve.errors import ConfigError
from dgsolve.games.bargain.rules import DEFAULT_RULES, BargainRules


def _rules(rules: Any) -> BargainRules:
    if rules is None:
        return DEFAULT_RULES
    return rules if isinstance(rules, BargainRules) else BargainRules.from_config(rules)


class BargainBaseline(ABC):
    """Shared reading of the observation; subclasses implement :meth:`choose`. ``seed`` seeds
    the baselines that draw random numbers (None: from torch's global generator)."""

    name = "baseline"
    #: whether :meth:`choose` only ever picks legal actions (then ``act`` need not check).
    always_legal = False

    def __init__(self, rules: BargainRules | Any = None, seed: int | None = None):
        self.rules = _rules(rules)
        self.seed = seed
        self._kept: dict[torch.device, torch.Tensor] = {}

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, legal: torch.Tensor | None = None, greedy: bool = False
    ) -> torch.Tensor:
        """Action ids ``[B]`` (int64) for observations ``[B, obs_dim]``; ``legal`` defaults to
        the observation's mask block plus WALK. Illegal choices become WALK."""
        r = self.rules
        if legal is None:
            legal = obs[:, r.mask_slice] > 0
            legal[:, r.walk] = True
        action = self.choose(obs, legal, greedy)
        if self.always_legal:
            return action
        ok = legal.gather(1, action.unsqueeze(1)).squeeze(1)
        return torch.where(ok, action, r.walk)

    @abstractmethod
    def choose(self, obs: torch.Tensor, legal: torch.Tensor, greedy: bool) -> torch.Tensor:
        """The baseline's action ids ``[B]`` (int64) before illegal ones are turned into WALK."""

    # ------------------------------------------------------------------ observation reading
    def _kept_bundles(self, device: torch.device) -> torch.Tensor:
        """Float64 ``[K, num_offers]``: what P1 keeps (Q - n) under each offer."""
        if device not in self._kept:
            given = self.rules.offer_table(device).to(torch.float64)
            quantities = torch.tensor(self.rules.quantities, dtype=torch.float64, device=device)
            self._kept[device] = (quantities - given).T.contiguous()
        return self._kept[device]

    def _read(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Integer-valued float64 values ``[B, K]``, totals ``[B]``, outside offers ``[B]``,
        the bundle ``n`` on the table ``[B, K]``, and whether the viewer is P2 (``[B]`` bool)."""
        r = self.rules
        x = obs.to(torch.float64)
        quantities = torch.tensor(r.quantities, dtype=torch.float64, device=obs.device)
        values = torch.round(x[:, r.values_slice] * r.max_value)
        totals = values @ quantities
        outside = torch.round(x[:, r.outside_index] * totals)
        p2 = x[:, r.player_index] > 0.5
        own = torch.round(x[:, r.offer_slice].clamp(min=0.0) * quantities)
        bundle = torch.where(p2[:, None], own, quantities - own)
        return values, totals, outside, bundle, p2

    def _respond(self, accept: torch.Tensor) -> torch.Tensor:
        return torch.where(accept, self.rules.accept, self.rules.walk)


class RandomBaseline(BargainBaseline):
    """Uniform over the legal actions (``greedy`` is ignored: a uniform policy has no mode).

    Drawn in O(batch) from the mask's structure (rules.mask_rows): the offers are legal all
    together or not at all, and ACCEPT and WALK follow them; one uniform number per row picks
    the index among the legal ones.
    """

    name = "random"
    always_legal = True

    def __init__(self, rules: BargainRules | Any = None, seed: int | None = None):
        super().__init__(rules, seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            seed = self.seed
            if seed is None:
                seed = int(torch.randint(2**62, (1,)).item())
            self._generators[device] = torch.Generator(device=device).manual_seed(seed)
        return self._generators[device]

    def choose(self, obs: torch.Tensor, legal: torch.Tensor, greedy: bool) -> torch.Tensor:
        r = self.rules
        offers = legal[:, 0].to(torch.int32) * r.num_offers
        accept, walk = legal[:, r.accept : r.walk + 1].to(torch.int32).unbind(1)
        count = offers + accept + walk
        u = torch.rand(legal.shape[0], generator=self._generator(legal.device), device=legal.device)
        pick = torch.minimum(u.mul_(count).to(torch.int32), count - 1)
        # the pick-th legal id: the offers come first, then ACCEPT when legal, then WALK
        tail = pick + (r.num_offers + 1) - offers - accept
        return torch.where(pick < offers, pick, tail).long()


class AlwaysWalkBaseline(BargainBaseline):
    """WALK, always."""

    name = "always_walk"

    def choose(self, obs: torch.Tensor, legal: torch.Tensor, greedy: bool) -> torch.Tensor:
        return torch.full((obs.shape[0],), self.rules.walk, dtype=torch.int64, device=obs.device)


class GreedyBaseline(BargainBaseline):
    """Myopic: P1 keeps the most value; P2 accepts anything worth its outside offer."""

    name = "greedy"

    def choose(self, obs: torch.Tensor, legal: torch.Tensor, greedy: bool) -> torch.Tensor:
        values, totals, outside, bundle, p2 = self._read(obs)
        kept = self._kept_bundles(obs.device)
        score = values @ kept  # [B, num_offers]: value P1 keeps under each offer
        score = score.masked_fill(~legal[:, : self.rules.num_offers], -1.0)
        propose = score.argmax(dim=1)  # first maximum: ties go to the lowest id
        worth = (values * bundle).sum(1)
        return torch.where(p2, self._respond(worth >= outside), propose)


class FairSplitBaseline(BargainBaseline):
    """P1 offers the split closest to half its value; P2 accepts 40% of its total or more."""

    name = "fair_split"

    def choose(self, obs: torch.Tensor, legal: torch.Tensor, greedy: bool) -> torch.Tensor:
        values, totals, outside, bundle, p2 = self._read(obs)
        kept = self._kept_bundles(obs.device)
        # |share - 1/2| compared as the integer |2 v.(Q - n) - M|
        gap = (2 * (values @ kept) - totals[:, None]).abs()
        gap = gap.masked_fill(~legal[:, : self.rules.num_offers], float("inf"))
        propose = gap.argmin(dim=1)  # first minimum: ties go to the lowest id
        worth = (values * bundle).sum(1)
        return torch.where(p2, self._respond(5 * worth >= 2 * totals), propose)


BASELINES: dict[str, type[BargainBaseline]] = {
    cls.name: cls for cls in (RandomBaseline, AlwaysWalkBaseline, GreedyBaseline, FairSplitBaseline)
}


def make_baseline(
    name: str, rules: BargainRules | Any = None, seed: int | None = None
) -> BargainBaseline:
    """The baseline called ``name`` for ``rules`` (a BargainRules, a BargainConfig or anything
    it accepts; None for the defaults); ``seed`` seeds ``random``."""
    if name not in BASELINES:
        raise ConfigError(f"unknown bargaining baseline '{name}'; known: {sorted(BASELINES)}")
    return BASELINES[name](rules, seed)
