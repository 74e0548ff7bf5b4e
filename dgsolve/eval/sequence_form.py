"""The sequence form of a small OpenSpiel game: exact payoffs of many tabular policies at once.

In a game with perfect recall, the probability of reaching a terminal history ``z`` factors into
chance's part and one part per player, each player's *realization plan* at the last of its own
(information state, action) pairs on the way to ``z`` (Koller, Megiddo & von Stengel, "Efficient
Computation of Equilibria for Extensive Two-Person Games", Games and Economic Behavior 1996)::

    P(z) = c(z) · Π_i x_i(σ_i(z)),     x_i(I, a) = x_i(parent_i(I)) · π_i(a | I)

so the expected payoff of a profile of tabular policies is ``Σ_z c(z) u(z) Π_i x_i(σ_i(z))``. With
the realization plans of ``K_i`` policies per player as matrices, the payoffs of all
``K_0 × K_1`` profiles of a two-player game are two matrix products: this is what PSRO's
empirical game needs each iteration (:mod:`dgsolve.solvers.psro`), exact and without stepping a
game. The same plans give each policy's own reach of every information state, which is how a
mixture of policies becomes one behaviour policy (Kuhn's theorem; :func:`mixture_table`).

:func:`sequence_form` walks the game tree once per load string (as
:func:`~dgsolve.eval.openspiel_eq.information_states` does, and with its rows): for every
information state its player's previous sequence, and for every terminal history its chance
probability, returns and each player's last sequence. A sequence is ``row · num_actions +
action`` for the row of :class:`~dgsolve.eval.openspiel_eq.InfoStates`; :data:`ROOT` is the
empty sequence (nothing played yet), whose realization is 1.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from dgsolve.errors import CapabilityError
from dgsolve.eval.openspiel_eq import InfoStates, game_of, information_states

#: the empty sequence, realized with probability 1 (the last column of a realization plan)
ROOT = -1
_UNSEEN = -2


@dataclass(frozen=True)
class SequenceForm:
    """``parent [N]``: the acting player's sequence before information state ``n`` (ROOT at its
    first move); ``chance [Z]``, ``returns [Z, num_players]`` and ``last [num_players, Z]`` (each
    player's last sequence before terminal history ``z``, ROOT where it never moved) for the
    terminal histories in depth-first order. Arrays are shared and read-only."""

    info: InfoStates
    parent: np.ndarray
    chance: np.ndarray
    returns: np.ndarray
    last: np.ndarray

    @property
    def num_sequences(self) -> int:
        """Sequences of all players plus the empty one (the width of a realization plan)."""
        return len(self.info) * self.info.num_actions + 1

    def realization(self, player: int, probs: np.ndarray) -> np.ndarray:
        """Realization plans ``[K, num_sequences]`` of ``K`` policies of ``player``.

        ``probs [K, n, num_actions]`` holds each policy's action probabilities at the player's
        information states, in the order of ``info.of_player(player)``. Other players'
        sequences get 0, the empty sequence 1.
        """
        rows = self.info.of_player(player)
        probs = np.asarray(probs, np.float64)
        if probs.ndim != 3 or probs.shape[1:] != (len(rows), self.info.num_actions):
            raise ValueError(
                f"probs must be [K, {len(rows)}, {self.info.num_actions}] for player {player}; "
                f"got {list(probs.shape)}"
            )
        width = self.info.num_actions
        plan = np.zeros((probs.shape[0], self.num_sequences))
        plan[:, ROOT] = 1.0
        # rows come in depth-first order, so a state's parent sequence is filled before it
        for k, row in enumerate(rows):
            reach = plan[:, self.parent[row]]
            plan[:, row * width : (row + 1) * width] = reach[:, None] * probs[:, k, :]
        return plan

    def own_reach(self, player: int, plan: np.ndarray) -> np.ndarray:
        """``[K, n]``: each policy's own probability of reaching each of the player's states."""
        return plan[:, self.parent[self.info.of_player(player)]]

    def payoffs(self, plans: list[np.ndarray]) -> list[np.ndarray]:
        """Exact expected returns of every profile: one array per player, of shape
        ``(K_0, ..., K_{n-1})``, from one list of realization plans per player."""
        leaf = [plan[:, self.last[p]] for p, plan in enumerate(plans)]  # [K_p, Z]
        weighted = self.chance[None, :] * leaf[0]
        out = []
        for p in range(self.info.num_players):
            scaled = weighted * self.returns[None, :, p]
            if len(plans) == 2:
                out.append(scaled @ leaf[1].T)
            else:
                operands = [scaled, [0, len(plans)]]
                for q in range(1, len(plans)):
                    operands += [leaf[q], [q, len(plans)]]
                out.append(np.einsum(*operands, list(range(len(plans)))))
        return out

    def leaf_probabilities(self, plans: list[np.ndarray], profile: tuple[int, ...]) -> np.ndarray:
        """``[Z]``: the probability of each terminal history when player ``p`` plays its
        ``profile[p]``-th policy (what a simulated game draws from)."""
        prob = self.chance.copy()
        for p, (plan, k) in enumerate(zip(plans, profile, strict=True)):
            prob *= plan[k, self.last[p]]
        return prob


def mixture_table(
    sf: SequenceForm, player: int, probs: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """The behaviour policy ``[n, num_actions]`` that plays like the mixture that picks policy
    ``k`` with probability ``weights[k]`` once, before the game (Kuhn's theorem)::

        π̄(a | I) = Σ_k w_k x_k(I) π_k(a | I) / Σ_k w_k x_k(I)

    with ``x_k(I)`` policy ``k``'s own reach of ``I``. Where no policy in the support reaches
    ``I`` the state is never played, and the weighted average of the policies stands there."""
    probs = np.asarray(probs, np.float64)
    weights = np.asarray(weights, np.float64)
    reach = sf.own_reach(player, sf.realization(player, probs)) * weights[:, None]  # [K, n]
    mass = reach.sum(0)
    mixed = np.einsum("kn,kna->na", reach, probs)
    fallback = np.einsum("k,kna->na", weights, probs)
    played = mass > 0
    out = np.where(played[:, None], mixed / np.where(played, mass, 1.0)[:, None], fallback)
    return out / out.sum(-1, keepdims=True)


def sequence_form(load_string: str) -> SequenceForm:
    """The sequence form of the game ``load_string`` (walked once per load string)."""
    return _sequence_form(str(load_string))


@functools.lru_cache(maxsize=16)
def _sequence_form(load_string: str) -> SequenceForm:
    info = information_states(load_string)  # checks the game can be walked at all
    game = game_of(load_string)
    n, width = game.num_players(), info.num_actions
    row_of = {key: i for i, key in enumerate(info.keys)}
    parent = np.full(len(info), _UNSEEN, np.int64)
    chance, returns, last = [], [], []
    # each stack entry: a state, its chance probability, and each player's last sequence
    stack = [(game.new_initial_state(), 1.0, (ROOT,) * n)]
    while stack:
        state, prob, seqs = stack.pop()
        if state.is_terminal():
            chance.append(prob)
            returns.append(state.returns())
            last.append(seqs)
            continue
        if state.is_chance_node():
            for action, p in reversed(state.chance_outcomes()):
                stack.append((state.child(action), prob * p, seqs))
            continue
        player = state.current_player()
        row = row_of[state.information_state_string(player)]
        if parent[row] not in (_UNSEEN, seqs[player]):
            raise CapabilityError(f"{load_string} lacks perfect recall; it has no sequence form")
        parent[row] = seqs[player]
        for action in reversed(state.legal_actions()):
            after = seqs[:player] + (row * width + action,) + seqs[player + 1 :]
            stack.append((state.child(action), prob, after))
    out = SequenceForm(
        info=info,
        parent=parent,
        chance=np.asarray(chance, np.float64),
        returns=np.asarray(returns, np.float64).reshape(-1, n),
        last=np.asarray(last, np.int64).reshape(-1, n).T.copy(),
    )
    for array in (out.parent, out.chance, out.returns, out.last):
        array.setflags(write=False)
    return out
