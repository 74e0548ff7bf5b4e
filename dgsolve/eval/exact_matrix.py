"""Exact equilibria of bimatrix games, one-shot and repeated with memory-1 policies.

* Nash: every extreme Nash equilibrium by vertex enumeration of the two best-response polytopes
  (von Stengel, "Equilibrium computation for two-player games in strategic and extensive form",
  Algorithmic Game Theory ch. 3, 2007; Avis, Rosenberg, Savani & von Stengel, Economic Theory
  2010). In a nondegenerate game these are all its equilibria; in a degenerate one every
  equilibrium is a convex combination of extreme ones within a component, and all pure
  equilibria are extreme, so all of them are listed.
* Stackelberg, pure commitment: the leader commits to a pure action that the follower observes;
  the follower best responds and breaks ties in the leader's favour (strong Stackelberg).
* Stackelberg, mixed commitment: one linear program per follower action (Conitzer & Sandholm,
  "Computing the optimal strategy to commit to", EC 2006), again with ties in the leader's favour.
* Repeated games (the setting of "Oracles & Followers: Stackelberg Equilibria in Deep Multi-Agent
  RL", Gerstgrasser & Parkes, ICML 2023): both players use deterministic memory-1 policies, maps
  from the ``m * n + 1`` states of :mod:`dgsolve.games.matrix` (last joint action, or start) to
  actions. The leader commits to a policy; the follower sees the whole committed policy and plays
  its best memory-1 deterministic policy for the T-round return, ties in the leader's favour.
  As the committed policy is deterministic, the leader's current action is a function of the
  state, so a follower that instead observes that action each round attains the same values.
  Both sets of policies are enumerated and every pair is simulated for T rounds, which is exact
  and cheap for 2x2 games (32 x 32 pairs).

All functions take payoff matrices as numpy arrays and return plain Python numbers and lists, so
results can be written to JSON as they are.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from dgsolve import lazy_import
from dgsolve.errors import CapabilityError

# scipy.optimize costs a tiny run's start-up a second; it is loaded at the first linear program
scipy_optimize = lazy_import("scipy.optimize")

#: absolute tolerance for ties and tight constraints, relative to payoffs normalised to [1, 2].
TOL = 1e-9

#: the most policy pairs the repeated-game enumeration will simulate.
MAX_POLICY_PAIRS = 1 << 20

Equilibrium = dict[str, Any]


# --------------------------------------------------------------------------- Nash
def nash_equilibria(
    A: np.ndarray, B: np.ndarray, agents: tuple[str, str] = ("row", "column")
) -> list[Equilibrium]:
    """Every extreme Nash equilibrium of the bimatrix game ``(A, B)``.

    Returns a list of ``{"strategies": {agent: probs}, "payoffs": {agent: value}}``, sorted so
    that strategies putting more weight on earlier actions come first.
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    m, n = A.shape
    # Shift and scale each player's payoffs into [1, 2]: equilibria are unchanged by positive
    # affine maps, and positive payoffs make both best-response polytopes bounded.
    A1, B1 = _normalise(A), _normalise(B)
    # P = {x >= 0 : B1^T x <= 1}: labels 0..m-1 are x_i = 0, labels m..m+n-1 are (B1^T x)_j = 1.
    xs, x_labels = _polytope_vertices(-np.eye(m), np.zeros(m), B1.T, np.ones(n))
    # Q = {y >= 0 : A1 y <= 1}: labels 0..m-1 are (A1 y)_i = 1, labels m..m+n-1 are y_j = 0.
    ys, y_labels = _polytope_vertices(A1, np.ones(m), -np.eye(n), np.zeros(n))
    equilibria = []
    for x, lx in zip(xs, x_labels, strict=True):
        if not x.any():
            continue
        for y, ly in zip(ys, y_labels, strict=True):
            # A pair of vertices is an equilibrium iff it is completely labelled: every pure
            # strategy is either unused or a best response.
            if y.any() and (lx | ly).all():
                p, q = _clean(x / x.sum()), _clean(y / y.sum())
                equilibria.append(_profile(A, B, p, q, agents))
    equilibria.sort(
        key=lambda e: [-v for a in agents for v in e["strategies"][a]],
    )
    return equilibria


def _normalise(M: np.ndarray) -> np.ndarray:
    spread = M.max() - M.min()
    return 1.0 + (M - M.min()) / (spread if spread > 0 else 1.0)


def _polytope_vertices(
    G1: np.ndarray, h1: np.ndarray, G2: np.ndarray, h2: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Vertices of ``{z : G z <= h}`` (``G = [G1; G2]``) and, per vertex, its tight constraints.

    A vertex is the solution of ``d`` linearly independent tight constraints; every choice of
    ``d`` constraints is tried, infeasible and repeated points are dropped. The returned label
    masks mark *all* constraints tight at the vertex, which is what degenerate games need.
    """
    G = np.vstack([G1, G2])
    h = np.concatenate([h1, h2])
    k, d = G.shape
    if math.comb(k, d) * d * d > 50_000_000:
        raise CapabilityError(
            f"exact Nash enumeration of a game with {k} pure strategies in all is too large; "
            "use a game with at most about 20 actions in total"
        )
    vertices: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for tight in itertools.combinations(range(k), d):
        G_t = G[list(tight)]
        if abs(np.linalg.det(G_t)) < 1e-12:
            continue
        z = np.linalg.solve(G_t, h[list(tight)])
        slack = h - G @ z
        if (slack < -TOL).any() or any(np.allclose(z, v, atol=1e-8) for v in vertices):
            continue
        vertices.append(z)
        labels.append(np.abs(slack) <= TOL)
    return vertices, labels


def _clean(p: np.ndarray) -> np.ndarray:
    """Remove round-off from a probability vector: equilibria of games with payoffs of modest
    precision are rational, so 12 decimals keep the value and drop the noise (0.4999999999998)."""
    p = np.clip(np.round(p, 12), 0.0, None)
    return p / p.sum()


def _profile(
    A: np.ndarray, B: np.ndarray, p: np.ndarray, q: np.ndarray, agents: tuple[str, str]
) -> Equilibrium:
    return {
        "strategies": {agents[0]: p.tolist(), agents[1]: q.tolist()},
        "payoffs": {agents[0]: float(p @ A @ q), agents[1]: float(p @ B @ q)},
    }


# --------------------------------------------------------------------------- Stackelberg
def stackelberg_pure(
    L: np.ndarray, F: np.ndarray, agents: tuple[str, str] = ("row", "column")
) -> Equilibrium:
    """Strong Stackelberg equilibrium with pure commitment observed by the follower.

    ``L`` and ``F`` are the leader's and the follower's payoffs with the *leader's* actions as
    rows (for a column leader pass ``B.T, A.T``); ``agents`` is ``(leader, follower)``. Besides
    ``strategies`` (the on-path actions, one-hot) and ``payoffs``, the result has ``response``:
    ``{follower: [one-hot best response to each leader action]}``.
    """
    L = np.asarray(L, dtype=np.float64)
    F = np.asarray(F, dtype=np.float64)
    m, n = L.shape
    response = np.array([_leader_favoured_best_response(L[i], F[i]) for i in range(m)])
    leader_values = L[np.arange(m), response]
    i = int(np.flatnonzero(leader_values >= leader_values.max() - _tol(L))[0])
    j = int(response[i])
    return {
        "strategies": {agents[0]: _one_hot(i, m), agents[1]: _one_hot(j, n)},
        "payoffs": {agents[0]: float(L[i, j]), agents[1]: float(F[i, j])},
        "response": {agents[1]: [_one_hot(int(r), n) for r in response]},
    }


def _leader_favoured_best_response(leader_row: np.ndarray, follower_row: np.ndarray) -> int:
    best = np.flatnonzero(follower_row >= follower_row.max() - _tol(follower_row))
    return int(best[np.argmax(leader_row[best])])


def stackelberg_mixed(
    L: np.ndarray, F: np.ndarray, agents: tuple[str, str] = ("row", "column")
) -> Equilibrium:
    """Strong Stackelberg equilibrium with mixed commitment (Conitzer & Sandholm, EC 2006).

    For each follower action ``j`` one linear program finds the leader mixture that maximises the
    leader's payoff subject to ``j`` being a follower best response; the best feasible ``j`` wins.
    The follower observes the mixture, not the sampled action. ``L``, ``F`` and ``agents`` are
    laid out as in :func:`stackelberg_pure`.
    """
    L = np.asarray(L, dtype=np.float64)
    F = np.asarray(F, dtype=np.float64)
    m, n = L.shape
    best: tuple[float, int, np.ndarray] | None = None
    for j in range(n):
        # j is a best response to p: p . (F[:, k] - F[:, j]) <= 0 for every k.
        result = scipy_optimize.linprog(
            -L[:, j],
            A_ub=(F - F[:, [j]]).T,
            b_ub=np.zeros(n),
            A_eq=np.ones((1, m)),
            b_eq=[1.0],
            bounds=[(0.0, 1.0)] * m,
            method="highs",
        )
        if result.status != 0:
            continue
        p = _clean(np.clip(result.x, 0.0, None))
        value = float(p @ L[:, j])
        if best is None or value > best[0] + _tol(L):
            best = (value, j, p)
    assert best is not None, "some follower action is always a best response"
    value, j, p = best
    return {
        "strategies": {agents[0]: p.tolist(), agents[1]: _one_hot(j, n)},
        "payoffs": {agents[0]: value, agents[1]: float(p @ F[:, j])},
    }


def _tol(M: np.ndarray) -> float:
    return TOL * max(1.0, float(np.abs(M).max()))


def _one_hot(i: int, size: int) -> list[float]:
    v = [0.0] * size
    v[i] = 1.0
    return v


# --------------------------------------------------------------------------- metrics
def nash_gap(A: np.ndarray, B: np.ndarray, p_row: np.ndarray, q_col: np.ndarray) -> float:
    """The larger of the two players' gains from a best-response deviation (0 at a Nash eq.)."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    p, q = np.asarray(p_row, dtype=np.float64), np.asarray(q_col, dtype=np.float64)
    row_gain = (A @ q).max() - p @ A @ q
    col_gain = (p @ B).max() - p @ B @ q
    return float(max(row_gain, col_gain))


def stackelberg_gaps(
    A: np.ndarray,
    B: np.ndarray,
    p_leader: np.ndarray,
    q_follower_given_leader: np.ndarray,
) -> dict[str, float]:
    """Equilibrium gaps of a leader-follower profile where the follower sees the leader's action.

    ``A``/``B`` are the leader's/follower's payoffs with the leader's actions as rows, ``p_leader``
    is the leader's mixed strategy ``[m]`` and ``q_follower_given_leader[i]`` the follower's
    mixed response ``[n]`` to the observed leader action ``i``. Returns

    * ``nash_gap``: the larger of (a) the follower's expected gain from best-responding to each
      observed leader action, weighted by ``p_leader`` (responses to actions the leader never
      plays do not count), and (b) the leader's gain from switching to its best pure action given
      the follower's conditional responses (which do count: they are what the leader commits
      against). Zero exactly at a Nash equilibrium of the sequential game in which the leader
      moves first (subgame perfection would also need best responses off the path).
    * ``stackelberg_gap``: ``|leader value - pure-commitment strong Stackelberg value|``.
    """
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    p = np.asarray(p_leader, dtype=np.float64)
    q = np.asarray(q_follower_given_leader, dtype=np.float64)
    leader_per_action = (q * A).sum(axis=1)
    follower_per_action = (q * B).sum(axis=1)
    leader_value = float(p @ leader_per_action)
    follower_gain = float(p @ (B.max(axis=1) - follower_per_action))
    leader_gain = float(leader_per_action.max() - leader_value)
    reference = stackelberg_pure(A, B, ("leader", "follower"))["payoffs"]["leader"]
    return {
        "nash_gap": max(follower_gain, leader_gain),
        "stackelberg_gap": abs(leader_value - reference),
    }


# --------------------------------------------------------------------------- repeated games
def memory1_policies(num_actions: int, num_states: int) -> np.ndarray:
    """Every deterministic memory-1 policy, ``[num_actions ** num_states, num_states]`` ints."""
    return np.array(list(itertools.product(range(num_actions), repeat=num_states)), dtype=np.int64)


def repeated_returns(
    A: np.ndarray, B: np.ndarray, rounds: int, row_policies: np.ndarray, col_policies: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T-round returns of every pair of deterministic memory-1 policies.

    States follow :mod:`dgsolve.games.matrix`: ``i * n + j`` after joint action ``(i, j)``,
    ``m * n`` at the start. Returns ``(row_return, col_return, paths)`` with returns
    ``[R, C]`` and ``paths[R, C, T]`` the joint-action state index of each round.
    """
    m, n = A.shape
    rows = np.arange(len(row_policies))[:, None]
    cols = np.arange(len(col_policies))[None, :]
    state = np.full((len(row_policies), len(col_policies)), m * n, dtype=np.int64)
    row_return = np.zeros(state.shape)
    col_return = np.zeros(state.shape)
    paths = np.empty(state.shape + (rounds,), dtype=np.int64)
    for t in range(rounds):
        i = row_policies[rows, state]
        j = col_policies[cols, state]
        row_return += A[i, j]
        col_return += B[i, j]
        state = i * n + j
        paths[..., t] = state
    return row_return, col_return, paths


def repeated_equilibria(
    A: np.ndarray, B: np.ndarray, rounds: int, leader: str | None = "row"
) -> dict[str, Any]:
    """Nash and leader-optimal commitment of the T-round game over memory-1 policies.

    Returns ``{"nash": [...], "stackelberg": {...}}``. Each entry has ``strategies`` (per agent, a
    list over the ``m * n + 1`` states of one-hot action probabilities), ``payoffs`` (T-round
    returns, without any reward offset) and ``path`` (the ``[row, column]`` actions of each round).

    * ``stackelberg``: the leader (``"row"`` or ``"column"``; ``None`` means row) commits to a
      deterministic memory-1 policy; the follower, seeing that policy, picks the deterministic
      memory-1 policy with the highest T-round return, ties broken by the leader's return; the
      leader's commitment maximises its own return under that response. Off-path choices that do
      not change any return are resolved towards the lowest-numbered policy.
    * ``nash``: pure equilibria of the game whose strategies are the deterministic memory-1
      policies (no player gains by switching to another such policy), one per distinct path of
      play.
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    m, n = A.shape
    num_states = m * n + 1
    num_pairs = m**num_states * n**num_states
    if num_pairs > MAX_POLICY_PAIRS:
        raise CapabilityError(
            f"the exact repeated-game reference enumerates memory-1 policy pairs; a {m}x{n} game "
            f"has {num_pairs}, more than {MAX_POLICY_PAIRS}; use a 2x2 or 2x3 game"
        )
    row_policies = memory1_policies(m, num_states)
    col_policies = memory1_policies(n, num_states)
    row_ret, col_ret, paths = repeated_returns(A, B, rounds, row_policies, col_policies)

    def entry(r: int, c: int) -> Equilibrium:
        return {
            "strategies": {
                "row": [_one_hot(int(a), m) for a in row_policies[r]],
                "column": [_one_hot(int(a), n) for a in col_policies[c]],
            },
            "payoffs": {"row": float(row_ret[r, c]), "column": float(col_ret[r, c])},
            "path": [[int(s) // n, int(s) % n] for s in paths[r, c]],
        }

    tol = TOL * max(1.0, float(np.abs(A).max() + np.abs(B).max())) * rounds
    row_best = row_ret >= row_ret.max(axis=0, keepdims=True) - tol
    col_best = col_ret >= col_ret.max(axis=1, keepdims=True) - tol
    nash, seen = [], set()
    for r, c in zip(*np.nonzero(row_best & col_best), strict=True):
        key = tuple(paths[r, c])
        if key not in seen:
            seen.add(key)
            nash.append(entry(int(r), int(c)))
    nash.sort(key=lambda e: (-e["payoffs"]["row"], -e["payoffs"]["column"], e["path"]))

    if leader == "column":
        c, r = _commitment(col_ret.T, row_ret.T, tol)
    else:
        r, c = _commitment(row_ret, col_ret, tol)
    return {"nash": nash, "stackelberg": entry(r, c)}


def _commitment(leader_ret: np.ndarray, follower_ret: np.ndarray, tol: float) -> tuple[int, int]:
    """Leader-optimal commitment over a ``[leader policy, follower policy]`` table of returns."""
    is_best = follower_ret >= follower_ret.max(axis=1, keepdims=True) - tol
    # Among each row's follower best responses, the one the leader likes most (first on ties).
    favoured = np.where(is_best, leader_ret, -np.inf)
    response = favoured.argmax(axis=1)
    value = favoured[np.arange(len(response)), response]
    leader_choice = int(np.flatnonzero(value >= value.max() - tol)[0])
    return leader_choice, int(response[leader_choice])


def memory1_values(
    R1: np.ndarray,
    R2: np.ndarray,
    rounds: int,
    first_is_row: bool,
    t1: np.ndarray,
    t2: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact expected T-round returns of *stochastic* memory-1 policies, batched over profiles.

    The play of two memory-1 policies is a Markov chain on the ``m * n + 1`` states of
    :mod:`dgsolve.games.matrix` (last joint action, or the start), so the expected return is a
    sum over rounds of the state distribution times each state's expected payoff; no sampling.
    ``R1``/``R2`` are the first and second player's payoffs with the first player's actions as
    rows (``[m1, m2]``); ``first_is_row`` says whether the first player is the game's row player
    (states are ``row * n_cols + col``). ``t1 [P, S, m1]`` are the first player's action
    probabilities per state; ``t2 [P, S, m1, m2]`` the second's per state and first player's
    current action (a second player that does not see it repeats one row). ``P`` broadcasts.
    Returns ``(v1 [P], v2 [P])``.
    """
    R1, R2 = np.asarray(R1, dtype=np.float64), np.asarray(R2, dtype=np.float64)
    t1, t2 = np.asarray(t1, dtype=np.float64), np.asarray(t2, dtype=np.float64)
    m1, m2 = R1.shape
    P = max(len(t1), len(t2))
    t1 = np.broadcast_to(t1, (P, *t1.shape[1:]))
    t2 = np.broadcast_to(t2, (P, *t2.shape[1:]))
    S = t1.shape[1]
    joint = t1[..., None] * t2  # [P, S, m1, m2]
    stage1 = (joint * R1).sum(axis=(-2, -1))  # expected payoff at each state [P, S]
    stage2 = (joint * R2).sum(axis=(-2, -1))
    a, b = np.meshgrid(np.arange(m1), np.arange(m2), indexing="ij")
    n_cols = m2 if first_is_row else m1
    target = (a * n_cols + b) if first_is_row else (b * n_cols + a)  # [m1, m2] state index
    d = np.zeros((P, S))
    d[:, S - 1] = 1.0
    v1, v2 = np.zeros(P), np.zeros(P)
    for _ in range(rounds):
        v1 += (d * stage1).sum(-1)
        v2 += (d * stage2).sum(-1)
        flow = np.einsum("ps,psab->pab", d, joint)
        d = np.zeros((P, S))
        np.add.at(d, (slice(None), target.ravel()), flow.reshape(P, -1))
    return v1, v2
