"""One-shot and repeated bimatrix games, batched in torch.

Two agents, ``row`` and ``column``, choose discrete actions simultaneously; each round pays
``A[row_action, column_action] + reward_offset`` to the row player and ``B[...] + reward_offset``
to the column player. The twelve canonical 2x2 games are those of "Oracles & Followers:
Stackelberg Equilibria in Deep Multi-Agent Reinforcement Learning" (Gerstgrasser & Parkes,
ICML 2023); any ``m x n`` game can be given as a payoff table instead.

Observations (the same for both agents) are one-hot over ``m * n + 1`` memory-1 states: state
``i * n + j`` means the previous round's joint action was (row ``i``, column ``j``); the last state,
``m * n``, is the start state that opens every game. With ``rounds=1`` the game is one-shot and the
observation is always the start state; with ``rounds=T`` it is the repeated game of that paper,
where memory-1 policies see the last joint action.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dgsolve import lazy_import
from dgsolve.errors import ConfigError
from dgsolve.games.base import AgentSpec, CoercibleConfig, Game, TimeStep, all_true, loaded

# loaded on first use (dgsolve.lazy_import): dgsolve.config imports this module's config schema
np = lazy_import("numpy")
torch = lazy_import("torch")

#: The twelve canonical 2x2 games of "Oracles & Followers: Stackelberg Equilibria in Deep
#: Multi-Agent Reinforcement Learning" (Gerstgrasser & Parkes, ICML 2023), also used in "The Good
#: Shepherd" (Balaguer et al., 2022). Rows are the row player's actions, columns the column
#: player's, action 0 = C and 1 = D; each entry is (row payoff, column payoff).
CANONICAL_GAMES: dict[str, list[list[tuple[float, float]]]] = {
    "prisoners_dilemma": [[(3, 3), (1, 4)], [(4, 1), (2, 2)]],
    "stag_hunt": [[(4, 4), (1, 3)], [(3, 1), (2, 2)]],
    "assurance": [[(4, 4), (1, 2)], [(2, 1), (3, 3)]],
    "coordination": [[(4, 4), (2, 1)], [(1, 2), (3, 3)]],
    "mixed_harmony": [[(4, 4), (3, 1)], [(1, 3), (2, 2)]],
    "harmony": [[(4, 4), (3, 2)], [(2, 3), (1, 1)]],
    "no_conflict": [[(4, 4), (2, 3)], [(3, 2), (1, 1)]],
    "deadlock": [[(2, 2), (1, 4)], [(4, 1), (3, 3)]],
    "prisoners_delight": [[(1, 1), (2, 4)], [(4, 2), (3, 3)]],
    "hero": [[(1, 1), (3, 4)], [(4, 3), (2, 2)]],
    "battle": [[(2, 2), (3, 4)], [(4, 3), (1, 1)]],
    "chicken": [[(3, 3), (2, 4)], [(4, 2), (1, 1)]],
}

AGENTS = ("row", "column")


@dataclass
class MatrixConfig(CoercibleConfig):
    """A bimatrix game: a canonical one by name, or any ``m x n`` payoff table.

    ``payoffs`` is a list of ``m`` rows of ``n`` ``[row payoff, column payoff]`` pairs; when given
    it overrides ``game``. ``rounds`` is the number of rounds per episode (1 = one-shot), and
    ``reward_offset`` is added to both players' payoff every round (-2.5 in the repeated games of
    "Oracles & Followers"). Matrix games have nothing to draw, so ``render`` must stay false.
    """

    family: str = "matrix"
    num_envs: int = 256
    leader: str | None = "row"
    render: bool = False
    game: str | None = "prisoners_dilemma"
    payoffs: list | None = None
    rounds: int = 1
    reward_offset: float = 0.0

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a one-line message if the config cannot be used."""
        if self.num_envs < 1:
            raise ConfigError(f"env.num_envs={self.num_envs} must be at least 1")
        if self.leader is not None and self.leader not in AGENTS:
            raise ConfigError(
                f"env.leader={self.leader!r} is not an agent of a matrix game; use 'row', "
                "'column' or null"
            )
        if self.render:
            raise ConfigError("env.render=true: matrix games have no frames; set env.render=false")
        if self.rounds < 1:
            raise ConfigError(f"env.rounds={self.rounds} must be at least 1 (1 = one-shot game)")
        if not math.isfinite(self.reward_offset):
            raise ConfigError(f"env.reward_offset={self.reward_offset} must be a finite number")
        if self.payoffs is None:
            if self.game not in CANONICAL_GAMES:
                raise ConfigError(
                    f"env.game={self.game!r} is not a known matrix game; choose one of "
                    f"{', '.join(CANONICAL_GAMES)} or give env.payoffs"
                )
            return
        _check_payoff_table(self.payoffs)


def _check_payoff_table(payoffs: list) -> None:
    """Check that ``payoffs`` is a non-empty m x n table of finite [row, column] pairs."""
    shape_msg = (
        "env.payoffs must be m rows of n [row payoff, column payoff] number pairs, "
        "e.g. [[[3, 3], [1, 4]], [[4, 1], [2, 2]]]"
    )
    try:
        table = np.asarray(payoffs, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(shape_msg) from None
    if table.ndim != 3 or table.shape[2] != 2 or table.size == 0:
        raise ConfigError(shape_msg)
    if not np.isfinite(table).all():
        raise ConfigError("env.payoffs entries must be finite numbers")


def payoff_matrices(cfg: MatrixConfig) -> tuple[np.ndarray, np.ndarray]:
    """The row player's and the column player's payoff matrices ``(A, B)``, each ``m x n``.

    The reward offset is not included: it is a per-round reward shift, added by the game.
    """
    cfg = MatrixConfig.coerce(cfg)
    cfg.validate()
    table = CANONICAL_GAMES[cfg.game] if cfg.payoffs is None else cfg.payoffs
    pairs = np.asarray(table, dtype=np.float64)
    return pairs[..., 0].copy(), pairs[..., 1].copy()


class MatrixGame(Game):
    """``num_envs`` copies of a one-shot (``rounds=1``) or repeated bimatrix game.

    Both agents act every round; every action is legal. After ``rounds`` rounds a game is
    terminated and restarts in the start state; ``final_obs`` then holds the one-hot of the last
    joint action. ``cfg`` is a :class:`MatrixConfig` or anything :meth:`MatrixConfig.coerce`
    accepts.

    Attributes beyond the Game interface: ``A``/``B`` (the payoff matrices without the offset),
    ``rounds``, ``start_state`` (index of the start state, ``m * n``) and ``num_states``.
    """

    agents = AGENTS
    can_save_state = True

    def __init__(self, cfg: MatrixConfig, device: str | torch.device = "cpu") -> None:
        cfg = MatrixConfig.coerce(cfg)
        self.cfg = cfg
        self.A, self.B = payoff_matrices(cfg)
        self.num_rows, self.num_cols = self.A.shape
        self.num_envs = cfg.num_envs
        self.device = torch.device(device)
        self.leader = cfg.leader
        self.rounds = cfg.rounds
        # A T-round game's value is its plain sum of payoffs, so learners do not discount.
        self.discount = 1.0
        self.episode_steps = cfg.rounds
        #: index of the start state in the memory-1 observation (after the m * n joint actions).
        self.start_state = self.num_rows * self.num_cols
        self.num_states = self.start_state + 1
        self._payoff = {
            "row": torch.as_tensor(self.A + cfg.reward_offset, dtype=torch.float32, device=device),
            "column": torch.as_tensor(
                self.B + cfg.reward_offset, dtype=torch.float32, device=device
            ),
        }
        self._round = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)

    def spec(self, agent: str) -> AgentSpec:
        num_actions = {"row": self.num_rows, "column": self.num_cols}[agent]
        return AgentSpec(obs_dim=self.num_states, num_actions=num_actions)

    def reset(self, seed: int | None = None) -> TimeStep:
        """Put every copy in the start state; the game is deterministic, so ``seed`` is unused."""
        self._round.zero_()
        obs = self._one_hot(torch.full_like(self._round, self.start_state))
        reward = {a: torch.zeros(self.num_envs, device=self.device) for a in self.agents}
        done = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return self._timestep(obs, reward, done, obs)

    def step(self, actions: dict[str, torch.Tensor]) -> TimeStep:
        row = actions["row"].to(self.device, torch.long).reshape(self.num_envs)
        col = actions["column"].to(self.device, torch.long).reshape(self.num_envs)
        reward = {agent: self._payoff[agent][row, col] for agent in self.agents}
        self._round += 1
        terminated = self._round >= self.rounds
        joint = row * self.num_cols + col
        final_obs = self._one_hot(joint)
        next_state = torch.where(terminated, torch.full_like(joint, self.start_state), joint)
        self._round = torch.where(terminated, torch.zeros_like(self._round), self._round)
        return self._timestep(self._one_hot(next_state), reward, terminated, final_obs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every copy's round; the observation is the solver's TimeStep (nothing is random)."""
        return {"round": self._round.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._round = loaded(state["round"], self._round, "round")

    def query_observations(self, agent: str) -> torch.Tensor:
        """Observations whose answers describe ``agent``'s memory-1 policy completely: every
        state of a repeated game, the start state alone of a one-shot game."""
        states = torch.arange(self.num_states, device=self.device)
        if self.rounds == 1:
            states = states[self.start_state :]
        return self._one_hot(states)

    def _one_hot(self, state: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(state, self.num_states).to(torch.float32)

    def _timestep(
        self,
        obs: torch.Tensor,
        reward: dict[str, torch.Tensor],
        terminated: torch.Tensor,
        final_obs: torch.Tensor,
    ) -> TimeStep:
        # Both agents see the same state; each gets its own tensor so a solver may edit one
        # (e.g. append a leader's action) without touching the other.
        return TimeStep(
            obs={agent: obs.clone() for agent in self.agents},
            reward=reward,
            terminated=terminated,
            truncated=torch.zeros_like(terminated),
            legal={
                a: all_true(self.num_envs, self.spec(a).num_actions, self.device)
                for a in self.agents
            },
            acting={a: all_true(self.num_envs, None, self.device) for a in self.agents},
            final_obs={agent: final_obs.clone() for agent in self.agents},
        )
