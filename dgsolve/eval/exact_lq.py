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

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy.linalg import block_diag, solve_discrete_lyapunov

from dgsolve.errors import ConfigError, HierarchyError
from dgsolve.games.lq import LQConfig, LQMatrices, lq_matrices

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
    R_all = {i: block_diag(*[mats.R[i][j] for j in order]) for i in order}

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
            stage = _stage(mats, tiers, P, 1.0)
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
            stage = _stage(mats, tiers, P, g)
            change = max(np.abs(stage.values[i] - P[i]).max() for i in agents)
            scale = max(1.0, max(np.abs(stage.values[i]).max() for i in agents))
            P = stage.values
            if not np.isfinite(change):
                raise ConfigError(
                    f"the coupled Riccati iteration for env.discount={g} diverged after "
                    f"{iteration + 1} iterations: in equilibrium the players do not keep the "
                    "state bounded at this discount (lower env.discount, or use env.horizon)"
                )
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
        P = solve_discrete_lyapunov(np.sqrt(g) * F.T, Q_eff[i])
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
