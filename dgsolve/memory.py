"""An estimate of a run's peak memory from its composed config alone, checked before any work.

:func:`estimate` adds up the few terms that grow with the options a user can make large, read
from the config without building the game or the solver:

- **networks**: the parameters of every network (``algo.hidden_sizes``; ``algo.ppo.hidden_sizes``
  for the PPO learners of PSRO, Ex²PSRO and FCP), whose first layer reads the game's
  observation and whose last writes its actions, times four copies (weights, gradients, Adam's
  two moments), times the number of networks: two towers (actor, critic) per agent for PPO,
  ignoring ``share_policy`` (an upper bound); advantage and strategy networks per player for
  Deep CFR; Q, target and average-policy networks per player for NFSP; plus the weights of the
  policies a population keeps (PSRO's ``max_policies``, FCP's snapshots);
- **rollout buffers** of the PPO learners: ``env.num_envs × num_steps`` rows per agent, each
  two observations (a centralised critic's one per agent), the legal actions and a few scalars;
- **one minibatch's activations**: its rows times the units of both towers, three floats a unit
  (output, activation, gradient);
- **replay memories**: NFSP's ``replay_size`` and ``reservoir_size``, Deep CFR's
  ``memory_size``, per player, at their capacity;
- **the game itself**: ``env.num_envs`` copies of a per-copy state from the family's options
  (:func:`game_dims`): a handful of floats for matrix and LQ games; the observations and legal
  actions of ``env.quantities`` for bargaining (plus its per-situation observation table); for
  the MPE scenarios the float64 pairwise terms of their entities (contact forces, relative
  positions: the square of the entity count) and the agents' observations (linear in it); a
  conservative constant for a PettingZoo or OpenSpiel copy, a Python object whose size only the
  game knows;
- a fixed :data:`BASELINE_BYTES` for Python, torch and dgsolve themselves.

Everything else (game trees of CFR and the exact solvers, Deep CFR's traversals, evaluation,
plots) is small next to these or unknown before the game is built. The estimate is rough, meant
to refuse runs that cannot fit, not to size machines; :func:`check` refuses a run whose estimate
exceeds :data:`FRACTION` of :func:`machine_memory`, naming the term that dominates it.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import resource
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dgsolve.errors import ConfigError, OutOfMemory

#: bytes of a float32 (networks, buffers, observations) and of a float64 (MPE physics)
F32, F64 = 4, 8
#: copies of each trained parameter: weights, gradients, Adam's first and second moments
TRAINED_COPIES = 4
#: Python, torch and dgsolve's own modules, before any tensor (about 0.25 GB measured; doubled)
BASELINE_BYTES = 500 * 10**6
#: a run is refused when its estimate exceeds this fraction of the machine's memory: the whole
#: of it, as the estimate already counts every large term at its peak
FRACTION = 1.0
#: one PettingZoo environment (a Python object, perhaps with an emulator or a renderer) and one
#: OpenSpiel state or an mpe2 copy (``env.backend=mpe2``): conservative, their size is unknown
PETTINGZOO_COPY_BYTES = 4 * 2**20
PYTHON_COPY_BYTES = 2**20
#: observation floats and actions assumed of a game whose sizes are known only once it is built
#: (PettingZoo, OpenSpiel): more than the tabletop games' info-state tensors (Kuhn poker 11
#: floats and 2 actions, Leduc poker 30 and 3), less than images
UNKNOWN_OBS, UNKNOWN_ACTIONS = 128, 64
#: discrete MPE actions at most (movement, or movement and a message in the talking scenarios)
MPE_ACTIONS = 50
#: float64 values per pair of MPE entities in a step: offsets, distances, forces, observations
MPE_PAIR_FLOATS = 8
#: MPE scenario -> (agents, landmarks) from its options (mpe2's scenario definitions)
MPE_ENTITIES = {
    "simple_adversary": lambda n: (n("N", 2) + 1, n("N", 2)),
    "simple_spread": lambda n: (n("N", 3), n("N", 3)),
    "simple_tag": lambda n: (n("num_good", 1) + n("num_adversaries", 3), n("num_obstacles", 2)),
    "simple_world_comm": lambda n: (
        n("num_good", 2) + n("num_adversaries", 4),
        n("num_obstacles", 1) + n("num_food", 2) + n("num_forests", 2),
    ),
    "simple_crypto": lambda n: (3, 2),
    "simple_push": lambda n: (2, 2),
    "simple_reference": lambda n: (2, 3),
    "simple_speaker_listener": lambda n: (2, 3),
}
#: the MPE options that set entity counts
MPE_SIZE_KEYS = ("N", "num_good", "num_adversaries", "num_obstacles", "num_food", "num_forests")


# --------------------------------------------------------------------------- the estimate
@dataclass(frozen=True)
class Term:
    """One part of the estimate: ``nbytes`` for ``what``, driven by ``options`` (``key=value``
    as on the command line); ``advice`` says how to shrink it."""

    what: str
    nbytes: int
    options: tuple[str, ...] = ()
    advice: str = "use a machine with more memory"


@dataclass(frozen=True)
class Estimate:
    """The terms of :func:`estimate`; :attr:`total` is their sum."""

    terms: tuple[Term, ...]

    @property
    def total(self) -> int:
        return sum(t.nbytes for t in self.terms)

    def largest(self, k: int = 1) -> list[Term]:
        """The ``k`` largest terms that name options (the baseline names none)."""
        named = [t for t in self.terms if t.options]
        return sorted(named, key=lambda t: t.nbytes, reverse=True)[:k]


@dataclass(frozen=True)
class GameDims:
    """What the estimate needs of a game, from its config: agents, observation floats and
    actions per agent, bytes per copy and fixed bytes, and the options that set its size."""

    agents: int
    obs: int
    actions: int
    copy_bytes: int
    fixed_bytes: int = 0
    size_options: tuple[str, ...] = ()


def estimate(cfg: DictConfig) -> Estimate:
    """The estimated peak memory of the run ``cfg`` describes, term by term (module docstring).
    An estimate: it may be refined per algorithm; options the config lacks take their defaults."""
    r = _Reader(cfg)
    game = game_dims(cfg)
    copies = r.count("env.num_envs", 1)
    terms = [Term("Python, torch and dgsolve", BASELINE_BYTES)]
    solver = r.get("algo.solver")
    if solver == "ppo":
        terms += _ppo_terms(r, game, "algo", copies)
    elif solver in ("psro", "ex2psro", "fcp"):
        oracle = r.get("algo.oracle", "ppo")
        if solver == "fcp" or getattr(oracle, "value", oracle) == "ppo":
            terms += _ppo_terms(r, game, "algo.ppo", copies)
            terms.append(_population_term(r, game, solver, copies))
    elif solver == "nfsp":
        terms += _nfsp_terms(r, game)
    elif solver == "deep_cfr":
        terms += _deep_cfr_terms(r, game)
    game_options = (*game.size_options, r.option("env.num_envs"))
    terms.append(
        Term(
            f"{copies:,} copies of the game (about {_size(game.copy_bytes)} each)",
            copies * game.copy_bytes,
            game_options,
            _advice(["fewer copies (env.num_envs)"], game),
        )
    )
    if game.fixed_bytes:
        terms.append(
            Term("the game's tables", game.fixed_bytes, game.size_options, _advice([], game))
        )
    return Estimate(tuple(terms))


def _ppo_terms(r: _Reader, game: GameDims, prefix: str, copies: int) -> list[Term]:
    """Networks, rollout buffers and one minibatch's activations of PPO learners whose options
    sit under ``prefix`` (``algo``, or ``algo.ppo`` for a population's learner)."""
    hidden_key = f"{prefix}.hidden_sizes"
    hidden = r.counts(hidden_key, [64, 64])
    linear = getattr(r.get("algo.policy"), "value", r.get("algo.policy")) == "linear"
    centralised = bool(r.get("algo.centralised_critic", False))
    critic_in = game.obs * (game.agents if centralised else 1)
    per_agent = _mlp_params(game.obs, [] if linear else hidden, game.actions)
    per_agent += _mlp_params(critic_in, hidden, 1)  # actor and critic towers
    steps_key = f"{prefix}.num_steps"
    steps = r.count(steps_key, 128)
    minibatches = r.count(f"{prefix}.num_minibatches", 4)
    row_floats = 2 * game.obs + (critic_in if centralised else 0) + game.actions + 8
    rows = copies * steps * (game.agents if r.get("algo.share_policy", False) else 1)
    rows = math.ceil(rows / minibatches)
    unit_floats = 3 * (game.obs + critic_in + 2 * sum(hidden) + game.actions + 1)
    sizes = (r.option("env.num_envs"), r.option(steps_key))
    shorter = ["fewer copies (env.num_envs)", f"shorter rollouts ({steps_key})"]
    return [
        Term(
            f"{game.agents:,} agents' networks (weights, gradients, Adam)",
            game.agents * per_agent * F32 * TRAINED_COPIES,
            (r.option(hidden_key),),
            "use smaller widths",
        ),
        Term(
            f"the rollout buffers ({game.agents:,} agents × about {row_floats:,} floats per step "
            "and copy)",
            copies * steps * game.agents * row_floats * F32,
            (*game.size_options, *sizes),
            _advice(shorter, game),
        ),
        Term(
            f"one minibatch's activations ({rows:,} rows)",
            rows * unit_floats * F32,
            (*sizes, r.option(f"{prefix}.num_minibatches"), r.option(hidden_key)),
            _advice([f"more minibatches ({prefix}.num_minibatches)", *shorter], game),
        ),
    ]


def _population_term(r: _Reader, game: GameDims, solver: str, copies: int) -> Term:
    """The weights of the policies a PSRO/Ex²PSRO population or an FCP pool keeps."""
    hidden = r.counts("algo.ppo.hidden_sizes", [64, 64])
    policy = _mlp_params(game.obs, hidden, game.actions) + _mlp_params(game.obs, hidden, 1)
    if solver == "fcp":
        runs = r.count("algo.population_size", 4) + r.count("algo.heldout_partners", 2)
        interval = r.count("algo.snapshot_interval", 0)
        per_iteration = copies * r.count("algo.ppo.num_steps", 16)
        snapshots = 1
        if interval:
            snapshots += math.ceil(r.count("algo.partner_steps", 50_000) / per_iteration / interval)
        kept, options = runs * snapshots, ("algo.population_size", "algo.snapshot_interval")
    else:
        kept, options = r.count("algo.max_policies", 300), ("algo.max_policies",)
    return Term(
        f"the population's networks ({kept:,} policies per agent)",
        kept * game.agents * policy * F32,
        (*(r.option(k) for k in options), r.option("algo.ppo.hidden_sizes")),
        "keep fewer policies or use smaller widths",
    )


def _nfsp_terms(r: _Reader, game: GameDims) -> list[Term]:
    hidden = r.counts("algo.hidden_sizes", [128])
    net = _mlp_params(game.obs, hidden, game.actions)
    # replay: obs, next obs, next legal actions, action, reward, done; reservoir: obs, legal, action
    replay_row = 2 * F32 * game.obs + game.actions + 8 + F32 + 1
    reservoir_row = F32 * game.obs + game.actions + 8
    replay, reservoir = (
        r.count("algo.replay_size", 200_000),
        r.count("algo.reservoir_size", 2_000_000),
    )
    return [
        Term(
            f"{game.agents} players' Q, target and average-policy networks (weights, gradients, "
            "Adam)",
            game.agents * 3 * net * F32 * TRAINED_COPIES,
            (r.option("algo.hidden_sizes"),),
            "use smaller widths",
        ),
        Term(
            f"{game.agents} players' replay and reservoir buffers",
            game.agents * (replay * replay_row + reservoir * reservoir_row),
            (r.option("algo.replay_size"), r.option("algo.reservoir_size")),
            "use smaller buffers (algo.replay_size, algo.reservoir_size)",
        ),
    ]


def _deep_cfr_terms(r: _Reader, game: GameDims) -> list[Term]:
    hidden = r.counts("algo.hidden_sizes", [64])
    net = _mlp_params(game.obs, hidden, game.actions)
    # a row: observation, legal actions, a target per action, its iteration's weight
    row = F32 * game.obs + game.actions + F32 * game.actions + F32
    size = r.count("algo.memory_size", 100_000)
    return [
        Term(
            f"{game.agents} players' advantage and strategy networks (weights, gradients, Adam)",
            game.agents * 2 * net * F32 * TRAINED_COPIES,
            (r.option("algo.hidden_sizes"),),
            "use smaller widths",
        ),
        Term(
            f"{game.agents} players' advantage and strategy memories",
            game.agents * 2 * size * row,
            (r.option("algo.memory_size"),),
            "use a smaller algo.memory_size",
        ),
    ]


def _mlp_params(in_dim: int, hidden: list[int], out_dim: int) -> int:
    """Weights and biases of the layers ``in_dim -> hidden... -> out_dim``."""
    return sum((a + 1) * b for a, b in itertools.pairwise([in_dim, *hidden, out_dim]))


def _advice(first: list[str], game: GameDims) -> str:
    """What to do: "use" the ``first`` remedies, or a smaller game where options set its size."""
    parts = list(first)
    if game.size_options:
        parts.append(f"a smaller game ({', '.join(o.split('=')[0] for o in game.size_options)})")
    return "use " + _listed(tuple(parts), "or") if parts else Term.advice


# --------------------------------------------------------------------------- the games
def game_dims(cfg: DictConfig) -> GameDims:
    """Agents, observation and action sizes and the per-copy bytes of ``cfg.env``'s game, from
    its options alone (module docstring); unknown families count as PettingZoo games."""
    r = _Reader(cfg)
    family = r.get("env.family")
    if family == "matrix":
        rows, cols = _matrix_shape(r.get("env.payoffs"))
        states = rows * cols + 1  # memory-1 observations: the last joint action, or the start
        # per agent: observation, the one it ends on, legal actions; the joint state
        return GameDims(2, states, max(rows, cols), F32 * (2 * (2 * states + rows + cols) + 8))
    if family == "lq":
        n = _length(r.get("env.A"), 2)
        inputs = r.get("env.B")
        inputs = inputs if isinstance(inputs, dict) and inputs else {"p1": [[0]], "p2": [[0]]}
        widths = [_length(_first(m), 1) for m in inputs.values()]
        obs = n + 1
        return GameDims(len(inputs), obs, max(widths), F64 * (4 * n + 2 * sum(widths) + 8))
    if family == "bargain":
        quantities = r.counts("env.quantities", [7, 4, 1])
        actions = math.prod(q + 1 for q in quantities) + 2  # offers, ACCEPT, WALK
        obs = 2 * len(quantities) + 4 + actions
        # two viewers' observations (and the ones games end on) and legal actions; the deal
        per_copy = F32 * (4 * obs + 4 * len(quantities) + 16) + 2 * actions
        situations = (actions - 1) * r.count("env.rounds", 3) * 2
        tables = 2 * situations * obs * F32  # each viewer's observation per situation
        return GameDims(2, obs, actions, per_copy, tables, (r.option("env.quantities"),))
    if family == "mpe":
        name = str(r.get("env.name", ""))
        agents, landmarks = MPE_ENTITIES.get(name, MPE_ENTITIES["simple_spread"])(
            lambda key, default: r.count(f"env.{key}", default)
        )
        entities = agents + landmarks
        # own position and velocity; each landmark's offset; each other agent's offset,
        # velocity or message (mpe2's observations, give or take a few floats)
        obs = 2 + 2 * landmarks + 4 * agents
        per_copy = F64 * (12 * entities + MPE_PAIR_FLOATS * entities**2)
        per_copy += F32 * 3 * agents * obs  # observations, final ones, the batch the nets read
        backend = r.get("env.backend", "torch")
        if getattr(backend, "value", backend) == "mpe2":
            per_copy += PYTHON_COPY_BYTES
        sizes = tuple(r.option(f"env.{k}") for k in MPE_SIZE_KEYS if r.has(f"env.{k}"))
        return GameDims(agents, obs, MPE_ACTIONS, per_copy, 0, sizes)
    if family == "openspiel":
        players = re.search(r"players\s*=\s*(\d+)", str(r.get("env.game", "")))
        agents = int(players.group(1)) if players else 2
        copy = PYTHON_COPY_BYTES + F32 * 2 * agents * UNKNOWN_OBS
        return GameDims(agents, UNKNOWN_OBS, UNKNOWN_ACTIONS, copy)
    copy = PETTINGZOO_COPY_BYTES + F32 * 2 * 2 * UNKNOWN_OBS
    return GameDims(2, UNKNOWN_OBS, UNKNOWN_ACTIONS, copy)


def _matrix_shape(payoffs: Any) -> tuple[int, int]:
    """(rows, columns) of ``env.payoffs`` (rows of [row payoff, column payoff] pairs); 2×2 for
    the named games. The game checks the table itself."""
    if isinstance(payoffs, list) and payoffs and isinstance(payoffs[0], list) and payoffs[0]:
        return len(payoffs), len(payoffs[0])
    return 2, 2


def _length(value: Any, default: int) -> int:
    return len(value) if isinstance(value, list) and value else default


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else None


# --------------------------------------------------------------------------- the machine
def machine_memory() -> int:
    """Bytes this process may use: the machine's physical memory, or less where a cgroup
    (``memory.max``, v2; ``memory.limit_in_bytes``, v1) or ``RLIMIT_AS`` sets less."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" (v2) means none
            limits.append(int(text))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft > 0:
        limits.append(soft)
    return min(limits)


def check(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (one line) when :func:`estimate` exceeds :data:`FRACTION` of
    :func:`machine_memory`, naming the options of the largest term and how to shrink it."""
    machine = machine_memory()
    allowed = FRACTION * machine
    found = estimate(cfg)
    if found.total <= allowed:
        return
    # the largest part an option sets, unless it is a sliver next to Python and torch
    named = found.largest()
    top = named[0] if named and named[0].nbytes >= found.total / 10 else found.terms[0]
    where = f"this machine's {_size(machine)}"
    if top.nbytes > allowed and top.options:
        said = f"{_listed(top.options)} {_verb(top.options)} about {_size(top.nbytes)} for "
        said += f"{top.what}, more than {where}"
    else:
        said = f"the run needs about {_size(found.total)}, more than {where}; "
        said += f"{_size(top.nbytes)} of it for {top.what}"
        said += f", with {_listed(top.options)}" if top.options else ""
    raise ConfigError(f"{said}; {top.advice}")


# --------------------------------------------------------------------------- failures
def allocation_failure(err: BaseException, cfg: DictConfig) -> OutOfMemory | None:
    """An :class:`OutOfMemory` naming the options whose sizes drive memory (the two largest
    terms of :func:`estimate`) where ``err`` is an allocation failure: a ``MemoryError``,
    torch's ``OutOfMemoryError`` (CUDA), or torch's CPU allocator refusing; else ``None``."""
    import torch

    text = str(err).strip()
    if isinstance(err, torch.OutOfMemoryError):
        asked = re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]?i?B)", text)
        detail = f"the GPU could not allocate {asked.group(1)}" if asked else "the GPU is full"
    elif isinstance(err, MemoryError):
        detail = "Python could not allocate memory"
    elif isinstance(err, RuntimeError) and re.search(
        r"can't allocate memory|not enough memory|out of memory|DefaultCPUAllocator", text
    ):
        asked = re.search(r"allocate (\d+) bytes", text)
        size = f" {_size(int(asked.group(1)))}" if asked else ""
        detail = f"an allocation of{size} failed" if size else "an allocation failed"
    else:
        return None
    said = f"the run ran out of memory ({detail})"
    try:
        largest = estimate(cfg).largest(2)
    except Exception:  # the message must not fail where the run already has
        largest = []
    if largest:
        options = tuple(o for t in largest for o in t.options)
        parts = tuple(t.what.split(" (")[0] for t in largest)
        said += f" with {_listed(options)}, the sizes behind its largest parts "
        said += f"({_listed(parts)}); make them smaller or use"
    else:
        said += "; use"
    return OutOfMemory(
        f"{said} a machine with more memory (this one has {_size(machine_memory())})"
    )


# --------------------------------------------------------------------------- reading
class _Reader:
    """Plain values of ``cfg`` by dotted path; a missing or unreadable option is its default
    (:func:`dgsolve.validation.validate` has already refused bad values)."""

    _ABSENT = object()

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def get(self, path: str, default: Any = None) -> Any:
        try:
            value = OmegaConf.select(self.cfg, path, default=self._ABSENT)
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
        except OmegaConfBaseException:
            return default
        return default if value is self._ABSENT or value is None else value

    def has(self, path: str) -> bool:
        return self.get(path, self._ABSENT) is not self._ABSENT

    def count(self, path: str, default: int) -> int:
        value = self.get(path, default)
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    def counts(self, path: str, default: list[int]) -> list[int]:
        value = self.get(path, default)
        ok = isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        return value if ok else default

    def option(self, path: str) -> str:
        """``path=value`` as on the command line."""
        value = self.get(path)
        if isinstance(value, list):
            return f"{path}=[{', '.join(str(v) for v in value)}]"
        return f"{path}={'null' if value is None else value}"


# --------------------------------------------------------------------------- wording
def _size(nbytes: float) -> str:
    """Bytes in decimal units, e.g. ``640 GB``, ``3.2 GB``, ``14 MB``, ``2 kB``."""
    gb = nbytes / 1e9
    if nbytes < 1e3:
        return f"{round(nbytes)} bytes"
    if nbytes < 1e6:
        return f"{round(nbytes / 1e3)} kB"
    if gb < 0.1:
        return f"{round(nbytes / 1e6)} MB"
    if gb < 10:
        return f"{gb:.1f} GB"
    if gb < 1e6:
        return f"{gb:,.0f} GB"
    return f"{gb:.1e} GB"


def _listed(items: tuple[str, ...], conjunction: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c`` (duplicates once)."""
    unique = list(dict.fromkeys(items))
    if len(unique) == 1:
        return unique[0]
    return f"{', '.join(unique[:-1])} {conjunction} {unique[-1]}"


def _verb(options: tuple[str, ...]) -> str:
    return "needs" if len(set(options)) == 1 else "need"
