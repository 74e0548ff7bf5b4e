"""Exact feedback equilibria of linear-quadratic games, and metrics for learned linear policies.

For the games of :mod:`dgsolve.games.lq` every feedback equilibrium is linear, ``u_i = -K_i x``,
with quadratic values ``V_i(x) = x^T P_i x + c_i``. One stage of the backward recursion, given the
next stage's ``P_i'``, solves the players' first-order conditions for the current gains and then
updates ``P_i = Q_i + sum_j K_j^T R_ij K_j + g F^T P_i' F`` with ``F = A - sum_j B_j K_j``
(``g`` the discount, 1 for a finite horizon):

* Nash (Başar & Olsder, "Dynamic Noncooperative Game Theory", 2nd ed., 1999, ch. 6, the coupled
  Riccati equations of feedback Nash equilibria in discrete time): all players decide at once; the
  conditions are one linear system in the stacked gains.
* Stackelberg in tiers (ibid., ch. 7, feedback Stackelberg solution): within each stage tier ``k``
  observes ``x`` and the actions of tiers ``< k``. Working from the last tier up, each tier's
  reaction is linear in ``x`` and the earlier tiers' actions; an earlier tier optimises with those
  reactions substituted (players within a tier are in Nash with one another). One tier of all
  players is the Nash case, so both share one implementation.

A finite horizon ``T`` starts from ``P_i(T) = Qf_i`` and gives time-varying gains ``K_i(t)``. A
discounted infinite horizon iterates the stage map from ``P_i = Q_i`` to a fixed point, which
selects the equilibrium that is the limit of the finite-horizon games. Expected costs are
``E[x0^T P_i x0] + noise terms``: ``mu^T P mu + s0^2 tr P`` for ``x0 ~ N(mu, s0^2 I)`` and, for
noise ``w ~ N(0, s^2 I)``, ``sum_t s^2 tr P_i(t)`` (finite) or ``g s^2 tr P_i / (1 - g)``.
Action clipping is ignored: the references assume the bound is not reached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from dgsolve import lazy_import
from dgsolve.errors import ConfigError, HierarchyError
from dgsolve.games.lq import LQConfig, LQMatrices, lq_matrices

# scipy.linalg costs a tiny run's start-up a second; it is loaded when an LQ game is solved
scipy_linalg = lazy_import("scipy.linalg")

#: relative change of the value matrices at which the infinite-horizon iteration has converged.
RICCATI_TOL = 1e-11
#: iterations allowed before the infinite-horizon iteration is declared not to converge.
RICCATI_MAX_ITER = 100_000


class _Stage(NamedTuple):
    gains: dict[str, np.ndarray]  # u_i = -K_i x on the equilibrium path
    response: dict[str, np.ndarray]  # u_i = -G_i [x; actions of earlier tiers]
    values: dict[str, np.ndarray]  # P_i of the current stage


# --------------------------------------------------------------------------- one stage
def _stage(
    mats: LQMatrices,
    tiers: list[list[str]],
    P_next: dict[str, np.ndarray],
    discount: float,
) -> _Stage:
    """Solve one stage of the tiered feedback game given next-stage values ``P_next``."""
    order = [agent for tier in tiers for agent in tier]
    dims = {i: mats.B[i].shape[1] for i in order}
    offset = dict(zip(order, np.cumsum([0] + [dims[i] for i in order])[:-1], strict=True))
    n = mats.A.shape[0]
    total = sum(dims.values())
    B_all = np.hstack([mats.B[i] for i in order])
    # R_all[i] is block-diagonal over the stacked actions: u^T R_all[i] u = sum_j u_j^T R_ij u_j.
    R_all = {i: scipy_linalg.block_diag(*[mats.R[i][j] for j in order]) for i in order}

    response: dict[str, np.ndarray] = {}
    # Phi maps the context of the tier after the current one, [x; actions of tiers <= k], to the
    # actions of all later tiers (u_later = -Phi @ context); nothing follows the last tier.
    Phi = np.zeros((0, n + total))
    for k in range(len(tiers) - 1, -1, -1):
        before = offset[tiers[k][0]]
        width = sum(dims[i] for i in tiers[k])
        ctx = n + before  # context of tier k: [x; actions of tiers < k]
        # All actions as a linear function of the context z and tier k's own actions w.
        C_z = np.zeros((total, ctx))
        C_z[:before, n:] = np.eye(before)
        C_z[before + width :] = -Phi[:, :ctx]
        C_w = np.zeros((total, width))
        C_w[before : before + width] = np.eye(width)
        C_w[before + width :] = -Phi[:, ctx:]
        D_z = np.hstack([mats.A, np.zeros((n, before))]) + B_all @ C_z
        D_w = B_all @ C_w
        N_rows, M_rows = [], []
        for i in tiers[k]:
            rows = slice(offset[i] - before, offset[i] - before + dims[i])
            H = C_w.T @ R_all[i] @ C_w + discount * D_w.T @ P_next[i] @ D_w
            own = H[rows, rows]
            if not np.isfinite(H).all():
                raise _ValuesDiverged  # unstable dynamics, not a non-convex cost: see _solve
            if np.linalg.eigvalsh((own + own.T) / 2).min() <= 0:
                raise ConfigError(
                    f"player {i}'s stage cost is not convex in its own action, so the LQ game "
                    f"has no feedback equilibrium of this form; raise env.R.{i}.{i} or make "
                    f"env.Q.{i} (and env.Qf.{i}) less negative"
                )
            N_rows.append(H[rows])
            M_rows.append((C_w.T @ R_all[i] @ C_z + discount * D_w.T @ P_next[i] @ D_z)[rows])
        try:
            G = np.linalg.solve(np.vstack(N_rows), np.vstack(M_rows))
        except np.linalg.LinAlgError:
            raise ConfigError(
                f"the first-order conditions of tier {tiers[k]} are singular, so its feedback "
                "equilibrium is not unique; change env.R or env.B to make the players' actions "
                "distinguishable"
            ) from None
        for i in tiers[k]:
            response[i] = G[offset[i] - before : offset[i] - before + dims[i]]
        Phi = np.vstack([G, Phi[:, :ctx] - Phi[:, ctx:] @ G])

    K_all = Phi  # the first tier's context is x alone
    gains = {i: K_all[offset[i] : offset[i] + dims[i]] for i in order}
    F = mats.A - B_all @ K_all
    values = {}
    for i in order:
        P = mats.Q[i] + K_all.T @ R_all[i] @ K_all + discount * F.T @ P_next[i] @ F
        values[i] = (P + P.T) / 2
    return _Stage(gains, response, values)


class _ValuesDiverged(Exception):
    """A stage met non-finite next-stage values: the Riccati recursion overflowed."""


#: value matrices this many times the stage costs' scale have left the range where rounding
#: keeps them positive semi-definite: the recursion is diverging, not meeting a non-convex cost
BLOWN_UP = 1e10


def _blown_up(P: dict[str, np.ndarray], Q: dict[str, np.ndarray]) -> bool:
    scale = max(1.0, max(float(np.abs(q).max()) for q in Q.values()))
    return max(float(np.abs(p).max()) for p in P.values()) > BLOWN_UP * scale


# --------------------------------------------------------------------------- equilibria
def feedback_nash(cfg: LQConfig) -> dict[str, Any]:
    """Feedback Nash equilibrium: ``{"gains": {agent: K}, "costs": {agent: expected cost}}``.

    ``K`` is an ``m_i x n`` nested list with ``u_i = -K x``; for a finite horizon it is a list of
    ``T`` such matrices, one per step ``t = 0 .. T-1``. Costs are expected totals (discounted for
    an infinite horizon) from the initial-state distribution, so rewards sum to ``-cost``.
    """
    cfg = LQConfig.coerce(cfg)
    mats = lq_matrices(cfg)
    result = _solve(cfg, mats, [list(mats.agents)])
    return {"gains": result["gains"], "costs": result["costs"]}


def feedback_stackelberg(
    cfg: LQConfig, tiers: Sequence[Sequence[str]] | None = None
) -> dict[str, Any]:
    """Feedback Stackelberg equilibrium for ``tiers`` (default: the leader, then everyone else).

    Returns ``gains`` and ``costs`` as :func:`feedback_nash`, plus ``tiers`` and ``response``:
    for every agent outside the first tier, ``G`` with ``u_i = -G [x; u of earlier tiers]``,
    the earlier tiers' actions stacked in tier order (the observation a follower gets in
    dgsolve's hierarchy, without the time feature). Per step for a finite horizon.
    """
    cfg = LQConfig.coerce(cfg)
    mats = lq_matrices(cfg)
    if tiers is None:
        leader = cfg.leader if cfg.leader is not None else mats.agents[0]
        tiers = [[leader], [i for i in mats.agents if i != leader]]
    tiers = [list(t) for t in tiers if len(t) > 0]
    flat = [i for t in tiers for i in t]
    if sorted(flat) != sorted(mats.agents):
        raise HierarchyError(
            f"tiers {tiers} must list every agent of the game exactly once: {list(mats.agents)}"
        )
    result = _solve(cfg, mats, tiers)
    later = [i for t in tiers[1:] for i in t]
    return {
        "gains": result["gains"],
        "costs": result["costs"],
        "tiers": tiers,
        "response": {i: result["response"][i] for i in later},
    }


def _solve(cfg: LQConfig, mats: LQMatrices, tiers: list[list[str]]) -> dict[str, Any]:
    agents = mats.agents
    mu = np.asarray(cfg.x0_mean, dtype=np.float64)

    def start_cost(P: np.ndarray) -> float:
        return float(mu @ P @ mu + cfg.x0_std**2 * np.trace(P))

    if cfg.horizon is not None:
        P = dict(mats.Qf)
        noise = dict.fromkeys(agents, 0.0)
        stages = []
        for _ in range(cfg.horizon):
            for i in agents:  # noise enters the transition into the stage whose value is P
                noise[i] += cfg.noise_std**2 * float(np.trace(P[i]))
            try:
                stage = _stage(mats, tiers, P, 1.0)
            except (_ValuesDiverged, ConfigError) as err:
                if isinstance(err, ConfigError) and not _blown_up(P, mats.Q):
                    raise
                raise ConfigError(
                    f"the players' values overflow over env.horizon={cfg.horizon} steps: the "
                    "state grows too fast for any policy to keep its cost finite (make env.A "
                    "less unstable, or shorten env.horizon)"
                ) from None
            P = stage.values
            stages.append(stage)
        stages.reverse()  # stages[t] is step t
        return {
            "gains": {i: [s.gains[i].tolist() for s in stages] for i in agents},
            "response": {i: [s.response[i].tolist() for s in stages] for i in agents},
            "costs": {i: start_cost(P[i]) + noise[i] for i in agents},
        }

    g = float(cfg.discount)
    P = dict(mats.Q)
    # A diverging iteration overflows on its way to inf; that is detected below, not an error.
    with np.errstate(over="ignore", invalid="ignore"):
        for iteration in range(RICCATI_MAX_ITER):
            try:
                stage = _stage(mats, tiers, P, g)
            except _ValuesDiverged:
                stage = None
            except ConfigError:
                if not _blown_up(P, mats.Q):
                    raise
                stage = None  # a value so large that rounding broke its convexity: divergence
            change = max(np.abs(stage.values[i] - P[i]).max() for i in agents) if stage else np.inf
            if not np.isfinite(change):
                raise ConfigError(
                    f"the coupled Riccati iteration for env.discount={g} diverged after "
                    f"{iteration + 1} iterations: in equilibrium the players do not keep the "
                    "state bounded at this discount (lower env.discount, or use env.horizon)"
                )
            scale = max(1.0, max(np.abs(stage.values[i]).max() for i in agents))
            P = stage.values
            if change <= RICCATI_TOL * scale:
                noise = {i: g * cfg.noise_std**2 * float(np.trace(P[i])) / (1 - g) for i in agents}
                return {
                    "gains": {i: stage.gains[i].tolist() for i in agents},
                    "response": {i: stage.response[i].tolist() for i in agents},
                    "costs": {i: start_cost(P[i]) + noise[i] for i in agents},
                }
    raise ConfigError(
        f"the coupled Riccati iteration for env.discount={g} did not converge in "
        f"{RICCATI_MAX_ITER} iterations; the game may have no stationary feedback equilibrium "
        "(lower env.discount, or use a finite env.horizon)"
    )


# --------------------------------------------------------------------------- metrics
def evaluate_gains(cfg: LQConfig, gains: dict[str, Any]) -> dict[str, float]:
    """Each player's exact expected cost when everyone plays the linear policy ``u_i = -K_i x``.

    ``gains[i]`` is one ``m_i x n`` matrix, or for a finite horizon optionally a list of ``T``
    (one per step). An infinite-horizon profile whose discounted closed loop does not contract
    costs ``inf``.
    """
    cfg = LQConfig.coerce(cfg)
    mats = lq_matrices(cfg)
    agents = mats.agents
    mu = np.asarray(cfg.x0_mean, dtype=np.float64)
    steps = cfg.horizon if cfg.horizon is not None else 1
    K = {i: _per_step(gains[i], steps, mats.B[i].shape[1], mats.A.shape[0]) for i in agents}

    def stage_terms(t: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        F = mats.A - sum(mats.B[j] @ K[j][t] for j in agents)
        Q_eff = {
            i: mats.Q[i] + sum(K[j][t].T @ mats.R[i][j] @ K[j][t] for j in agents) for i in agents
        }
        return F, Q_eff

    costs = {}
    if cfg.horizon is not None:
        P = dict(mats.Qf)
        noise = dict.fromkeys(agents, 0.0)
        for t in range(cfg.horizon - 1, -1, -1):
            F, Q_eff = stage_terms(t)
            for i in agents:
                noise[i] += cfg.noise_std**2 * float(np.trace(P[i]))
                P[i] = Q_eff[i] + F.T @ P[i] @ F
        for i in agents:
            costs[i] = float(mu @ P[i] @ mu + cfg.x0_std**2 * np.trace(P[i]) + noise[i])
        return costs

    g = float(cfg.discount)
    F, Q_eff = stage_terms(0)
    if np.sqrt(g) * np.abs(np.linalg.eigvals(F)).max() >= 1.0:
        return dict.fromkeys(agents, float("inf"))
    for i in agents:
        # P = Q_eff + g F^T P F, the discounted value of the closed loop.
        P = scipy_linalg.solve_discrete_lyapunov(np.sqrt(g) * F.T, Q_eff[i])
        noise = g * cfg.noise_std**2 * float(np.trace(P)) / (1 - g)
        costs[i] = float(mu @ P @ mu + cfg.x0_std**2 * np.trace(P) + noise)
    return costs


def _per_step(gain: Any, steps: int, rows: int, cols: int) -> list[np.ndarray]:
    K = np.asarray(gain, dtype=np.float64)
    if K.shape == (rows, cols):
        return [K] * steps
    if K.shape == (steps, rows, cols):
        return list(K)
    raise ValueError(f"a gain must be {rows}x{cols} or {steps}x{rows}x{cols}, got {K.shape}")


def cost_gap(cfg: LQConfig, gains: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    """Per player, the exact expected cost of the linear profile ``gains`` minus the reference's
    (a :func:`feedback_nash` or :func:`feedback_stackelberg` result); positive = costlier."""
    costs = evaluate_gains(cfg, gains)
    return {i: costs[i] - float(reference["costs"][i]) for i in costs}


class LinearFit(NamedTuple):
    """Least-squares fit ``u ~= -gain @ x + intercept`` of a policy's mean action."""

    gain: np.ndarray  # [m, n]
    intercept: np.ndarray  # [m]; near zero for a policy that is linear in the state
    r2: float  # fraction of the action variance the fit explains (1 = exactly affine)


def fit_linear_gain(
    mean_action_fn: Callable[[np.ndarray], np.ndarray], states: np.ndarray
) -> LinearFit:
    """Fit ``u = -K x + b`` to ``mean_action_fn(states)`` (``[N, n] -> [N, m]`` numpy arrays).

    Sample ``states`` where the policy acts (e.g. from its own rollouts); fitting where the action
    bound clips the policy biases ``K`` towards zero.
    """
    X = np.asarray(states, dtype=np.float64)
    U = np.asarray(mean_action_fn(states), dtype=np.float64).reshape(len(X), -1)
    design = np.hstack([X, np.ones((len(X), 1))])
    coef, *_ = np.linalg.lstsq(design, U, rcond=None)
    residual = U - design @ coef
    total = ((U - U.mean(axis=0)) ** 2).sum()
    r2 = 1.0 - float((residual**2).sum() / total) if total > 0 else 1.0
    return LinearFit(gain=-coef[:-1].T, intercept=coef[-1], r2=r2)


def gain_error(K_learned: Any, K_ref: Any) -> float:
    """Relative Frobenius error ``|K_learned - K_ref| / |K_ref|`` (absolute if ``K_ref`` = 0).

    Works on single gains and on per-step lists of gains alike."""
    learned = np.asarray(K_learned, dtype=np.float64)
    ref = np.asarray(K_ref, dtype=np.float64)
    if learned.shape != ref.shape:
        raise ValueError(f"gain shapes differ: {learned.shape} vs {ref.shape}")
    norm = np.linalg.norm(ref)
    diff = float(np.linalg.norm(learned - ref))
    return diff / norm if norm > 0 else diff


# --------------------------------------------------------------------------- affine policies
# Exact costs of, and best responses to, stochastic affine policies in tiered LQ games. Every
# action is affine in the state, the realised actions of earlier tiers and Gaussian noise, so
# with the augmented state z = [x; 1] each value is a quadratic form z^T P z whose last diagonal
# entry carries the constant (intercepts and noise traces): Bertsekas, "Dynamic Programming and
# Optimal Control" (4th ed., 2017), vol. I, sec. 3.1 (LQ control with affine terms and additive
# noise, certainty equivalence) and vol. II, ch. 1 (discounted problems).
@dataclass(frozen=True)
class AffineRule:
    """One player's stochastic affine policy in a tiered LQ game.

    ``u_i = -K x - sum_j H[j] u_j + b + std * xi`` with ``xi ~ N(0, I)`` drawn afresh each step
    for each player. ``H`` maps agents of earlier tiers to ``m_i x m_j`` reactions to their
    realised actions (noise included; an agent left out gets no reaction). ``K`` is ``m_i x n``;
    ``b`` and ``std`` (per action dimension, >= 0) have ``m_i`` entries, ``None`` meaning zero.
    For a finite horizon ``T`` each may instead carry a leading step dimension (``T x m_i x n``,
    ``T x m_i``, ...); a single value applies at every step.
    """

    K: Any
    b: Any = None
    H: Mapping[str, Any] = field(default_factory=dict)
    std: Any = None


class _StepRule(NamedTuple):
    K: np.ndarray  # [m, n]
    b: np.ndarray  # [m]
    H: dict[str, np.ndarray]  # earlier agent j -> [m, m_j]
    std: np.ndarray  # [m]


def reference_rules(
    reference: dict[str, Any],
) -> tuple[list[list[str]], dict[str, AffineRule]]:
    """The tiers and deterministic rules of a :func:`feedback_nash` or
    :func:`feedback_stackelberg` result, ready for :func:`affine_costs`.

    Nash (Başar & Olsder, 1999, ch. 6) is one tier with ``u_i = -K_i x``. In a feedback
    Stackelberg solution (ibid., ch. 7) a later-tier player plays its reaction
    ``u_i = -G [x; u of earlier tiers]``, split into ``K = G_x`` and one ``H[j]`` per earlier
    agent in tier order, so it answers the realised (e.g. noisy) actions of its leaders. Zero
    intercepts and noise.
    """
    gains = {i: np.asarray(K, dtype=np.float64) for i, K in reference["gains"].items()}
    tiers = [list(tier) for tier in reference.get("tiers", [list(gains)])]
    rules = {i: AffineRule(K=gains[i]) for i in tiers[0]}
    for k in range(1, len(tiers)):
        earlier = [j for tier in tiers[:k] for j in tier]
        for i in tiers[k]:
            G = np.asarray(reference["response"][i], dtype=np.float64)
            col = gains[i].shape[-1]
            H = {}
            for j in earlier:
                width = gains[j].shape[-2]
                H[j] = G[..., col : col + width]
                col += width
            rules[i] = AffineRule(K=G[..., : gains[i].shape[-1]], H=H)
    return tiers, rules


def affine_costs(
    cfg: LQConfig, tiers: Sequence[Sequence[str]], rules: Mapping[str, AffineRule]
) -> dict[str, float]:
    """Each player's exact expected cost (discounted for an infinite horizon) from the
    initial-state distribution when every player ``i`` plays ``rules[i]`` in ``tiers``.

    Tier by tier the actions are affine in ``z = [x; 1]`` and the stacked noise ``xi``:
    ``u = U_z z + U_xi xi``, so ``z' = F z + N xi + [w; 0]``. A value ``z^T P z`` then satisfies
    ``P = Q_i + U_z^T R_i U_z + g F^T P' F + e e^T (tr(U_xi^T R_i U_xi) + g tr(N^T P' N)
    + g s^2 tr P'_xx)`` (``e`` the constant's unit vector, ``R_i`` block-diagonal over the
    stacked actions): backwards from ``P(T) = Qf_i`` for a finite horizon; for a discount ``g``
    the fixed point, a Lyapunov equation in ``sqrt(g) F`` whose noise constant adds
    ``g c / (1 - g)`` (Bertsekas, vol. I, sec. 3.1; Başar & Olsder, 1999, ch. 6). The cost is
    ``[mu; 1]^T P [mu; 1] + s0^2 tr P_xx``. Actions are not clipped; a discounted closed loop
    with ``sqrt(g) rho(A - B L) >= 1`` costs ``inf`` for everyone.
    """
    cfg = LQConfig.coerce(cfg)
    mats = lq_matrices(cfg)
    tiers = _check_tiers(tiers, mats.agents)
    order = [i for tier in tiers for i in tier]
    n = mats.A.shape[0]
    steps = cfg.horizon if cfg.horizon is not None else 1
    plan = _rule_steps(mats, tiers, rules, steps)
    # v = [x; 1; xi of every player in order]
    noise, width = _offsets(order, _dims(mats), n + 1)

    if cfg.horizon is not None:
        P = {i: _augment(mats.Qf[i]) for i in order}
        for t in range(cfg.horizon - 1, -1, -1):
            U = _action_map(n, order, plan[t], {}, noise, width)
            for i in order:
                W = _q_matrix(mats, i, order, U, P[i], 1.0, cfg.noise_std)
                P[i] = _expect_noise(W, n + 1, n)
        return {i: _start_cost(cfg, P[i]) for i in mats.agents}

    g = float(cfg.discount)
    U = _action_map(n, order, plan[0], {}, noise, width)
    X_next = _next_state_map(mats, order, U)
    F, N = X_next[:, : n + 1], X_next[:, n + 1 :]
    if np.sqrt(g) * np.abs(np.linalg.eigvals(F[:n, :n])).max() >= 1.0:
        return dict.fromkeys(mats.agents, float("inf"))
    costs = {}
    for i in mats.agents:
        stage = _expect_noise(_stage_matrix(mats, i, order, U), n + 1, n)
        P = scipy_linalg.solve_discrete_lyapunov(np.sqrt(g) * F.T, stage)  # P = stage + g F^T P F
        # The last row of F is e^T, so a constant c added every transition is worth g c / (1 - g).
        c = float(np.trace(N.T @ P @ N)) + cfg.noise_std**2 * float(np.trace(P[:n, :n]))
        P[n, n] += g * c / (1 - g)
        costs[i] = _start_cost(cfg, P)
    return costs


def best_response(
    cfg: LQConfig,
    tiers: Sequence[Sequence[str]],
    rules: Mapping[str, AffineRule],
    agent: str,
) -> tuple[float, AffineRule]:
    """``agent``'s lowest expected cost against everyone else's ``rules``, and a deterministic
    affine rule that attains it (per step for a finite horizon, ``std = 0``).

    The deviator sees ``x``, the step and ``o``, the realised actions of earlier tiers; players of
    its own tier do not see its action, later tiers react to it through their ``H``. Exact
    dynamic programming on ``V(z) = z^T P z``, ``z = [x; 1]`` (Bertsekas, vol. I, sec. 3.1; the
    stage problem is the leader's in Başar & Olsder, 1999, ch. 7): with every action affine in
    ``y = [z; o]``, the deviator's ``u`` and the others' noise, the expected stage cost plus
    ``g V'(z')`` over that noise and ``w`` is ``[y; u]^T W [y; u]``; ``u = -W_uu^{-1} W_uy y``
    and ``P = E_o[T^T (W_yy - W_yu W_uu^{-1} W_uy) T]`` with ``y = T [z; xi_o]`` from the
    earlier tiers' rules. A finite horizon recurses from ``P(T) = Qf``; a discounted one iterates
    from ``P = 0`` to relative change ``RICCATI_TOL``. Raises :class:`ConfigError` when
    ``W_uu`` is not positive definite (the cost is not convex in the deviator's action) or the
    iteration diverges or does not converge.
    """
    cfg = LQConfig.coerce(cfg)
    mats = lq_matrices(cfg)
    tiers = _check_tiers(tiers, mats.agents)
    if agent not in mats.agents:
        raise HierarchyError(f"agent {agent!r} is not in the game: {list(mats.agents)}")
    order = [i for tier in tiers for i in tier]
    n = mats.A.shape[0]
    dims = _dims(mats)
    steps = cfg.horizon if cfg.horizon is not None else 1
    plan = _rule_steps(mats, tiers, rules, steps)
    level = next(k for k, tier in enumerate(tiers) if agent in tier)
    earlier = [j for tier in tiers[:level] for j in tier]
    rest = [i for i in order if i not in earlier and i != agent]
    # v = [x; 1; o; u_agent; xi of rest]; its leading part y = [x; 1; o] is what the agent sees.
    seen, own = _offsets(earlier, dims, n + 1)
    given = {**seen, agent: own}
    noise, width = _offsets(rest, dims, own + dims[agent])
    # o as a map of [x; 1; xi of the earlier tiers]
    seen_noise, seen_width = _offsets(earlier, dims, n + 1)

    def backup(
        step: dict[str, _StepRule], P_next: np.ndarray, g: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """One Bellman step: the agent's value matrix and its response ``u = -G y``."""
        U = _action_map(n, order, step, given, noise, width)
        W = _q_matrix(mats, agent, order, U, P_next, g, cfg.noise_std)
        W = _expect_noise(W, own + dims[agent], n)  # over [y; u_agent]
        if not np.isfinite(W).all():
            raise ConfigError(
                f"player {agent}'s best-response values diverged: no policy keeps its cost "
                "finite against the other players' rules"
            )
        W_uu, W_uy = W[own:, own:], W[own:, :own]
        if np.linalg.eigvalsh(W_uu).min() <= 0:
            raise ConfigError(
                f"player {agent}'s cost is not convex in its own action against the other "
                "players' rules, so it has no best response (its cost is unbounded below)"
            )
        G = np.linalg.solve(W_uu, W_uy)
        Pi = W[:own, :own] - W_uy.T @ G
        T = np.vstack(
            [np.eye(n + 1, seen_width), _action_map(n, earlier, step, {}, seen_noise, seen_width)]
        )
        P = _expect_noise(T.T @ Pi @ T, n + 1, n)
        return (P + P.T) / 2, G

    if cfg.horizon is not None:
        P = _augment(mats.Qf[agent])
        per_step = []
        for t in range(cfg.horizon - 1, -1, -1):
            P, G = backup(plan[t], P, 1.0)
            per_step.append(G)
        G = np.stack(per_step[::-1])
    else:
        g = float(cfg.discount)
        P = np.zeros((n + 1, n + 1))
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(RICCATI_MAX_ITER):
                P_new, G = backup(plan[0], P, g)
                change = np.abs(P_new - P).max()
                scale = max(1.0, np.abs(P_new).max())
                P = P_new
                if change <= RICCATI_TOL * scale:
                    break
            else:
                raise ConfigError(
                    f"player {agent}'s best-response value iteration did not converge in "
                    f"{RICCATI_MAX_ITER} iterations at env.discount={g}"
                )
    rule = AffineRule(
        K=G[..., :n],
        b=-G[..., n],
        H={j: G[..., seen[j] : seen[j] + dims[j]] for j in earlier},
        std=np.zeros(dims[agent]),
    )
    return _start_cost(cfg, P), rule


def _check_tiers(tiers: Sequence[Sequence[str]], agents: tuple[str, ...]) -> list[list[str]]:
    tiers = [list(tier) for tier in tiers if len(tier) > 0]
    if sorted(i for tier in tiers for i in tier) != sorted(agents):
        raise HierarchyError(
            f"tiers {tiers} must list every agent of the game exactly once: {list(agents)}"
        )
    return tiers


def _dims(mats: LQMatrices) -> dict[str, int]:
    return {i: mats.B[i].shape[1] for i in mats.agents}


def _offsets(agents: Sequence[str], dims: dict[str, int], start: int) -> tuple[dict, int]:
    """Consecutive column blocks for ``agents`` from ``start``, and the column after them."""
    offsets = {}
    for i in agents:
        offsets[i] = start
        start += dims[i]
    return offsets, start


def _step_array(value: Any, steps: int, shape: tuple[int, ...], name: str) -> list[np.ndarray]:
    """``value`` (``None`` = zeros) as one array of ``shape`` per step."""
    A = np.zeros(shape) if value is None else np.asarray(value, dtype=np.float64)
    if A.shape == shape:
        per_step = [A] * steps
    elif A.shape == (steps, *shape):
        per_step = list(A)
    else:
        want = "x".join(map(str, shape)) or "a scalar"
        raise ValueError(
            f"{name} must be {want} or {'x'.join(map(str, (steps, *shape)))}, got shape {A.shape}"
        )
    if not np.isfinite(A).all():
        raise ValueError(f"{name} must contain finite numbers only")
    return per_step


def _rule_steps(
    mats: LQMatrices,
    tiers: list[list[str]],
    rules: Mapping[str, AffineRule],
    steps: int,
) -> list[dict[str, _StepRule]]:
    """Check ``rules`` against the game and tiers; one ``{agent: _StepRule}`` per step."""
    missing = [i for i in mats.agents if i not in rules]
    if missing:
        raise ValueError(f"rules lack the players {missing}; give one AffineRule per agent")
    n = mats.A.shape[0]
    dims = _dims(mats)
    per_agent: dict[str, list[_StepRule]] = {}
    for k, tier in enumerate(tiers):
        earlier = [j for t in tiers[:k] for j in t]
        for i in tier:
            rule, m = rules[i], dims[i]
            unknown = sorted(set(rule.H) - set(earlier))
            if unknown:
                raise ValueError(
                    f"rules[{i!r}].H reacts to {unknown}, but {i} only sees the actions of "
                    f"earlier tiers {earlier}"
                )
            K = _step_array(rule.K, steps, (m, n), f"rules[{i!r}].K")
            b = _step_array(rule.b, steps, (m,), f"rules[{i!r}].b")
            std = _step_array(rule.std, steps, (m,), f"rules[{i!r}].std")
            if min(s.min() for s in std) < 0:
                raise ValueError(f"rules[{i!r}].std must be >= 0")
            H = {
                j: _step_array(H_j, steps, (m, dims[j]), f"rules[{i!r}].H[{j!r}]")
                for j, H_j in rule.H.items()
            }
            per_agent[i] = [
                _StepRule(K[t], b[t], {j: H[j][t] for j in H}, std[t]) for t in range(steps)
            ]
    return [{i: per_agent[i][t] for i in per_agent} for t in range(steps)]


def _augment(M: np.ndarray) -> np.ndarray:
    """``x^T M x`` as a quadratic form in ``z = [x; 1]``."""
    n = M.shape[0]
    Z = np.zeros((n + 1, n + 1))
    Z[:n, :n] = M
    return Z


def _action_map(
    n: int,
    order: Sequence[str],
    step: dict[str, _StepRule],
    given: dict[str, int],
    noise: dict[str, int],
    width: int,
) -> np.ndarray:
    """The actions of ``order``, stacked, as a linear map of ``v`` (``v[:n] = x``, ``v[n] = 1``).

    ``u_i`` is itself the block of ``v`` at column ``given[i]``, or else follows its rule with
    ``xi_i`` the block at column ``noise[i]`` (no noise if absent). A rule reacts to earlier
    entries of ``order`` only.
    """
    maps: dict[str, np.ndarray] = {}
    for i in order:
        rule = step[i]
        m = len(rule.b)
        M = np.zeros((m, width))
        if i in given:
            M[:, given[i] : given[i] + m] = np.eye(m)
        else:
            M[:, :n] = -rule.K
            M[:, n] = rule.b
            for j, H_j in rule.H.items():
                M -= H_j @ maps[j]
            if i in noise:
                M[:, noise[i] : noise[i] + m] += np.diag(rule.std)
        maps[i] = M
    return np.vstack([maps[i] for i in order]) if order else np.zeros((0, width))


def _next_state_map(mats: LQMatrices, order: Sequence[str], U: np.ndarray) -> np.ndarray:
    """``[x'; 1]`` (without ``w``) as a linear map of ``v``, given the stacked actions ``U v``."""
    n = mats.A.shape[0]
    X = np.zeros((n + 1, U.shape[1]))
    X[:n, :n] = mats.A
    X[:n] += np.hstack([mats.B[i] for i in order]) @ U
    X[n, n] = 1.0
    return X


def _stage_matrix(mats: LQMatrices, agent: str, order: Sequence[str], U: np.ndarray) -> np.ndarray:
    """``agent``'s stage cost ``x^T Q x + sum_j u_j^T R_ij u_j`` as a quadratic form in ``v``."""
    n = mats.A.shape[0]
    R_all = scipy_linalg.block_diag(*[mats.R[agent][j] for j in order])
    W = U.T @ R_all @ U
    W[:n, :n] += mats.Q[agent]
    return W


def _q_matrix(
    mats: LQMatrices,
    agent: str,
    order: Sequence[str],
    U: np.ndarray,
    P_next: np.ndarray,
    discount: float,
    noise_std: float,
) -> np.ndarray:
    """``E_w[stage cost + g z'^T P_next z']`` as a quadratic form in ``v`` (the constant at
    ``v[n] = 1``)."""
    n = mats.A.shape[0]
    X = _next_state_map(mats, order, U)
    W = _stage_matrix(mats, agent, order, U) + discount * X.T @ P_next @ X
    W[n, n] += discount * noise_std**2 * np.trace(P_next[:n, :n])
    return (W + W.T) / 2


def _expect_noise(W: np.ndarray, start: int, n: int) -> np.ndarray:
    """``E[v^T W v]`` over ``v[start:] ~ N(0, I)`` independent of ``v[:start]``, as a quadratic
    form in ``v[:start]`` whose constant sits at ``v[n] = 1``: the cross terms vanish and the
    trace joins the constant."""
    kept = W[:start, :start].copy()
    kept[n, n] += np.trace(W[start:, start:])
    return kept


def _start_cost(cfg: LQConfig, P: np.ndarray) -> float:
    """``E[z0^T P z0]`` for ``z0 = [x0; 1]``, ``x0 ~ N(mu, s0^2 I)``."""
    n = P.shape[0] - 1
    mean = np.append(np.asarray(cfg.x0_mean, dtype=np.float64), 1.0)
    return float(mean @ P @ mean + cfg.x0_std**2 * np.trace(P[:n, :n]))
