"""Any turn-based OpenSpiel game, by load string, as a batched :class:`~dgsolve.games.base.Game`.

``num_envs`` OpenSpiel states are stepped together (Lanctot et al., "OpenSpiel: A Framework for
Reinforcement Learning in Games", 2019). Player ``p`` is the agent ``player_p``. Every agent
observes its own ``information_state_tensor`` at every step, acting or not; the acting agent's
``legal`` row is the game's legal-action mask, and a waiting agent's row is all true (its action
is ignored, and all-legal keeps its policy defined). Chance nodes never reach the solver: they
are resolved inside :meth:`OpenSpielGame.reset` and :meth:`OpenSpielGame.step` by sampling
``chance_outcomes()`` with the game's own generator, which ``reset(seed)`` seeds. Games that draw
their randomness inside OpenSpiel instead (``ChanceMode.SAMPLED_STOCHASTIC``) use OpenSpiel's
generator, which the seed does not reach.

Rewards: terminal-reward games pay ``state.returns()`` to every player at the step that ends
the game, zero before; games with per-step rewards (``RewardModel.REWARDS``) pay the sum of
``state.rewards()`` over the transitions of the step (the player's action and the chance
outcomes after it). Only sequential games that provide an information-state tensor are accepted.

Tree methods (Deep CFR, IS-MCTS) read the live states through :meth:`OpenSpielGame.states` and
move copies with :meth:`~OpenSpielGame.clone_copy` / :meth:`~OpenSpielGame.restore_copy` (one
copy) or :meth:`~OpenSpielGame.clone_state` / :meth:`~OpenSpielGame.restore_state` (the batch).
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import sys
from dataclasses import dataclass
from typing import Any

from dgsolve import lazy_import
from dgsolve.errors import ConfigError
from dgsolve.games.base import AgentSpec, CoercibleConfig, Game, TimeStep

# loaded on first use (dgsolve.lazy_import): dgsolve.config imports this module's config schema
np = lazy_import("numpy")
torch = lazy_import("torch")

INSTALL_HINT = "install the extra: pip install 'dgsolve[openspiel]'"


@dataclass
class OpenSpielConfig(CoercibleConfig):
    """An OpenSpiel game by load string (``kuhn_poker``, ``'liars_dice(numdice=1)'``, ...).

    OpenSpiel games have nothing to draw, so ``render`` must stay false; ``leader`` is one of
    ``player_0``, ``player_1``, ... or ``None`` (the first player).
    """

    family: str = "openspiel"
    num_envs: int = 64
    leader: str | None = None
    render: bool = False
    game: str = "kuhn_poker"

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a one-line message if the config cannot be used (the
        game itself is checked when it is loaded)."""
        if self.num_envs < 1:
            raise ConfigError(f"env.num_envs={self.num_envs} must be at least 1")
        if self.render:
            raise ConfigError(
                "env.render=true: OpenSpiel games have no frames; set env.render=false"
            )
        if not isinstance(self.game, str) or not self.game.strip():
            raise ConfigError(
                f"env.game={self.game!r} must be an OpenSpiel load string, e.g. kuhn_poker or "
                "'liars_dice(numdice=1)'"
            )


def require_tree_game(game, hierarchy, algo: str, why: str) -> None:
    """Refuse, in one line, a solver that needs an OpenSpiel game's tree on another game
    (:class:`CapabilityError`) or in tiers (:class:`ConfigError`); ``why`` says what it does."""
    from dgsolve.errors import CapabilityError

    if not isinstance(game, OpenSpielGame):
        raise CapabilityError(
            f"algo={algo} {why} (env=openspiel env.game=kuhn_poker); {type(game).__name__} is "
            "not one"
        )
    if not hierarchy.is_simultaneous:
        raise ConfigError(
            f"algo={algo} solves the game in its own turn order; use hierarchy=simultaneous"
        )


def apply_chance(state, u: float) -> None:
    """Apply the chance outcome of ``state`` that the uniform draw ``u`` in [0, 1) selects
    (inverse transform over ``chance_outcomes()``)."""
    outcomes = state.chance_outcomes()
    chosen = outcomes[-1][0]  # where rounding leaves u above the probabilities' sum
    for action, prob in outcomes:
        if u < prob:
            chosen = action
            break
        u -= prob
    state.apply_action(chosen)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2: OpenSpiel's C++ code prints every error it raises there (an
    unknown name comes with the list of all games), and the error is reported in one line."""
    sys.stderr.flush()
    saved, sink = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(sink)


def load_game(load_string: str):
    """The pyspiel game that ``load_string`` names, refused with a one-line :class:`ConfigError`
    where pyspiel is missing, the string does not load, or dgsolve cannot play the game."""
    try:
        import pyspiel
    except ImportError:
        raise ConfigError(f"env=openspiel needs the open_spiel package; {INSTALL_HINT}") from None
    # registers dgsolve's own OpenSpiel games (dgsolve_bargain) with pyspiel
    import dgsolve.games.bargain.openspiel_game  # noqa: F401

    where = f"env.game={load_string!r}"
    with _quiet_stderr():
        try:
            name = pyspiel.game_parameters_from_string(load_string)["name"]
        except pyspiel.SpielError as err:
            raise ConfigError(
                f"{where} is not an OpenSpiel load string: {_first_line(err)}"
            ) from None
        known = pyspiel.registered_names()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "e.g. kuhn_poker"
            raise ConfigError(f"{where}: OpenSpiel has no game '{name}'; {hint}")
        try:
            game = pyspiel.load_game(load_string)
        except pyspiel.SpielError as err:
            raise ConfigError(f"{where} does not load: {_first_line(err)}") from None
    kind = game.get_type()
    if kind.dynamics == pyspiel.GameType.Dynamics.SIMULTANEOUS:
        inner = load_string if "(" in load_string else f"{load_string}()"
        raise ConfigError(
            f"{where} is a simultaneous-move game; dgsolve plays OpenSpiel games turn by turn: "
            f"load it as 'turn_based_simultaneous_game(game={inner})' instead"
        )
    if kind.dynamics != pyspiel.GameType.Dynamics.SEQUENTIAL:
        raise ConfigError(
            f"{where} is a {kind.dynamics.name.lower()} game; dgsolve plays only sequential "
            "(turn-based) OpenSpiel games"
        )
    if not kind.provides_information_state_tensor:
        raise ConfigError(
            f"{where} has no information_state_tensor, which dgsolve observes; choose a game "
            "that provides one, e.g. kuhn_poker, leduc_poker or phantom_ttt"
        )
    return game


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class OpenSpielGame(Game):
    """``num_envs`` copies of one OpenSpiel game behind the batched Game interface.

    ``cfg`` is an :class:`OpenSpielConfig` or anything :meth:`OpenSpielConfig.coerce` accepts.
    Attributes beyond the Game interface: ``os_game`` (the pyspiel game), ``load_string``,
    ``num_players``.
    """

    can_clone = True

    def __init__(self, cfg: OpenSpielConfig, device: str | torch.device = "cpu") -> None:
        cfg = OpenSpielConfig.coerce(cfg)
        cfg.validate()
        self.cfg = cfg
        self.load_string = cfg.game
        self.os_game = load_game(cfg.game)
        self.num_players = self.os_game.num_players()
        self.agents = tuple(f"player_{p}" for p in range(self.num_players))
        if cfg.leader is not None and cfg.leader not in self.agents:
            raise ConfigError(
                f"env.leader={cfg.leader!r} is not a player of {cfg.game}; use one of "
                f"{', '.join(self.agents)} or null"
            )
        self.leader = cfg.leader
        self.num_envs = cfg.num_envs
        self.device = torch.device(device)
        # A game's value is its undiscounted sum of rewards (OpenSpiel's returns).
        self.discount = 1.0
        self.episode_steps = None
        # the longest game the rules allow (decision nodes): evaluation's bound per episode
        self.max_cycles = self.os_game.max_game_length()
        self.obs_dim = math.prod(self.os_game.information_state_tensor_shape())
        self.num_actions = self.os_game.num_distinct_actions()
        # RewardModel.REWARDS games pay as they go; the others only at the end (their
        # rewards() would repeat returns() there).
        self._step_rewards = self.os_game.get_type().reward_model.name == "REWARDS"
        self._rng = np.random.default_rng()
        self._states: list = []
        self._player = np.zeros(self.num_envs, dtype=np.int64)
        self._legal = np.ones((self.num_players, self.num_envs, self.num_actions), dtype=bool)

    def spec(self, agent: str) -> AgentSpec:
        return AgentSpec(obs_dim=self.obs_dim, num_actions=self.num_actions)

    # ------------------------------------------------------------------ the Game interface
    def reset(self, seed: int | None = None) -> TimeStep:
        """New games in every copy, chance resolved with a generator seeded by ``seed``."""
        self._rng = np.random.default_rng(seed)
        self._states = [self._new_state() for _ in range(self.num_envs)]
        return self.observe()

    def step(self, actions: dict[str, torch.Tensor]) -> TimeStep:
        """Apply each copy's acting player's action (the other agents' entries are ignored),
        resolve chance, and restart the copies that end."""
        if not self._states:
            raise RuntimeError("OpenSpielGame.step before reset")
        n, b = self.num_players, self.num_envs
        chosen = self._chosen_actions(actions).tolist()
        reward = np.zeros((n, b), dtype=np.float32)
        terminated = np.zeros(b, dtype=bool)
        ended: list[tuple[int, list[list[float]]]] = []
        for i, state in enumerate(self._states):
            state.apply_action(chosen[i])
            if self._step_rewards:
                reward[:, i] += state.rewards()
            while state.is_chance_node():
                self._apply_chance(state)
                if self._step_rewards:
                    reward[:, i] += state.rewards()
            if state.is_terminal():
                if not self._step_rewards:
                    reward[:, i] = state.returns()
                terminated[i] = True
                ended.append((i, [state.information_state_tensor(p) for p in range(n)]))
                self._states[i] = self._new_state()
        obs, legal, player = self._observation()
        final_obs = obs
        if ended:
            final_obs = obs.copy()
            for i, tensors in ended:
                final_obs[:, i] = tensors
        return self._timestep(obs, legal, player, reward, terminated, final_obs)

    # ------------------------------------------------------------------ tree capability
    def states(self) -> list:
        """The live pyspiel state of every copy, each at a decision node; read them, do not
        apply actions to them (use :meth:`clone_copy`)."""
        return self._states

    def clone_copy(self, i: int):
        """A copy of copy ``i``'s pyspiel state, free to explore."""
        return self._states[i].clone()

    def restore_copy(self, i: int, state) -> None:
        """Put (a copy of) ``state``, a decision node of this game, in copy ``i``; the next
        :meth:`step` acts there, and :meth:`observe` shows it."""
        if state.get_game() != self.os_game:
            raise ValueError(f"restore_copy: a state of {state.get_game()}, not of {self.os_game}")
        if state.is_chance_node() or state.is_terminal():
            raise ValueError("restore_copy needs a decision node, not a chance or terminal state")
        self._states[i] = state.clone()
        self._player[i] = p = state.current_player()
        self._legal[:, i] = True
        self._legal[p, i] = np.array(state.legal_actions_mask(p), dtype=bool)

    def clone_state(self) -> dict[str, Any]:
        """A snapshot of every copy's state and of the chance generator (kept in memory: pyspiel
        states, not tensors)."""
        return {
            "states": [s.clone() for s in self._states],
            "rng": self._rng.bit_generator.state,
        }

    def restore_state(self, snapshot: dict[str, Any]) -> TimeStep:
        """Return to a :meth:`clone_state` snapshot (which stays reusable); the TimeStep is that
        of the decision points there (no reward, nothing done)."""
        self._states = [s.clone() for s in snapshot["states"]]
        self._rng.bit_generator.state = snapshot["rng"]
        return self.observe()

    def observe(self) -> TimeStep:
        """The TimeStep of the current decision points: no reward, nothing done."""
        obs, legal, player = self._observation()
        reward = np.zeros((self.num_players, self.num_envs), dtype=np.float32)
        done = np.zeros(self.num_envs, dtype=bool)
        return self._timestep(obs, legal, player, reward, done, obs)

    # ------------------------------------------------------------------ internals
    def _new_state(self):
        state = self.os_game.new_initial_state()
        while state.is_chance_node():
            self._apply_chance(state)
        if state.is_terminal():
            raise ConfigError(f"env.game={self.load_string!r} ends before any player moves")
        return state

    def _apply_chance(self, state) -> None:
        """Apply one chance outcome, drawn with the probabilities OpenSpiel gives."""
        apply_chance(state, self._rng.random())

    def _observation(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every copy's observations ``[n, B, obs_dim]``, legal rows ``[n, B, num_actions]``
        (all true for the players who wait) and acting player ``[B]``. Built from lists in one
        conversion each: a numpy row assignment per copy would cost more than OpenSpiel."""
        states, n = self._states, self.num_players
        players = [s.current_player() for s in states]
        obs = np.array(
            [[s.information_state_tensor(q) for s in states] for q in range(n)], dtype=np.float32
        )
        player = np.array(players, dtype=np.int64)
        legal = np.ones((n, self.num_envs, self.num_actions), dtype=bool)
        legal[player, np.arange(self.num_envs)] = np.array(
            [s.legal_actions_mask(p) for s, p in zip(states, players, strict=True)], dtype=bool
        )
        return obs, legal, player

    def _chosen_actions(self, actions: dict[str, torch.Tensor]) -> np.ndarray:
        """``[B]`` the acting player's action in every copy, checked against its legal mask
        (OpenSpiel does not check: an illegal action would corrupt the state)."""
        b = self.num_envs
        missing = torch.full((b,), -1, dtype=torch.long)
        joint = torch.stack(
            [actions.get(a, missing).reshape(b).to("cpu", torch.long) for a in self.agents]
        ).numpy()
        rows = np.arange(b)
        chosen = joint[self._player, rows]
        ok = (chosen >= 0) & (chosen < self.num_actions)
        ok[ok] = self._legal[self._player[ok], rows[ok], chosen[ok]]
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            legal = np.flatnonzero(self._legal[self._player[i], i]).tolist()
            raise ValueError(
                f"{self.agents[self._player[i]]} chose action {int(chosen[i])} in copy {i} of "
                f"{self.load_string}, which is not legal there; legal: {legal}"
            )
        return chosen

    def _timestep(self, obs, legal, player, reward, terminated, final_obs) -> TimeStep:
        self._player, self._legal = player, legal
        dev = self.device
        obs_t = torch.from_numpy(obs).to(dev)
        # final_obs and legal get their own memory: a solver may edit what it is given, and
        # the legal rows are kept to check the next actions.
        final_t = obs_t.clone() if final_obs is obs else torch.from_numpy(final_obs).to(dev)
        legal_t = torch.from_numpy(legal).to(dev, copy=True)
        reward_t = torch.from_numpy(reward).to(dev)
        acting = torch.from_numpy(player[None, :] == np.arange(self.num_players)[:, None]).to(dev)
        done = torch.from_numpy(terminated).to(dev)
        return TimeStep(
            obs={a: obs_t[p] for p, a in enumerate(self.agents)},
            reward={a: reward_t[p] for p, a in enumerate(self.agents)},
            terminated=done,
            truncated=torch.zeros_like(done),
            legal={a: legal_t[p] for p, a in enumerate(self.agents)},
            acting={a: acting[p] for p, a in enumerate(self.agents)},
            final_obs={a: final_t[p] for p, a in enumerate(self.agents)},
        )
