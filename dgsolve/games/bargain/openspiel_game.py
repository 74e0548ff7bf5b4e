"""The bargaining game (BARGAIN.md) as an OpenSpiel Python game, registered as ``dgsolve_bargain``.

Importing this module registers the game with pyspiel (once; importing it again does nothing),
after which ``pyspiel.load_game("dgsolve_bargain(quantities=2_1,max_value=3,rounds=1)")`` works,
and so does ``dgsolve env=openspiel "env.game='dgsolve_bargain(quantities=2_1,max_value=3)'"``
(Hydra needs the inner quotes; the adapter's ``load_game`` imports this module first). Small
variants are what it is for: OpenSpiel's exact best responses walk the whole tree
(:mod:`dgsolve.eval.bargain_exact`).

Parameters (defaults: BARGAIN.md's rules):

- ``quantities`` (``7_4_1``): the item quantities joined by ``_``, optionally in brackets
  (``[7_4_1]``); a single item type needs the brackets (``[2]``). OpenSpiel parameters cannot be
  lists, and its parser reads a bare ``2`` as an integer (and fails on ``2-1``), which this
  string parameter would refuse.
- ``max_value`` (100): item values are drawn uniformly from ``1..max_value`` (rule 2).
- ``rounds`` (3): P1 then P2 in each round (rule 4).
- ``discount`` (1.0): ACCEPT and WALK payoffs times ``discount ** completed rounds`` (the rounds
  P2 has counteroffered in before the final action), as the torch game applies it.
- ``outside_offer`` (``uniform`` | ``none``): rule 3, or 0 for both players.

The rules are those of :class:`~dgsolve.games.bargain.rules.BargainRules` (offer encoding, legal
sets, action ids, observation layout), so this game and the batched torch game
(:class:`~dgsolve.games.bargain.reference.BargainGame`) cannot disagree on them; the tests hold
their observations and payoffs equal deal by deal.

Chance: explicit chance nodes, in order P1's item values (one node per item type, uniform on
``1..max_value``; outcome ``v - 1`` is the value ``v``), P1's outside offer (uniform on
``1..M_1``, outcome ``o - 1``), then P2's values and outside offer. The outside offer here is
*exactly* uniform on ``1..M_i`` (rule 3); the torch game draws ``1 + (raw * M) >> 31`` with
``raw`` uniform on 31 bits, uniform only up to ``M / 2^31``. With ``outside_offer=none`` there
are no outside-offer nodes and both outside offers are 0.

Players: P1 is player 0 and P2 player 1; ``returns()`` are the normalised payoffs of rules 7, 8
and 11 (in [0, 1], general-sum), paid at the terminal state only. An action id that is not legal
(ACCEPT with no offer on the table, an offer on P2's last turn, an id out of range) ends the
game by WALK, as rule 5 says; ``legal_actions()`` never lists one.

Observations (:class:`BargainObserver`):

- ``observation_tensor(p)``: dgsolve's Markov observation of BARGAIN.md, the same float32 values
  that ``BargainGame`` gives viewer ``p`` in the same situation: own values / max_value, own
  outside offer / M, the offer on the table as the viewer's own share (-1 when none), has-offer,
  round fraction, current player, and the legal mask (empty unless ``p`` moves). At a terminal
  state it is the situation of the last decision with an empty mask (``BargainGame``'s
  ``final_obs``); before the deal is complete the undealt entries are 0 and the mask is empty.
- ``information_state_tensor(p)``: perfect recall: the player one-hot, own values / max_value,
  own outside offer / M, and a one-hot of each of the ``2 * rounds`` decisions taken so far.
- the strings say the same in words; ``information_state_string`` is
  ``p1 values=3,1 outside=4 history=5,walk`` (offer ids, ``accept``, ``walk``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyspiel

from dgsolve.errors import ConfigError
from dgsolve.games.bargain.config import BargainConfig, OutsideOffer
from dgsolve.games.bargain.reference import ACCEPTED, RUNNING, WALKED
from dgsolve.games.bargain.rules import FINAL, IDLE, PROPOSE, RESPOND, BargainRules

SHORT_NAME = "dgsolve_bargain"

#: the parameters and their defaults (BARGAIN.md's rules); ``quantities`` joined by "_".
DEFAULT_PARAMS: dict[str, Any] = {
    "quantities": "7_4_1",
    "max_value": 100,
    "rounds": 3,
    "discount": 1.0,
    "outside_offer": "uniform",
}

NUM_PLAYERS = 2

GAME_TYPE = pyspiel.GameType(
    short_name=SHORT_NAME,
    long_name="dgsolve bargaining game with outside options",
    dynamics=pyspiel.GameType.Dynamics.SEQUENTIAL,
    chance_mode=pyspiel.GameType.ChanceMode.EXPLICIT_STOCHASTIC,
    information=pyspiel.GameType.Information.IMPERFECT_INFORMATION,
    utility=pyspiel.GameType.Utility.GENERAL_SUM,
    reward_model=pyspiel.GameType.RewardModel.TERMINAL,
    max_num_players=NUM_PLAYERS,
    min_num_players=NUM_PLAYERS,
    provides_information_state_string=True,
    provides_information_state_tensor=True,
    provides_observation_string=True,
    provides_observation_tensor=True,
    provides_factored_observation_string=False,
    parameter_specification=DEFAULT_PARAMS,
)


# --------------------------------------------------------------------------- parameters
def rules_from_params(params: dict[str, Any] | None = None) -> BargainRules:
    """The rules of a ``dgsolve_bargain`` parameter dict (missing keys: the defaults), refused
    with a one-line :class:`ConfigError` where they are not valid bargaining rules."""
    given = {**DEFAULT_PARAMS, **(params or {})}
    unknown = sorted(set(given) - set(DEFAULT_PARAMS))
    if unknown:
        raise ConfigError(
            f"{SHORT_NAME} has no parameter(s) {unknown}; known: {sorted(DEFAULT_PARAMS)}"
        )
    raw = given["quantities"]
    text = str(raw)
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        quantities = [int(q) for q in text.split("_")]
    except ValueError:
        raise ConfigError(
            f"{SHORT_NAME}(quantities={raw}) must be integers joined by '_' (7_4_1), or one "
            "in brackets ([2])"
        ) from None
    cfg = {
        "quantities": quantities,
        **{key: given[key] for key in ("max_value", "rounds", "discount", "outside_offer")},
    }
    try:
        return BargainRules.from_config(BargainConfig.coerce(cfg))
    except ConfigError as err:
        raise ConfigError(f"{SHORT_NAME} parameters: {err}") from None


def quantities_string(quantities: Sequence[int]) -> str:
    """``quantities`` as the parameter writes them: ``7_4_1``, or ``[2]`` for one item type."""
    text = "_".join(map(str, quantities))
    return f"[{text}]" if len(quantities) == 1 else text


def params_of(rules: BargainRules) -> dict[str, Any]:
    """The ``dgsolve_bargain`` parameters of ``rules``, each of the type OpenSpiel expects."""
    return {
        "quantities": quantities_string(rules.quantities),
        "max_value": rules.max_value,
        "rounds": rules.rounds,
        "discount": float(rules.discount),
        "outside_offer": rules.outside_offer.value,
    }


def load_string(rules: BargainRules | Any = None) -> str:
    """The ``pyspiel.load_game`` string of ``rules`` (a BargainRules, or anything
    ``BargainRules.from_config`` takes; None: the defaults)."""
    if not isinstance(rules, BargainRules):
        rules = BargainRules.from_config(rules)
    params = ",".join(
        f"{key}={value!r}" if key == "discount" else f"{key}={value}"
        for key, value in params_of(rules).items()
    )
    return f"{SHORT_NAME}({params})"


def load(rules: BargainRules | Any = None):
    """The pyspiel game of ``rules`` (see :func:`load_string`)."""
    return pyspiel.load_game(load_string(rules))


# --------------------------------------------------------------------------- the game
class BargainOpenSpielGame(pyspiel.Game):
    """The bargaining game of one set of rules; ``rules`` holds them as a BargainRules."""

    def __init__(self, params: dict[str, Any] | None = None):
        rules = rules_from_params(params)
        self.rules = rules
        uniform = rules.outside_offer is OutsideOffer.uniform
        max_total = rules.max_value * sum(rules.quantities)
        super().__init__(
            GAME_TYPE,
            pyspiel.GameInfo(
                num_distinct_actions=rules.num_actions,
                max_chance_outcomes=max(rules.max_value, max_total if uniform else 0),
                num_players=NUM_PLAYERS,
                min_utility=0.0,
                max_utility=1.0,
                utility_sum=None,
                max_game_length=2 * rules.rounds,
            ),
            params_of(rules),
        )
        self.tables = tables_of(rules)

    def new_initial_state(self) -> BargainState:
        return BargainState(self)

    def make_py_observer(self, iig_obs_type=None, params=None) -> BargainObserver:
        return BargainObserver(
            self, iig_obs_type or pyspiel.IIGObservationType(perfect_recall=False), params
        )


class BargainTables:
    """What every state of one set of rules reads: the legal sets, chance outcomes, offer
    bundles and shares, mask rows and discounts. Built once per rules (:func:`tables_of`)."""

    def __init__(self, rules: BargainRules):
        self.rules = rules
        self.num_items = k = rules.num_items
        self.quantities = rules.quantities
        #: chance nodes per player: the item values, then the outside offer (if drawn)
        self.deal_size = k + 1 if rules.outside_offer is OutsideOffer.uniform else k
        self.bundles = [rules.decode(a) for a in range(rules.num_offers)]
        self.discounts = [rules.discount**r for r in range(rules.rounds)]
        offers = list(range(rules.num_offers))
        # RULES 5: WALK always; ACCEPT with an offer on the table; offers unless P2's last turn
        self.legal = {
            PROPOSE: [*offers, rules.walk],
            RESPOND: [*offers, rules.accept, rules.walk],
            FINAL: [rules.accept, rules.walk],
        }
        # RULES 2: each item's value uniform on 1..max_value (outcome v - 1 is the value v)
        self.value_outcomes = [(o, 1.0 / rules.max_value) for o in range(rules.max_value)]
        self._outside_outcomes: dict[int, list[tuple[int, float]]] = {}
        q = np.asarray(rules.quantities, np.float32)
        bundles = [np.asarray(n, np.float32) for n in self.bundles]
        #: the offer on the table as each viewer's share (P2 n/Q, P1 (Q - n)/Q), float32
        self.shares = {1: [n / q for n in bundles], 0: [(q - n) / q for n in bundles]}
        self.mask_rows = rules.mask_rows().numpy().astype(np.float32)
        self.root = Node(self, (), (), -1, 0, 0, RUNNING, ())

    def outside_outcomes(self, total: int) -> list[tuple[int, float]]:
        """RULES 3: the outside offer uniform on ``1..M`` (outcome ``o - 1`` is the offer o)."""
        out = self._outside_outcomes.get(total)
        if out is None:
            out = self._outside_outcomes[total] = [(o, 1.0 / total) for o in range(total)]
        return out

    def __deepcopy__(self, memo: dict) -> BargainTables:
        return self

    def __reduce__(self):
        return tables_of, (self.rules,)


@functools.lru_cache(maxsize=64)
def tables_of(rules: BargainRules) -> BargainTables:
    return BargainTables(rules)


class Node:
    """One point of the game tree, immutable: the deal drawn so far (each player's item values
    then outside offer, P1's first), the totals M_i of the players whose values are complete,
    the offer id on the table (-1: none), completed rounds, whose turn, the outcome (RUNNING,
    ACCEPTED, WALKED) and the player actions taken (illegal ids recorded as WALK). Once the
    game is over, offer, round and turn stay those of the last decision.

    A state holds one node and replaces it on every action, so cloning a state (which pyspiel
    does by deep-copying the state's attributes) copies nothing: this game's trees are walked
    whole by exact best responses, and cheap clones are most of their speed.
    """

    __slots__ = ("t", "deal", "totals", "offer", "round", "turn", "outcome", "moves", "player")

    def __init__(self, t, deal, totals, offer, round_, turn, outcome, moves):
        self.t: BargainTables = t
        self.deal: tuple[int, ...] = deal
        self.totals: tuple[int, ...] = totals
        self.offer, self.round, self.turn, self.outcome = offer, round_, turn, outcome
        self.moves: tuple[int, ...] = moves
        if outcome != RUNNING:
            self.player = pyspiel.PlayerId.TERMINAL
        elif len(deal) < 2 * t.deal_size:
            self.player = pyspiel.PlayerId.CHANCE
        else:
            self.player = turn

    def __deepcopy__(self, memo: dict) -> Node:
        return self

    def __reduce__(self):
        fields = (self.deal, self.totals, self.offer, self.round, self.turn, self.outcome)
        return Node, (self.t, *fields, self.moves)

    # ------------------------------------------------------------------ reading
    def values(self, player: int) -> tuple[int, ...]:
        """The player's item values dealt so far."""
        start = player * self.t.deal_size
        return self.deal[start : start + self.t.num_items]

    def outside(self, player: int) -> int | None:
        """The player's outside offer (0 with ``outside_offer=none``); None until dealt."""
        t = self.t
        end = (player + 1) * t.deal_size
        if len(self.deal) < end:
            return None
        return self.deal[end - 1] if t.deal_size > t.num_items else 0

    def total(self, player: int) -> int | None:
        """M_i = v_i . Q (rule 2); None until the player's values are dealt."""
        return self.totals[player] if player < len(self.totals) else None

    def kind(self) -> int:
        """The legal set of the player to move (rules.mask_kind)."""
        return self.t.rules.mask_kind(True, self.offer >= 0, self.turn, self.round)

    def viewer_kind(self, player: int) -> int:
        """The mask row ``player`` sees: its legal set when it moves, else IDLE (empty), also
        at chance and terminal nodes, where nobody moves."""
        return self.kind() if self.player == player else IDLE

    def chance_outcomes(self) -> list[tuple[int, float]]:
        t = self.t
        player, slot = divmod(len(self.deal), t.deal_size)
        if slot < t.num_items:
            return t.value_outcomes
        return t.outside_outcomes(self.totals[player])

    # ------------------------------------------------------------------ moving
    def child(self, action: int) -> Node:
        """The node after ``action`` (a chance outcome, or the mover's action id)."""
        t = self.t
        if self.player == pyspiel.PlayerId.CHANCE:
            deal = (*self.deal, int(action) + 1)
            totals, p, k = self.totals, len(self.totals), t.num_items
            if p < NUM_PLAYERS and len(deal) == p * t.deal_size + k:  # p's values are complete
                totals = (*totals, sum(v * q for v, q in zip(deal[-k:], t.quantities, strict=True)))
            return Node(t, deal, totals, -1, 0, 0, RUNNING, ())
        r = t.rules
        kind = self.kind()
        args = (t, self.deal, self.totals)
        # RULES 5: an id outside the legal set is WALK
        if 0 <= action < r.num_offers and kind != FINAL:
            # RULES 4: the turn passes, and a round ends with P2's counteroffer
            moves = (*self.moves, int(action))
            return Node(*args, int(action), self.round + self.turn, 1 - self.turn, RUNNING, moves)
        if action == r.accept and kind != PROPOSE:
            moves = (*self.moves, r.accept)
            return Node(*args, self.offer, self.round, self.turn, ACCEPTED, moves)
        moves = (*self.moves, r.walk)
        return Node(*args, self.offer, self.round, self.turn, WALKED, moves)

    def returns(self) -> list[float]:
        """RULES 7, 8, 10, 11: ACCEPT pays v1.(Q - n) and v2.n, WALK the outside offers, each
        over the player's own M_i, times discount ** completed rounds; 0 before the end."""
        if self.outcome == RUNNING:
            return [0.0, 0.0]
        t = self.t
        scale = t.discounts[self.round]
        if self.outcome == WALKED:
            pay = [self.outside(0), self.outside(1)]
        else:
            n = t.bundles[self.offer]
            pay = [
                sum(v * (q - m) for v, q, m in zip(self.values(0), t.quantities, n, strict=True)),
                sum(v * m for v, m in zip(self.values(1), n, strict=True)),
            ]
        return [pay[0] / self.totals[0] * scale, pay[1] / self.totals[1] * scale]


class BargainState(pyspiel.State):
    """One game in progress; everything about it is its :class:`Node`, ``node``."""

    def __init__(self, game: BargainOpenSpielGame):
        super().__init__(game)
        self.node: Node = game.tables.root

    def current_player(self) -> int:
        return self.node.player

    def _legal_actions(self, player: int) -> list[int]:
        return self.node.t.legal[self.node.kind()]

    def chance_outcomes(self) -> list[tuple[int, float]]:
        return self.node.chance_outcomes()

    def dealing_player(self) -> int:
        """The player whose deal a chance node draws; -1 elsewhere."""
        node = self.node
        if node.player != pyspiel.PlayerId.CHANCE:
            return -1
        return len(node.deal) // node.t.deal_size

    def _apply_action(self, action: int) -> None:
        self.node = self.node.child(action)

    def _action_to_string(self, player: int, action: int) -> str:
        node = self.node
        if player == pyspiel.PlayerId.CHANCE:
            if node.player != pyspiel.PlayerId.CHANCE:
                return f"chance {action}"
            dealt, slot = divmod(len(node.deal), node.t.deal_size)
            what = f"value{slot}" if slot < node.t.num_items else "outside"
            return f"p{dealt + 1} {what}={action + 1}"
        return action_label(node.t.rules, action)

    def is_terminal(self) -> bool:
        return self.node.outcome != RUNNING

    def returns(self) -> list[float]:
        return self.node.returns()

    def __str__(self) -> str:
        node = self.node
        deal = " ".join(
            f"p{p + 1}:{','.join(map(str, node.values(p)))}/{node.outside(p)}" for p in (0, 1)
        )
        history = ",".join(action_label(node.t.rules, a, short=True) for a in node.moves)
        return f"deal {deal} | {history}"


def action_label(rules: BargainRules, action: int, short: bool = False) -> str:
    """``offer5[2,1]`` (the bundle n to P2 of rule 6), ``accept`` or ``walk``; ``short``: the
    bare offer id."""
    if 0 <= action < rules.num_offers:
        if short:
            return str(action)
        return f"offer{action}[{','.join(map(str, rules.decode(action)))}]"
    if action == rules.accept:
        return "accept"
    return "walk" if action == rules.walk else f"action{action}"


# --------------------------------------------------------------------------- observations
class BargainObserver:
    """The Markov observation (``perfect_recall=False``) or the information state
    (``perfect_recall=True``) of one player, as a float32 tensor with named pieces and as a
    string. Only the observation types with public information and the viewer's own private
    information are provided (those of ``observation_*`` and ``information_state_*``)."""

    def __init__(self, game: BargainOpenSpielGame, iig_obs_type, params):
        if params:
            raise ValueError(f"{SHORT_NAME} observers take no parameters; got {params}")
        if (
            not iig_obs_type.public_info
            or iig_obs_type.private_info != pyspiel.PrivateInfoType.SINGLE_PLAYER
        ):
            raise ValueError(
                f"{SHORT_NAME} observes public information and the viewer's own private "
                "information only (public_info=True, private_info=SINGLE_PLAYER)"
            )
        self.perfect_recall = iig_obs_type.perfect_recall
        r = game.rules
        k = r.num_items
        self._rules = r
        self._max_value = np.float32(r.max_value)
        self._rounds = np.float32(max(r.rounds - 1, 1))
        if self.perfect_recall:
            pieces = [
                ("player", NUM_PLAYERS, (NUM_PLAYERS,)),
                ("values", k, (k,)),
                ("outside", 1, (1,)),
                ("history", 2 * r.rounds * r.num_actions, (2 * r.rounds, r.num_actions)),
            ]
        else:  # BARGAIN.md's observation table, the blocks of rules.tokens
            pieces = [
                (name, block.stop - block.start, (block.stop - block.start,))
                for name, block in r.tokens.items()
            ]
        self.tensor = np.zeros(sum(size for _, size, _ in pieces), np.float32)
        self.dict: dict[str, np.ndarray] = {}
        start = 0
        for name, size, shape in pieces:
            self.dict[name] = self.tensor[start : start + size].reshape(shape)
            start += size

    def set_from(self, state: BargainState, player: int) -> None:
        node, d = state.node, self.dict
        self.tensor.fill(0.0)
        values, outside = node.values(player), node.outside(player)
        # as BargainGame computes them: float32 quotients of exact integers
        d["values"][: len(values)] = np.asarray(values, np.float32) / self._max_value
        if outside is not None:
            d["outside"][0] = np.float32(outside) / np.float32(node.totals[player])
        if self.perfect_recall:
            d["player"][player] = 1.0
            d["history"][np.arange(len(node.moves)), node.moves] = 1.0
            return
        has_offer = node.offer >= 0
        d["offer"][:] = node.t.shares[player][node.offer] if has_offer else -1.0
        d["state"][0] = float(has_offer)
        d["state"][1] = np.float32(node.round) / self._rounds  # round / (rounds - 1)
        d["state"][2] = float(node.turn)
        d["mask"][:] = node.t.mask_rows[node.viewer_kind(player)]

    def string_from(self, state: BargainState, player: int) -> str:
        node = state.node
        outside = node.outside(player)
        own = (
            f"p{player + 1} values={','.join(map(str, node.values(player)))} "
            f"outside={'?' if outside is None else outside}"
        )
        if self.perfect_recall:
            history = ",".join(action_label(self._rules, a, short=True) for a in node.moves)
            return f"{own} history={history}"
        offer = "none" if node.offer < 0 else ",".join(map(str, node.t.bundles[node.offer]))
        if node.outcome != RUNNING:
            where = "over"
        elif node.player == pyspiel.PlayerId.CHANCE:
            where = "dealing"
        else:
            where = _PHASES[node.viewer_kind(player)]
        return (
            f"{own} total={node.total(player)} offer={offer} "
            f"round={node.round}/{self._rules.rounds} turn=p{node.turn + 1} {where}"
        )


_PHASES = {IDLE: "wait", PROPOSE: "propose", RESPOND: "respond", FINAL: "final"}


# --------------------------------------------------------------------------- tree size
def num_histories(rules: BargainRules) -> int:
    """The number of histories (chance, decision and terminal nodes) of the game's tree, from
    the rules alone: what an exact best response walks."""
    k, mv, offers = rules.num_items, rules.max_value, rules.num_offers
    uniform = rules.outside_offer is OutsideOffer.uniform
    value_prefixes = sum(mv**j for j in range(k))  # chance nodes drawing one player's values
    if uniform:
        # a value vector v has an outside-offer node with M(v) outcomes; sum_v M(v) deals
        deals = mv ** (k - 1) * (mv * (mv + 1) // 2) * sum(rules.quantities)
        one_player = value_prefixes + mv**k  # the outside-offer nodes
    else:
        deals = mv**k
        one_player = value_prefixes
    chance = one_player + deals * one_player
    # decisions 0..2R-1: offers^j nodes at depth j; depth 0 may walk, later depths may accept
    # or walk, and the last one (P2's final turn) can only end
    depths = 2 * rules.rounds
    decisions = sum(offers**j for j in range(depths))
    terminals = 1 + 2 * sum(offers**j for j in range(1, depths))
    return chance + deals * deals * (decisions + terminals)


def register() -> None:
    """Register ``dgsolve_bargain`` with pyspiel unless it already is (importing this module
    does it; pyspiel refuses a second registration of one name)."""
    if SHORT_NAME not in pyspiel.registered_names():
        pyspiel.register_game(GAME_TYPE, BargainOpenSpielGame)


register()

__all__ = [
    "DEFAULT_PARAMS",
    "SHORT_NAME",
    "BargainObserver",
    "BargainOpenSpielGame",
    "BargainState",
    "BargainTables",
    "Node",
    "load",
    "load_string",
    "num_histories",
    "register",
    "rules_from_params",
]
