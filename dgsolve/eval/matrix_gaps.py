"""Equilibrium gaps of learned policies in one-shot and repeated bimatrix games.

Every figure is computed for the policies as they play (their action probabilities, never a
greedy reading of them) and exactly: one-shot games from the probabilities at the start state,
repeated games by the Markov chain that two memory-1 policies induce on the last-joint-action
states (:func:`~dgsolve.eval.exact_matrix.memory1_values`). Each player's *deviation gain* is
what it gains from the best deviation open to it, the others' policies as learned:

* one tier (Nash): a best response to the other player's policy;
* a follower: a best response to the leader it faces (every action it might observe, weighted
  by how often the leader plays it, with ``follower_observes=action``; the leader's committed
  policy with ``queries``);
* a leader: its best commitment given the follower's *learned* responses. With
  ``follower_observes=action`` the follower reacts to each realised action, so the leader's
  options are its pure actions (one-shot) or deterministic memory-1 tables (repeated), answered
  as the follower answers actions. With ``queries`` the follower reacts to the leader's policy,
  so each candidate commitment is shown to the learned follower: in a one-shot game every mixed
  strategy on a grid of the simplex (plus the pure ones, the learned one and the exact
  mixed-commitment solution), in a repeated game every deterministic memory-1 table (the
  class of the reference commitment: Gerstgrasser & Parkes, "Oracles & Followers", ICML 2023).

Deviations of the second player in repeated games range over deterministic memory-1 tables,
conditioned on the leader's current action with ``follower_observes=action``; they are
enumerated where there are at most :data:`MAX_ENUMERATED_POLICIES`. ``nash_gap`` is the largest
deviation gain; ``stackelberg_gap`` = |leader's value - the reference commitment's value|.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dgsolve import games
from dgsolve.eval import exact_matrix
from dgsolve.eval.returns import evaluate_returns
from dgsolve.games.matrix import AGENTS
from dgsolve.hierarchy import Hierarchy

#: most deterministic memory-1 policies enumerated for one player's deviation.
MAX_ENUMERATED_POLICIES = 1 << 20
#: most leader commitments shown one by one to a learned follower (``queries`` mode).
MAX_SHOWN_COMMITMENTS = 4096
#: most points of the simplex tried as mixed commitments in a one-shot game (``queries``).
MAX_SIMPLEX_POINTS = 20_000
#: sampled episodes of a repeated game, played as a check on the exact values.
SAMPLED_EPISODES = 1024


def roles(hierarchy: Hierarchy) -> tuple[str, str]:
    """(first, second): leader and follower, or row and column with one tier."""
    if hierarchy.is_simultaneous:
        return AGENTS
    return hierarchy.tiers[0][0], hierarchy.tiers[1][0]


def probs(joint, agent: str, obs: torch.Tensor, seen: dict[str, torch.Tensor]) -> np.ndarray:
    """``agent``'s action probabilities at ``obs`` (its predecessors' actions ``seen``; their
    query answers in queries mode), as float64."""
    return joint.distribution(agent, obs, seen).probs.double().cpu().numpy()


def follower_response(
    joint, follower: str, leader: str, obs: torch.Tensor, answers: torch.Tensor
) -> np.ndarray:
    """The learned follower's probabilities ``[K, n]`` at ``obs [K, obs_dim]`` when shown the
    leader answers ``answers [K, Q * m]`` (queries mode), batched."""
    policy = joint.policies[follower]
    x = joint.context(follower, obs, {leader: answers.to(obs.dtype)})
    return policy.net.distribution(policy.prepare(x)).probs.double().cpu().numpy()


def _floats(values) -> list:
    return np.asarray(values, dtype=np.float64).tolist()


# --------------------------------------------------------------------------- one-shot games
def one_shot_report(A, B, ref, joint, hierarchy: Hierarchy, device) -> dict[str, Any]:
    m, n = A.shape
    start = F.one_hot(torch.tensor([m * n], device=device), m * n + 1).float()
    if hierarchy.is_simultaneous:
        p = probs(joint, "row", start, {})[0]
        q = probs(joint, "column", start, {})[0]
        gains = {
            "row": max(0.0, float((A @ q).max() - p @ A @ q)),
            "column": max(0.0, float((p @ B).max() - p @ B @ q)),
        }
        return {
            "nash_gap": max(gains.values()),
            "deviation_gain": gains,
            "strategies": {"row": _floats(p), "column": _floats(q)},
            "payoffs": {"row": float(p @ A @ q), "column": float(p @ B @ q)},
            "reference": {"nash": ref["nash"]},
        }
    leader, follower = roles(hierarchy)
    L, Fm = (A, B) if leader == AGENTS[0] else (B.T, A.T)
    p = probs(joint, leader, start, {})[0]
    reference = {k: ref[k] for k in ("nash", "stackelberg", "stackelberg_mixed")}
    if not hierarchy.observes_queries or hierarchy.pure_commitments:
        # the follower's reply to every leader action it may observe, [m, n]: an action, or
        # (pure commitments) the one-hot table drawn from the leader's policy
        if hierarchy.pure_commitments:
            shown = torch.eye(m, device=device)
            q = follower_response(joint, follower, leader, start.expand(m, -1), shown)
        else:
            actions = {leader: torch.arange(m, device=device)}
            q = probs(joint, follower, start.expand(m, -1), actions)
        per_action = (q * L).sum(axis=1)
        follower_per_action = (q * Fm).sum(axis=1)
        leader_value = float(p @ per_action)
        gains = {
            leader: max(0.0, float(per_action.max() - leader_value)),
            follower: max(0.0, float(p @ (Fm.max(axis=1) - follower_per_action))),
        }
        value = ref["stackelberg"]["payoffs"][leader]
        return {
            "nash_gap": max(gains.values()),
            "stackelberg_gap": abs(leader_value - value),
            "deviation_gain": gains,
            "strategies": {leader: _floats(p), follower: _floats(q)},
            "payoffs": {leader: leader_value, follower: float(p @ follower_per_action)},
            "reference": {"commitment": "pure", **reference},
        }

    # queries: the follower sees the leader's mixed strategy, not the sampled action
    q = probs(joint, follower, start, {})[0]
    leader_value, follower_value = float(p @ L @ q), float(p @ Fm @ q)
    exact_p = np.asarray(ref["stackelberg_mixed"]["strategies"][leader], dtype=np.float64)
    candidates = np.vstack([simplex_grid(m), np.eye(m), p[None], exact_p[None]])
    shown = torch.as_tensor(candidates, dtype=torch.float32, device=device)
    responses = follower_response(joint, follower, leader, start.expand(len(shown), -1), shown)
    commitment_values = ((candidates @ L) * responses).sum(axis=1)
    best = int(np.argmax(commitment_values))
    gains = {
        leader: max(0.0, float(commitment_values[best] - leader_value)),
        follower: max(0.0, float((p @ Fm).max() - p @ Fm @ q)),
    }
    value = ref["stackelberg_mixed"]["payoffs"][leader]
    return {
        "nash_gap": max(gains.values()),
        "stackelberg_gap": abs(leader_value - value),
        "deviation_gain": gains,
        "strategies": {
            leader: _floats(p),
            follower: _floats(q),
            "best_commitment": _floats(candidates[best]),
        },
        "payoffs": {leader: leader_value, follower: follower_value},
        "reference": {"commitment": "mixed", **reference},
    }


def simplex_grid(m: int, max_points: int = MAX_SIMPLEX_POINTS) -> np.ndarray:
    """Points of the probability simplex over ``m`` actions on the finest regular grid (step
    ``1 / r``) with at most ``max_points`` points: ``[K, m]``."""
    r = 1
    while math.comb(r + 1 + m - 1, m - 1) <= max_points:
        r += 1
    points = [
        np.asarray(c, dtype=np.float64) / r
        for c in itertools.product(range(r + 1), repeat=m - 1)
        if sum(c) <= r
    ]
    return np.array([np.append(c, 1.0 - c.sum()) for c in points]).clip(0.0, 1.0)


# --------------------------------------------------------------------------- repeated games
def repeated_report(
    mcfg, A, B, ref, joint, hierarchy: Hierarchy, device, seed: int
) -> dict[str, Any]:
    m, n = A.shape
    S = m * n + 1
    first, second = roles(hierarchy)
    first_is_row = first == AGENTS[0]
    R1, R2 = (A, B) if first_is_row else (B.T, A.T)  # the first player's actions as rows
    m1, m2 = R1.shape
    states = torch.eye(S, device=device)
    sees_action = not (hierarchy.is_simultaneous or hierarchy.observes_queries)

    # ---- the learned policies as tables over the memory-1 states, as they play
    p1 = probs(joint, first, states, {})  # [S, m1]
    if sees_action:
        seen = {first: torch.arange(m1, device=device).repeat(S)}
        obs = states.repeat_interleave(m1, dim=0)
        p2 = probs(joint, second, obs, seen).reshape(S, m1, m2)
    else:
        p2 = np.repeat(probs(joint, second, states, {})[:, None], m1, axis=1)

    def value(t1, t2):
        return exact_matrix.memory1_values(R1, R2, mcfg.rounds, first_is_row, t1, t2)

    if hierarchy.pure_commitments:
        return _pure_repeated(
            value, p1, joint, first, second, states, m1, m2, ref, device, mcfg, seed
        )
    v1, v2 = value(p1[None], p2[None])
    v1, v2 = float(v1[0]), float(v2[0])

    # ---- the best deviation of each player
    gains: dict[str, float] = {}
    unchecked: list[str] = []
    width = S * m1 if sees_action else S
    if m2**width <= MAX_ENUMERATED_POLICIES:
        # every deterministic table: per state (and observed leader action), one action
        choices = exact_matrix.memory1_policies(m2, width).reshape(-1, S, width // S)
        tables = np.broadcast_to(np.eye(m2)[choices], (len(choices), S, m1, m2))
        _, alt = value(p1[None], tables)
        gains[second] = max(0.0, float(alt.max() - v2))
    else:
        unchecked.append(second)
    deterministic = exact_matrix.memory1_policies(m1, S)
    if hierarchy.observes_queries:
        if len(deterministic) <= MAX_SHOWN_COMMITMENTS:
            shown = torch.as_tensor(np.eye(m1)[deterministic], dtype=torch.float32, device=device)
            K = len(shown)
            obs = states.repeat(K, 1)  # every state, for every commitment
            answers = shown.reshape(K, -1).repeat_interleave(S, dim=0)
            replies = follower_response(joint, second, first, obs, answers).reshape(K, S, m2)
            alt, _ = value(np.eye(m1)[deterministic], replies[:, :, None].repeat(m1, axis=2))
            gains[first] = max(0.0, float(alt.max() - v1))
        else:
            unchecked.append(first)
    elif len(deterministic) <= MAX_ENUMERATED_POLICIES:
        alt, _ = value(np.eye(m1)[deterministic], p2[None])
        gains[first] = max(0.0, float(alt.max() - v1))
    else:
        unchecked.append(first)

    out: dict[str, Any] = {"deviation_gain": gains}
    if unchecked:
        out["unchecked"] = unchecked
    else:
        out["nash_gap"] = max(gains.values())
    if not hierarchy.is_simultaneous:
        out["stackelberg_gap"] = abs(v1 - ref["stackelberg"]["payoffs"][first])
    out.update(
        {
            "values": {first: v1, second: v2},
            "returns": _sampled_returns(mcfg, joint, device, seed),
            "strategies": {
                first: _floats(p1),
                second: _floats(p2 if sees_action else p2[:, 0]),
            },
            "reference": ref,
        }
    )
    return out


def _pure_repeated(value, p1, joint, first, second, states, m1, m2, ref, device, mcfg, seed):
    """Repeated game, pure commitments: each episode the leader draws a deterministic table
    from its policy (probability the product over states), the follower sees that table. Every
    table is enumerated, weighted, shown to the learned follower and valued exactly."""
    S = len(p1)
    tables = exact_matrix.memory1_policies(m1, S)
    if len(tables) > MAX_SHOWN_COMMITMENTS:
        return {"unchecked": [first, second], "reference": ref}
    weights = np.prod(p1[np.arange(S), tables], axis=1)  # P(table) under the leader's policy
    shown = torch.as_tensor(np.eye(m1)[tables], dtype=torch.float32, device=device)
    K = len(shown)
    answers = shown.reshape(K, -1).repeat_interleave(S, dim=0)
    replies = follower_response(joint, second, first, states.repeat(K, 1), answers)
    replies = np.repeat(replies.reshape(K, S, 1, m2), m1, axis=2)
    leader_tables = np.eye(m1)[tables]
    v1s, v2s = value(leader_tables, replies)
    v1, v2 = float(weights @ v1s), float(weights @ v2s)
    # the follower's best deterministic reply to each table the leader may draw
    follower_tables = np.eye(m2)[exact_matrix.memory1_policies(m2, S)]  # [F, S, m2]
    follower_tables = np.repeat(follower_tables[:, :, None], m1, axis=2)
    drawn = np.flatnonzero(weights > 1e-9)
    best = np.array([value(leader_tables[k][None], follower_tables)[1].max() for k in drawn])
    gains = {
        first: max(0.0, float(v1s.max() - v1)),
        second: max(0.0, float(weights[drawn] @ (best - v2s[drawn]))),
    }
    return {
        "deviation_gain": gains,
        "nash_gap": max(gains.values()),
        "stackelberg_gap": abs(v1 - ref["stackelberg"]["payoffs"][first]),
        "values": {first: v1, second: v2},
        "returns": _sampled_returns(mcfg, joint, device, seed),
        "strategies": {
            first: _floats(p1),
            "most_likely_table": tables[int(weights.argmax())].tolist(),
        },
        "reference": ref,
    }


def _sampled_returns(mcfg, joint, device, seed: int) -> dict[str, float]:
    """Mean returns of sampled episodes: a check on the exact values, by play."""
    game = games.make(dataclasses.replace(mcfg, num_envs=SAMPLED_EPISODES), device)
    returns = evaluate_returns(game, lambda ts: joint.act(ts), SAMPLED_EPISODES, seed)
    game.close()
    return {a: float(v) for a, v in returns.items()}
