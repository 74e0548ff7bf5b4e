"""Exact NashConv of any dgsolve policy on an OpenSpiel game, through OpenSpiel's best responses.

A dgsolve policy acts on information-state tensors; OpenSpiel's best responses read a table
keyed by information-state strings. :func:`information_states` walks the game tree once (every
chance outcome, every legal action) and lists each information state with its player, tensor
and legal actions; :func:`policy_table` asks the policy for its action probabilities at all of
them (one call per player); :func:`nash_conv_of_table` hands the table to OpenSpiel:

    NashConv(π) = Σ_i [ max_{π'_i} u_i(π'_i, π_-i) − u_i(π) ]

(Lanctot et al., "A Unified Game-Theoretic Approach to Multiagent Reinforcement Learning", NIPS
2017), each player's best-response value from OpenSpiel's C++ ``TabularBestResponse`` and the
on-policy values from ``pyspiel.expected_returns``: the same sum ``pyspiel.nash_conv`` returns,
kept per player. In two-player zero-sum (or constant-sum) games the exploitability is
NashConv / 2, as ``open_spiel.python.algorithms.exploitability.exploitability`` defines it.

``policy_table.json`` (:func:`write_policy_table`) holds ``{"game": <load string>, "policy":
{<information state string>: [probability of each action id]}}``, so anyone can check the
figure with OpenSpiel alone::

    import json, pyspiel
    from open_spiel.python import policy
    from open_spiel.python.algorithms import exploitability
    data = json.load(open("policy_table.json"))
    game = pyspiel.load_game(data["game"])
    tabular = policy.TabularPolicy(game)
    for key, row in data["policy"].items():
        tabular.policy_for_key(key)[:] = row
    print(exploitability.nash_conv(game, tabular))

Player ``p`` is the agent ``player_p`` (:mod:`dgsolve.games.openspiel`).
:func:`player_policy` goes the other way: a table (a CFR average policy, a
``policy_table.json``) played as a dgsolve policy (:class:`~dgsolve.policy.InfoStateTablePolicy`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyspiel
import torch

from dgsolve.artifacts import atomic_write_json
from dgsolve.errors import CapabilityError
from dgsolve.games.openspiel import load_game
from dgsolve.hierarchy import Hierarchy
from dgsolve.policy import InfoStateTablePolicy

#: the most histories (tree nodes) :func:`information_states` walks before it gives up: exact
#: best responses are for small games (Kuhn poker has 58, Leduc poker about 9,500).
MAX_HISTORIES = 2_000_000

#: how far a table row may sum from 1 (the rows are float probabilities)
ROW_SUM_TOL = 1e-6


def agent_name(player: int) -> str:
    return f"player_{player}"


# --------------------------------------------------------------------------- the game tree
@dataclass(frozen=True)
class InfoStates:
    """Every information state of a game, in the order of a depth-first walk of its tree.

    ``player [N]`` acts at ``keys[n]``; ``tensor [N, obs_dim]`` (float32) is its
    ``information_state_tensor`` there and ``legal [N, num_actions]`` its legal-action mask. The
    arrays are shared by every caller and read-only.
    """

    load_string: str
    num_players: int
    num_actions: int
    keys: tuple[str, ...]
    player: np.ndarray
    tensor: np.ndarray
    legal: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def of_player(self, player: int) -> np.ndarray:
        """Indices of ``player``'s information states."""
        return np.flatnonzero(self.player == player)


@functools.lru_cache(maxsize=16)
def game_of(load_string: str):
    """The pyspiel game of ``load_string`` (loaded once, one-line errors as in the adapter)."""
    return load_game(load_string)


def information_states(game) -> InfoStates:
    """The information states of ``game`` (a pyspiel game or its load string), computed once per
    load string."""
    return _information_states(game if isinstance(game, str) else str(game))


@functools.lru_cache(maxsize=16)
def _information_states(load_string: str) -> InfoStates:
    game = game_of(load_string)
    kind = game.get_type()
    if kind.chance_mode == pyspiel.GameType.ChanceMode.SAMPLED_STOCHASTIC:
        raise CapabilityError(
            f"{load_string} draws its chance outcomes inside OpenSpiel, so its tree cannot be "
            "walked for an exact NashConv"
        )
    if not kind.provides_information_state_string:
        raise CapabilityError(
            f"{load_string} has no information_state_string, which OpenSpiel's tabular best "
            "responses are keyed by"
        )
    num_actions = game.num_distinct_actions()
    owner: dict[str, int] = {}
    keys, players, tensors, legals = [], [], [], []
    stack, histories = [game.new_initial_state()], 0
    while stack:
        state = stack.pop()
        histories += 1
        if histories > MAX_HISTORIES:
            raise CapabilityError(
                f"{load_string} has more than {MAX_HISTORIES:,} histories; exact NashConv is for "
                "small games (use a learned best response)"
            )
        if state.is_terminal():
            continue
        if state.is_chance_node():
            stack.extend(state.child(a) for a, _ in reversed(state.chance_outcomes()))
            continue
        player = state.current_player()
        if player < 0:
            raise CapabilityError(f"{load_string} has simultaneous moves; load it turn-based")
        key = state.information_state_string(player)
        seen = owner.get(key)
        if seen is None:
            owner[key] = player
            keys.append(key)
            players.append(player)
            tensors.append(np.asarray(state.information_state_tensor(player), np.float32))
            legals.append(np.asarray(state.legal_actions_mask(player), bool))
        elif seen != player:
            raise CapabilityError(
                f"{load_string}: players {seen} and {player} share the information state "
                f"{key!r}, which a table keyed by information state cannot tell apart"
            )
        stack.extend(state.child(a) for a in reversed(state.legal_actions()))
    out = InfoStates(
        load_string=load_string,
        num_players=game.num_players(),
        num_actions=num_actions,
        keys=tuple(keys),
        player=np.asarray(players, np.int64),
        tensor=np.stack(tensors) if tensors else np.zeros((0, 0), np.float32),
        legal=np.stack(legals) if legals else np.zeros((0, num_actions), bool),
    )
    for array in (out.player, out.tensor, out.legal):
        array.setflags(write=False)
    return out


# --------------------------------------------------------------------------- policy -> table
@torch.no_grad()
def policy_table(
    load_string: str, joint_policy, device: torch.device | str = "cpu"
) -> dict[str, list[float]]:
    """``{information state string: [probability of each action id]}`` of ``joint_policy`` (a
    one-tier :class:`~dgsolve.policy.JointPolicy`) at every information state of the game.

    Each player's policy is asked once, for all its information states; illegal actions get
    exactly 0 and the rows are renormalised in float64. A row without probability on any legal
    action (or with a non-finite one) is an error: the policy is undefined there.
    """
    info = information_states(load_string)
    device = torch.device(device)
    table: dict[str, list[float]] = {}
    rows = np.zeros((len(info), info.num_actions))
    for player in range(info.num_players):
        index = info.of_player(player)
        if not len(index):
            continue
        obs = torch.from_numpy(info.tensor[index]).to(device)
        legal = torch.from_numpy(info.legal[index]).to(device)
        probs = joint_policy.distribution(agent_name(player), obs, {}, legal).probs
        probs = np.where(info.legal[index], probs.to(torch.float64).cpu().numpy(), 0.0)
        mass = probs.sum(-1)
        bad = ~(np.isfinite(mass) & (mass > 0))
        if bad.any():
            key = info.keys[index[np.flatnonzero(bad)[0]]]
            raise ValueError(
                f"{agent_name(player)}'s policy gives no finite probability to any legal action "
                f"at {int(bad.sum())} information states, e.g. {key!r}"
            )
        rows[index] = probs / mass[:, None]
    for key, row in zip(info.keys, rows, strict=True):
        table[key] = row.tolist()
    return table


# --------------------------------------------------------------------------- table -> NashConv
def openspiel_policy(load_string: str, table: dict[str, list[float]]) -> dict:
    """``table`` checked against the game and put as OpenSpiel's C++ functions take a tabular
    policy: ``{information state: [(action, probability)]}`` over the legal actions."""
    info = information_states(load_string)
    known = set(info.keys)
    missing = [k for k in info.keys if k not in table]
    extra = [k for k in table if k not in known]
    if missing or extra:
        what = f"no row for {missing[0]!r}" if missing else f"a row for {extra[0]!r}"
        raise ValueError(
            f"the table does not fit {load_string}: {len(missing)} of its {len(info)} "
            f"information states are missing and {len(extra)} rows are unknown ({what})"
        )
    out = {}
    for key, legal in zip(info.keys, info.legal, strict=True):
        row = np.asarray(table[key], np.float64)
        if row.shape != (info.num_actions,) or not np.isfinite(row).all() or (row < 0).any():
            raise ValueError(
                f"row {key!r} must hold {info.num_actions} finite probabilities ≥ 0, one per "
                "action id"
            )
        if (row[~legal] != 0).any() or abs(row.sum() - 1) > ROW_SUM_TOL:
            raise ValueError(
                f"row {key!r} must sum to 1 over the legal actions {np.flatnonzero(legal)} and "
                "give illegal actions exactly 0"
            )
        out[key] = [(int(a), float(row[a])) for a in np.flatnonzero(legal)]
    return out


def two_player_zero_sum(game) -> bool:
    """Whether exploitability (NashConv / 2) is defined: two players, zero- or constant-sum."""
    utility = game.get_type().utility
    constant = (pyspiel.GameType.Utility.ZERO_SUM, pyspiel.GameType.Utility.CONSTANT_SUM)
    return game.num_players() == 2 and utility in constant


def nash_conv_of_table(load_string: str, table: dict[str, list[float]]) -> dict[str, Any]:
    """NashConv of a policy table (as :func:`policy_table` makes it), with OpenSpiel.

    Returns ``{"nash_conv", "deviation_gain": {agent: best-response value − value}, "values":
    {agent: value of the table's profile}, "num_info_states"}`` plus ``"exploitability"``
    (NashConv / 2) in two-player zero- or constant-sum games.
    """
    game = game_of(load_string)
    tabular = openspiel_policy(load_string, table)
    root = game.new_initial_state()
    values = pyspiel.expected_returns(root, pyspiel.TabularPolicy(tabular), -1, True)
    gains = {}
    for player in range(game.num_players()):
        best = pyspiel.TabularBestResponse(game, player, tabular).value_from_state(root)
        gains[agent_name(player)] = float(best - values[player])
    out: dict[str, Any] = {
        "nash_conv": math.fsum(gains.values()),
        "deviation_gain": gains,
        "values": {agent_name(p): float(v) for p, v in enumerate(values)},
        "num_info_states": len(tabular),
    }
    if two_player_zero_sum(game):
        out["exploitability"] = out["nash_conv"] / 2
    return out


def write_policy_table(path: Path | str, load_string: str, table: dict[str, list[float]]) -> None:
    """Write ``{"game": load_string, "policy": table}`` to ``path`` as JSON, atomically."""
    atomic_write_json(Path(path), {"game": load_string, "policy": table})


# --------------------------------------------------------------------------- the eq section
def openspiel_report(
    env_cfg, joint_policy, hierarchy: Hierarchy, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """The ``eq`` section for an OpenSpiel game: ``game``, ``nash_conv``, ``deviation_gain``,
    ``values``, ``num_info_states`` and (two-player zero-sum) ``exploitability`` of the policies
    that play, or ``reference_error`` where no exact figure exists."""
    load_string = str(env_cfg.game)
    if not hierarchy.is_simultaneous:
        return {
            "game": load_string,
            "reference_error": (
                "exact NashConv needs hierarchy=simultaneous: OpenSpiel games fix who moves "
                "when, and a policy that sees other tiers' actions is not a policy of the game"
            ),
        }
    try:
        table = policy_table(load_string, joint_policy, device)
    except CapabilityError as err:  # a tree too large to walk, or no tabular key
        return {"game": load_string, "reference_error": str(err)}
    return {"game": load_string, **nash_conv_of_table(load_string, table)}


def player_policy(
    load_string: str, table: dict[str, list[float]], player: int, device="cpu"
) -> InfoStateTablePolicy:
    """``player``'s part of a policy table of the game ``load_string``, as a playable policy."""
    info = information_states(load_string)
    index = info.of_player(player)
    keys = [info.keys[i] for i in index]
    probs = np.asarray([table[k] for k in keys], np.float64).reshape(len(keys), -1)
    return InfoStateTablePolicy(keys, info.tensor[index], probs, device)
