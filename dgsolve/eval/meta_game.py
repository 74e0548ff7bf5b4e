"""Meta-games: solvers for empirical games between populations of policies, and their analysis.

An *empirical game* (Wellman, "Methods for Empirical Game-Theoretic Analysis", AAAI 2006) holds,
for every profile of population members, each player's expected payoff: ``payoffs[p][i_0, ...,
i_{n-1}]``. PSRO (Lanctot et al., "A Unified Game-Theoretic Approach to Multiagent Reinforcement
Learning", NeurIPS 2017) solves one each iteration for its *meta-strategy*, one mixture over its
population per player; cross-play tables are empirical games too. Meta-solvers by name
(:data:`META_SOLVERS`, :func:`solve`):

* ``nash``: an exact Nash equilibrium. Two-player zero- or constant-sum games: each player's
  maximin linear programme (von Neumann's minimax theorem), solved by HiGHS. Two-player
  general-sum games: every extreme equilibrium by vertex enumeration
  (:func:`dgsolve.eval.exact_matrix.nash_equilibria`, exponential in the populations' sizes) while
  its work estimate is at most :data:`MAX_ENUMERATION_WORK` (about 6×6, 3×12 or 2×20 members),
  ``select`` choosing the first or the highest-welfare one; beyond that the one Lemke–Howson
  finds (Lemke & Howson, "Equilibrium Points of Bimatrix Games", 1964; complementary pivoting
  from the artificial equilibrium dropping label 0, payoffs shifted positive, with the
  lexicographic ratio test so degenerate games terminate), whatever ``select`` says.
* ``replicator``: projected replicator dynamics (Lanctot et al. 2017, §3.1): Euler steps of the
  replicator equation, each player's mixture projected onto the simplex whose entries are at
  least ``floor / K`` (``K`` members; the paper's exploration parameter γ); the time average of
  the last ``average_last`` fraction of the run is returned, since in zero-sum games with an
  interior equilibrium the trajectories cycle around it and only their average converges.
* ``fictitious_play``: simultaneous fictitious play (Brown, "Iterative Solution of Games by
  Fictitious Play", 1951): every player best-responds to the others' empirical mixtures; the
  empirical mixtures are returned (they converge in two-player zero-sum games, Robinson 1951).
* ``uniform``: every member with equal probability (PSRO with it is fictitious self-play).
* ``alpharank``: multi-population α-Rank (Omidshafiei et al., "α-Rank: Multi-Agent Evaluation by
  Evolution", Scientific Reports 2019): the Markov chain over joint pure profiles in which one
  player at a time switches strategy with the Fermi fixation probability of a population of
  ``population_size``; each player's marginal of the stationary distribution. That is found by
  state reduction in logs (GTH, exact however far the fixation probabilities underflow, so
  chains with several near-absorbing profiles come out right) for up to
  :data:`MAX_DENSE_CHAIN` profiles, by a sparse linear solve beyond, up to
  :data:`MAX_SPARSE_CHAIN` profiles (about 50 members a seat); both agree with OpenSpiel's
  ``egt.alpharank.compute``.

:func:`analyse` reports a two-seat empirical game as cross-play writes it under ``meta``.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import MatrixRankWarning, spsolve

from dgsolve.errors import CapabilityError, ConfigError
from dgsolve.eval.exact_matrix import nash_equilibria

#: vertex enumeration (every extreme equilibrium) while C(m + n, m) · (m² + n²) is at most this
#: (the candidate bases of both best-response polytopes times the cost of each; about 0.5 s)
MAX_ENUMERATION_WORK = 100_000
#: how far from constant the sum of two players' payoffs may be for the game to be zero-sum
CONSTANT_SUM_TOL = 1e-9
#: probabilities below this count as outside an equilibrium's support
SUPPORT_TOL = 1e-6
#: α-Rank chains with at most this many profiles are solved densely in logs (exact whatever
#: the rates' spread; ~0.03 s at 128); larger ones by a sparse solve
MAX_DENSE_CHAIN = 128
#: where the sparse solve fails (the chain numerically reducible), the dense one up to this size
MAX_FALLBACK_CHAIN = 1024
#: the most joint profiles α-Rank solves at all: the sparse factor of its chain fills in
#: (measured: 50×50 profiles 2.9 s, 70×70 19 s, 100×100 129 s and 1.4 GB, 300×300 over 10 GB)
MAX_SPARSE_CHAIN = 2_500


# --------------------------------------------------------------------------- helpers
def _arrays(payoffs: Sequence[np.ndarray]) -> list[np.ndarray]:
    arrays = [np.asarray(u, np.float64) for u in payoffs]
    if not arrays or any(u.shape != arrays[0].shape for u in arrays):
        raise ValueError("payoffs: one array per player, all of the same shape")
    if arrays[0].ndim != len(arrays):
        raise ValueError(
            f"payoffs: {len(arrays)} players need arrays of {len(arrays)} dimensions, got "
            f"{arrays[0].ndim}"
        )
    return arrays


def _clean(x: np.ndarray) -> np.ndarray:
    x = np.where(x > SUPPORT_TOL * 1e-3, x, 0.0)
    return x / x.sum()


def pure_payoffs(payoff: np.ndarray, player: int, mixtures: Sequence[np.ndarray]) -> np.ndarray:
    """``player``'s payoff of each of its members when every other player ``q`` plays
    ``mixtures[q]``."""
    out = np.moveaxis(payoff, player, 0)
    others = [m for q, m in enumerate(mixtures) if q != player]
    for mixture in reversed(others):
        out = out @ mixture
    return out


def expected_payoffs(payoffs: Sequence[np.ndarray], mixtures: Sequence[np.ndarray]) -> list:
    """Each player's expected payoff when every player plays its mixture."""
    return [float(pure_payoffs(u, 0, mixtures) @ mixtures[0]) for u in payoffs]


def _simplex_floor(x: np.ndarray, low: float) -> np.ndarray:
    """The Euclidean projection of ``x`` onto ``{y : y_i ≥ low, Σ y = 1}``."""
    k = len(x)
    shifted = x - low
    budget = 1.0 - k * low
    # projection onto the simplex of mass ``budget`` (Held, Wolfe & Crowder 1974)
    u = np.sort(shifted)[::-1]
    cumulative = np.cumsum(u) - budget
    index = np.arange(1, k + 1)
    rho = np.nonzero(u - cumulative / index > 0)[0][-1]
    theta = cumulative[rho] / (rho + 1)
    return np.maximum(shifted - theta, 0.0) + low


# --------------------------------------------------------------------------- welfare
def utilitarian(values: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """The sum of the players' payoffs (last axis)."""
    return values.sum(-1)


def nash_welfare(values: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Nash's bargaining product of the players' gains over ``floor`` (each player's worst
    payoff in the game at hand, standing in for the disagreement point; Nash, "The Bargaining
    Problem", Econometrica 1950), as a sum of logs; a zero gain counts as a gain of 1e-12."""
    return np.log(np.maximum(values - floor, 1e-12)).sum(-1)


def egalitarian(values: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """The worst-off player's payoff (Rawls's maximin)."""
    return values.min(-1)


#: welfare function name -> ``fn(values [..., players], floor [players]) -> welfare [...]``
WELFARE_FNS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "utilitarian": utilitarian,
    "nash": nash_welfare,
    "egalitarian": egalitarian,
}


def welfare_of(name: str, values: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """``values`` (players on the last axis) ranked by the welfare function ``name``."""
    if name not in WELFARE_FNS:
        raise ConfigError(f"unknown welfare function '{name}'; known: {sorted(WELFARE_FNS)}")
    return WELFARE_FNS[name](np.asarray(values, np.float64), np.asarray(floor, np.float64))


def profile_welfare(payoffs: Sequence[np.ndarray], name: str) -> np.ndarray:
    """Every pure profile's welfare by ``name``, shaped like the empirical game."""
    arrays = _arrays(payoffs)
    values = np.stack(arrays, -1)
    floor = np.array([a.min() for a in arrays])
    return welfare_of(name, values, floor)


# --------------------------------------------------------------------------- solvers
def nash(
    payoffs: Sequence[np.ndarray], select: str = "first", welfare: str = "utilitarian"
) -> list[np.ndarray]:
    """An exact Nash equilibrium of a two-player empirical game (see the module docstring).

    ``select`` picks among the equilibria of a general-sum game: ``"first"`` (the one putting
    most weight on early members) or ``"welfare"`` (the highest welfare by the welfare function
    ``welfare``, :data:`WELFARE_FNS`). A small game's candidates are all its extreme equilibria;
    beyond vertex enumeration's bound they are those Lemke–Howson reaches from each of the
    ``m + n`` labels (Shapley 1974: different labels can end at different equilibria), and
    ``"first"`` takes label 0's. Zero-sum games need no choice: every equilibrium has the same
    value.
    """
    if select not in ("first", "welfare"):
        raise ConfigError(f"nash: select must be 'first' or 'welfare', not {select!r}")
    if welfare not in WELFARE_FNS:
        raise ConfigError(f"unknown welfare function '{welfare}'; known: {sorted(WELFARE_FNS)}")
    arrays = _arrays(payoffs)
    if len(arrays) != 2:
        raise ConfigError(
            f"meta_solver nash is for two players, this game has {len(arrays)}; for n players "
            "use replicator, alpharank or fictitious_play"
        )
    A, B = arrays
    total = A + B
    scale = max(1.0, float(np.abs(A).max()), float(np.abs(B).max()))
    if float(total.max() - total.min()) <= CONSTANT_SUM_TOL * scale:
        return [_maximin(A), _maximin(B.T)]
    if enumeration_work(*A.shape) <= MAX_ENUMERATION_WORK:
        found = nash_equilibria(A, B, ("row", "column"))
    else:
        found = []
    if found:
        candidates = [
            [np.asarray(e["strategies"][seat], np.float64) for seat in ("row", "column")]
            for e in found
        ]
    elif select == "welfare":
        candidates = [lemke_howson(A, B, label) for label in range(sum(A.shape))]
    else:
        return lemke_howson(A, B)
    if select == "welfare":
        floor = np.array([A.min(), B.min()])
        values = np.array([expected_payoffs([A, B], sigma) for sigma in candidates])
        scores = welfare_of(welfare, values, floor)
        return candidates[int(np.argmax(scores))]  # the first of equal ones
    return candidates[0]


def enumeration_work(m: int, n: int) -> int:
    """The work estimate of vertex enumeration on an ``m × n`` game (see MAX_ENUMERATION_WORK)."""
    return math.comb(m + n, m) * (m * m + n * n)


def _maximin(A: np.ndarray) -> np.ndarray:
    """The row player's maximin mixture of the matrix game ``A`` (it maximises ``v`` subject to
    ``xᵀA ≥ v`` column by column)."""
    m, n = A.shape
    cost = np.zeros(m + 1)
    cost[-1] = -1.0  # maximise v
    upper = np.hstack([-A.T, np.ones((n, 1))])  # v - xᵀA_j ≤ 0
    equal = np.hstack([np.ones((1, m)), np.zeros((1, 1))])
    bounds = [(0, None)] * m + [(None, None)]
    result = linprog(cost, upper, np.zeros(n), equal, [1.0], bounds=bounds, method="highs")
    if result.status != 0:
        raise RuntimeError(f"the maximin LP failed: {result.message}")
    return _clean(np.maximum(result.x[:m], 0.0))


def lemke_howson(A: np.ndarray, B: np.ndarray, first_label: int = 0) -> list[np.ndarray]:
    """One Nash equilibrium of the bimatrix game ``(A, B)`` by Lemke–Howson from the artificial
    equilibrium, dropping label ``first_label``; lexicographic ratio tests."""
    A = np.asarray(A, np.float64)
    B = np.asarray(B, np.float64)
    m, n = A.shape
    # equilibria are unchanged by adding a constant: make every payoff positive
    A = A - A.min() + 1.0
    B = B - B.min() + 1.0
    # labels 0..m-1: the row player's strategies, m..m+n-1: the column player's. Tableau "row"
    # holds x (labels 0..m-1) and the column player's slacks (labels m..): Bᵀx + s = 1;
    # tableau "col" holds the row player's slacks (labels 0..m-1) and y (labels m..): Ay + r = 1.
    tableaux = {
        "row": np.hstack([B.T, np.eye(n), np.ones((n, 1))]),
        "col": np.hstack([np.eye(m), A, np.ones((m, 1))]),
    }
    basis = {"row": list(range(m, m + n)), "col": list(range(m))}
    slack_columns = {"row": list(range(m, m + n)), "col": list(range(m))}
    entering = first_label
    side = "row" if entering < m else "col"
    for _ in range(10_000 * (m + n)):
        table = tableaux[side]
        column = table[:, entering]
        candidates = np.flatnonzero(column > 1e-12)
        if not len(candidates):
            raise RuntimeError("Lemke-Howson: unbounded pivot (the payoffs are not positive)")
        # lexicographic minimum ratio: rhs first, then the initial basis' columns
        keys = np.hstack([table[:, -1:], table[:, slack_columns[side]]])[candidates]
        keys = keys / column[candidates, None]
        order = np.lexsort(keys.T[::-1])
        pivot = int(candidates[order[0]])
        table[pivot] /= table[pivot, entering]
        factor = table[:, entering].copy()
        factor[pivot] = 0.0
        table -= np.outer(factor, table[pivot])
        leaving = basis[side][pivot]
        basis[side][pivot] = entering
        if leaving == first_label:
            break
        entering = leaving
        side = "col" if side == "row" else "row"
    else:
        raise RuntimeError("Lemke-Howson did not terminate")
    x, y = np.zeros(m), np.zeros(n)
    for r, label in enumerate(basis["row"]):
        if label < m:
            x[label] = tableaux["row"][r, -1]
    for r, label in enumerate(basis["col"]):
        if label >= m:
            y[label - m] = tableaux["col"][r, -1]
    return [_clean(np.maximum(x, 0.0)), _clean(np.maximum(y, 0.0))]


def replicator(
    payoffs: Sequence[np.ndarray],
    iterations: int = 10_000,
    step: float = 0.01,
    floor: float = 1e-3,
    average_last: float = 0.5,
) -> list[np.ndarray]:
    """Projected replicator dynamics from the uniform mixtures, averaged over the last
    ``average_last`` of the ``iterations`` steps (see the module docstring)."""
    arrays = _arrays(payoffs)
    if iterations < 1 or step <= 0 or not 0 <= floor < 1 or not 0 < average_last <= 1:
        raise ConfigError(
            "replicator: iterations ≥ 1, step > 0, 0 ≤ floor < 1 and 0 < average_last ≤ 1"
        )
    mixtures = [np.full(k, 1.0 / k) for k in arrays[0].shape]
    average = [np.zeros(k) for k in arrays[0].shape]
    start = min(iterations - 1, int(iterations * (1.0 - average_last)))
    for t in range(iterations):
        fitness = [pure_payoffs(u, p, mixtures) for p, u in enumerate(arrays)]
        mixtures = [
            _simplex_floor(x + step * x * (f - x @ f), floor / len(x))
            for x, f in zip(mixtures, fitness, strict=True)
        ]
        if t >= start:
            for total, x in zip(average, mixtures, strict=True):
                total += x
    return [_clean(total) for total in average]


def fictitious_play(payoffs: Sequence[np.ndarray], iterations: int = 10_000) -> list[np.ndarray]:
    """Simultaneous fictitious play from the uniform mixtures (see the module docstring)."""
    arrays = _arrays(payoffs)
    if iterations < 1:
        raise ConfigError("fictitious_play: iterations ≥ 1")
    counts = [np.full(k, 1.0 / k) for k in arrays[0].shape]  # the uniform first belief
    for _ in range(iterations):
        beliefs = [c / c.sum() for c in counts]
        for p, u in enumerate(arrays):
            counts[p][int(np.argmax(pure_payoffs(u, p, beliefs)))] += 1.0
    return [c / c.sum() for c in counts]


def uniform(payoffs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Every member with equal probability."""
    return [np.full(k, 1.0 / k) for k in _arrays(payoffs)[0].shape]


def _log_fixation(resident: np.ndarray, mutant: np.ndarray, alpha: float, m: int) -> np.ndarray:
    """The log of the probability that one mutant takes over a population of ``m`` residents,
    ``(1 - e^{-d}) / (1 - e^{-m d})`` with ``d = α (f_mutant - f_resident)`` (Fermi selection;
    ``1 / m`` when neutral), in logs because for large α it underflows."""
    d = alpha * (mutant - resident)
    out = np.full(d.shape, -np.log(m))
    up, down = d > 1e-14, d < -1e-14  # OpenSpiel's tolerance for neutral mutants
    out[up] = np.log(-np.expm1(-d[up])) - np.log(-np.expm1(-m * d[up]))
    # d < 0: the same ratio is e^{(m-1)d} (1 - e^{d}) / (1 - e^{md})
    dd = d[down]
    out[down] = (m - 1) * dd + np.log(-np.expm1(dd)) - np.log(-np.expm1(m * dd))
    return out


def alpharank_profiles(
    payoffs: Sequence[np.ndarray], alpha: float = 100.0, population_size: int = 50
) -> np.ndarray:
    """The stationary distribution of multi-population α-Rank over joint pure profiles."""
    arrays = _arrays(payoffs)
    if alpha <= 0 or population_size < 2:
        raise ConfigError("alpharank: alpha > 0 and population_size ≥ 2")
    shape = arrays[0].shape
    size = int(np.prod(shape))
    if size == 1:
        return np.ones(shape)
    if size > MAX_SPARSE_CHAIN:
        raise CapabilityError(
            f"alpharank: {size:,} joint profiles are more than the {MAX_SPARSE_CHAIN:,} its "
            "sparse solve handles (its factor fills in); use smaller populations"
        )
    # one player at a time picks another of its members uniformly (rate η) and the mutant fixes
    eta = 1.0 / sum(k - 1 for k in shape)
    profiles = np.arange(size)
    index = np.stack(np.unravel_index(profiles, shape))  # [n, size]
    sources, targets, log_rates = [], [], []
    for p, u in enumerate(arrays):
        resident = u.reshape(-1)
        for strategy in range(shape[p]):
            moved = index[p] != strategy
            target = index[:, moved].copy()
            target[p] = strategy
            destination = np.ravel_multi_index(tuple(target), shape)
            sources.append(profiles[moved])
            targets.append(destination)
            log_rates.append(
                np.log(eta)
                + _log_fixation(resident[moved], resident[destination], alpha, population_size)
            )
    src, dst, log_rate = map(np.concatenate, (sources, targets, log_rates))
    if size <= MAX_DENSE_CHAIN:
        pi = _stationary_log_gth(src, dst, log_rate, size)
    else:
        pi = _stationary_sparse(src, dst, np.exp(log_rate), size)
        if pi is None:
            if size > MAX_FALLBACK_CHAIN:
                raise CapabilityError(
                    f"alpharank: the {size}-profile chain is numerically reducible (α={alpha} "
                    "makes some fixation probabilities underflow); use a smaller alpha"
                )
            pi = _stationary_log_gth(src, dst, log_rate, size)
    return pi.reshape(shape)


def _stationary_sparse(
    src: np.ndarray, dst: np.ndarray, rate: np.ndarray, size: int
) -> np.ndarray | None:
    """π of the chain with off-diagonal rates ``rate[k]`` from ``src[k]`` to ``dst[k]``, by one
    sparse solve of ``π (I - C) = 0`` with one equation swapped for ``Σ π = 1`` (nonsingular when
    the stationary distribution is unique); None when the system is singular or ill-conditioned
    in floating point (two closed classes, say, as rates underflow)."""
    leaving = np.bincount(src, weights=rate, minlength=size)
    # (I - C)ᵀ: column s holds s's outflow on the diagonal and minus its rates to others
    system = coo_matrix(
        (
            np.concatenate([-rate, leaving]),
            (np.concatenate([dst, np.arange(size)]), np.concatenate([src, np.arange(size)])),
        ),
        (size, size),
    ).tolil()
    system[size - 1, :] = np.ones(size)
    rhs = np.zeros(size)
    rhs[-1] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", MatrixRankWarning)
        try:
            pi = spsolve(system.tocsc(), rhs)
        except MatrixRankWarning:
            return None
    if not np.isfinite(pi).all() or pi.min() < -1e-12:
        return None
    pi = np.maximum(pi, 0.0)
    residual = np.abs(np.bincount(dst, weights=pi[src] * rate, minlength=size) - pi * leaving)
    if residual.sum() > 1e-10 * max(1.0, float((pi * leaving).sum())):
        return None
    return pi / pi.sum()


def _stationary_log_gth(
    src: np.ndarray, dst: np.ndarray, log_rate: np.ndarray, size: int
) -> np.ndarray:
    """π of the same chain by state reduction (Grassmann, Taksar & Heyman, "Regenerative
    analysis and steady state distributions for Markov chains", Operations Research 1985), which
    never subtracts, carried out in logs so that rates far below the smallest double still
    count: exact to round-off whatever the spread of the rates, but dense, O(size³)."""
    L = np.full((size, size), -np.inf)
    L[src, dst] = log_rate
    outflow = np.empty(size)
    for n in range(size - 1, 0, -1):
        # censor the chain on states 0..n-1: paths through n are folded into direct rates
        outflow[n] = np.logaddexp.reduce(L[n, :n])
        L[:n, :n] = np.logaddexp(L[:n, :n], L[:n, n, None] + L[None, n, :n] - outflow[n])
    log_pi = np.zeros(size)
    for j in range(1, size):
        log_pi[j] = np.logaddexp.reduce(log_pi[:j] + L[:j, j]) - outflow[j]
    pi = np.exp(log_pi - log_pi.max())
    return pi / pi.sum()


def alpharank(
    payoffs: Sequence[np.ndarray], alpha: float = 100.0, population_size: int = 50
) -> list[np.ndarray]:
    """Each player's marginal of :func:`alpharank_profiles`."""
    pi = alpharank_profiles(payoffs, alpha, population_size)
    axes = range(pi.ndim)
    return [pi.sum(axis=tuple(a for a in axes if a != p)) for p in axes]


META_SOLVERS: dict[str, Callable[..., list[np.ndarray]]] = {
    "nash": nash,
    "replicator": replicator,
    "fictitious_play": fictitious_play,
    "uniform": uniform,
    "alpharank": alpharank,
}


def solve(name: str, payoffs: Sequence[np.ndarray], **options) -> list[np.ndarray]:
    """The meta-strategy of ``payoffs`` by the meta-solver ``name`` (one mixture per player)."""
    if name not in META_SOLVERS:
        raise ConfigError(f"unknown meta_solver '{name}'; known: {sorted(META_SOLVERS)}")
    solver = META_SOLVERS[name]
    known = [p for p in inspect.signature(solver).parameters if p != "payoffs"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"meta_solver {name} has no option {unknown[0]!r}; its options: {known}")
    return solver(payoffs, **options)


# --------------------------------------------------------------------------- analysis
def analyse(
    p1: np.ndarray,
    p2: np.ndarray,
    names: list[str],
    select: str = "welfare",
    column_names: list[str] | None = None,
    leave_one_out: bool = True,
) -> dict[str, Any]:
    """The meta-game analysis of a two-seat empirical game: ``p1[i][j]`` and ``p2[i][j]`` are
    the seats' payoffs when ``names[i]`` sits in seat 1 and ``column_names[j]`` in seat 2 (by
    default the same policies ``names`` sit in both seats, as in cross-play; PSRO's two
    populations differ).

    Returns plain lists and floats: ``policies`` (and ``column_policies`` where the seats
    differ); ``nash``, each seat's equilibrium mixture and ``values`` (by :func:`nash`,
    ``select="welfare"``: the highest-welfare extreme equilibrium of a small game); ``support``,
    the policies each seat plays; ``welfare``, the seats' payoff sum at it; ``regret``, each
    policy's loss against the other seat's mixture, ``u(σ*) − u(i, σ*_other)`` (≥ 0, zero on the
    support); ``alpharank``, each seat's marginal of :func:`alpharank_profiles` and its five
    heaviest profiles ``[seat-1 name, seat-2 name, mass]`` (or ``error`` where the chain is too
    large); and ``leave_one_out`` (unless switched off), the equilibrium of the game without each
    policy (in either seat where both seats hold the same policies, else in its own seat,
    ``seat`` saying which), with its welfare and the change from the full one.
    """
    A, B = np.asarray(p1, np.float64), np.asarray(p2, np.float64)
    rows = list(names)
    columns = rows if column_names is None else list(column_names)
    same = columns == rows
    if A.shape != (len(rows), len(columns)) or B.shape != A.shape:
        raise ValueError(
            f"p1 and p2 must be {len(rows)}×{len(columns)} for these policies; got {A.shape}, "
            f"{B.shape}"
        )
    if not (np.isfinite(A).all() and np.isfinite(B).all()):
        raise ValueError("the empirical game's payoffs are not finite")
    sigma, values = _equilibrium(A, B, select)
    row_payoff, col_payoff = A @ sigma[1], sigma[0] @ B
    out: dict[str, Any] = {
        "policies": rows,
        "nash": _mixtures(sigma, values),
        "alpharank": _alpharank_section(A, B, rows, columns),
        "regret": {
            "p1": {n: values[0] - float(v) for n, v in zip(rows, row_payoff, strict=True)},
            "p2": {n: values[1] - float(v) for n, v in zip(columns, col_payoff, strict=True)},
        },
        "welfare": values[0] + values[1],
        "support": {
            seat: [n for n, x in zip(seat_names, mixture, strict=True) if x > SUPPORT_TOL]
            for seat, seat_names, mixture in zip(("p1", "p2"), (rows, columns), sigma, strict=True)
        },
        "leave_one_out": [],
    }
    if not same:
        out["column_policies"] = columns
    if not leave_one_out:
        return out
    removals = []  # (seat, name, rows kept, columns kept)
    for k, name in enumerate(rows):
        keep_rows = [i for i in range(len(rows)) if i != k]
        keep_columns = keep_rows if same else list(range(len(columns)))
        removals.append(("both" if same else "p1", name, keep_rows, keep_columns))
    if not same:
        for k, name in enumerate(columns):
            keep = [j for j in range(len(columns)) if j != k]
            removals.append(("p2", name, list(range(len(rows))), keep))
    for seat, name, keep_rows, keep_columns in removals:
        if not keep_rows or not keep_columns:
            continue
        cut = np.ix_(keep_rows, keep_columns)
        sub, sub_values = _equilibrium(A[cut], B[cut], select)
        welfare = sub_values[0] + sub_values[1]
        row = _mixtures(sub, sub_values)
        entry = {
            "removed": name,
            "nash": {"p1": row["p1"], "p2": row["p2"]},
            "values": row["values"],
            "welfare": welfare,
            "welfare_change": welfare - out["welfare"],
        }
        if not same:
            entry["seat"] = seat
        out["leave_one_out"].append(entry)
    return out


def _alpharank_section(A, B, rows: list[str], columns: list[str]) -> dict[str, Any]:
    try:
        pi = alpharank_profiles([A, B])
    except CapabilityError as err:
        return {"error": str(err)}
    flat = pi.reshape(-1)
    k = len(columns)
    return {
        "p1": pi.sum(1).tolist(),
        "p2": pi.sum(0).tolist(),
        "top_profiles": [
            [rows[i // k], columns[i % k], float(flat[i])]
            for i in np.argsort(-flat, kind="stable")[:5]
        ],
    }


def _equilibrium(A: np.ndarray, B: np.ndarray, select: str) -> tuple[list[np.ndarray], list]:
    sigma = nash([A, B], select=select)
    return sigma, expected_payoffs([A, B], sigma)


def _mixtures(sigma: list[np.ndarray], values: list[float]) -> dict[str, Any]:
    return {
        "p1": sigma[0].tolist(),
        "p2": sigma[1].tolist(),
        "values": {"p1": values[0], "p2": values[1]},
    }
