"""Linear-quadratic dynamic games, batched in torch (continuous actions).

State ``x`` in R^n follows ``x' = A x + sum_i B_i u_i + w`` with ``w ~ N(0, noise_std^2 I)``.
Player ``i`` pays ``x^T Q_i x + sum_j u_j^T R_ij u_j`` per step (``R_ij`` weighs player ``j``'s
action in player ``i``'s cost) and is rewarded with minus that cost. Either a finite horizon
``T`` (no discounting; on the last step each player also pays ``x_T^T Qf_i x_T``, and the episode
is terminated) or an infinite horizon with a discount factor, where episodes are truncated after
``max_steps`` and ``final_obs`` holds the state to bootstrap from. The learner's discount should
then equal ``discount``. This is the discrete-time LQ game of Başar & Olsder, "Dynamic
Noncooperative Game Theory" (2nd ed., 1999), ch. 6; its exact equilibria are in
:mod:`dgsolve.eval.exact_lq`.

Observations: every player sees the state ``x``; with a finite horizon a last entry ``t / T``
(``t`` = steps taken so far, 0 at the start, 1 in ``final_obs``) tells how much time is left,
since equilibrium gains then depend on time. Actions are clipped to ``[-action_bound,
action_bound]`` before they act and are charged; the exact references assume the bound is
not reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dgsolve import lazy_import
from dgsolve.errors import ConfigError
from dgsolve.games.base import AgentSpec, CoercibleConfig, Game, TimeStep, all_true, loaded

# loaded on first use (dgsolve.lazy_import): dgsolve.config imports this module's config schema
np = lazy_import("numpy")
torch = lazy_import("torch")


# The default game: both players push the state along the same input direction. p1 mostly cares
# about the first coordinate, p2 about both, and p2 also dislikes p1's effort. In the feedback Nash
# equilibrium they work against each other on the first coordinate; when p1 leads it leaves most
# of the work to p2 and both pay less, so Nash and Stackelberg gains differ by about 75%.
def _default_A() -> list:
    # A stable mode (0.95) driven by a slowly diverging one (1.02): left alone the state drifts.
    return [[0.95, 0.1], [0.0, 1.02]]


def _default_B() -> dict:
    return {"p1": [[0.5], [1.0]], "p2": [[0.5], [1.0]]}


def _default_Q() -> dict:
    return {"p1": [[1.0, 0.0], [0.0, 0.1]], "p2": [[1.0, 0.0], [0.0, 1.0]]}


def _default_R() -> dict:
    return {"p1": {"p1": [[0.5]]}, "p2": {"p1": [[0.2]], "p2": [[0.5]]}}


@dataclass
class LQConfig(CoercibleConfig):
    """A linear-quadratic game; the defaults are a two-player game with a 2-D state.

    Matrices are nested lists: ``A`` is ``n x n``; ``B[i]`` is ``n x m_i``; ``Q[i]`` and
    ``Qf[i]`` are symmetric ``n x n``; ``R[i][j]`` is symmetric ``m_j x m_j`` (missing cross terms
    ``R[i][j]``, ``j != i``, are zero); ``R[i][i]`` must be positive definite. The agents are the
    keys of ``B``. Exactly one of ``horizon`` (finite, undiscounted, terminal cost ``Qf``,
    default ``Q``) and ``discount`` (infinite, episodes truncated at ``max_steps``) is set.
    Initial states are ``x0_mean + x0_std * N(0, I)``.
    """

    family: str = "lq"
    num_envs: int = 256
    leader: str | None = "p1"
    render: bool = False
    A: list = field(default_factory=_default_A)
    B: dict = field(default_factory=_default_B)
    Q: dict = field(default_factory=_default_Q)
    R: dict = field(default_factory=_default_R)
    horizon: int | None = None
    Qf: dict | None = None
    discount: float | None = 0.95
    max_steps: int = 50
    x0_mean: list[float] = field(default_factory=lambda: [1.0, -1.0])
    x0_std: float = 0.5
    noise_std: float = 0.05
    action_bound: float = 5.0

    @property
    def agents(self) -> tuple[str, ...]:
        return tuple(self.B)

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a one-line message if the config cannot be used."""
        if self.num_envs < 1:
            raise ConfigError(f"env.num_envs={self.num_envs} must be at least 1")
        if self.render:
            raise ConfigError("env.render=true: LQ games have no frames; set env.render=false")
        A = _matrix(self.A, "env.A")
        n = A.shape[0]
        if A.shape != (n, n):
            raise ConfigError(f"env.A must be square, got shape {A.shape[0]}x{A.shape[1]}")
        if not isinstance(self.B, dict) or not self.B:
            raise ConfigError("env.B must map each agent name to its n x m input matrix")
        agents = self.agents
        for agent in agents:
            Bi = _matrix(self.B[agent], f"env.B.{agent}")
            if Bi.shape[0] != n:
                raise ConfigError(f"env.B.{agent} must have n={n} rows, got {Bi.shape[0]}")
        if self.leader is not None and self.leader not in agents:
            raise ConfigError(
                f"env.leader={self.leader!r} is not an agent; use one of {', '.join(agents)} "
                "or null"
            )
        _check_agent_keys(self.Q, agents, "env.Q")
        for agent in agents:
            _check_symmetric(self.Q[agent], n, f"env.Q.{agent}")
        _check_agent_keys(self.R, agents, "env.R")
        for i in agents:
            if not isinstance(self.R[i], dict) or i not in self.R[i]:
                raise ConfigError(f"env.R.{i} must be a map with at least env.R.{i}.{i}")
            unknown = set(self.R[i]) - set(agents)
            if unknown:
                raise ConfigError(
                    f"env.R.{i} names unknown agents {sorted(unknown)}; agents are "
                    f"{', '.join(agents)}"
                )
            for j, Rij in self.R[i].items():
                mj = _matrix(self.B[j], f"env.B.{j}").shape[1]
                _check_symmetric(Rij, mj, f"env.R.{i}.{j}")
            if np.linalg.eigvalsh(_matrix(self.R[i][i], f"env.R.{i}.{i}")).min() <= 0:
                raise ConfigError(f"env.R.{i}.{i} must be positive definite (own action cost)")
        if (self.horizon is None) == (self.discount is None):
            raise ConfigError(
                "set exactly one of env.horizon (finite, undiscounted) and env.discount "
                "(infinite horizon); set the other to null"
            )
        if self.horizon is not None:
            if self.horizon < 1:
                raise ConfigError(f"env.horizon={self.horizon} must be at least 1")
            if self.Qf is not None:
                _check_agent_keys(self.Qf, agents, "env.Qf")
                for agent in agents:
                    _check_symmetric(self.Qf[agent], n, f"env.Qf.{agent}")
        else:
            if not 0.0 < self.discount < 1.0:
                raise ConfigError(f"env.discount={self.discount} must lie strictly in (0, 1)")
            if self.Qf is not None:
                raise ConfigError("env.Qf is a finite-horizon terminal cost; set env.Qf=null")
            if self.max_steps < 1:
                raise ConfigError(f"env.max_steps={self.max_steps} must be at least 1")
        x0 = np.asarray(self.x0_mean, dtype=np.float64)
        if x0.shape != (n,) or not np.isfinite(x0).all():
            raise ConfigError(f"env.x0_mean must be {n} finite numbers, one per state entry")
        for name in ("x0_std", "noise_std"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"env.{name}={value} must be a finite number >= 0")
        if not self.action_bound > 0:
            raise ConfigError(f"env.action_bound={self.action_bound} must be > 0")


def _matrix(value, name: str) -> np.ndarray:
    shape_msg = f"{name} must be a matrix: a list of equal-length rows of numbers"
    try:
        M = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(shape_msg) from None
    if M.ndim != 2 or M.size == 0:
        raise ConfigError(shape_msg)
    if not np.isfinite(M).all():
        raise ConfigError(f"{name} must contain finite numbers only")
    return M


def _check_agent_keys(mapping, agents: tuple[str, ...], name: str) -> None:
    if not isinstance(mapping, dict) or set(mapping) != set(agents):
        got = sorted(mapping) if isinstance(mapping, dict) else type(mapping).__name__
        raise ConfigError(f"{name} must have one entry per agent {list(agents)}, got {got}")


def _check_symmetric(value, size: int, name: str) -> None:
    M = _matrix(value, name)
    if M.shape != (size, size):
        raise ConfigError(f"{name} must be {size}x{size}, got {M.shape[0]}x{M.shape[1]}")
    if not np.allclose(M, M.T, atol=1e-12):
        raise ConfigError(f"{name} must be symmetric")


@dataclass(frozen=True)
class LQMatrices:
    """The game's matrices as float64 numpy arrays, keyed by agent (missing ``R_ij`` = 0)."""

    agents: tuple[str, ...]
    A: np.ndarray
    B: dict[str, np.ndarray]
    Q: dict[str, np.ndarray]
    R: dict[str, dict[str, np.ndarray]]
    Qf: dict[str, np.ndarray]


def lq_matrices(cfg: LQConfig) -> LQMatrices:
    """Validate ``cfg`` and return its matrices as numpy arrays."""
    cfg = LQConfig.coerce(cfg)
    cfg.validate()
    agents = cfg.agents
    B = {i: np.asarray(cfg.B[i], dtype=np.float64) for i in agents}
    Q = {i: np.asarray(cfg.Q[i], dtype=np.float64) for i in agents}
    R = {
        i: {
            j: np.asarray(cfg.R[i][j], dtype=np.float64)
            if j in cfg.R[i]
            else np.zeros((B[j].shape[1],) * 2)
            for j in agents
        }
        for i in agents
    }
    Qf = Q if cfg.Qf is None else {i: np.asarray(cfg.Qf[i], dtype=np.float64) for i in agents}
    return LQMatrices(agents, np.asarray(cfg.A, dtype=np.float64), B, Q, R, Qf)


class LQGame(Game):
    """``num_envs`` copies of a linear-quadratic game; every player acts every step.

    ``cfg`` is an :class:`LQConfig` or anything :meth:`LQConfig.coerce` accepts.
    """

    can_save_state = True

    def __init__(self, cfg: LQConfig, device: str | torch.device = "cpu") -> None:
        cfg = LQConfig.coerce(cfg)
        self.cfg = cfg
        mats = lq_matrices(cfg)
        self.agents = mats.agents
        self.num_envs = cfg.num_envs
        self.device = torch.device(device)
        self.leader = cfg.leader
        self.horizon = cfg.horizon
        self.episode_steps = cfg.horizon if cfg.horizon is not None else cfg.max_steps
        # the learner's discount: the game's own, or none over a finite horizon
        self.discount = float(cfg.discount) if cfg.discount is not None else 1.0
        self.state_dim = mats.A.shape[0]

        def tensor(M: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(M), dtype=torch.float32, device=self.device)

        # Row-vector convention for batches: x' = x A^T + sum_i u_i B_i^T.
        self._A_T = tensor(mats.A.T)
        self._B_T = {i: tensor(mats.B[i].T) for i in self.agents}
        self._Q = {i: tensor(mats.Q[i]) for i in self.agents}
        self._R = {i: {j: tensor(mats.R[i][j]) for j in self.agents} for i in self.agents}
        self._Qf = {i: tensor(mats.Qf[i]) for i in self.agents}
        self._x0_mean = tensor(np.asarray(cfg.x0_mean, dtype=np.float64))
        self._specs = {
            i: AgentSpec(
                obs_dim=self.state_dim + (1 if self.horizon is not None else 0),
                action_dim=mats.B[i].shape[1],
                low=(-float(cfg.action_bound),) * mats.B[i].shape[1],
                high=(float(cfg.action_bound),) * mats.B[i].shape[1],
            )
            for i in self.agents
        }
        self._generator = torch.Generator(device=self.device)
        self._x = torch.zeros(self.num_envs, self.state_dim, device=self.device)
        self._t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)

    def spec(self, agent: str) -> AgentSpec:
        return self._specs[agent]

    def reset(self, seed: int | None = None) -> TimeStep:
        """Draw fresh initial states; ``seed`` reseeds the game's own generator."""
        if seed is not None:
            self._generator.manual_seed(seed)
        self._x = self._initial_states(self.num_envs)
        self._t = torch.zeros_like(self._t)
        obs = self._observe(self._x, self._t)
        reward = {i: torch.zeros(self.num_envs, device=self.device) for i in self.agents}
        done = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return self._timestep(obs, reward, done, done.clone(), obs)

    def step(self, actions: dict[str, torch.Tensor]) -> TimeStep:
        bound = float(self.cfg.action_bound)
        u = {
            i: actions[i].to(self.device, torch.float32).reshape(self.num_envs, -1)
            for i in self.agents
        }
        u = {i: a.clamp(-bound, bound) for i, a in u.items()}
        x = self._x
        cost = {
            i: _quad(x, self._Q[i]) + sum(_quad(u[j], self._R[i][j]) for j in self.agents)
            for i in self.agents
        }
        next_x = x @ self._A_T + sum(u[j] @ self._B_T[j] for j in self.agents)
        if self.cfg.noise_std > 0:
            noise = torch.randn(next_x.shape, generator=self._generator, device=self.device)
            next_x = next_x + self.cfg.noise_std * noise
        self._t = self._t + 1
        ended = self._t >= self.episode_steps
        if self.horizon is not None:
            terminated, truncated = ended, torch.zeros_like(ended)
            for i in self.agents:
                cost[i] = cost[i] + torch.where(ended, _quad(next_x, self._Qf[i]), 0.0)
        else:
            terminated, truncated = torch.zeros_like(ended), ended
        final_obs = self._observe(next_x, self._t)
        fresh = self._initial_states(self.num_envs)
        self._x = torch.where(ended[:, None], fresh, next_x)
        self._t = torch.where(ended, torch.zeros_like(self._t), self._t)
        obs = self._observe(self._x, self._t)
        reward = {i: -cost[i] for i in self.agents}
        return self._timestep(obs, reward, terminated, truncated, final_obs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every copy's state and step count, and the game's random stream."""
        return {
            "x": self._x.clone(),
            "t": self._t.clone(),
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._x = loaded(state["x"], self._x, "x")
        self._t = loaded(state["t"], self._t, "t")
        self._generator.set_state(state["generator"].cpu())

    def _initial_states(self, count: int) -> torch.Tensor:
        noise = torch.randn(count, self.state_dim, generator=self._generator, device=self.device)
        return self._x0_mean + float(self.cfg.x0_std) * noise

    def _observe(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.horizon is None:
            return x.clone()
        return torch.cat([x, (t.to(x.dtype) / self.horizon)[:, None]], dim=1)

    def _timestep(
        self,
        obs: torch.Tensor,
        reward: dict[str, torch.Tensor],
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        final_obs: torch.Tensor,
    ) -> TimeStep:
        # Every player sees the full state; each gets its own tensor so a solver may extend one
        # (e.g. append a leader's action) without touching the others.
        return TimeStep(
            obs={i: obs.clone() for i in self.agents},
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            # Continuous actions have no mask: one always-true entry per action dimension.
            legal={
                i: all_true(self.num_envs, self._specs[i].action_size, self.device)
                for i in self.agents
            },
            acting={i: all_true(self.num_envs, None, self.device) for i in self.agents},
            final_obs={i: final_obs.clone() for i in self.agents},
        )


def _quad(v: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Batched quadratic form ``v^T M v`` for rows ``v`` of ``[B, d]``."""
    return ((v @ M) * v).sum(dim=1)
