"""Single-observer Information Set MCTS with a policy prior and a critic, and a Gumbel root.

Cowling, Powley & Whitehouse, "Information Set Monte Carlo Tree Search" (IEEE TCIAIG 2012):
every simulation draws a *determinisation* (:mod:`dgsolve.search.determinise`), a full state
consistent with the searching player's information state, and descends one tree whose nodes
are the searcher's information states. The edge statistics ``N(I, a)``, ``W(I, a)`` belong to
the node's action, so they average over the determinisations and the others' replies; a child
is keyed by (action, the searcher's next information state). Variant, and why:

- **Opponents are not tree nodes**: between the searcher's decisions the other players act by
  their policy in the target (the opponent model), sampled on *their own* observation of the
  determinised state, as chance acts by its distribution. SO-ISMCTS proper would put their
  decisions in the searcher's tree, keyed by what the *searcher* sees, so an opponent would
  choose as if it did not know its own cards (Cowling et al. §V). With a model, a search is a
  policy-improvement step for the searcher against the profile it was trained in.
- **Availability counts** (Cowling et al.): an action's exploration term counts the visits in
  which it was legal, and selection only ranks the actions legal in the current
  determinisation, so an illegal action is never chosen.
- **PUCT** (Silver et al., "Mastering the game of Go without human knowledge", 2017; the
  MuZero form of Schrittwieser et al. 2020): ``argmax_a Q̄(a) + c(n) P(a) sqrt(max(1, n_a))
  / (1 + N(a))``, ``c(n) = c_puct + log((n + 19652 + 1) / 19652)``, with ``P`` the policy's
  probabilities renormalised over the legal actions, ``n_a`` the availability count and ``Q̄``
  min-max normalised over the node's actions and value, unvisited actions at the minimum (as
  mctx's ``qtransform_by_parent_and_siblings``). ``max(1, ·)`` lets a node's first visit follow
  its prior rather than the lowest action id.
- **Leaves**: a new information-state node is evaluated once, its prior and the searcher's
  critic value in one batched network call over all trees; terminal states return their payoff;
  ``leaf=rollout`` plays the policies out instead of the critic.
- **Gumbel root** (Danihelka, Guez, Schrittwieser & Silver, "Policy Improvement by Planning
  with Gumbel", ICLR 2022): Gumbel-Top-k sampling of ``min(considered, legal)`` root actions,
  Sequential Halving over the simulation budget (the visit schedule of mctx's
  ``get_sequence_of_considered_visits``), the winner ``argmax g + logits + σ(q̂)`` played, and
  the improved policy ``softmax(logits + σ(completed Q))`` with ``σ(q) = (c_visit + max N)
  c_scale q`` and the completed Q by the mixed value (mctx's
  ``qtransform_completed_by_mix_value``); below the root the paper's deterministic selection
  ``argmax π'(a) - N(a) / (1 + Σ N)``.

Outputs per search: the searched policy (PUCT: root visit frequencies; Gumbel: the improved
policy), and the action played (PUCT: a sample of the visit frequencies, or the most visited
action when greedy; Gumbel: the Sequential Halving winner, without the Gumbel noise when
greedy). With zero simulations both return the prior (and play it: sampled, or its mode).

The searches of a batch run in lockstep: each level of every descent is one batched step of
the games and one batched call of the policies, so the network cost is per level, not per tree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dgsolve.search import Leaf, Root
from dgsolve.search.determinise import TreeGame
from dgsolve.search.model import PolicyModel, sample_rows

#: MuZero's PUCT base (the log term of c(n) grows after about this many visits)
PB_C_BASE = 19652.0
#: floor of min-max normalisation ranges (mctx's epsilon)
EPSILON = 1e-8


@dataclass
class SearchConfig:
    """One search: ``simulations`` descents; PUCT constant ``c_puct``; the root rule; at a
    Gumbel root ``considered`` sampled actions, ``c_visit`` and ``c_scale`` of σ; leaves by
    ``critic`` or ``rollout``; ``greedy`` plays the searched policy's mode."""

    simulations: int = 64
    c_puct: float = 1.25
    root: Root = Root.puct
    considered: int = 16
    c_visit: float = 50.0
    c_scale: float = 0.1
    leaf: Leaf = Leaf.critic
    greedy: bool = False


class Node:
    """One information state of the searcher: prior, value at expansion, and per action the
    visits ``N``, summed returns ``W`` and availability counts."""

    __slots__ = ("prior", "value", "N", "W", "avail", "children")

    def __init__(self, prior: np.ndarray, value: float):
        self.prior, self.value = prior, value
        self.N = np.zeros(len(prior))
        self.W = np.zeros(len(prior))
        self.avail = np.zeros(len(prior))
        self.children: dict = {}

    def q(self) -> np.ndarray:
        return np.divide(self.W, self.N, out=np.zeros_like(self.W), where=self.N > 0)

    def mean_value(self) -> float:
        """The node's value: its expansion value and every return backed up through it."""
        return (self.value + self.W.sum()) / (1.0 + self.N.sum())


@dataclass
class SearchResult:
    """Per root: the searched policy ``[T, A]``, the action played ``[T]``, and the root's
    prior ``[T, A]`` and value estimate ``[T]``."""

    policy: np.ndarray
    action: np.ndarray
    prior: np.ndarray
    value: np.ndarray


# --------------------------------------------------------------------------- selection rules
def _prior_over(node: Node, legal: np.ndarray) -> np.ndarray:
    p = np.where(legal, node.prior, 0.0)
    mass = p.sum()
    return p / mass if mass > 0 else legal / legal.sum()


def puct_action(node: Node, legal: np.ndarray, c_puct: float) -> int:
    """PUCT over the legal actions, with availability counts and min-max normalised Q."""
    q, visited = node.q(), node.N > 0
    parent = node.mean_value()
    safe = np.where(visited, q, parent)[legal]
    low, high = min(parent, safe.min()), max(parent, safe.max())
    value = (np.where(visited, q, low) - low) / max(high - low, EPSILON)
    n = node.N.sum()
    c = c_puct + math.log((n + PB_C_BASE + 1.0) / PB_C_BASE)
    explore = c * _prior_over(node, legal) * np.sqrt(np.maximum(node.avail, 1.0)) / (1.0 + node.N)
    return int(np.argmax(np.where(legal, value + explore, -np.inf)))


def completed_sigma(node: Node, legal: np.ndarray, c_visit: float, c_scale: float) -> np.ndarray:
    """σ(completed Q) over the legal actions (mctx's ``qtransform_completed_by_mix_value``,
    values rescaled to [0, 1]); zero off ``legal``."""
    prior = np.maximum(_prior_over(node, legal), np.finfo(np.float64).tiny)
    q, visited = node.q(), (node.N > 0) & legal
    total = node.N.sum()
    if visited.any():
        weighted = (prior * q)[visited].sum() / prior[visited].sum()
        mixed = (node.value + total * weighted) / (total + 1.0)
    else:
        mixed = node.value
    completed = np.where(visited, q, mixed)
    low, high = completed[legal].min(), completed[legal].max()
    scaled = (completed - low) / max(high - low, EPSILON)
    return np.where(legal, (c_visit + node.N.max()) * c_scale * scaled, 0.0)


def improved_policy(node: Node, legal: np.ndarray, c_visit: float, c_scale: float) -> np.ndarray:
    """Danihelka et al.'s π' = softmax(logits + σ(completed Q)) over the legal actions."""
    logits = np.log(np.maximum(_prior_over(node, legal), np.finfo(np.float64).tiny))
    z = np.where(legal, logits + completed_sigma(node, legal, c_visit, c_scale), -np.inf)
    z = np.exp(z - z.max())
    return z / z.sum()


def gumbel_inner_action(node: Node, legal: np.ndarray, c_visit: float, c_scale: float) -> int:
    """Below a Gumbel root: ``argmax π'(a) - N(a) / (1 + Σ N)`` (Danihelka et al., eq. 14)."""
    pi = improved_policy(node, legal, c_visit, c_scale)
    score = pi - node.N / (1.0 + node.N.sum())
    return int(np.argmax(np.where(legal, score, -np.inf)))


def considered_visits(considered: int, simulations: int) -> tuple[int, ...]:
    """Sequential Halving's visit schedule: the visit count the root action of each simulation
    must have (mctx's ``get_sequence_of_considered_visits``)."""
    if considered <= 1:
        return tuple(range(simulations))
    log2max = int(math.ceil(math.log2(considered)))
    sequence: list[int] = []
    visits = [0] * considered
    num_considered = considered
    while len(sequence) < simulations:
        extra = max(1, int(simulations / (log2max * num_considered)))
        for _ in range(extra):
            sequence.extend(visits[:num_considered])
            for i in range(num_considered):
                visits[i] += 1
        num_considered = max(2, num_considered // 2)
    return tuple(sequence[:simulations])


def gumbel_score(
    node: Node, legal: np.ndarray, gumbel: np.ndarray, visit: float, cfg: SearchConfig
) -> np.ndarray:
    """``g + logits + σ(completed Q)`` of the legal actions that have ``visit`` visits, -inf
    elsewhere: at the start of a phase these are the actions Sequential Halving still runs."""
    logits = np.log(np.maximum(_prior_over(node, legal), np.finfo(np.float64).tiny))
    score = gumbel + logits + completed_sigma(node, legal, cfg.c_visit, cfg.c_scale)
    return np.where(legal & (node.N == visit), score, -np.inf)


# --------------------------------------------------------------------------- the search
class ISMCTS:
    """Batched SO-ISMCTS over a :class:`TreeGame` with a :class:`PolicyModel`."""

    def __init__(self, tree: TreeGame, model: PolicyModel, cfg: SearchConfig):
        self.tree, self.model, self.cfg = tree, model, cfg

    # ------------------------------------------------------------------ helpers
    def _evaluate(
        self, states, idx: np.ndarray, player: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prior ``[n, A]`` and leaf value ``[n]`` of ``player`` at the rows ``idx`` (of
        determinised states: a rollout plays out hidden information)."""
        obs = self.tree.observe(states, idx, player)
        legal = self.tree.legal(states, idx)
        prior = self.model.probs(player, obs, legal)
        if self.cfg.leaf is Leaf.critic:
            value = self.model.value(player, obs)
        else:
            value = self._rollout(states, idx, player, rng)
        return prior, value

    def _advance(self, states, idx: np.ndarray, until: int | None, rng) -> np.ndarray:
        """Let the players other than ``until`` (everyone when None) act by their policies in
        the rows ``idx`` until ``until`` is to move or the game ends; returns the rewards
        ``[len(idx), players]`` collected."""
        reward = np.zeros((len(idx), len(self.tree.agents)))
        pos = np.arange(len(idx))
        while len(pos):
            mover = self.tree.player(states, idx[pos])
            waiting = (mover >= 0) & (mover != (-2 if until is None else until))
            pos, mover = pos[waiting], mover[waiting]
            for p in np.unique(mover):
                rows = pos[mover == p]
                obs = self.tree.observe(states, idx[rows], int(p))
                legal = self.tree.legal(states, idx[rows])
                act = sample_rows(self.model.probs(int(p), obs, legal), rng)
                reward[rows] += self.tree.step(states, idx[rows], act, rng)
        return reward

    def _rollout(self, states, idx: np.ndarray, player: int, rng) -> np.ndarray:
        """``player``'s return of the policies played out from copies of the rows ``idx``."""
        play = self.tree.select(states, idx)
        return self._advance(play, np.arange(len(idx)), None, rng)[:, player]

    # ------------------------------------------------------------------ one batch of searches
    def search(
        self,
        roots,
        searcher: np.ndarray,
        rng: np.random.Generator,
        play_rng: np.random.Generator | None = None,
    ) -> SearchResult:
        """Search from every state of ``roots`` (a batch of the tree game, each at a decision
        of ``searcher[t]``); the roots are not modified. ``play_rng`` (default ``rng``) draws
        the PUCT action from the searched policy: the raw policy's generator there makes the
        two play alike where the search does not change the policy (common random numbers)."""
        cfg, tree = self.cfg, self.tree
        T = len(searcher)
        all_rows = np.arange(T)
        root_legal = tree.legal(roots, all_rows).cpu().numpy()
        nodes: list[Node | None] = [None] * T
        # the roots are evaluated on a determinisation too: the real state's hidden
        # information must not reach a rollout
        seen = self._determinise(roots, searcher, rng)
        for p in np.unique(searcher):
            rows = all_rows[searcher == p]
            prior, value = self._evaluate(seen, rows, int(p), rng)
            for r, pr, v in zip(rows, prior, value, strict=True):
                nodes[r] = Node(pr, float(v))
        roots_nodes: list[Node] = nodes  # type: ignore[assignment]
        gumbel = np.zeros((T, tree.num_actions))
        if cfg.root is Root.gumbel and not cfg.greedy:
            gumbel = rng.gumbel(size=(T, tree.num_actions))
        schedules = [
            considered_visits(min(cfg.considered, int(root_legal[t].sum())), cfg.simulations)
            for t in range(T)
        ]
        for sim in range(cfg.simulations):
            self._simulate(roots, searcher, roots_nodes, root_legal, gumbel, schedules, sim, rng)
        return self._result(roots_nodes, root_legal, gumbel, rng if play_rng is None else play_rng)

    def _simulate(self, roots, searcher, root_nodes, root_legal, gumbel, schedules, sim, rng):
        cfg, tree = self.cfg, self.tree
        T = len(searcher)
        # one determinisation per tree, each from its searcher's information state
        states = self._determinise(roots, searcher, rng)
        node: list[Node] = list(root_nodes)
        paths: list[list[tuple[Node, int, float]]] = [[] for _ in range(T)]
        gained = np.zeros(T)  # the searcher's rewards so far in this simulation
        leaf = np.zeros(T)
        active = np.arange(T)
        depth = 0
        new_leaves: list[int] = []  # trees whose descent reached a new information state
        while len(active):
            legal = tree.legal(states, active).cpu().numpy()
            actions = np.empty(len(active), dtype=np.int64)
            for k, t in enumerate(active):
                n, ok = node[t], legal[k]
                n.avail += ok
                if depth == 0 and cfg.root is Root.gumbel:
                    visit = schedules[t][sim]
                    score = gumbel_score(n, ok & root_legal[t], gumbel[t], visit, cfg)
                    a = int(np.argmax(score)) if np.isfinite(score).any() else -1
                    if a < 0:  # the schedule's visit count is no longer available: PUCT
                        a = puct_action(n, ok, cfg.c_puct)
                elif cfg.root is Root.gumbel:
                    a = gumbel_inner_action(n, ok, cfg.c_visit, cfg.c_scale)
                else:
                    a = puct_action(n, ok, cfg.c_puct)
                actions[k] = a
                paths[t].append((n, a, gained[t]))
            reward = tree.step(states, active, actions, rng)
            gained[active] += reward[np.arange(len(active)), searcher[active]]
            # the others (and chance) move until the searcher's next decision
            for p in np.unique(searcher[active]):
                rows = active[searcher[active] == p]
                got = self._advance(states, rows, int(p), rng)
                gained[rows] += got[:, p]
            # a tree whose game ended has its leaf value in ``gained`` (the payoff)
            going = active[tree.player(states, active) >= 0]
            keep = []
            if len(going):
                for p in np.unique(searcher[going]):
                    rows = going[searcher[going] == p]
                    keys = tree.keys(states, rows, int(p))
                    for t, key in zip(rows, keys, strict=True):
                        edge = (paths[t][-1][1], key)
                        child = node[t].children.get(edge)
                        if child is None:
                            new_leaves.append(t)
                            node[t] = _Pending(edge, node[t])  # type: ignore[assignment]
                        else:
                            node[t] = child
                            keep.append(t)
            active = np.array(sorted(keep), dtype=np.int64)
            depth += 1
        # ALGO LOGIC: expand the new information states in one batched call per player
        if new_leaves:
            rows = np.array(new_leaves, dtype=np.int64)
            for p in np.unique(searcher[rows]):
                sel = rows[searcher[rows] == p]
                prior, value = self._evaluate(states, sel, int(p), rng)
                for t, pr, v in zip(sel, prior, value, strict=True):
                    pending = node[t]
                    pending.parent.children[pending.edge] = Node(pr, float(v))
                    leaf[t] = v
        # ALGO LOGIC: back up the searcher's return from each of its decisions on the path
        total = gained + leaf
        for t in range(T):
            for n, a, before in paths[t]:
                n.N[a] += 1.0
                n.W[a] += total[t] - before

    def _determinise(self, roots, searcher: np.ndarray, rng):
        """One determinisation per root, drawn for its searcher; rows in root order."""
        tree = self.tree
        players = np.unique(searcher)
        if len(players) == 1:
            return tree.determinise(roots, np.arange(len(searcher)), int(players[0]), rng)
        order = np.concatenate([np.flatnonzero(searcher == p) for p in players])
        parts = [
            tree.determinise(roots, np.flatnonzero(searcher == p), int(p), rng) for p in players
        ]
        return _concat(tree, parts, order)

    def _result(self, root_nodes, root_legal, gumbel, rng) -> SearchResult:
        cfg = self.cfg
        T, A = root_legal.shape
        policy = np.zeros((T, A))
        action = np.zeros(T, dtype=np.int64)
        prior = np.stack([_prior_over(n, root_legal[t]) for t, n in enumerate(root_nodes)])
        value = np.array([n.mean_value() for n in root_nodes])
        for t, n in enumerate(root_nodes):
            legal = root_legal[t]
            if cfg.simulations == 0:
                policy[t] = prior[t]
            elif cfg.root is Root.gumbel:
                policy[t] = improved_policy(n, legal, cfg.c_visit, cfg.c_scale)
            else:
                policy[t] = np.where(legal, n.N, 0.0) / max(n.N[legal].sum(), 1.0)
            if cfg.root is Root.gumbel:
                score = gumbel_score(n, legal, gumbel[t], n.N[legal].max(), cfg)
                action[t] = int(np.argmax(score))
            elif cfg.greedy:
                # the most visited action; ties (and zero simulations) go to the prior's mode
                action[t] = int(np.argmax(np.where(legal, n.N + 1e-6 * prior[t], -np.inf)))
        if cfg.root is Root.puct and not cfg.greedy:
            action = sample_rows(policy, rng)
        return SearchResult(policy, action, prior, value)


class _Pending:
    """A child that the descent reached first in this simulation: expanded after the batched
    network call."""

    __slots__ = ("edge", "parent")

    def __init__(self, edge, parent: Node):
        self.edge, self.parent = edge, parent


def _concat(tree: TreeGame, parts: list, order: np.ndarray):
    """Batches ``parts`` (whose rows are the roots ``order``) joined back in root order."""
    if isinstance(parts[0], list):
        joined = [s for part in parts for s in part]
        out = [None] * len(joined)
        for pos, row in enumerate(order):
            out[row] = joined[pos]
        return out
    from dgsolve.search.determinise import BargainStates

    inverse = torch.as_tensor(np.argsort(order), dtype=torch.long)
    deal = torch.cat([p.deal for p in parts], dim=1)
    situation = torch.cat([p.situation for p in parts])
    done = torch.cat([p.done for p in parts])
    inverse = inverse.to(situation.device)
    return BargainStates(deal.index_select(1, inverse), situation[inverse], done[inverse])
