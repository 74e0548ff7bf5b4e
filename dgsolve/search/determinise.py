"""Batched game trees for search: fresh games, stepping, observing, and determinisation.

A *determinisation* is a full game state consistent with one player's information state: the
other players' private information (their cards, their item values and outside offer) is drawn
from chance's distribution conditioned on what that player has seen (Cowling, Powley &
Whitehouse, "Information Set Monte Carlo Tree Search", IEEE TCIAIG 2012). The opponents'
*actions* do not enter that condition: every private draw is consistent with any action, and
weighting the draws by an opponent model's likelihood of its actions would be belief-state
search, not IS-MCTS.

Two trees implement :class:`TreeGame` over a batch of independent states:

- :class:`OpenSpielTree`: pyspiel states of any turn-based OpenSpiel game (chance resolved
  inside :meth:`~TreeGame.step` by sampling ``chance_outcomes()``). Determinisation uses
  ``resample_from_infostate`` where the game implements it (Kuhn and Leduc poker do), else
  enumerates the chance outcomes along the state's history and keeps those whose information
  state string matches, weighted by their chance probability (cached per information state).
  The enumeration replays the history's player actions, so it assumes actions are public (true
  of poker and of the bargaining game); games that hide actions need ``resample_from_infostate``.
- :class:`BargainTree`: the batched bargaining game's tree capability
  (:meth:`~dgsolve.games.bargain.reference.BargainGame.tree_step` and friends); a determinisation
  keeps the viewer's own values and outside offer and draws the other player's deal afresh
  (:meth:`~dgsolve.games.bargain.reference.BargainGame.draw_deals`: the deals are independent).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dgsolve.errors import CapabilityError

#: the most tree nodes the enumeration of one information state's histories may visit
MAX_ENUMERATION = 200_000


class TreeGame(ABC):
    """A batch of independent game states that search and evaluation step in place.

    States are opaque to callers; every method takes ``idx`` (an int array of rows). Players are
    indices into ``agents``; ``player`` is -1 where a game has ended. Rewards are undiscounted
    (OpenSpiel's returns; the bargaining rules discount inside the payoffs).
    """

    agents: tuple[str, ...]
    num_actions: int

    @abstractmethod
    def roots(self, n: int, rng: np.random.Generator) -> Any:
        """``n`` fresh games at their first decision."""

    @abstractmethod
    def select(self, states: Any, idx: np.ndarray) -> Any:
        """A new batch holding copies of the rows ``idx``."""

    @abstractmethod
    def player(self, states: Any, idx: np.ndarray) -> np.ndarray:
        """The player to move in each row, -1 where the game has ended."""

    @abstractmethod
    def legal(self, states: Any, idx: np.ndarray) -> torch.Tensor:
        """``[len(idx), num_actions]`` bool: the mover's legal actions."""

    @abstractmethod
    def observe(self, states: Any, idx: np.ndarray, viewer: int) -> torch.Tensor:
        """``viewer``'s observation in each row, as the trained policies saw it."""

    @abstractmethod
    def keys(self, states: Any, idx: np.ndarray, viewer: int) -> list[Hashable]:
        """A key of ``viewer``'s information state in each row, unique among the states that
        the same path of ``viewer``'s own decisions leads to."""

    @abstractmethod
    def step(
        self, states: Any, idx: np.ndarray, actions: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Apply the mover's ``actions`` in the rows ``idx`` (then chance); returns the rewards
        ``[len(idx), num_players]`` of the step."""

    @abstractmethod
    def determinise(
        self, states: Any, idx: np.ndarray, viewer: int, rng: np.random.Generator
    ) -> Any:
        """A new batch: for each row, a state drawn from those consistent with ``viewer``'s
        information state there."""


# --------------------------------------------------------------------------- OpenSpiel
class OpenSpielTree(TreeGame):
    """Pyspiel states of one OpenSpiel game (a list; rows are list positions)."""

    def __init__(self, os_game, device: torch.device | str = "cpu"):
        self.os_game = os_game
        self.num_players = os_game.num_players()
        self.agents = tuple(f"player_{p}" for p in range(self.num_players))
        self.num_actions = os_game.num_distinct_actions()
        self.device = torch.device(device)
        self._step_rewards = os_game.get_type().reward_model.name == "REWARDS"
        self._histories: dict[tuple[int, str], tuple[list[list[int]], np.ndarray]] = {}
        self._can_resample: bool | None = None

    def roots(self, n: int, rng: np.random.Generator) -> list:
        from dgsolve.games.openspiel import apply_chance

        out = []
        for _ in range(n):
            state = self.os_game.new_initial_state()
            while state.is_chance_node():
                apply_chance(state, rng.random())
            out.append(state)
        return out

    def select(self, states: list, idx: np.ndarray) -> list:
        return [states[i].clone() for i in idx]

    def player(self, states: list, idx: np.ndarray) -> np.ndarray:
        return np.array(
            [-1 if states[i].is_terminal() else states[i].current_player() for i in idx],
            dtype=np.int64,
        )

    def legal(self, states: list, idx: np.ndarray) -> torch.Tensor:
        masks = [states[i].legal_actions_mask(states[i].current_player()) for i in idx]
        return torch.tensor(np.array(masks, dtype=bool).reshape(len(idx), -1), device=self.device)

    def observe(self, states: list, idx: np.ndarray, viewer: int) -> torch.Tensor:
        rows = [states[i].information_state_tensor(viewer) for i in idx]
        return torch.tensor(np.array(rows, dtype=np.float32), device=self.device)

    def keys(self, states: list, idx: np.ndarray, viewer: int) -> list[Hashable]:
        return [states[i].information_state_string(viewer) for i in idx]

    def step(
        self, states: list, idx: np.ndarray, actions: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        from dgsolve.games.openspiel import apply_chance

        reward = np.zeros((len(idx), self.num_players))
        for row, (i, action) in enumerate(zip(idx, actions.tolist(), strict=True)):
            state = states[i]
            state.apply_action(int(action))
            if self._step_rewards:
                reward[row] += state.rewards()
            while state.is_chance_node():
                apply_chance(state, rng.random())
                if self._step_rewards:
                    reward[row] += state.rewards()
            if state.is_terminal() and not self._step_rewards:
                reward[row] = state.returns()
        return reward

    def determinise(self, states: list, idx: np.ndarray, viewer: int, rng) -> list:
        out = []
        for i in idx:
            state = states[i]
            if self._can_resample is not False:
                try:
                    out.append(state.resample_from_infostate(viewer, rng.random))
                    self._can_resample = True
                    continue
                except Exception:  # pyspiel.SpielError, or a Python game without the method
                    if self._can_resample:
                        raise
                    self._can_resample = False
            out.append(self._enumerated(state, viewer, rng))
        return out

    def _enumerated(self, state, viewer: int, rng: np.random.Generator):
        """A state drawn from the chance outcomes consistent with ``viewer``'s information
        state, by their chance probability (the enumeration is cached per information state)."""
        key = (viewer, state.information_state_string(viewer))
        if key not in self._histories:
            self._histories[key] = self._consistent(state, viewer, key[1])
        histories, probs = self._histories[key]
        chosen = histories[int(rng.choice(len(histories), p=probs))]
        out = self.os_game.new_initial_state()
        for action in chosen:
            out.apply_action(action)
        return out

    def _consistent(self, state, viewer: int, target: str):
        history = state.history()
        found: list[list[int]] = []
        weights: list[float] = []
        stack = [(self.os_game.new_initial_state(), 0, 1.0)]
        visited = 0
        while stack:
            node, depth, prob = stack.pop()
            visited += 1
            if visited > MAX_ENUMERATION:
                raise CapabilityError(
                    f"{self.os_game}: more than {MAX_ENUMERATION:,} chance histories fit one "
                    "information state, too many to enumerate for a determinisation; search a "
                    "smaller variant (or env=bargain for the bargaining game)"
                )
            if depth == len(history):
                if node.information_state_string(viewer) == target:
                    found.append(node.history())
                    weights.append(prob)
                continue
            if node.is_chance_node():
                for action, p in node.chance_outcomes():
                    stack.append((node.child(action), depth + 1, prob * p))
            elif history[depth] in node.legal_actions():
                stack.append((node.child(history[depth]), depth + 1, prob))
        weights_np = np.asarray(weights, np.float64)
        return found, weights_np / weights_np.sum()


# --------------------------------------------------------------------------- bargaining
@dataclass
class BargainStates:
    """Rows of bargaining games: deals ``[2, N, K + 2]`` (int32), situations ``[N]`` (int32)
    and whether each game has ended ``[N]`` (bool)."""

    deal: torch.Tensor
    situation: torch.Tensor
    done: torch.Tensor

    def __len__(self) -> int:
        return self.situation.shape[0]


class BargainTree(TreeGame):
    """The batched bargaining game's tree capability behind :class:`TreeGame`."""

    def __init__(self, game):
        if not getattr(game, "can_traverse", False):
            raise CapabilityError(
                f"search needs the bargaining game's tree capability; {type(game).__name__} has "
                "none"
            )
        self.game = game
        self.agents = tuple(game.agents)
        self.num_actions = game.spec(self.agents[0]).num_actions
        self.device = game.device

    def _generator(self, rng: np.random.Generator) -> torch.Generator:
        seed = int(rng.integers(2**62))
        return torch.Generator(device=self.device).manual_seed(seed)

    def _nodes(self, states: BargainStates, idx: np.ndarray):
        from dgsolve.games.bargain.reference import BargainNodes

        index = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        return BargainNodes(states.deal.index_select(1, index), states.situation[index])

    def roots(self, n: int, rng: np.random.Generator) -> BargainStates:
        nodes = self.game.tree_roots(n, self._generator(rng))
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        return BargainStates(nodes.deal.clone(), nodes.situation.clone(), done)

    def select(self, states: BargainStates, idx: np.ndarray) -> BargainStates:
        index = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        return BargainStates(
            states.deal.index_select(1, index), states.situation[index], states.done[index]
        )

    def player(self, states: BargainStates, idx: np.ndarray) -> np.ndarray:
        index = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        mover = (states.situation[index] & 1).long()
        return torch.where(states.done[index], -1, mover).cpu().numpy()

    def legal(self, states: BargainStates, idx: np.ndarray) -> torch.Tensor:
        return self.game.tree_legal(self._nodes(states, idx))

    def observe(self, states: BargainStates, idx: np.ndarray, viewer: int) -> torch.Tensor:
        return self.game.tree_observe(self._nodes(states, idx), viewer)

    def keys(self, states: BargainStates, idx: np.ndarray, viewer: int) -> list[Hashable]:
        # the viewer's deal is fixed in one tree, and the situation (offer on the table, round,
        # mover) tells apart the opponents' answers to one own action
        index = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        return states.situation[index].tolist()

    def step(
        self,
        states: BargainStates,
        idx: np.ndarray,
        actions: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        index = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        action = torch.as_tensor(actions, dtype=torch.long, device=self.device)
        child, done, reward = self.game.tree_step(self._nodes(states, idx), action)
        states.situation[index] = child.situation
        states.done[index] = done
        return reward.T.double().cpu().numpy()

    def determinise(
        self, states: BargainStates, idx: np.ndarray, viewer: int, rng: np.random.Generator
    ) -> BargainStates:
        out = self.select(states, idx)
        fresh = self.game.draw_deals(len(idx), self._generator(rng))
        other = 1 - viewer
        out.deal[other] = fresh[other]
        return out


def make_tree(game) -> TreeGame:
    """The search tree of a dgsolve game: an OpenSpiel game or the bargaining game."""
    from dgsolve.games.openspiel import OpenSpielGame

    if isinstance(game, OpenSpielGame):
        return OpenSpielTree(game.os_game, game.device)
    if getattr(game, "can_traverse", False):
        return BargainTree(game)
    raise CapabilityError(
        f"task=search needs a game with a tree: env=openspiel or env=bargain; "
        f"{type(game).__name__} has none"
    )
