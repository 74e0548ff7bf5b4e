"""The batched Game interface every solver talks to (see DESIGN.md, "The Game interface").

A Game steps ``num_envs`` copies of one game together. Tensors live on ``game.device`` and are
keyed by agent name. Finished copies reset themselves inside :meth:`Game.step`: the returned
:class:`TimeStep` carries the reward of the finishing step exactly once, the first observation of
the new game in ``obs``, and the last observation of the old one in ``final_obs`` (for
bootstrapping truncated games).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dgsolve import lazy_import

# loaded on first use (dgsolve.lazy_import): the config schemas (dgsolve.config) derive from
# CoercibleConfig, and importing them must not cost torch's import
np = lazy_import("numpy")
torch = lazy_import("torch")


@dataclass(frozen=True)
class AgentSpec:
    """What one agent observes and how it acts.

    Exactly one of ``num_actions`` (discrete) and ``action_dim`` (continuous, a Box with bounds
    ``low``/``high`` per dimension) is set.
    """

    obs_dim: int
    num_actions: int | None = None
    action_dim: int | None = None
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if (self.num_actions is None) == (self.action_dim is None):
            raise ValueError("AgentSpec needs exactly one of num_actions and action_dim")

    @property
    def discrete(self) -> bool:
        return self.num_actions is not None

    @property
    def action_size(self) -> int:
        """Width of the action as a follower sees it: one-hot size or vector size."""
        return self.num_actions if self.discrete else self.action_dim


@dataclass
class TimeStep:
    """One batched transition result; every tensor has leading dimension ``num_envs``.

    ``acting[agent]`` is true where the agent decides at this observation (turn-based games, or
    agents that have not finished early); a solver ignores decisions where it is false.
    ``final_obs`` holds, where ``terminated | truncated``, the last observation of the game that
    just ended (elsewhere it repeats ``obs``).

    ``agent_terminated`` (optional) says, where a copy is done, whether each agent's own episode
    ended by termination (at this step or earlier in the episode), so that its last decision is
    not bootstrapped even when the copy as a whole is truncated; ``None`` means every agent
    ended the way the copy did (``terminated``).
    """

    obs: dict[str, torch.Tensor]
    reward: dict[str, torch.Tensor]
    terminated: torch.Tensor
    truncated: torch.Tensor
    legal: dict[str, torch.Tensor]
    acting: dict[str, torch.Tensor]
    final_obs: dict[str, torch.Tensor] = field(default_factory=dict)
    agent_terminated: dict[str, torch.Tensor] | None = None

    @property
    def done(self) -> torch.Tensor:
        return self.terminated | self.truncated

    def state_dict(self) -> dict[str, Any]:
        """A copy of every field as tensors and plain dicts of tensors (a lazy ``final_obs``
        mapping is built now), which ``torch.load(weights_only=True)`` reads back."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                value = {agent: x.clone() for agent, x in value.items()}
            elif value is not None:
                value = value.clone()
            out[f.name] = value
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, Any], device: torch.device) -> TimeStep:
        """The TimeStep that :meth:`state_dict` saved, with its tensors on ``device``."""

        def on_device(value):
            if isinstance(value, Mapping):
                return {agent: x.to(device) for agent, x in value.items()}
            return None if value is None else value.to(device)

        return cls(**{f.name: on_device(state[f.name]) for f in fields(cls) if f.name in state})

    def terminated_for(self, agent: str) -> torch.Tensor:
        """``[B]``: where a copy is done, whether ``agent``'s own episode ended by termination."""
        if self.agent_terminated is None:
            return self.terminated
        return self.agent_terminated[agent]


class Game(ABC):
    """A batch of ``num_envs`` copies of one game.

    Optional capabilities are declared as class attributes so solvers can check them:
    ``can_render`` (:meth:`render_episode`), ``can_clone`` (``clone_state``/``restore_state``),
    ``can_save_state`` (:meth:`state_dict`/:meth:`load_state_dict`, see :func:`saves_state`).

    Games whose state dgsolve owns (matrix, LQ, bargaining) save it: :meth:`state_dict` holds
    every copy's state and the game's own random stream, so that after :meth:`load_state_dict`
    the game steps exactly as it would have, and a resumed run continues the interrupted games.
    The state is made of tensors and plain values only (``torch.load(weights_only=True)`` reads
    it). PettingZoo adapters do not save state: a resumed run restarts their games.
    """

    agents: tuple[str, ...]
    num_envs: int
    device: torch.device
    can_render: bool = False
    can_clone: bool = False
    can_save_state: bool = False
    #: agent that naturally leads (``hierarchy=leader_follower``); ``None`` means the first agent.
    leader: str | None = None
    #: ``(start, end)`` column ranges that cut an observation into tokens for a transformer
    #: policy (``algo.network=transformer``); ``None`` where the game defines none.
    token_slices: tuple[tuple[int, int], ...] | None = None
    #: the game's own discount of future rewards, which learners use unless told otherwise
    #: (``algo.gamma``); ``None`` where the game defines none.
    discount: float | None = None
    #: steps every episode lasts, where that is fixed (matrix and LQ games); else ``None``.
    episode_steps: int | None = None

    @abstractmethod
    def spec(self, agent: str) -> AgentSpec:
        """Observation size and action space of ``agent``."""

    @abstractmethod
    def reset(self, seed: int | None = None) -> TimeStep:
        """Start every copy afresh; rewards are zero and nothing is done."""

    @abstractmethod
    def step(self, actions: dict[str, torch.Tensor]) -> TimeStep:
        """Apply one joint action (``[B]`` long or ``[B, action_dim]`` float per agent)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release external resources (subprocesses, windows)."""

    def render_episode(self, policy_fn, max_steps: int, seed: int) -> list[np.ndarray]:
        """Play one greedy episode in a fresh copy and return its RGB frames, all of one size,
        each naming the agents in their plot colours and showing the step
        (:func:`dgsolve.plots.label_frames`)."""
        raise NotImplementedError(f"{type(self).__name__} does not render")

    def state_dict(self) -> dict[str, Any]:
        """A copy of every copy's state and of the game's random stream (``can_save_state``)."""
        raise NotImplementedError(f"{type(self).__name__} does not save its state")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Return to a :meth:`state_dict` snapshot: the next :meth:`step` goes on from there."""
        raise NotImplementedError(f"{type(self).__name__} does not save its state")


def saves_state(game: Game) -> bool:
    """Whether ``game`` offers :meth:`Game.state_dict` and :meth:`Game.load_state_dict`."""
    return bool(getattr(game, "can_save_state", False))


def loaded(saved: torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
    """A copy of the saved tensor ``saved`` on ``like``'s device, refused (``ValueError``)
    unless its shape and dtype are ``like``'s: a snapshot of a different game."""
    if saved.shape != like.shape or saved.dtype != like.dtype:
        raise ValueError(
            f"saved game state '{name}' is {saved.dtype} {list(saved.shape)}, this game's is "
            f"{like.dtype} {list(like.shape)}"
        )
    return saved.to(like.device, copy=True)


class CoercibleConfig:
    """Mixin for a game's config dataclass: build it from a DictConfig or a mapping."""

    @classmethod
    def coerce(cls, cfg: Any):
        """``cfg`` itself if it is already one, else one built from a DictConfig or a mapping
        (keys that are not fields, such as a config group's ``name``, are ignored)."""
        if isinstance(cfg, cls):
            return cfg
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        if not isinstance(cfg, Mapping):
            raise TypeError(f"cannot build a {cls.__name__} from {type(cfg).__name__}")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in names})


def all_true(num_envs: int, width: int | None, device: torch.device) -> torch.Tensor:
    """A boolean tensor of ones: ``[B]`` or ``[B, width]``."""
    shape = (num_envs,) if width is None else (num_envs, width)
    return torch.ones(shape, dtype=torch.bool, device=device)
