"""Equilibrium gaps of learned policies in linear-quadratic games (Başar & Olsder, "Dynamic
Noncooperative Game Theory", 1999, ch. 6-7).

Each player's policy is read as an *affine rule* (:class:`~dgsolve.eval.exact_lq.AffineRule`),
``u = -K x - H u_leaders + b + std * xi``: its mean action is fitted by least squares at the
states one episode of the learned policies visits (plus a copy jittered by a tenth of their
size, so the fit is determined even on a single path), a follower's with its leaders' actions
as extra regressors, drawn around their mean actions so that the reaction ``H`` is identified;
``std`` is the policy's Gaussian spread. With a finite horizon one rule is fitted per step.
Everything else is exact for those rules (:func:`~dgsolve.eval.exact_lq.affine_costs`,
:func:`~dgsolve.eval.exact_lq.best_response`), intercepts and exploration noise included:

* ``costs``: each player's expected cost as the rules play; ``cost_gap``: relative to the
  reference equilibrium's cost;
* ``deviation_gain``: each player's best-response improvement over its own cost, relative to
  the best-response cost (a follower reacts to the realised actions of its leaders; a leader's
  best response is its best commitment given the followers' fitted reactions);
* ``gains``: the on-path feedback gains (a follower's with its leaders' rules substituted) and
  ``gain_error`` against the reference gains (relative Frobenius error);
* Stackelberg tiers: ``reaction.<follower>.<leader>`` = ``-H`` (the fitted matrix d u_follower /
  d u_leader of the follower's mean action) and ``reaction_error.<follower>`` against the exact
  feedback Stackelberg reaction; ``stackelberg_gap`` = the leader's relative cost distance from
  the reference.
Action clipping is ignored by the exact costs, as by the references.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from dgsolve import games
from dgsolve.eval import exact_lq
from dgsolve.eval.exact import exact_reference
from dgsolve.games.lq import LQConfig
from dgsolve.hierarchy import Hierarchy

#: LQ games rolled out to sample the states where the learned policies act.
LQ_ROLLOUT_ENVS = 256


def lq_report(
    env_cfg, joint, hierarchy: Hierarchy, device: torch.device, seed: int = 0
) -> dict[str, Any]:
    """The ``eq`` section for a joint policy in an LQ game (see the module docstring)."""
    lcfg = LQConfig.coerce(env_cfg)
    simultaneous = hierarchy.is_simultaneous
    mode = "simultaneous" if simultaneous else "leader_follower"
    ref = exact_reference(lcfg, mode, None if simultaneous else hierarchy.tiers)
    target = ref["nash"] if simultaneous else ref["stackelberg"]
    tiers = [list(t) for t in hierarchy.tiers]
    agents = hierarchy.agents
    obs = _visited_states(env_cfg, joint, device, seed)  # [steps, 2N, obs_dim]
    rules, r2, reaction = fit_rules(joint, hierarchy, obs, lcfg)
    costs = exact_lq.affine_costs(lcfg, tiers, rules)
    best = {a: exact_lq.best_response(lcfg, tiers, rules, a)[0] for a in agents}
    gains = on_path_gains(tiers, rules)
    ref_costs = target["costs"]
    out: dict[str, Any] = {
        "deviation_gain": {a: _finite(_relative_gain(costs[a], best[a])) for a in agents},
        "gains": gains,
        "gain_error": {a: float(exact_lq.gain_error(gains[a], target["gains"][a])) for a in agents},
        "cost_gap": {a: _finite(_relative(costs[a], ref_costs[a])) for a in agents},
        "costs": {a: _finite(costs[a]) for a in agents},
        "best_response_costs": {a: _finite(best[a]) for a in agents},
        "fit_r2": r2,
    }
    gains_finite = [g for g in out["deviation_gain"].values() if g is not None]
    out["nash_gap"] = max(gains_finite) if len(gains_finite) == len(agents) else None
    if not simultaneous:
        _, exact_rules = exact_lq.reference_rules(target)
        out["reaction"] = {
            f: {j: (-_as_array(H)).tolist() for j, H in r.items()} for f, r in reaction.items()
        }
        out["reaction_error"] = {
            f: float(
                exact_lq.gain_error(
                    _stack([reaction[f][j] for j in reaction[f]]),
                    _stack([exact_rules[f].H[j] for j in reaction[f]]),
                )
            )
            for f in reaction
        }
        leader = tiers[0][0]
        out["stackelberg_gap"] = _finite(abs(_relative(costs[leader], ref_costs[leader])))
    out["reference"] = {
        "equilibrium": "feedback_nash" if simultaneous else "feedback_stackelberg",
        "gains": target["gains"],
        "costs": ref_costs,
    }
    if not simultaneous:
        out["reference"]["reaction"] = {
            f: {j: (-_as_array(exact_rules[f].H[j])).tolist() for j in reaction[f]}
            for f in reaction
        }
    return out


def fit_rules(joint, hierarchy: Hierarchy, obs: torch.Tensor, lcfg: LQConfig):
    """Each player's affine rule fitted at ``obs [steps, N, obs_dim]`` (one fit per step for a
    finite horizon, one over all steps otherwise). Returns ``(rules, r2, reaction)``:
    ``reaction[follower][leader]`` is the fitted ``H`` (per step for a finite horizon)."""
    n = len(lcfg.A)
    per_step = lcfg.horizon is not None
    batches = list(obs) if per_step else [obs.reshape(-1, obs.shape[-1])]
    fits = [_fit_step(joint, hierarchy, x, n) for x in batches]
    agents = hierarchy.agents

    def stacked(a: str, key: str, j: str | None = None):
        values = [f[a][key] if j is None else f[a][key][j] for f in fits]
        return np.stack(values) if per_step else values[0]

    rules, reaction = {}, {}
    for a in agents:
        preds = hierarchy.predecessors(a)
        H = {j: stacked(a, "H", j) for j in preds}
        rules[a] = exact_lq.AffineRule(
            K=stacked(a, "K"), b=stacked(a, "b"), H=H, std=stacked(a, "std")
        )
        if preds:
            reaction[a] = H
    r2 = {a: min(f[a]["r2"] for f in fits) for a in agents}
    return rules, r2, reaction


def _fit_step(joint, hierarchy: Hierarchy, obs: torch.Tensor, n: int) -> dict:
    """Least-squares affine fits of every player's mean action at ``obs [N, obs_dim]``."""
    X = obs[:, :n].double().cpu().numpy()
    gen = torch.Generator(device=obs.device).manual_seed(0)
    means: dict[str, torch.Tensor] = {}
    out: dict[str, dict] = {}
    for tier in hierarchy.tiers:
        for agent in tier:
            preds = hierarchy.predecessors(agent)
            seen: dict[str, torch.Tensor] = {}
            for j in preds:
                # leaders' actions drawn around their means, so that the reaction is identified
                spread = 0.5 * means[j].pow(2).mean().sqrt().clamp_min(0.1)
                noise = torch.randn(means[j].shape, generator=gen, device=obs.device)
                seen[j] = means[j] + spread * noise
            dist = joint.distribution(agent, obs, seen)
            mean = _clip(dist.mean, joint.specs[agent])
            means[agent] = joint.distribution(agent, obs, {j: means[j] for j in preds}).mean
            means[agent] = _clip(means[agent], joint.specs[agent])
            regressors = [X] + [seen[j].double().cpu().numpy() for j in preds]
            coef, r2 = _least_squares(np.hstack(regressors), mean.double().cpu().numpy())
            m = mean.shape[-1]
            entry = {"K": -coef[:n].T, "b": coef[-1], "r2": r2, "H": {}}
            col = n
            for j in preds:
                width = seen[j].shape[-1]
                entry["H"][j] = -coef[col : col + width].T
                col += width
            std = getattr(dist, "stddev", None)
            entry["std"] = (
                std.double().mean(dim=0).cpu().numpy() if std is not None else np.zeros(m)
            )
            out[agent] = entry
    return out


def _least_squares(X: np.ndarray, U: np.ndarray) -> tuple[np.ndarray, float]:
    """Coefficients ``[X | 1] -> U`` and the fraction of the variance of ``U`` explained."""
    design = np.hstack([X, np.ones((len(X), 1))])
    coef, *_ = np.linalg.lstsq(design, U, rcond=None)
    residual = U - design @ coef
    total = ((U - U.mean(axis=0)) ** 2).sum()
    return coef, (1.0 - float((residual**2).sum() / total) if total > 0 else 1.0)


def on_path_gains(tiers: list[list[str]], rules: dict[str, exact_lq.AffineRule]) -> dict:
    """Each player's effective gain on ``x`` once its leaders' rules are substituted into its
    reaction: ``K_i - sum_j H_ij K_j`` (per step for a finite horizon), as nested lists."""
    gains: dict[str, np.ndarray] = {}
    for tier in tiers:
        for a in tier:
            rule = rules[a]
            K = _as_array(rule.K)
            for j, H in rule.H.items():
                K = K - _as_array(H) @ gains[j]
            gains[a] = K
    return {a: K.tolist() for a, K in gains.items()}


def _visited_states(env_cfg, joint, device, seed: int) -> torch.Tensor:
    """Observations ``[steps, 2N, obs_dim]``: row ``t`` holds the states of ``N`` games at step
    ``t`` of an episode played (sampled) by ``joint``, and the same states perturbed by a tenth
    of their typical size."""
    game = games.make(OmegaConf.merge(env_cfg, {"num_envs": LQ_ROLLOUT_ENVS}), device)
    ts = game.reset(seed=seed)
    first = game.agents[0]  # every player observes the same state (and time)
    visited = []
    for _ in range(game.episode_steps):
        visited.append(ts.obs[first])
        ts = game.step(joint.act(ts))
    game.close()
    visited = torch.stack(visited)
    n = game.state_dim
    x = visited[..., :n]
    scale = 0.1 * x.pow(2).mean().sqrt().clamp_min(1e-3)
    jittered = visited.clone()
    jittered[..., :n] = x + scale * torch.randn_like(x)
    return torch.cat([visited, jittered], dim=1)


def _clip(u: torch.Tensor, spec) -> torch.Tensor:
    """Actions as the game clips them."""
    low = torch.tensor(spec.low, device=u.device, dtype=u.dtype)
    high = torch.tensor(spec.high, device=u.device, dtype=u.dtype)
    return torch.maximum(torch.minimum(u, high), low)


def _as_array(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _stack(blocks: list) -> np.ndarray:
    """Reactions to several leaders side by side (last axis)."""
    return np.concatenate([_as_array(b) for b in blocks], axis=-1)


def _relative(value: float, reference: float) -> float:
    return (value - reference) / max(abs(reference), 1e-12)


def _relative_gain(cost: float, best: float) -> float:
    """What a best response saves, as a fraction of its cost."""
    if not math.isfinite(cost):
        return math.inf  # a best response keeps a diverging closed loop bounded
    return max(0.0, (cost - best) / max(abs(best), 1e-12))


def _finite(x: float) -> float | None:
    """JSON has no infinity: a diverging closed loop's cost is reported as null."""
    return float(x) if math.isfinite(x) else None
