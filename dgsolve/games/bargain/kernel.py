"""One step of the bargaining game (BARGAIN.md) as a Triton kernel, beside the torch wrapper that
launches it, and the :class:`TritonBargainGame` backend built on them.

The layout follows the Triton tutorials (vector addition, fused softmax): each program handles
``BLOCK`` games, every load and store is masked against the batch size, and a torch wrapper
allocates the outputs, computes the grid and launches. One launch does the whole step, computing
the rules arithmetically where the torch reference looks them up in tables: decode the situation
and the offer on the table, apply the acting player's decision (illegal ids walk), pay ACCEPT or
WALK, restart finished games with their pre-drawn next deal, and write both players'
observations, terminal observations and legal masks. Random numbers are not drawn here: the next
deals come in from torch (:meth:`BargainGame.draw_deals`), so this backend reproduces the torch
reference (``dgsolve.games.bargain.reference``) bit for bit from one seed. Divisions use
``tl.div_rn``, the IEEE round-to-nearest division torch performs, so every float matches exactly.

Interpreter (backend ``triton_interpret``). Triton reads ``TRITON_INTERPRET`` when ``triton.jit``
wraps a function, through ``triton.knobs.runtime.interpret`` (triton 3.x reads the environment
lazily, not at ``import triton``): set, ``triton.jit`` returns an interpreter that runs the kernel
with numpy on CPU tensors; unset, a GPU compiler. The kernel body is therefore an undecorated
function wrapped on demand, once per mode, with the knob switched on inside
``knobs.runtime.scope()`` for the interpreted wrapping and its launches (the scope restores the
knob and the environment variable afterwards). The interpreter thus works in any process whatever
was imported before, and exporting ``TRITON_INTERPRET=1`` before Python starts, as the tests also
do in a subprocess, gives the same result. For this to hold the kernel calls no other jitted
function, not even ``triton.language``'s own (``tl.sum``, ``tl.zeros``, ``tl.cdiv``): those are
wrapped once, when their module is imported, in whichever mode the environment said then.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton import knobs

from dgsolve.games.bargain.config import BargainConfig
from dgsolve.games.bargain.reference import BargainGame
from dgsolve.games.bargain.rules import BargainRules
from dgsolve.games.base import TimeStep

#: games per program.
DEFAULT_BLOCK = 64


def _bargain_step(
    deal_ptr,  # int32 [2, B, K + 2]: each player's item values, total M_i = v_i . Q and
    #            outside offer in the copy's current game; updated in place
    situation_ptr,  # int32 [B]: (offer id + 1, completed rounds, P2's turn), mixed radix
    #                 (BargainRules.situation); updated in place
    next_deal_ptr,  # int32 [2, B, K + 2]: the pre-drawn deal of each copy's next game
    act1_ptr,  # int64 [B]: p1's action ids (read where P1 decides)
    act2_ptr,  # int64 [B]: p2's action ids (read where P2 decides)
    quantities_ptr,  # int32 [K]: item quantities Q
    strides_ptr,  # int32 [K]: place value of each item in an offer id (10, 2, 1 by default)
    discounts_ptr,  # float32 [ROUNDS]: discount ** completed rounds
    obs_ptr,  # float32 [2, B, OBS_DIM] out: each viewer's observation after the step
    final_ptr,  # float32 [2, B, OBS_DIM] out: terminal observation where a game ended, else obs
    legal_ptr,  # uint8 [2, B, NUM_OFFERS + 2] out: legal actions (WALK alone when idle)
    reward_ptr,  # float32 [2, B] out: normalised payoff where a game ended, else 0
    done_ptr,  # uint8 [B] out: 1 where the game ended (ACCEPT or WALK)
    outcome_ptr,  # int8 [B] out: 0 running, 1 accepted, 2 walked
    B,  # number of copies
    K: tl.constexpr,  # item types
    NUM_OFFERS: tl.constexpr,  # offers; ACCEPT is NUM_OFFERS and WALK NUM_OFFERS + 1
    A_PAD: tl.constexpr,  # NUM_OFFERS + 2 rounded up to a power of two (mask tile width)
    ROUNDS: tl.constexpr,  # rounds per game
    MAX_VALUE: tl.constexpr,  # largest item value (scale of the observed values)
    BLOCK: tl.constexpr,  # copies per program
):
    NUM_ACTIONS: tl.constexpr = NUM_OFFERS + 2
    OBS_DIM: tl.constexpr = 2 * K + 4 + NUM_ACTIONS

    pid = tl.program_id(0)
    lanes = pid * BLOCK + tl.arange(0, BLOCK)
    live = lanes < B
    games = lanes.to(tl.int64)  # 64-bit offsets: 2 * B * OBS_DIM may pass 2^31

    # ALGO LOGIC: the acting player's decision (BARGAIN.md rule 5). An offer is legal unless P2
    # is in the last round; ACCEPT needs an offer on the table; anything else ends by WALK.
    situation = tl.load(situation_ptr + games, mask=live, other=0)
    offer = situation // (2 * ROUNDS)  # offer id + 1; 0: none
    rnd = (situation // 2) % ROUNDS
    p2 = situation % 2
    a1 = tl.load(act1_ptr + games, mask=live, other=0)
    a2 = tl.load(act2_ptr + games, mask=live, other=0)
    act = tl.where(p2 == 1, a2, a1)
    can_counter = (p2 == 0) | (rnd < ROUNDS - 1)
    is_offer = (act >= 0) & (act < NUM_OFFERS) & can_counter
    accept = (act == NUM_OFFERS) & (offer > 0)
    done = ~is_offer

    # ALGO LOGIC: the next situation (rule 4): the turn passes and the round advances after P2's
    # counteroffer; a finished game restarts. The terminal observation shows the situation of
    # the last decision where a game ended, and the next one elsewhere.
    offer_n = tl.where(done, 0, act.to(tl.int32) + 1)
    rnd_n = tl.where(done, 0, rnd + p2)
    p2_n = tl.where(done, 0, 1 - p2)
    offer_f = tl.where(done, offer, offer_n)
    rnd_f = tl.where(done, rnd, rnd_n)
    p2_f = tl.where(done, p2, p2_n)
    deal1 = games * (K + 2)  # where each player's deal starts
    deal2 = (B + games) * (K + 2)
    obs1 = obs_ptr + games * OBS_DIM
    obs2 = obs_ptr + (B + games) * OBS_DIM
    fin1 = final_ptr + games * OBS_DIM
    fin2 = final_ptr + (B + games) * OBS_DIM

    # Item by item: the value of the bundle on the table, the restart with the next deal's
    # values, and the observed values (own value / max_value) and shares (P1 keeps Q - n, P2
    # gets n, over Q; -1 when no offer) after the step and in the terminal observation. The
    # loop is unrolled at compile time; it also keeps tl.sum (a jitted helper) out of the kernel.
    u1 = offer * 0
    u2 = offer * 0
    for k in tl.static_range(K):
        q_k = tl.load(quantities_ptr + k)
        s_k = tl.load(strides_ptr + k)
        q_f = q_k.to(tl.float32)
        n_k = (tl.maximum(offer - 1, 0) // s_k) % (q_k + 1)
        v1 = tl.load(deal_ptr + deal1 + k, mask=live, other=0)
        v2 = tl.load(deal_ptr + deal2 + k, mask=live, other=0)
        u1 += v1 * (q_k - n_k)
        u2 += v2 * n_k
        v1_n = tl.where(done, tl.load(next_deal_ptr + deal1 + k, mask=live, other=0), v1)
        v2_n = tl.where(done, tl.load(next_deal_ptr + deal2 + k, mask=live, other=0), v2)
        tl.store(deal_ptr + deal1 + k, v1_n, mask=live)
        tl.store(deal_ptr + deal2 + k, v2_n, mask=live)
        tl.store(obs1 + k, tl.div_rn(v1_n.to(tl.float32), MAX_VALUE), mask=live)
        tl.store(obs2 + k, tl.div_rn(v2_n.to(tl.float32), MAX_VALUE), mask=live)
        tl.store(fin1 + k, tl.div_rn(v1.to(tl.float32), MAX_VALUE), mask=live)
        tl.store(fin2 + k, tl.div_rn(v2.to(tl.float32), MAX_VALUE), mask=live)
        n_n = (tl.maximum(offer_n - 1, 0) // s_k) % (q_k + 1)
        n_f = (tl.maximum(offer_f - 1, 0) // s_k) % (q_k + 1)
        kept_n = tl.where(offer_n > 0, tl.div_rn((q_k - n_n).to(tl.float32), q_f), -1.0)
        given_n = tl.where(offer_n > 0, tl.div_rn(n_n.to(tl.float32), q_f), -1.0)
        kept_f = tl.where(offer_f > 0, tl.div_rn((q_k - n_f).to(tl.float32), q_f), -1.0)
        given_f = tl.where(offer_f > 0, tl.div_rn(n_f.to(tl.float32), q_f), -1.0)
        tl.store(obs1 + (K + 1 + k), kept_n, mask=live)
        tl.store(obs2 + (K + 1 + k), given_n, mask=live)
        tl.store(fin1 + (K + 1 + k), kept_f, mask=live)
        tl.store(fin2 + (K + 1 + k), given_f, mask=live)

    # ALGO LOGIC: payoffs (rules 7, 8, 11): ACCEPT gives u1 = v1.(Q - n), u2 = v2.n, WALK the
    # outside offers; each over the player's own M_i, discounted per completed round, and paid
    # only on the step that ends the game.
    m1 = tl.load(deal_ptr + deal1 + K, mask=live, other=1)
    m2 = tl.load(deal_ptr + deal2 + K, mask=live, other=1)
    o1 = tl.load(deal_ptr + deal1 + K + 1, mask=live, other=0)
    o2 = tl.load(deal_ptr + deal2 + K + 1, mask=live, other=0)
    scale = tl.where(done, tl.load(discounts_ptr + rnd, mask=live, other=0.0), 0.0)
    r1 = tl.div_rn(tl.where(accept, u1, o1).to(tl.float32), m1.to(tl.float32)) * scale
    r2 = tl.div_rn(tl.where(accept, u2, o2).to(tl.float32), m2.to(tl.float32)) * scale
    tl.store(reward_ptr + games, r1, mask=live)
    tl.store(reward_ptr + B + games, r2, mask=live)
    tl.store(done_ptr + games, done.to(tl.uint8), mask=live)
    tl.store(outcome_ptr + games, done.to(tl.int8) * 2 - accept.to(tl.int8), mask=live)

    # The rest of the restart, and the new situation.
    m1_n = tl.where(done, tl.load(next_deal_ptr + deal1 + K, mask=live, other=1), m1)
    m2_n = tl.where(done, tl.load(next_deal_ptr + deal2 + K, mask=live, other=1), m2)
    o1_n = tl.where(done, tl.load(next_deal_ptr + deal1 + K + 1, mask=live, other=0), o1)
    o2_n = tl.where(done, tl.load(next_deal_ptr + deal2 + K + 1, mask=live, other=0), o2)
    tl.store(deal_ptr + deal1 + K, m1_n, mask=live)
    tl.store(deal_ptr + deal2 + K, m2_n, mask=live)
    tl.store(deal_ptr + deal1 + K + 1, o1_n, mask=live)
    tl.store(deal_ptr + deal2 + K + 1, o2_n, mask=live)
    tl.store(situation_ptr + games, (offer_n * ROUNDS + rnd_n) * 2 + p2_n, mask=live)

    # Outside offer / M, offer flag, round / (rounds - 1), current player and the mask block of
    # the four rows: (p1, p2) x (after the step, terminal). Static branches pick each row's
    # inputs, one name per assignment (Triton's interpreter rewrites plain assignments only).
    ids = tl.arange(0, A_PAD)
    id_ok = live[:, None] & (ids[None, :] < NUM_ACTIONS)
    for viewer in tl.static_range(2):
        for terminal in tl.static_range(2):
            if viewer == 0:
                if terminal == 0:
                    row = obs1
                    own_outside = tl.div_rn(o1_n.to(tl.float32), m1_n.to(tl.float32))
                else:
                    row = fin1
                    own_outside = tl.div_rn(o1.to(tl.float32), m1.to(tl.float32))
            else:
                if terminal == 0:
                    row = obs2
                    own_outside = tl.div_rn(o2_n.to(tl.float32), m2_n.to(tl.float32))
                else:
                    row = fin2
                    own_outside = tl.div_rn(o2.to(tl.float32), m2.to(tl.float32))
            if terminal == 0:
                off = offer_n
                r = rnd_n
                p = p2_n
                acting = p2_n == viewer
            else:
                off = offer_f
                r = rnd_f
                p = p2_f
                acting = (p2_f == viewer) & ~done  # nobody moves in a finished game
            tl.store(row + K, own_outside, mask=live)
            tl.store(row + (2 * K + 1), (off > 0).to(tl.float32), mask=live)
            if ROUNDS > 1:
                tl.store(row + (2 * K + 2), tl.div_rn(r.to(tl.float32), ROUNDS - 1), mask=live)
            else:
                tl.store(row + (2 * K + 2), (r * 0).to(tl.float32), mask=live)
            tl.store(row + (2 * K + 3), p.to(tl.float32), mask=live)
            offers_ok = acting & ((p == 0) | (r < ROUNDS - 1))
            accept_ok = acting & (off > 0)
            bits = (
                ((ids[None, :] < NUM_OFFERS) & offers_ok[:, None])
                | ((ids[None, :] == NUM_OFFERS) & accept_ok[:, None])
                | ((ids[None, :] == NUM_OFFERS + 1) & acting[:, None])
            )
            tl.store(row[:, None] + (2 * K + 4) + ids[None, :], bits.to(tl.float32), mask=id_ok)
            if terminal == 0:
                legal = bits | (ids[None, :] == NUM_OFFERS + 1)
                cells = (viewer * B + games)[:, None] * NUM_ACTIONS + ids[None, :]
                tl.store(legal_ptr + cells, legal.to(tl.uint8), mask=id_ok)


@contextlib.contextmanager
def _interpreting() -> Iterator[None]:
    """Switch Triton's interpreter knob on for the block, then restore it (and the env)."""
    with knobs.runtime.scope():
        knobs.runtime.interpret = True
        yield


@functools.cache
def _kernel(interpret: bool):
    """The step kernel wrapped by ``triton.jit``: compiled for the GPU, or interpreted."""
    if not interpret:
        return triton.jit(_bargain_step)
    with _interpreting():
        return triton.jit(_bargain_step)


class StepOutputs(NamedTuple):
    """What one launch writes; the leading 2 of ``obs``/``final_obs``/``legal``/``reward``
    indexes the viewer (p1, p2)."""

    obs: torch.Tensor  # float32 [2, B, obs_dim]
    final_obs: torch.Tensor  # float32 [2, B, obs_dim]
    legal: torch.Tensor  # bool [2, B, num_actions]
    reward: torch.Tensor  # float32 [2, B]
    done: torch.Tensor  # bool [B]
    outcome: torch.Tensor  # int8 [B]


class RuleTables(NamedTuple):
    """The small rule tensors the kernel reads, built once per game."""

    quantities: torch.Tensor  # int32 [K]
    strides: torch.Tensor  # int32 [K]
    discounts: torch.Tensor  # float32 [rounds]

    @classmethod
    def of(cls, rules: BargainRules, device: torch.device | str) -> RuleTables:
        return cls(
            quantities=torch.tensor(rules.quantities, dtype=torch.int32, device=device),
            strides=torch.tensor(rules.strides, dtype=torch.int32, device=device),
            discounts=rules.discounts(device),
        )


def bargain_step(
    state: dict[str, torch.Tensor],
    act1: torch.Tensor,
    act2: torch.Tensor,
    rules: BargainRules,
    tables: RuleTables,
    interpret: bool = False,
    block: int = DEFAULT_BLOCK,
) -> StepOutputs:
    """Launch the step kernel on ``state`` (the tensors named in :attr:`BargainGame.STATE`, all
    contiguous, updated in place) with contiguous int64 ``[B]`` actions ``act1``/``act2``."""
    deal = state["deal"]
    b, dev = deal.shape[1], deal.device
    out = StepOutputs(
        obs=torch.empty(2, b, rules.obs_dim, device=dev),
        final_obs=torch.empty(2, b, rules.obs_dim, device=dev),
        legal=torch.empty(2, b, rules.num_actions, dtype=torch.bool, device=dev),
        reward=torch.empty(2, b, device=dev),
        done=torch.empty(b, dtype=torch.bool, device=dev),
        outcome=torch.empty(b, dtype=torch.int8, device=dev),
    )
    grid = (triton.cdiv(b, block),)
    args = (
        deal,
        state["situation"],
        state["next_deal"],
        act1,
        act2,
        tables.quantities,
        tables.strides,
        tables.discounts,
        out.obs,
        out.final_obs,
        out.legal.view(torch.uint8),
        out.reward,
        out.done.view(torch.uint8),
        out.outcome,
        b,
    )
    meta = dict(
        K=rules.num_items,
        NUM_OFFERS=rules.num_offers,
        A_PAD=triton.next_power_of_2(rules.num_actions),
        ROUNDS=rules.rounds,
        MAX_VALUE=rules.max_value,
        BLOCK=block,
    )
    kernel = _kernel(interpret)
    with _interpreting() if interpret else contextlib.nullcontext():
        # no fused multiply-add: every float is rounded as torch rounds it
        kernel[grid](*args, **meta, enable_fp_fusion=False)
    return out


class TritonBargainGame(BargainGame):
    """The bargaining game stepped by the Triton kernel; reset, deals and the random stream are
    the torch reference's, so both give the same trajectories from one seed.

    ``interpret=True`` runs the kernel in Triton's interpreter on CPU tensors (slow; for tests).
    """

    def __init__(
        self,
        cfg: BargainConfig | None = None,
        device: torch.device | str = "cuda",
        interpret: bool = False,
        block: int = DEFAULT_BLOCK,
    ):
        super().__init__(cfg, device)
        self.interpret = interpret
        self.block = block
        self._tables = RuleTables.of(self.rules, self.device)

    @torch.no_grad()
    def step(self, actions: dict[str, torch.Tensor]) -> TimeStep:
        a1, a2 = (a.contiguous() for a in self._joint_action(actions))
        state = {name: getattr(self, f"_{name}") for name in self.STATE if name != "last_outcome"}
        out = bargain_step(state, a1, a2, self.rules, self._tables, self.interpret, self.block)
        self.last_outcome = out.outcome
        self._refill(out.done)
        p1, p2 = self.agents
        return TimeStep(
            obs={p1: out.obs[0], p2: out.obs[1]},
            reward={p1: out.reward[0], p2: out.reward[1]},
            terminated=out.done,
            truncated=torch.zeros_like(out.done),
            legal={p1: out.legal[0], p2: out.legal[1]},
            acting=self._acting(),
            final_obs={p1: out.final_obs[0], p2: out.final_obs[1]},
        )
