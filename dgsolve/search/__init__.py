"""Search at play time: IS-MCTS over a trained policy (:mod:`dgsolve.search.ismcts`), on the
game trees and determinisations of :mod:`dgsolve.search.determinise`.

The option enums live here, free of heavy imports, so that the config schemas can name them.
"""

from __future__ import annotations

from enum import Enum


class Root(str, Enum):
    """How the root picks the actions it simulates: PUCT, or Gumbel-Top-k with Sequential
    Halving (Danihelka et al., ICLR 2022)."""

    puct = "puct"
    gumbel = "gumbel"


class Leaf(str, Enum):
    """How a new leaf is valued: the target's critic, or a rollout of the target's policies."""

    critic = "critic"
    rollout = "rollout"
