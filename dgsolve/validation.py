"""The allowed range of every numeric option, checked on the composed config before any work.

Hydra's schemas (:mod:`dgsolve.config`) check types when a config is composed; :func:`validate`
checks values: positive counts, probabilities in [0, 1], finite rates, discounts in (0, 1],
seeds >= 0. :data:`RULES` maps a dotted option path to a :class:`Rule` that checks a value and
says what is allowed; :data:`FAMILY_RULES` replaces one where an env family gives the same field
a narrower range. A path the composed config does not have (``algo.lr`` under ``algo=exact``,
``env.N`` outside ``simple_adversary`` and ``simple_spread``) is skipped. Checks that relate
several options (payoff tables, LQ matrices, the offers ``quantities`` make, a budget shorter
than one iteration) stay with the games and solvers that know them. Last, :func:`validate`
refuses a run whose estimated memory (:mod:`dgsolve.memory`) exceeds the machine's.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dgsolve import memory
from dgsolve.errors import ConfigError
from dgsolve.games.bargain.config import MAX_ROUNDS


# --------------------------------------------------------------------------- rules
class Rule(ABC):
    """What one option may be: :meth:`allows` checks a value, :meth:`describe` says it."""

    @abstractmethod
    def allows(self, value: Any) -> bool:
        """Whether ``value`` (a plain Python value, lists as lists) is allowed."""

    @abstractmethod
    def describe(self, plural: bool = False) -> str:
        """What is allowed, e.g. "an integer ≥ 1" (or "integers ≥ 1" with ``plural``)."""


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but true is not a count or a rate
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bound(x: float) -> str:
    return f"{x:g}"


def _count(n: int) -> str:
    """``n`` as a reader takes it in at a glance: ``10^15`` for a large power of ten."""
    k = len(str(n)) - 1
    return f"10^{k}" if n >= 10**6 and n == 10**k else str(n)


@dataclass(frozen=True)
class Int(Rule):
    """An integer (not a bool) in ``[min, max]``; either bound may be left open-ended."""

    min: int | None = None
    max: int | None = None

    def allows(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (self.min is None or value >= self.min)
            and (self.max is None or value <= self.max)
        )

    def describe(self, plural: bool = False) -> str:
        noun = "integers" if plural else "an integer"
        if self.min is not None and self.max is not None:
            return f"{noun} from {_count(self.min)} to {_count(self.max)}"
        if self.min is not None:
            return f"{noun} ≥ {_count(self.min)}"
        if self.max is not None:
            return f"{noun} ≤ {_count(self.max)}"
        return noun


@dataclass(frozen=True)
class Real(Rule):
    """A finite number (an int or a float, not a bool) between ``low`` and ``high``, each bound
    closed unless ``low_open`` / ``high_open``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: Any) -> bool:
        if not _is_number(value) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def describe(self, plural: bool = False) -> str:
        noun = "finite numbers" if plural else "a finite number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{noun} in {left}{_bound(self.low)}, {_bound(self.high)}{right}"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '≥'} {_bound(self.low)}"
        if self.high is not None:
            return f"{noun} {'<' if self.high_open else '≤'} {_bound(self.high)}"
        return noun


@dataclass(frozen=True)
class OrNull(Rule):
    """``null`` or a value that ``rule`` allows."""

    rule: Rule

    def allows(self, value: Any) -> bool:
        return value is None or self.rule.allows(value)

    def describe(self, plural: bool = False) -> str:
        return f"null or {self.rule.describe(plural)}"


@dataclass(frozen=True)
class ListOf(Rule):
    """A list of at least ``min_len`` values, each allowed by ``rule``."""

    rule: Rule
    min_len: int = 0

    def allows(self, value: Any) -> bool:
        return (
            isinstance(value, (list, tuple))
            and len(value) >= self.min_len
            and all(self.rule.allows(v) for v in value)
        )

    def describe(self, plural: bool = False) -> str:
        noun = "lists" if plural else "a list"
        if self.min_len == 1:
            noun = "non-empty lists" if plural else "a non-empty list"
        elif self.min_len > 1:
            noun = f"{noun} of at least {self.min_len}"
        return f"{noun} of {self.rule.describe(plural=True)}"


# --------------------------------------------------------------------------- the table
COUNT = Int(min=1)
PROBABILITY = Real(low=0, high=1)
DISCOUNT = Real(low=0, high=1, low_open=True)
NONNEGATIVE = Real(low=0)
POSITIVE = Real(low=0, low_open=True)
#: a budget of environment steps: far past any run (10^15 steps take decades at a million a
#: second), and 9,000 times inside int64, so step counters never overflow
STEPS = Int(min=1, max=10**15)
#: iterations of an iterative solver (CFR, Deep CFR, PSRO): 11 days at a thousand a second
ITERATIONS = Int(min=1, max=10**9)
#: games or episodes played to evaluate: ten million pin a mean return down to 0.03% of the
#: returns' spread; more only runs on
GAMES = Int(min=1, max=10**7)
#: game copies stepped together: a billion fits no machine for any game (the memory estimate
#: refuses far fewer where they do not fit), and keeps per-copy offsets well inside int64
COPIES = Int(min=1, max=10**9)

#: every numeric option of every schema in :data:`dgsolve.config.SCHEMAS`, in the order they are
#: checked: env before algo, whose defaults interpolate env values (``num_steps: ${env.rounds}``).
RULES: dict[str, Rule] = {
    # root
    "seed": Int(min=0, max=2**32 - 1),  # the range every seeded generator (numpy too) accepts
    # env, every family
    "env.num_envs": COPIES,
    "env.eval_episodes": GAMES,  # mpe: the final evaluation's episodes
    # env: pettingzoo and mpe
    "env.max_cycles": OrNull(COUNT),  # mpe's schema refuses null itself
    "env.N": COUNT,  # simple_adversary: good agents; simple_spread: agents and landmarks
    "env.local_ratio": PROBABILITY,  # mpe2 asserts it is a proportion
    "env.num_good": COUNT,  # simple_tag, simple_world_comm: prey to chase
    "env.num_adversaries": COUNT,  # predators (simple_world_comm's first one leads)
    "env.num_obstacles": Int(min=0),
    "env.num_food": COUNT,  # simple_world_comm fails to build without food
    "env.num_forests": Int(min=0),
    # env: matrix and bargain
    "env.rounds": COUNT,
    "env.reward_offset": Real(),
    # env: lq and bargain
    "env.discount": OrNull(DISCOUNT),  # bargain's schema refuses null itself
    # env: lq
    "env.horizon": OrNull(COUNT),
    "env.max_steps": COUNT,
    "env.x0_mean": ListOf(Real()),
    "env.x0_std": NONNEGATIVE,
    "env.noise_std": NONNEGATIVE,
    "env.action_bound": POSITIVE,
    # env: bargain
    "env.quantities": ListOf(COUNT, min_len=1),
    "env.max_value": COUNT,
    # algo: ppo
    "algo.total_timesteps": STEPS,
    "algo.num_steps": COUNT,
    "algo.num_epochs": COUNT,
    "algo.num_minibatches": COUNT,
    "algo.lr": Real(low=0, high=1, low_open=True),  # an Adam step above 1 only diverges
    "algo.gamma": OrNull(DISCOUNT),
    "algo.gae_lambda": PROBABILITY,
    "algo.clip_coef": POSITIVE,
    "algo.ent_coef": NONNEGATIVE,
    "algo.vf_coef": NONNEGATIVE,
    "algo.max_grad_norm": POSITIVE,
    "algo.target_kl": OrNull(POSITIVE),
    "algo.follower_updates_per_leader": COUNT,
    "algo.hidden_sizes": ListOf(COUNT),  # [] is allowed: a linear actor and critic
    "algo.leader_probe_rate": PROBABILITY,
    "algo.leader_warmup": Real(low=0, high=1, high_open=True),  # 1: leaders would never learn
    "algo.follower_restarts": Int(min=0),
    "algo.commitment_noise": POSITIVE,
    "algo.commitment_noise_final": NONNEGATIVE,  # 0: undisturbed commitments after the start
    # algo: cfr
    "algo.iterations": ITERATIONS,
    "algo.iterations_per_step": COUNT,
    # algo: deep_cfr (iterations, lr and hidden_sizes as above)
    "algo.traversals": COUNT,
    "algo.sampled_actions": OrNull(Int(min=2)),  # null: every legal action (external sampling)
    "algo.advantage_steps": COUNT,
    "algo.policy_steps": COUNT,
    "algo.batch_size": COUNT,
    "algo.memory_size": COUNT,
    # algo: nfsp (total_timesteps, hidden_sizes and batch_size as above)
    "algo.steps_per_iteration": STEPS,
    "algo.anticipatory": PROBABILITY,
    "algo.replay_size": COUNT,
    "algo.reservoir_size": COUNT,
    "algo.rl_lr": Real(low=0, high=1, low_open=True),  # Adam, as algo.lr
    "algo.sl_lr": Real(low=0, high=1, low_open=True),
    "algo.train_every": COUNT,
    "algo.target_update": COUNT,
    "algo.epsilon_start": PROBABILITY,
    "algo.epsilon_end": PROBABILITY,
    # algo: psro (iterations as above)
    "algo.max_policies": COUNT,
    "algo.sims_per_entry": OrNull(GAMES),  # null: the exact empirical game
    "algo.br_steps": STEPS,
    "algo.ppo.num_steps": COUNT,
    "algo.ppo.num_epochs": COUNT,
    "algo.ppo.num_minibatches": COUNT,
    "algo.ppo.lr": Real(low=0, high=1, low_open=True),
    "algo.ppo.ent_coef": NONNEGATIVE,
    "algo.ppo.hidden_sizes": ListOf(COUNT),
    # algo: ex2psro (psro's as above)
    "algo.exploration_top_k": COUNT,
    "algo.imitation_top_fraction": Real(low=0, high=1, low_open=True),
    "algo.imitation_steps": STEPS,
    "algo.imitation_epochs": COUNT,
    "algo.imitation_lr": Real(low=0, high=1, low_open=True),
    "algo.kl_coef": NONNEGATIVE,
    "algo.kl_target": POSITIVE,
    # algo: fcp (its learner's algo.ppo.* as psro's)
    "algo.population_size": COUNT,
    "algo.snapshot_interval": OrNull(COUNT),  # null: each run's final checkpoint only
    "algo.priority_temperature": POSITIVE,
    "algo.heldout_partners": COUNT,
    "algo.partner_steps": STEPS,
    "algo.fcp_steps": STEPS,
    "algo.eval_games": GAMES,
    # task: train
    "task.eval_episodes": GAMES,
    "task.eval_every": Int(min=0),  # 0 = at the end only
    "task.eval_games": GAMES,
    "task.checkpoint_every": COUNT,
    "task.eq_tolerance": OrNull(NONNEGATIVE),
    # task: crossplay
    "task.games": GAMES,
    # task: exploit (eval_games as above)
    "task.br_timesteps": STEPS,
    # task: search (games as above)
    "task.simulations": ListOf(Int(min=0), min_len=1),  # 0: the raw policy
    "task.c_puct": POSITIVE,
    "task.considered": COUNT,
    "task.c_visit": NONNEGATIVE,
    "task.c_scale": POSITIVE,
    # hardware
    "hardware.threads": Int(min=0),  # 0 = torch's default
}

#: ``(env.family, path)`` -> the rule that takes the place of ``RULES[path]`` in that family
FAMILY_RULES: dict[tuple[str, str], Rule] = {
    ("lq", "env.discount"): OrNull(Real(low=0, high=1, low_open=True, high_open=True)),
    ("bargain", "env.rounds"): Int(min=1, max=MAX_ROUNDS),
}


def rule_for(path: str, family: str | None = None) -> Rule | None:
    """The rule of option ``path`` in env family ``family``; ``None`` where there is none."""
    return FAMILY_RULES.get((family, path), RULES.get(path))


# --------------------------------------------------------------------------- checking
_ABSENT = object()


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (one line) on the first option in :data:`RULES` order whose
    value is out of range, has the wrong type or cannot be resolved (options the config does
    not have are skipped); then where the run's estimated memory exceeds the machine's
    (:func:`dgsolve.memory.check`)."""
    family = _family(cfg)
    for path in RULES:
        rule = rule_for(path, family)
        value = _read(cfg, path, rule)
        if value is not _ABSENT and not rule.allows(value):
            raise ConfigError(
                f"{path}={_show(value)} is not allowed: {path} must be {rule.describe()}"
            )
    memory.check(cfg)


def check_device(hardware) -> str:
    """The device ``hardware.device`` names (``auto``: CUDA where available); ``cuda`` on a
    machine without a visible GPU is a user error, refused in one line."""
    import torch

    name = str(getattr(hardware.device, "value", hardware.device))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hardware=cuda but no CUDA device is visible; use hardware=cpu or auto")
    return name


def _family(cfg: DictConfig) -> str | None:
    """``env.family`` where it is a plain string, else ``None`` (the rules of every family)."""
    try:
        family = OmegaConf.select(cfg, "env.family")
    except OmegaConfBaseException:
        return None
    return family if isinstance(family, str) else None


def _read(cfg: DictConfig, path: str, rule: Rule) -> Any:
    """The resolved value at ``path`` as plain Python (lists as lists), or ``_ABSENT``."""
    try:
        value = OmegaConf.select(cfg, path, default=_ABSENT, throw_on_missing=True)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{path} cannot be read ({reason}); {path} must be {rule.describe()}"
        ) from None
    return value


def _show(value: Any) -> str:
    """``value`` as it would be written on the command line, on one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return repr(value)
    return str(value)


# --------------------------------------------------------------------------- schema fields
def numeric_fields(schema_cls: type) -> list[str]:
    """The fields of dataclass ``schema_cls`` typed as a number, an optional number or a list
    of numbers (``int``, ``float | None``, ``list[int]``, ...), in declaration order."""
    hints = typing.get_type_hints(schema_cls)
    return [f.name for f in dataclasses.fields(schema_cls) if _is_numeric_type(hints[f.name])]


def _is_numeric_type(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return len(args) == 1 and _is_numeric_type(args[0])
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return bool(args) and all(a in (int, float) for a in args if a is not Ellipsis)
    return tp in (int, float)
