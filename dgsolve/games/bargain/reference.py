"""The bargaining game (BARGAIN.md) as a batched torch :class:`Game`: the CPU backend and the
reference the Triton kernel is checked against.

The rules are a finite-state machine over *situations* (offer on the table, completed rounds,
whose turn: :meth:`BargainRules.situation`), so this backend precomputes them as tables: for each
situation and action id, the next situation, how the game ends (if it does) and the discount
paid; for each situation and viewer, the whole observation row and legal mask. A step is then a
fixed sequence of whole-batch lookups and arithmetic, with no Python loop over games. Steps are
bound by the memory they write (two 92-float observations per game): each observation row is one
``index_select`` copy, with only the entries fixed for a whole game (own values, outside offer)
written on top. The Triton kernel computes the same rules arithmetically instead; the tests hold
the two to bit equality.

Randomness: each copy holds its *next* deal (valuations, totals, outside offers) drawn in advance
from one ``torch.Generator`` seeded by ``reset(seed)``. A game that ends restarts with that deal
inside ``step`` (the Triton kernel reads it the same way), and the consumed deals are then redrawn
in copy order by :meth:`BargainGame._refill`, which both backends share, so one seed gives the
same trajectories on either backend of one device. On the CPU (``list_ended``) only the consumed
deals are drawn (drawing every copy's would be the largest cost of a step); elsewhere every
copy's is drawn and the consumed ones kept, which avoids a host synchronisation. An outside offer is
``1 + (raw * M) >> 31`` with ``raw`` uniform on ``[0, 2^31)``: uniform on ``1..M`` up to
``M / 2^31``, the order of ``torch.randint``'s own modulo bias.

Extra attribute: ``last_outcome`` (``[B]`` int8), how each copy's game ended on the last step:
0 still running, 1 ACCEPT, 2 WALK (illegal actions count as WALK). Cross-play reads it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from dgsolve.games.bargain.config import BargainConfig, OutsideOffer
from dgsolve.games.bargain.rules import AGENTS, BargainRules
from dgsolve.games.base import AgentSpec, Game, TimeStep, loaded

#: ``last_outcome`` codes.
RUNNING, ACCEPTED, WALKED = 0, 1, 2

#: exclusive upper bound of the outside-offer bits, as a power of two.
RAW_BITS = 31


class BargainGame(Game):
    """``num_envs`` bargaining games stepped together with torch tensor operations.

    ``p1`` opens; ``obs``, ``legal`` and ``acting`` follow DESIGN.md's Game interface and the
    observation table of BARGAIN.md. Rewards are paid once, on the step that ends a game, to both
    players; that game then restarts inside ``step`` with a fresh deal, and ``final_obs`` holds
    its terminal observation: the situation in which the last decision was taken, with an empty
    mask block since nobody moves any more. ``truncated`` is always false.
    """

    agents = AGENTS
    can_clone = True
    can_save_state = True
    #: batched game trees: :meth:`tree_roots`, :meth:`tree_step`, :meth:`tree_observe` and
    #: :meth:`tree_legal` on :class:`BargainNodes`
    can_traverse = True
    #: payoffs are already discounted by the rules (env.discount); learners add no discount.
    discount = 1.0
    #: what :meth:`clone_state` saves (attribute names without the leading underscore).
    STATE = ("deal", "situation", "next_deal", "last_outcome")

    def __init__(self, cfg: BargainConfig | None = None, device: torch.device | str = "cpu"):
        cfg = BargainConfig.coerce(cfg)
        self.cfg = cfg
        self.rules = rules = BargainRules.from_config(cfg)
        self.num_envs = b = cfg.num_envs
        self.device = dev = torch.device(device)
        self.leader = cfg.leader
        self._spec = AgentSpec(obs_dim=rules.obs_dim, num_actions=rules.num_actions)
        self._generator = torch.Generator(device=dev)
        #: list the copies whose game ended and work on those alone (draws included), or use
        #: whole-batch operations (no host synchronisation): the former on the CPU.
        self.list_ended = dev.type == "cpu"
        self._seeded = False
        self._started = False
        self._quantities = torch.tensor(rules.quantities, dtype=torch.int32, device=dev)
        self._moves, self._scales, self._bundles = self._transition_tables()
        self._rows, self._legal_rows = self._observation_tables()
        # Own values and outside offer (K + 1 floats) are written over each row's start; as
        # int64 words when they fill whole words: half the elements for this strided copy.
        self._const_words = rules.num_items % 2 == 1 and rules.obs_dim % 2 == 0

        self.last_outcome = torch.zeros(b, dtype=torch.int8, device=dev)
        k = rules.num_items
        #: each player's item values, total M and outside offer, int32 [2, B, K + 2]
        self._deal = torch.ones(2, b, k + 2, dtype=torch.int32, device=dev)
        self._next_deal = torch.ones_like(self._deal)  # pre-drawn deal of the next game
        self._situation = torch.zeros(b, dtype=torch.int32, device=dev)
        # Derived: own values / max_value and outside offer / M of the current and next deals.
        self._const = torch.zeros(2, b, k + 1, device=dev)
        self._next_const = torch.zeros_like(self._const)

    # ------------------------------------------------------------------ rule tables
    def _transition_tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rules, per situation ``s`` and action class ``c`` (action id + 1, clamped to
        ``0..A + 1`` so every illegal id has a class), at ``s * (A + 2) + c``: int32
        ``next situation * 4 + outcome`` and float32 payoff scale; and int32 ``[S, K]`` the
        bundle n on the table in each situation."""
        r, dev = self.rules, self.device
        s = torch.arange(r.num_situations, device=dev)[:, None]
        act = torch.arange(r.num_actions + 2, device=dev)[None, :] - 1
        offer, rnd, p2 = r.split_situation(s)
        # RULES 5: offers are legal unless P2 is in the last round; ACCEPT needs an offer on the
        # table; anything else (WALK, or an illegal id) ends the game by WALK.
        can_counter = ~((p2 == 1) & (rnd == r.rounds - 1))
        is_offer = (act >= 0) & (act < r.num_offers) & can_counter
        accept = (act == r.accept) & (offer > 0)
        outcome = torch.where(is_offer, RUNNING, torch.where(accept, ACCEPTED, WALKED))
        # RULES 4: the turn passes and the round advances after P2's counteroffer; a game that
        # ends restarts in situation 0 (no offer, round 0, P1 to move).
        following = torch.where(is_offer, r.situation(act + 1, rnd + p2, 1 - p2), 0)
        # RULES 10, 11: payoffs are discounted per completed round, and paid when the game ends.
        scale = torch.where(is_offer, 0.0, r.discounts(dev)[rnd])
        bundles = r.offer_table(dev)[(offer.squeeze(1) - 1).clamp(min=0)]
        return (
            (following * 4 + outcome).flatten().to(torch.int32),
            scale.flatten(),
            bundles.masked_fill(offer == 0, 0),
        )

    def _observation_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per viewer and situation: the observation row, float32 ``[2, 2S, obs_dim]`` (rows
        ``S..2S``: the terminal rows, mask block empty; the first K + 1 entries, own values and
        outside offer, left zero), and the legal mask, bool ``[2, S, A]``."""
        r, dev = self.rules, self.device
        offer, rnd, p2 = r.split_situation(torch.arange(r.num_situations, device=dev))
        has_offer = offer > 0
        bundle = self._bundles.float()
        q = self._quantities.float()
        frac = rnd.float() / (r.rounds - 1) if r.rounds > 1 else torch.zeros_like(rnd).float()
        mask_rows, legal_rows = r.mask_rows(dev), r.legal_rows(dev)
        situations = list(zip(offer.tolist(), rnd.tolist(), p2.tolist(), strict=True))
        rows, legal = [], []
        for viewer in (0, 1):
            share = bundle / q if viewer == 1 else (q - bundle) / q
            kind = torch.tensor(
                [r.mask_kind(p == viewer, o > 0, p, t) for o, t, p in situations], device=dev
            )
            row = torch.zeros(r.num_situations, r.obs_dim, device=dev)
            row[:, r.offer_slice] = torch.where(has_offer[:, None], share, -1.0)
            row[:, r.has_offer_index] = has_offer.float()
            row[:, r.round_index] = frac
            row[:, r.player_index] = p2.float()
            row[:, r.mask_slice] = mask_rows[kind].float()
            terminal = row.clone()
            terminal[:, r.mask_slice] = 0.0
            rows.append(torch.cat([row, terminal]))
            legal.append(legal_rows[kind])
        return torch.stack(rows), torch.stack(legal)

    # ------------------------------------------------------------------ Game interface
    def spec(self, agent: str) -> AgentSpec:
        if agent not in self.agents:
            raise KeyError(f"unknown agent '{agent}'; the bargaining game has {self.agents}")
        return self._spec

    @torch.no_grad()
    def reset(self, seed: int | None = None) -> TimeStep:
        """Deal every copy a new game. ``seed=None`` continues the current random stream (the
        first one is then seeded from torch's global generator, so ``torch.manual_seed`` holds)."""
        if seed is not None:
            self._generator.manual_seed(seed)
        elif not self._seeded:
            self._generator.manual_seed(int(torch.randint(2**62, (1,)).item()))
        self._seeded = self._started = True
        b = self.num_envs
        self._deal = self.draw_deals(b)
        self._next_deal = self.draw_deals(b)
        self._situation = torch.zeros_like(self._situation)
        self.last_outcome = torch.zeros_like(self.last_outcome)
        return self._fresh_timestep()

    @torch.no_grad()
    def step(self, actions: dict[str, torch.Tensor]) -> TimeStep:
        """Apply the acting player's action in every copy (the other player's is ignored)."""
        a1, a2 = self._joint_action(actions)
        situation = self._situation
        act = torch.where((situation & 1).bool(), a2, a1)
        following, outcome, move = self.transition(situation, act)
        done = outcome != RUNNING
        self.last_outcome = outcome.to(torch.int8)
        self._situation = following
        index = done.nonzero().squeeze(1) if self.list_ended else None
        reward = self._payoffs(situation, outcome, move, index)

        # The terminal observation is that of the situation just left, with the old deal.
        terminal = torch.where(done, situation + self.rules.num_situations, following)
        final_obs = TerminalObs(self, terminal, self._const)
        # A finished game restarts with the copy's pre-drawn next deal, which is then redrawn.
        self._restart(done, index)
        self._refill(done, index)
        obs, legal = self._observe(following)
        return TimeStep(
            obs=obs,
            reward={a: reward[i] for i, a in enumerate(self.agents)},
            terminated=done,
            truncated=torch.zeros_like(done),
            legal=legal,
            acting=self._acting(),
            final_obs=final_obs,
        )

    def transition(
        self, situation: torch.Tensor, act: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rules' move from ``situation [N]`` (int32) by the mover's action ids ``act [N]``
        (int64, modified in place): the next situation (0 where the game ended), the outcome
        (RUNNING, ACCEPTED or WALKED) and ``move``, the row of the rule tables it used."""
        # RULES 4, 5: the transition table holds the next situation and how the game ends for
        # every (situation, action class); illegal ids fall into classes that walk.
        classes = self.rules.num_actions + 2
        move = act.clamp_(-1, classes - 2).add_(1).add_(situation * classes)
        following = self._moves.index_select(0, move)
        return following >> 2, following & 3, move

    def _payoffs(
        self,
        situation: torch.Tensor,
        outcome: torch.Tensor,
        move: torch.Tensor,
        index: torch.Tensor | None,
        deal: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rewards ``[2, B]`` of a step: zero unless the game ended, computed on the copies in
        ``index`` (all when None; the scale is zero where a game goes on); ``deal`` is the
        games' deals, by default the current ones."""
        deal = self._deal if deal is None else deal
        width = deal.shape[1]
        if index is not None:
            deal, situation = deal.index_select(1, index), situation.index_select(0, index)
            outcome, move = outcome.index_select(0, index), move.index_select(0, index)
        # RULES 7, 8, 11: ACCEPT pays u1 = v1.(Q - n), u2 = v2.n for the bundle n on the table,
        # WALK each player's outside offer; each over the player's own M_i, times the scale.
        k = self.rules.num_items
        values, totals, outside = deal[..., :k], deal[..., k], deal[..., k + 1]
        agreed = (values * self._bundles.index_select(0, situation)).sum(-1, dtype=torch.int32)
        agreed[0].neg_().add_(totals[0])
        pay = torch.where(outcome == ACCEPTED, agreed, outside)
        reward = pay.float() / totals.float() * self._scales.index_select(0, move)
        if index is None:
            return reward
        return torch.zeros(2, width, device=self.device).index_copy_(1, index, reward)

    # ------------------------------------------------------------------ optional capabilities
    def clone_state(self) -> dict[str, torch.Tensor]:
        """A copy of every copy's game, of the pre-drawn deals and of the random stream."""
        state = {name: getattr(self, _attr(name)).clone() for name in self.STATE}
        state["generator"] = self._generator.get_state()
        return state

    def restore_state(self, state: dict[str, torch.Tensor]) -> TimeStep:
        """Return to a :meth:`clone_state` snapshot (tensors on any device); the TimeStep is
        that of a decision point (no reward, nothing done)."""
        for name in self.STATE:
            setattr(self, _attr(name), loaded(state[name], getattr(self, _attr(name)), name))
        self._generator.set_state(state["generator"].cpu())
        self._seeded = self._started = True
        return self._fresh_timestep()

    def state_dict(self) -> dict:
        """:meth:`clone_state` and whether the game was seeded and started. The Triton backend
        steps the same tensors, so this is its whole state too."""
        return {**self.clone_state(), "seeded": self._seeded, "started": self._started}

    def load_state_dict(self, state: dict) -> None:
        self.restore_state(state)
        self._seeded, self._started = bool(state["seeded"]), bool(state["started"])

    # ------------------------------------------------------------------ tree capability
    def tree_roots(self, n: int, generator: torch.Generator | None = None) -> BargainNodes:
        """``n`` fresh games at their first decision, dealt from ``generator`` (by default the
        game's own; tree methods pass theirs, so that the batch's games are not disturbed)."""
        deal = self.draw_deals(n, generator)
        return BargainNodes(deal, torch.zeros(n, dtype=torch.int32, device=self.device))

    def tree_observe(self, nodes: BargainNodes, viewer: int) -> torch.Tensor:
        """``viewer``'s observation ``[N, obs_dim]`` at each node, as :meth:`step` gives it."""
        return self.compose(viewer, nodes.situation, self._deal_entries(nodes.deal))

    def tree_legal(self, nodes: BargainNodes) -> torch.Tensor:
        """The legal actions ``[N, A]`` (bool) of the player to move at each node."""
        p2 = nodes.player.bool()[:, None]
        rows = [self._legal_rows[v].index_select(0, nodes.situation) for v in (0, 1)]
        return torch.where(p2, rows[1], rows[0])

    def tree_step(
        self, nodes: BargainNodes, action: torch.Tensor
    ) -> tuple[BargainNodes, torch.Tensor, torch.Tensor]:
        """The children of ``nodes`` by the mover's ``action [N]``: the child nodes (a finished
        game's child is its terminal node, situation 0 of the same deal, never stepped again),
        whether each game ended, and the rewards ``[2, N]`` paid (zero where it goes on)."""
        act = action.to(self.device, torch.int64).clone()
        following, outcome, move = self.transition(nodes.situation, act)
        done = outcome != RUNNING
        reward = self._payoffs(nodes.situation, outcome, move, None, nodes.deal)
        return BargainNodes(nodes.deal, following), done, reward

    # ------------------------------------------------------------------ deals
    def draw_deals(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` deals from ``generator`` (default: the game's), int32 ``[2, n, K + 2]``: each
        player's item values (uniform on ``1..max_value``), total ``M`` and outside offer."""
        r, dev = self.rules, self.device
        g = self._generator if generator is None else generator
        values = torch.randint(
            1, r.max_value + 1, (2, n, r.num_items), generator=g, dtype=torch.int32, device=dev
        )
        totals = (values * self._quantities).sum(-1, keepdim=True, dtype=torch.int32)
        if r.outside_offer is OutsideOffer.none:
            return torch.cat([values, totals, torch.zeros_like(totals)], dim=-1)
        raw = torch.randint(0, 2**RAW_BITS, (2, n, 1), generator=g, dtype=torch.int32, device=dev)
        outside = 1 + ((raw.long() * totals.long()) >> RAW_BITS).to(torch.int32)
        return torch.cat([values, totals, outside], dim=-1)

    def _restart(self, done: torch.Tensor, index: torch.Tensor | None) -> None:
        """Give the copies in ``done`` their next deal (``index``: their positions, if listed).
        ``_const`` is replaced, never written in place: a TerminalObs may still read it."""
        if index is not None:
            self._deal.index_copy_(1, index, self._next_deal.index_select(1, index))
            self._const = self._const.index_copy(1, index, self._next_const.index_select(1, index))
        else:
            self._deal = torch.where(done[:, None], self._next_deal, self._deal)
            self._const = torch.where(done[:, None], self._next_const, self._const)

    def _refill(self, used: torch.Tensor, index: torch.Tensor | None = None) -> None:
        """Redraw, in copy order, the next deal of the copies in ``used`` (bool ``[B]``).
        ``index``: their positions, when the caller has listed them."""
        if self.list_ended:
            index = used.nonzero().squeeze(1) if index is None else index
            if index.numel():
                deal = self.draw_deals(index.numel())
                self._next_deal.index_copy_(1, index, deal)
                self._next_const.index_copy_(1, index, self._deal_entries(deal))
            return
        deal = self.draw_deals(self.num_envs)
        self._next_deal = torch.where(used[:, None], deal, self._next_deal)
        self._next_const = torch.where(used[:, None], self._deal_entries(deal), self._next_const)

    def _deal_entries(self, deal: torch.Tensor) -> torch.Tensor:
        """Own values / max_value and outside offer / M, float32 ``[2, n, K + 1]``."""
        k = self.rules.num_items
        own = deal[..., :k].float() / self.rules.max_value
        outside = deal[..., k + 1 :].float() / deal[..., k : k + 1].float()
        return torch.cat([own, outside], dim=-1)

    # ------------------------------------------------------------------ observations
    def _joint_action(self, actions: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        a1, a2 = (actions[a].to(self.device, torch.int64).reshape(-1) for a in self.agents)
        return a1, a2

    def compose(
        self, viewer: int, situation: torch.Tensor, const: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Observation rows ``[B, obs_dim]`` of ``viewer`` (0 or 1): the row of each situation
        (+ S for its terminal row), then own values and outside offer (``const [2, B, K + 1]``,
        by default the current deal's) written over the first K + 1 entries."""
        out = self._rows[viewer].index_select(0, situation)
        const = (self._const if const is None else const)[viewer]
        if self._const_words:
            out.view(torch.int64)[:, : const.shape[1] // 2] = const.view(torch.int64)
        else:
            out[:, : const.shape[1]] = const
        return out

    def _observe(self, situation: torch.Tensor) -> tuple[dict, dict]:
        obs = {a: self.compose(i, situation) for i, a in enumerate(self.agents)}
        legal = {
            a: self._legal_rows[i].index_select(0, situation) for i, a in enumerate(self.agents)
        }
        return obs, legal

    def _acting(self) -> dict[str, torch.Tensor]:
        p2 = (self._situation & 1).bool()
        return {self.agents[0]: ~p2, self.agents[1]: p2}

    def _fresh_timestep(self) -> TimeStep:
        """The TimeStep of a decision point reached without a step (reset, restore)."""
        self._const = self._deal_entries(self._deal)
        self._next_const = self._deal_entries(self._next_deal)
        obs, legal = self._observe(self._situation)
        never = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return TimeStep(
            obs=obs,
            reward={a: torch.zeros(self.num_envs, device=self.device) for a in self.agents},
            terminated=never,
            truncated=never.clone(),
            legal=legal,
            acting=self._acting(),
            final_obs=dict(obs),
        )


@dataclass(frozen=True)
class BargainNodes:
    """Nodes of bargaining game trees, batched: each row is one game's deal (int32
    ``[2, N, K + 2]``, as :meth:`BargainGame.draw_deals` makes them) and its situation (int32
    ``[N]``). Tree methods (Deep CFR's traversals) expand thousands of them at once through
    :meth:`BargainGame.tree_step`; the rows are independent, so selecting and repeating them
    is plain indexing."""

    deal: torch.Tensor
    situation: torch.Tensor

    def __len__(self) -> int:
        return self.situation.shape[0]

    @property
    def player(self) -> torch.Tensor:
        """The player to move at each node (0: P1, 1: P2), int64 ``[N]``."""
        return (self.situation & 1).long()

    def select(self, index: torch.Tensor) -> BargainNodes:
        """The rows ``index`` (a long index or a bool mask), in that order."""
        if index.dtype == torch.bool:
            index = index.nonzero().squeeze(1)
        return BargainNodes(self.deal.index_select(1, index), self.situation.index_select(0, index))


class TerminalObs(Mapping):
    """``TimeStep.final_obs`` of the torch backend, assembled per agent on first access: the
    game never truncates, so most consumers never read it and a step need not write it."""

    def __init__(self, game: BargainGame, situation: torch.Tensor, const: torch.Tensor):
        self._game, self._situation, self._const = game, situation, const
        self._built: dict[str, torch.Tensor] = {}

    def __getitem__(self, agent: str) -> torch.Tensor:
        if agent not in self._built:
            viewer = self._game.agents.index(agent)
            self._built[agent] = self._game.compose(viewer, self._situation, self._const)
        return self._built[agent]

    def __iter__(self) -> Iterator[str]:
        return iter(self._game.agents)

    def __len__(self) -> int:
        return len(self._game.agents)


def _attr(name: str) -> str:
    return name if name == "last_outcome" else f"_{name}"
