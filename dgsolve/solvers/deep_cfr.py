"""Deep CFR (``algo=deep_cfr``) on OpenSpiel games and the bargaining game: CFR with networks
in place of tables.

Brown, Lerer, Gross & Sandholm, "Deep Counterfactual Regret Minimization", ICML 2019. Each
iteration ``t`` and each player ``p`` in turn:

1. ``algo.traversals`` external-sampling traversals of the game tree for ``p``: at ``p``'s nodes
   every legal action is explored, at the other players' nodes one action is drawn from their
   current strategy, at chance nodes one outcome; every player plays regret matching on its
   advantage network, ``σ(I, a) ∝ max(V(I, a), 0)``, and where no predicted advantage is positive
   the action of highest advantage with probability 1 (the paper's choice, Section 4).
2. At each of ``p``'s nodes the sampled instantaneous regrets ``r(I, a) = ṽ(I, a) − ṽ(I)`` go into
   ``p``'s reservoir advantage memory with the weight ``t``; at each node of another player ``q``
   its strategy ``σ(I)`` goes into ``q``'s reservoir strategy memory with the weight ``t``.
3. ``p``'s advantage network is retrained *from scratch* (fresh weights, as in the paper) for
   ``algo.advantage_steps`` minibatches on the whole memory, loss ``Σ t · ‖V(I) − r(I)‖²`` over
   the legal actions, divided by ``Σ t`` (linear CFR: iteration ``t`` weighs ``t``).

Networks: ReLU MLPs (``algo.hidden_sizes``) whose last hidden layer is normalised (LayerNorm,
Ba et al. 2016; ``algo.layer_norm``) before the linear output, as OpenSpiel's Deep CFR does:
sampled regrets differ by orders of magnitude between information sets, and the normalised
features keep the fit from being led by the largest. Measured on Leduc poker (OpenSpiel's example
settings, seed 0): NashConv 2.09 / 1.81 after 10 / 20 iterations without it, 1.28 / 0.71 with
it. Advantage networks are fitted with Adam at the constant rate ``algo.lr``, as in the paper
(decaying it to 0 over each fit left them under-fitted: Leduc NashConv 3.0 against 1.8–2.1 at
10–30 iterations); the strategy network's rate decays linearly to 0 over its fit, so the
average policy that plays is not one noisy minibatch away from the memory's minimiser (four
refits of one Kuhn memory: NashConv 0.047–0.051 decayed, 0.048–0.071 constant).

The average strategy, which converges to a Nash equilibrium in two-player zero-sum games, is a
per-player strategy network trained for ``algo.policy_steps`` minibatches on the strategy memory
(weighted cross-entropy to the stored strategies, again weighted by ``t``; its minimiser is the
same ``t``-weighted average the paper's squared error has). It is trained whenever the policies
are asked for after new iterations (each ``task.eval_every`` evaluation and the end), from
scratch with a generator seeded by the iteration, so when it is trained never changes the run.

Sampling: external sampling, as in the paper, where ``algo.sampled_actions`` is null: the
traverser's nodes branch on every legal action, which suits poker-sized games (Kuhn, Leduc). The
bargaining game has 82 actions per decision and up to three decisions per player, so a
traversal would reach 82^3 leaves; with ``algo.sampled_actions=k`` only ``k`` of the traverser's
legal actions, drawn uniformly, are explored (robust sampling, Li et al., ICLR 2020), with the
unbiased estimates :func:`bargain_traversals` states. Outcome sampling (one action everywhere)
was the other candidate; its estimates carry the inverse of every sampling probability along
the path, while robust sampling keeps the traverser's values averaged over ``k`` actions.

Batched traversals: the ``algo.traversals`` traversals of one player advance together, one
tree level at a time; every decision node of the level is evaluated in one forward pass of its
player's advantage network, and the sampled values are backed up level by level afterwards.
OpenSpiel games' states are stepped one by one in Python; the bargaining game's nodes are
tensors (:class:`~dgsolve.games.bargain.reference.BargainNodes`), so a level of thousands of
traversals is a handful of tensor operations (:meth:`BargainGame.tree_step`), with every deal
drawn from the solver's generator.

``global_step`` counts Deep CFR iterations (no environment steps are taken).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dgsolve.errors import ConfigError, RunDirError
from dgsolve.games.bargain.reference import BargainGame
from dgsolve.games.base import Game
from dgsolve.games.openspiel import apply_chance, require_tree_game
from dgsolve.hierarchy import Hierarchy
from dgsolve.nets import ActionNet, masked_logits, relu_mlp
from dgsolve.policy import JointPolicy, NetPolicy

#: seeds the strategy network's training at iteration ``t``: ``seed * STRATEGY_SEED + t``
STRATEGY_SEED = 1_000_003
#: the most leaves per bargaining traversal that external sampling (every action) may reach
MAX_EXTERNAL_LEAVES = 100_000


# --------------------------------------------------------------------------- regret matching
def regret_matching(advantages: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
    """``[B, A]`` strategies from predicted advantages ``[B, A]`` over ``legal [B, A]`` (bool):
    the positive part normalised, or all mass on the legal action of highest advantage where
    none is positive (Brown et al. 2019, Section 4)."""
    positive = advantages.clamp(min=0) * legal
    total = positive.sum(-1, keepdim=True)
    best = masked_logits(advantages, legal).argmax(-1)
    greedy = torch.nn.functional.one_hot(best, advantages.shape[-1]).to(advantages.dtype)
    return torch.where(total > 0, positive / total.clamp(min=1e-30), greedy)


# --------------------------------------------------------------------------- reservoir memory
class Reservoir:
    """A uniform sample of at most ``capacity`` of all rows ever added (Vitter's reservoir
    sampling, algorithm R): ``x [N, obs_dim]``, ``legal [N, A]``, ``target [N, A]``,
    ``weight [N]`` (the iteration that added the row)."""

    def __init__(self, capacity: int, obs_dim: int, num_actions: int):
        self.capacity = capacity
        self.seen = 0
        self.x = torch.zeros(0, obs_dim)
        self.legal = torch.zeros(0, num_actions, dtype=torch.bool)
        self.target = torch.zeros(0, num_actions)
        self.weight = torch.zeros(0)

    def __len__(self) -> int:
        return len(self.weight)

    def add(self, x, legal, target, weight: float, generator: torch.Generator) -> None:
        k = len(x)
        if k == 0:
            return
        weights = torch.full((k,), float(weight))
        rows = (x, legal, target, weights)
        room = max(0, min(k, self.capacity - len(self)))
        if room:
            self._append(*(r[:room] for r in rows))
        if room < k:
            # row n (0-based count of rows seen) replaces slot j ~ U{0..n} where j < capacity
            n = self.seen + torch.arange(room, k, dtype=torch.float64)
            j = (torch.rand(k - room, generator=generator, dtype=torch.float64) * (n + 1)).long()
            keep = j < self.capacity
            # a slot drawn twice keeps the later row, as adding one row at a time would
            latest = torch.full((self.capacity,), -1, dtype=torch.long)
            latest.scatter_reduce_(0, j[keep], torch.arange(room, k)[keep], "amax")
            slots = torch.nonzero(latest >= 0).squeeze(-1)
            for store, r in zip(self._stores(), rows, strict=True):
                store[slots] = r[latest[slots]].to(store.dtype)
        self.seen += k

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        index = torch.randint(len(self), (batch_size,), generator=generator)
        return self.x[index], self.legal[index], self.target[index], self.weight[index]

    def _stores(self) -> tuple[torch.Tensor, ...]:
        return self.x, self.legal, self.target, self.weight

    def _append(self, x, legal, target, weight) -> None:
        self.x = torch.cat([self.x, x.to(self.x.dtype)])
        self.legal = torch.cat([self.legal, legal.to(torch.bool)])
        self.target = torch.cat([self.target, target.to(self.target.dtype)])
        self.weight = torch.cat([self.weight, weight])

    def state_dict(self) -> dict:
        return {
            "seen": self.seen,
            "x": self.x.clone(),
            "legal": self.legal.clone(),
            "target": self.target.clone(),
            "weight": self.weight.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.seen = int(state["seen"])
        self.x, self.legal = state["x"].clone(), state["legal"].clone()
        self.target, self.weight = state["target"].clone(), state["weight"].clone()


# --------------------------------------------------------------------------- traversal
@dataclass
class Traversals:
    """What external-sampling traversals for one player produced.

    ``regret_x [N, obs_dim]``, ``regret_legal [N, A]``, ``regret [N, A]`` (0 elsewhere): the
    traverser's sampled instantaneous regrets, one row per traverser node visited, on the actions
    ``regret_legal`` marks (the explored ones: every legal action under external sampling);
    ``strategy_x``, ``strategy_legal``, ``strategy [M, A]`` and ``strategy_player [M]``: the other
    players' strategies where they acted; ``root_value [K]``: each traversal's sampled value."""

    regret_x: torch.Tensor
    regret_legal: torch.Tensor
    regret: torch.Tensor
    strategy_x: torch.Tensor
    strategy_legal: torch.Tensor
    strategy: torch.Tensor
    strategy_player: torch.Tensor
    root_value: torch.Tensor


StrategyFn = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def external_sampling(
    os_game,
    player: int,
    num: int,
    strategy: StrategyFn,
    generator: torch.Generator,
    sampled_actions: int | None = None,
) -> Traversals:
    """``num`` external-sampling traversals for ``player`` from the root of ``os_game``, advanced
    together one tree level at a time. ``strategy(q, x [B, obs_dim], legal [B, A]) -> [B, A]`` is
    player ``q``'s current strategy, asked once per level for all of ``q``'s nodes there.
    ``sampled_actions``: explore only that many of the traverser's legal actions, drawn
    uniformly, with the estimates of :func:`bargain_traversals` (None: all of them)."""
    num_actions = os_game.num_distinct_actions()
    values: list[float] = [0.0] * num  # one slot per value to back up; the roots first
    frontier = [(os_game.new_initial_state(), slot) for slot in range(num)]
    traverser_nodes: list[tuple[int, list[int], list[int]]] = []  # slot, child slots, actions
    regret_x, sigmas = [], []
    others: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = []
    while frontier:
        _resolve_chance([s for s, _ in frontier], generator)
        decisions = []
        for state, slot in frontier:
            if state.is_terminal():
                values[slot] = state.returns()[player]
            else:
                decisions.append((state, slot))
        frontier = []
        by_player: dict[int, list[tuple[Any, int]]] = {}
        for state, slot in decisions:
            by_player.setdefault(state.current_player(), []).append((state, slot))
        for q, nodes in sorted(by_player.items()):
            x = torch.tensor(
                np.array([s.information_state_tensor(q) for s, _ in nodes]), dtype=torch.float32
            )
            legal = torch.tensor(np.array([s.legal_actions_mask(q) for s, _ in nodes]), dtype=bool)
            sigma = strategy(q, x, legal).to("cpu", torch.float32) * legal
            if q == player:
                regret_x.append(x)
                sigmas.append(sigma)
                for state, slot in nodes:
                    actions = state.legal_actions()
                    n_legal = len(actions)
                    if sampled_actions is not None and sampled_actions < n_legal:
                        pick = torch.randperm(n_legal, generator=generator)[:sampled_actions]
                        actions = [actions[i] for i in sorted(pick.tolist())]
                    children = list(range(len(values), len(values) + len(actions)))
                    values.extend([0.0] * len(actions))
                    traverser_nodes.append((slot, children, actions, n_legal))
                    frontier.extend(
                        (state.child(a), c) for a, c in zip(actions, children, strict=True)
                    )
            else:
                others.append((x, legal, sigma, q))
                drawn = torch.multinomial(sigma, 1, generator=generator).squeeze(-1).tolist()
                for (state, slot), a in zip(nodes, drawn, strict=True):
                    state.apply_action(a)  # this node's value is its sampled child's
                    frontier.append((state, slot))
    # back up: children were created after their parents, so walk the traverser nodes backwards
    sigma_all = torch.cat(sigmas) if sigmas else torch.zeros(0, num_actions)
    regret = torch.zeros(len(traverser_nodes), num_actions, dtype=torch.float64)
    sampled = torch.zeros(len(traverser_nodes), num_actions, dtype=torch.bool)
    for n in range(len(traverser_nodes) - 1, -1, -1):
        slot, children, actions, n_legal = traverser_nodes[n]
        child_values = torch.tensor([values[c] for c in children], dtype=torch.float64)
        probs = sigma_all[n, actions].to(torch.float64)
        value, regrets = sampled_estimates(
            child_values[None], probs[None], torch.ones(1, len(actions), dtype=torch.bool),
            torch.tensor([n_legal]),
        )  # fmt: skip
        values[slot] = float(value[0])
        regret[n, actions] = regrets[0]
        sampled[n, actions] = True
    width = os_game.information_state_tensor_size()
    empty_x = torch.zeros(0, width)
    empty_a = torch.zeros(0, num_actions)
    return Traversals(
        regret_x=torch.cat(regret_x) if regret_x else empty_x,
        regret_legal=sampled,
        regret=regret.to(torch.float32),
        strategy_x=torch.cat([o[0] for o in others]) if others else empty_x,
        strategy_legal=torch.cat([o[1] for o in others]) if others else empty_a.bool(),
        strategy=torch.cat([o[2] for o in others]) if others else empty_a,
        strategy_player=torch.tensor(
            [o[3] for o in others for _ in range(len(o[0]))], dtype=torch.long
        ),
        root_value=torch.tensor(values[:num], dtype=torch.float64),
    )


def sampled_estimates(
    values: torch.Tensor, sigma: torch.Tensor, valid: torch.Tensor, legal_count: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unbiased estimates at ``M`` traverser nodes that explored ``k`` of their ``n`` legal
    actions, drawn uniformly without replacement: ``values [M, k]`` (float64) are the sampled
    children's values, ``sigma [M, k]`` the strategy's probabilities of those actions,
    ``valid [M, k]`` which columns hold a sampled action, ``legal_count [M]`` the ``n``.

    Returns the node values ``[M]``, ``(n / k) Σ_{b ∈ S} σ(b) v(b)``, and the regrets ``[M, k]``
    of the sampled actions, ``v(a) − σ(a) v(a) − ((n − 1) / (k − 1)) Σ_{b ∈ S, b ≠ a} σ(b) v(b)``
    (0 in unused columns): given ``a ∈ S``, the rest of ``S`` is a uniform ``k − 1`` of the other
    ``n − 1`` actions, so its scaled sum estimates ``Σ_{b ≠ a} σ(b) v(b)`` without bias. With
    ``k = n`` both are external sampling's exact sums."""
    sv = torch.where(valid, sigma * values, 0.0)
    total = sv.sum(1, keepdim=True)
    k = valid.sum(1, keepdim=True).to(torch.float64)
    n = legal_count[:, None].to(torch.float64)
    others = (n - 1) / (k - 1).clamp(min=1)
    regret = torch.where(valid, values - sv - others * (total - sv), 0.0)
    return (n / k * total).squeeze(1), regret


def bargain_traversals(
    game,
    player: int,
    num: int,
    strategy: StrategyFn,
    generator: torch.Generator,
    sampled_actions: int | None,
) -> Traversals:
    """``num`` traversals for ``player`` of the bargaining game's trees, all advanced together
    as batched :class:`~dgsolve.games.bargain.reference.BargainNodes` (one tensor operation per
    tree level, whatever the number of nodes).

    Sampling: at ``player``'s nodes ``k = sampled_actions`` of the ``n`` legal actions are drawn
    uniformly without replacement and explored (all of them when ``k`` is ``None`` or ``≥ n``:
    external sampling); at the other player's nodes one action is drawn from its strategy; the
    deal (chance) is drawn once per traversal. This is the robust sampling of Li et al.,
    "Double Neural Counterfactual Regret Minimization" (ICLR 2020): external sampling's tree
    grows as ``82^3`` per traversal in the default game, ``k^3`` here. The estimates stay
    unbiased: a node's value is ``(n / k) Σ_{b ∈ S} σ(b) v(b)``, and the regret of a sampled
    action ``a`` is ``v(a) − σ(a) v(a) − ((n − 1) / (k − 1)) Σ_{b ∈ S, b ≠ a} σ(b) v(b)`` (the other
    sampled actions are a uniform ``k − 1`` of the other ``n − 1``; :func:`sampled_estimates`).
    Only sampled actions get a regret target: ``regret_legal`` marks them, and the advantage
    loss covers those alone.
    """
    num_actions = game.rules.num_actions
    k = num_actions if sampled_actions is None else min(int(sampled_actions), num_actions)
    nodes = game.tree_roots(num, generator)
    slot = torch.arange(num)
    values = torch.zeros(num, dtype=torch.float64)
    levels = []  # per level: parent slots, child slots, chosen, valid, sigma, legal count
    regret_x, strategy_x, strategy_legal, strategy_sigma = [], [], [], []
    while len(nodes):
        mine = nodes.player == player
        frontier, frontier_slot = [], []
        if mine.any():
            here, here_slot = nodes.select(mine), slot[mine]
            x, legal = game.tree_observe(here, player), game.tree_legal(here)
            sigma = strategy(player, x, legal).to(torch.float64) * legal
            keys = torch.rand(legal.shape, generator=generator).masked_fill(~legal, -1.0)
            top, chosen = keys.topk(k, dim=1)
            valid = top >= 0
            m = len(here)
            child_slot = len(values) + torch.arange(m * k).view(m, k)
            values = torch.cat([values, torch.zeros(m * k, dtype=torch.float64)])
            flat = valid.flatten()
            parents = here.select(torch.arange(m).repeat_interleave(k)[flat])
            children, done, reward = game.tree_step(parents, chosen.flatten()[flat])
            child_of = child_slot.flatten()[flat]
            values[child_of[done]] = reward[player][done].to(torch.float64)
            frontier.append(children.select(~done))
            frontier_slot.append(child_of[~done])
            levels.append((here_slot, child_slot, chosen, valid, sigma, legal.sum(-1)))
            regret_x.append(x)
        if (~mine).any():
            here, here_slot = nodes.select(~mine), slot[~mine]
            other = 1 - player
            x, legal = game.tree_observe(here, other), game.tree_legal(here)
            sigma = strategy(other, x, legal).to(torch.float32) * legal
            strategy_x.append(x)
            strategy_legal.append(legal)
            strategy_sigma.append(sigma)
            drawn = torch.multinomial(sigma, 1, generator=generator).squeeze(-1)
            children, done, reward = game.tree_step(here, drawn)
            values[here_slot[done]] = reward[player][done].to(torch.float64)
            frontier.append(children.select(~done))  # the node's value is its child's
            frontier_slot.append(here_slot[~done])
        nodes = _cat_nodes(frontier)
        slot = torch.cat(frontier_slot)
    # back up, deepest level first: a level's children have all been valued by then
    regrets, masks = [], []
    for here_slot, child_slot, chosen, valid, sigma, n in reversed(levels):
        value, sampled = sampled_estimates(values[child_slot], sigma.gather(1, chosen), valid, n)
        values[here_slot] = value
        regret = torch.zeros(len(here_slot), num_actions, dtype=torch.float64)
        regret.scatter_(1, chosen, sampled)
        mask = torch.zeros(len(here_slot), num_actions, dtype=torch.bool)
        mask.scatter_(1, chosen, valid)
        regrets.append(regret)
        masks.append(mask)
    regrets.reverse()
    masks.reverse()
    width = game.rules.obs_dim
    empty_x, empty_a = torch.zeros(0, width), torch.zeros(0, num_actions)
    strategy_rows = torch.cat(strategy_sigma) if strategy_sigma else empty_a
    return Traversals(
        regret_x=torch.cat(regret_x) if regret_x else empty_x,
        regret_legal=torch.cat(masks) if masks else empty_a.bool(),
        regret=torch.cat(regrets).to(torch.float32) if regrets else empty_a,
        strategy_x=torch.cat(strategy_x) if strategy_x else empty_x,
        strategy_legal=torch.cat(strategy_legal) if strategy_legal else empty_a.bool(),
        strategy=strategy_rows,
        strategy_player=torch.full((len(strategy_rows),), 1 - player, dtype=torch.long),
        root_value=values[:num].clone(),
    )


def _cat_nodes(parts: list):
    from dgsolve.games.bargain.reference import BargainNodes

    return BargainNodes(
        torch.cat([p.deal for p in parts], dim=1), torch.cat([p.situation for p in parts])
    )


def _resolve_chance(states: list, generator: torch.Generator) -> None:
    """Apply sampled chance outcomes in place until no state is at a chance node."""
    pending = [s for s in states if s.is_chance_node()]
    while pending:
        draws = torch.rand(len(pending), generator=generator, dtype=torch.float64).tolist()
        for state, u in zip(pending, draws, strict=True):
            apply_chance(state, u)
        pending = [s for s in pending if s.is_chance_node()]


# --------------------------------------------------------------------------- the solver
class DeepCFRSolver:
    """``algo=deep_cfr``: one Deep CFR iteration (both players, in turn) per ``step()``,
    ``cfg.iterations`` in all; the policies play the average-strategy networks."""

    def __init__(self, cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
        self.cfg, self.game, self.hierarchy, self.device = cfg, game, hierarchy, device
        self.agents = tuple(game.agents)
        self.specs = {a: game.spec(a) for a in self.agents}
        sampled = cfg.get("sampled_actions")
        if sampled is not None and int(sampled) < 2:
            raise ConfigError(
                f"algo.sampled_actions={sampled} must be at least 2 (or null: every action); "
                "a regret estimate needs a second sampled action"
            )
        self.sampled_actions = None if sampled is None else int(sampled)
        if isinstance(game, BargainGame):
            if not hierarchy.is_simultaneous:
                raise ConfigError(
                    "algo=deep_cfr solves the game in its own turn order; use "
                    "hierarchy=simultaneous"
                )
            leaves = game.rules.num_actions**game.rules.rounds
            if self.sampled_actions is None and leaves > MAX_EXTERNAL_LEAVES:
                raise ConfigError(
                    f"algo.sampled_actions=null explores all {game.rules.num_actions} actions at "
                    f"each of a player's {game.rules.rounds} decisions ({leaves:.1e} leaves per "
                    "traversal); set algo.sampled_actions (e.g. 4) or use experiment="
                    "bargain_deep_cfr"
                )
            self.os_game = None
            self.load_string = f"bargain{game.rules}"
            self.num_players = len(self.agents)
            self.num_actions = game.rules.num_actions
            self.obs_dim = game.rules.obs_dim
        else:
            require_tree_game(
                game, hierarchy, "deep_cfr", "traverses game trees: OpenSpiel games or env=bargain"
            )
            self.os_game = game.os_game
            self.load_string = str(game.load_string)
            self.num_players = self.os_game.num_players()
            self.num_actions = self.os_game.num_distinct_actions()
            self.obs_dim = self.os_game.information_state_tensor_size()
        self.hidden_sizes = [int(h) for h in cfg.hidden_sizes]
        self.layer_norm = bool(cfg.get("layer_norm", False))
        self.seed = int(seed)
        self.num_iterations = int(cfg.iterations)
        self.iteration = 0
        self.global_step = 0  # Deep CFR iterations
        self.generator = torch.Generator().manual_seed(self.seed)
        size = int(cfg.memory_size)
        self.advantage_nets = [self._new_advantage_net() for _ in range(self.num_players)]
        self.advantage_memory = [
            Reservoir(size, self.obs_dim, self.num_actions) for _ in range(self.num_players)
        ]
        self.strategy_memory = [
            Reservoir(size, self.obs_dim, self.num_actions) for _ in range(self.num_players)
        ]
        self.strategy_nets = [self._new_strategy_net() for _ in range(self.num_players)]
        self._strategy_iteration = 0  # the iteration the strategy networks were trained at
        self._strategy_loss: list[float] = [math.nan] * self.num_players

    # ------------------------------------------------------------------ public API
    @property
    def done(self) -> bool:
        return self.iteration >= self.num_iterations

    def step(self) -> dict:
        """One iteration ``t``: for each player, traversals, then its advantage network anew."""
        t = self.iteration + 1
        losses: dict[str, dict[str, float]] = {}
        for p in range(self.num_players):
            # ALGO LOGIC: external-sampling traversals with regret matching on every player
            out = self._traverse(p)
            self.advantage_memory[p].add(
                out.regret_x, out.regret_legal, out.regret, t, self.generator
            )
            for q in range(self.num_players):
                mine = out.strategy_player == q
                self.strategy_memory[q].add(
                    out.strategy_x[mine],
                    out.strategy_legal[mine],
                    out.strategy[mine],
                    t,
                    self.generator,
                )
            # ALGO LOGIC: retrain p's advantage network from scratch on its memory (weight t)
            self.advantage_nets[p] = self._new_advantage_net()
            loss = self._fit_advantage(p)
            losses[self.agents[p]] = {
                "advantage_loss": loss,
                "advantage_memory": float(len(self.advantage_memory[p])),
                "root_value": float(out.root_value.mean()),
            }
        self.iteration = t
        self.global_step = t
        return {"episodes": [], "losses": losses}

    def policies(self) -> dict[str, NetPolicy]:
        """The average strategies, trained on the strategy memories if they changed."""
        if self._strategy_iteration != self.iteration:
            self._fit_strategies()
        return {
            a: NetPolicy(self.strategy_nets[p], self.specs[a]) for p, a in enumerate(self.agents)
        }

    def joint_policy(self) -> JointPolicy:
        return JointPolicy(self.policies(), self.hierarchy, self.specs)

    def summary(self) -> dict[str, Any]:
        self.policies()
        return {
            "deep_cfr": {
                "iterations": self.global_step,
                "advantage_memory": {
                    a: len(m) for a, m in zip(self.agents, self.advantage_memory, strict=True)
                },
                "strategy_memory": {
                    a: len(m) for a, m in zip(self.agents, self.strategy_memory, strict=True)
                },
                "strategy_loss": dict(zip(self.agents, self._strategy_loss, strict=True)),
            }
        }

    def state_dict(self) -> dict:
        return {
            "iteration": self.iteration,
            "global_step": self.global_step,
            "generator": self.generator.get_state(),
            "advantage_nets": [net.state_dict() for net in self.advantage_nets],
            "advantage_memory": [m.state_dict() for m in self.advantage_memory],
            "strategy_memory": [m.state_dict() for m in self.strategy_memory],
            "strategy_nets": [net.state_dict() for net in self.strategy_nets],
            "strategy_iteration": self._strategy_iteration,
            "strategy_loss": list(self._strategy_loss),
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["advantage_nets"]) != self.num_players:
            raise RunDirError(
                f"the Deep CFR state has {len(state['advantage_nets'])} players, not "
                f"{self.num_players}; a checkpoint only resumes the run that wrote it"
            )
        for net, s in zip(self.advantage_nets, state["advantage_nets"], strict=True):
            net.load_state_dict(s)
        for net, s in zip(self.strategy_nets, state["strategy_nets"], strict=True):
            net.load_state_dict(s)
        for m, s in zip(self.advantage_memory, state["advantage_memory"], strict=True):
            m.load_state_dict(s)
        for m, s in zip(self.strategy_memory, state["strategy_memory"], strict=True):
            m.load_state_dict(s)
        self.generator.set_state(state["generator"])
        self.iteration = int(state["iteration"])
        self.global_step = int(state["global_step"])
        self._strategy_iteration = int(state["strategy_iteration"])
        self._strategy_loss = [float(x) for x in state["strategy_loss"]]

    def policy_state(self) -> dict:
        """What ``policy.pt`` holds: the strategy networks' weights."""
        self.policies()
        return {
            "solver": "deep_cfr",
            "game": self.load_string,
            "iterations": self.global_step,
            "hidden_sizes": list(self.hidden_sizes),
            "layer_norm": self.layer_norm,
            "strategy_nets": [net.state_dict() for net in self.strategy_nets],
        }

    def load_policy_state(self, state: dict) -> None:
        """Play the strategy networks a ``policy.pt`` written by :meth:`policy_state` holds."""
        if state.get("solver") != "deep_cfr" or state.get("game") != self.load_string:
            raise RunDirError(
                f"policy.pt was not written by algo=deep_cfr on {self.load_string}; rebuild the "
                "run's policies with the algo and game it was trained with"
            )
        if bool(state.get("layer_norm", False)) != self.layer_norm:
            raise RunDirError(
                f"policy.pt's strategy networks have layer_norm={state.get('layer_norm', False)}"
                f", this run's algo.layer_norm={self.layer_norm}; rebuild the run's policies "
                "with the config it was trained with"
            )
        for net, s in zip(self.strategy_nets, state["strategy_nets"], strict=True):
            net.load_state_dict(s)
        self._strategy_iteration = self.iteration  # play them as they are

    # ------------------------------------------------------------------ internals
    def _traverse(self, player: int) -> Traversals:
        num = int(self.cfg.traversals)
        if self.os_game is None:
            return bargain_traversals(
                self.game, player, num, self._current_strategy, self.generator,
                self.sampled_actions,
            )  # fmt: skip
        return external_sampling(
            self.os_game, player, num, self._current_strategy, self.generator,
            self.sampled_actions,
        )  # fmt: skip

    def _new_advantage_net(self) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=self.generator)))
            net = relu_mlp(self.obs_dim, self.hidden_sizes, self.num_actions, self.layer_norm)
        return net.to(self.device)

    def _new_strategy_net(self, seed: int = 0) -> ActionNet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = ActionNet(self.obs_dim, self.num_actions, self.hidden_sizes, self.layer_norm)
        return net.to(self.device)

    def _fit(
        self, net: nn.Module, memory: Reservoir, steps: int, generator, row_loss, anneal: bool
    ) -> float:
        """``steps`` minibatches of ``memory`` (drawn with ``generator``) with Adam on the
        ``t``-weighted mean of ``row_loss(outputs, legal, target)``, at ``algo.lr`` throughout
        or, with ``anneal``, decayed linearly to 0 over the fit; the mean loss."""
        optimiser = torch.optim.Adam(net.parameters(), lr=float(self.cfg.lr))
        schedule = (
            torch.optim.lr_scheduler.LambdaLR(optimiser, lambda i: 1 - i / steps)
            if anneal
            else None
        )
        total = 0.0
        for _ in range(steps):
            x, legal, target, weight = (
                b.to(self.device) for b in memory.sample(int(self.cfg.batch_size), generator)
            )
            loss = (weight * row_loss(net(x), legal, target)).sum() / weight.sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if schedule is not None:
                schedule.step()
            total += loss.item()
        return total / steps

    @torch.no_grad()
    def _current_strategy(self, player: int, x: torch.Tensor, legal: torch.Tensor):
        advantages = self.advantage_nets[player](x.to(self.device)).cpu()
        return regret_matching(advantages, legal)

    def _fit_advantage(self, player: int) -> float:
        memory = self.advantage_memory[player]
        if len(memory) == 0:
            return math.nan
        return self._fit(
            self.advantage_nets[player], memory, int(self.cfg.advantage_steps), self.generator,
            lambda out, legal, target: ((out - target) * legal).pow(2).sum(-1), False,
        )  # fmt: skip

    def _fit_strategies(self) -> None:
        """Train every player's strategy network anew on its strategy memory, with a generator
        of its own seeded by the iteration (the run's generator is not touched)."""
        generator = torch.Generator().manual_seed(self.seed * STRATEGY_SEED + self.iteration)

        def cross_entropy(out, legal, target):
            logp = torch.log_softmax(masked_logits(out, legal), dim=-1)
            return -(target * logp.masked_fill(~legal, 0.0)).sum(-1)

        for p in range(self.num_players):
            seed = int(torch.randint(2**62, (1,), generator=generator))
            net = self._new_strategy_net(seed)
            memory = self.strategy_memory[p]
            loss = math.nan
            if len(memory):
                loss = self._fit(
                    net, memory, int(self.cfg.policy_steps), generator, cross_entropy, True
                )
            self.strategy_nets[p] = net
            self._strategy_loss[p] = loss
        self._strategy_iteration = self.iteration
