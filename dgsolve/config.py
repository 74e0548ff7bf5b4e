"""Typed schemas for every config group, registered in Hydra's ConfigStore.

:func:`register_configs` stores each schema at the root of the ConfigStore, as
``schema_<group>_<name>`` (``schema_algo_ppo``, ``schema_env_lq``; ``schema_hierarchy``,
``schema_hardware`` and ``schema_config`` for the one-schema groups and the root), and never
inside a group, so a schema is not an option (``algo=schema_algo_ppo`` is an unknown choice like
any other). Each YAML option in ``conf/<group>/`` names its schema with an absolute default:
``- /schema_env_lq`` in a group's own package, ``- /schema_algo_ppo@algo`` from the ``_global_``
algo files. An unknown key or a value of the wrong type then fails when Hydra composes the config,
before any work starts.

Mappings whose keys are data rather than option names (a PettingZoo factory's ``kwargs``, the LQ
matrices keyed by agent) are declared with :func:`open_mapping` and left out of Hydra's struct mode,
so ``env.kwargs.max_cycles=60`` or ``env.R.p1.p2=[[0.17]]`` adds a key without ``+``; the game
checks their keys when it is built. Every other node stays closed, a typo included.

The library itself only reads attributes from these objects; it works the same with a plain
``OmegaConf.structured(...)`` config built from Python.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from dgsolve.games.bargain.config import BargainConfig
from dgsolve.games.lq import LQConfig
from dgsolve.games.matrix import MatrixConfig
from dgsolve.games.openspiel import OpenSpielConfig
from dgsolve.search import Leaf, Root

#: the dataclass field metadata that marks a mapping as open (see :func:`open_mapping`)
OPEN_KEYS = "dgsolve.open_keys"


def open_mapping(default: dict | str = MISSING) -> Any:
    """A mapping field that takes new keys from the command line without Hydra's ``+``: its keys
    are data (agent names, a factory's keyword arguments) that the game checks, not options."""
    metadata = {OPEN_KEYS: True}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# --------------------------------------------------------------------------- hardware
class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class HardwareConfig:
    device: Device = Device.auto
    threads: int = 0


# --------------------------------------------------------------------------- task
@dataclass
class TaskConfig:
    name: str = MISSING
    #: the value the Hydra entry returns (for sweepers such as Optuna): a dotted path into the
    #: run's summary.json; null takes the default of the task and game family
    #: (:data:`dgsolve.results.objective.DEFAULT_OBJECTIVES`)
    objective: str | None = None


@dataclass
class TrainTaskConfig(TaskConfig):
    name: str = "train"
    eval_episodes: int = 20
    eval_every: int = 0
    eval_games: int = 20_000
    checkpoint_every: int = 10
    progress: bool = True
    render: bool = True
    eq_tolerance: float | None = None


@dataclass
class CrossplayTaskConfig(TaskConfig):
    name: str = "crossplay"
    policies: list[str] = field(
        default_factory=lambda: ["random", "always_walk", "greedy", "fair_split"]
    )
    games: int = 20_000
    progress: bool = False


@dataclass
class ExploitTaskConfig(TaskConfig):
    name: str = "exploit"
    target: str | None = None
    br_timesteps: int = 200_000
    eval_games: int = 10_000
    br_greedy: bool = True
    progress: bool = True


@dataclass
class SearchTaskConfig(TaskConfig):
    name: str = "search"
    target: str | None = None
    simulations: list[int] = field(default_factory=lambda: [0, 16, 64])
    root: Root = Root.puct
    leaf: Leaf = Leaf.critic
    c_puct: float = 1.25
    considered: int = 16
    c_visit: float = 50.0
    c_scale: float = 0.1
    games: int = 200
    greedy: bool = False
    exact: bool = True
    progress: bool = True


# --------------------------------------------------------------------------- hierarchy
class HierarchyMode(str, Enum):
    simultaneous = "simultaneous"
    leader_follower = "leader_follower"


class FollowerObserves(str, Enum):
    action = "action"
    queries = "queries"


class Commitment(str, Enum):
    auto = "auto"
    mixed = "mixed"
    pure = "pure"


@dataclass
class HierarchyConfig:
    mode: HierarchyMode = HierarchyMode.simultaneous
    action_sequence: list[list[str]] | None = None
    follower_observes: FollowerObserves = FollowerObserves.action
    commitment: Commitment = Commitment.auto


# --------------------------------------------------------------------------- env
@dataclass
class EnvConfig:
    name: str = MISSING
    family: str = MISSING
    num_envs: int = 8
    leader: str | None = None
    render: bool = False
    ppo: dict[str, Any] = field(default_factory=dict)


@dataclass
class PettingZooEnvConfig(EnvConfig):
    family: str = "pettingzoo"
    factory: str = MISSING
    kwargs: dict[str, Any] = open_mapping({})
    max_cycles: int | None = None
    wrap_aec: bool = False


class MPEBackend(str, Enum):
    torch = "torch"  # dgsolve.games.mpe: every copy in tensors on hardware's device
    mpe2 = "mpe2"  # mpe2 itself through the PettingZoo adapter (the reference)


@dataclass
class MPEEnvConfig(EnvConfig):
    family: str = "mpe"
    factory: str = MISSING
    backend: MPEBackend = MPEBackend.torch
    max_cycles: int = 25
    continuous_actions: bool = False
    render: bool = True
    dynamic_rescaling: bool = True
    #: episodes of the final evaluation (task.eval_episodes reads it): many, since batched
    #: torch copies make them cheap and a return's spread over episodes is wide
    eval_episodes: int = 500


@dataclass
class SimpleAdversaryConfig(MPEEnvConfig):
    N: int = 2


@dataclass
class SimpleSpreadConfig(MPEEnvConfig):
    N: int = 3
    local_ratio: float = 0.5


@dataclass
class SimpleTagConfig(MPEEnvConfig):
    num_good: int = 1
    num_adversaries: int = 3
    num_obstacles: int = 2


@dataclass
class SimpleReferenceConfig(MPEEnvConfig):
    local_ratio: float = 0.5


@dataclass
class SimpleWorldCommConfig(MPEEnvConfig):
    num_good: int = 2
    num_adversaries: int = 4
    num_obstacles: int = 1
    num_food: int = 2
    num_forests: int = 2


@dataclass
class MatrixEnvConfig(MatrixConfig):
    name: str = "matrix"
    ppo: dict[str, Any] = field(default_factory=dict)
    psro: dict[str, Any] = field(default_factory=dict)


@dataclass
class LQEnvConfig(LQConfig):
    """The LQ schema leaves the matrices to ``conf/env/lq.yaml``: a structured default would be
    merged key by key with the YAML and keep agents the user renamed."""

    name: str = "lq"
    ppo: dict[str, Any] = field(default_factory=dict)
    A: list = MISSING
    B: dict = open_mapping()
    Q: dict = open_mapping()
    R: dict = open_mapping()
    #: Any, not ``dict | None``: OmegaConf cannot merge a mapping given on the command line
    #: (``env.Qf={p1: ..., p2: ...}``) into a typed mapping that is null; the game checks it
    Qf: Any = None
    x0_mean: list = MISSING


@dataclass
class BargainEnvConfig(BargainConfig):
    name: str = "bargain"
    ppo: dict[str, Any] = field(default_factory=dict)
    deep_cfr: dict[str, Any] = field(default_factory=dict)
    nfsp: dict[str, Any] = field(default_factory=dict)
    psro: dict[str, Any] = field(default_factory=dict)
    ex2psro: dict[str, Any] = field(default_factory=dict)
    fcp: dict[str, Any] = field(default_factory=dict)


@dataclass
class OpenSpielEnvConfig(OpenSpielConfig):
    """Any OpenSpiel game by load string; the game module does not import pyspiel until a game
    is built, so the schema exists without the ``openspiel`` extra."""

    name: str = "openspiel"
    ppo: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- algo
class PolicyForm(str, Enum):
    mlp = "mlp"
    linear = "linear"


class Optimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"


class Network(str, Enum):
    mlp = "mlp"
    transformer = "transformer"


@dataclass
class AlgoConfig:
    name: str = MISSING
    solver: str = MISSING


@dataclass
class PPOConfig(AlgoConfig):
    solver: str = "ppo"
    total_timesteps: int = 200_000
    num_steps: int = 128
    num_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 3e-4
    anneal_lr: bool = True
    gamma: float | None = None
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = True
    norm_adv: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    share_policy: bool = False
    follower_updates_per_leader: int = 1
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    policy: PolicyForm = PolicyForm.mlp
    network: Network = Network.mlp
    centralised_critic: bool = False
    leader_probe_rate: float = 0.1
    leader_warmup: float = 0.0
    follower_restarts: int = 0
    commitment_noise: float = 1.0
    commitment_noise_final: float = 0.05


@dataclass
class ExactConfig(AlgoConfig):
    name: str = "exact"
    solver: str = "exact"


@dataclass
class CFRConfig(AlgoConfig):
    name: str = "cfr"
    solver: str = "cfr"
    iterations: int = 1000
    iterations_per_step: int = 50


@dataclass
class DeepCFRConfig(AlgoConfig):
    name: str = "deep_cfr"
    solver: str = "deep_cfr"
    iterations: int = 100
    traversals: int = 375
    advantage_steps: int = 375
    policy_steps: int = 2500
    batch_size: int = 256
    memory_size: int = 100_000
    lr: float = 1e-3
    hidden_sizes: list[int] = field(default_factory=lambda: [64])
    layer_norm: bool = True
    sampled_actions: int | None = None


@dataclass
class NFSPConfig(AlgoConfig):
    name: str = "nfsp"
    solver: str = "nfsp"
    total_timesteps: int = 40_000
    steps_per_iteration: int = 10_000
    anticipatory: float = 0.1
    hidden_sizes: list[int] = field(default_factory=lambda: [128])
    replay_size: int = 200_000
    reservoir_size: int = 2_000_000
    batch_size: int = 128
    rl_lr: float = 0.001
    sl_lr: float = 0.001
    train_every: int = 64
    target_update: int = 300
    epsilon_start: float = 0.06
    epsilon_end: float = 0.001
    optimizer: Optimizer = Optimizer.adam


class Oracle(str, Enum):
    exact = "exact"
    ppo = "ppo"


@dataclass
class PSROLearnerConfig:
    """The PPO learner of each best response under ``algo.oracle=ppo`` (PPOConfig's fields)."""

    num_steps: int = 16
    num_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 3e-4
    ent_coef: float = 0.01
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])


@dataclass
class PSROConfig(AlgoConfig):
    name: str = "psro"
    solver: str = "psro"
    oracle: Oracle = Oracle.exact
    iterations: int = 300
    max_policies: int = 300
    meta_solver: str = "nash"
    sims_per_entry: int | None = None
    br_steps: int = 50_000
    ppo: PSROLearnerConfig = field(default_factory=PSROLearnerConfig)


@dataclass
class FCPConfig(AlgoConfig):
    """Fictitious Co-Play; ``ppo`` is the learner of every partner and FCP agent."""

    name: str = "fcp"
    solver: str = "fcp"
    population_size: int = 4
    snapshot_interval: int | None = 50
    prioritized: bool = False
    priority_temperature: float = 1.0
    heldout_partners: int = 2
    partner_steps: int = 50_000
    fcp_steps: int = 50_000
    eval_games: int = 1024
    ppo: PSROLearnerConfig = field(default_factory=PSROLearnerConfig)


class WelfareFn(str, Enum):
    utilitarian = "utilitarian"
    nash = "nash"
    egalitarian = "egalitarian"


@dataclass
class Ex2PSROConfig(PSROConfig):
    name: str = "ex2psro"
    solver: str = "ex2psro"
    oracle: Oracle = Oracle.ppo
    welfare_fn: WelfareFn = WelfareFn.utilitarian
    exploration_top_k: int = 3
    imitation_top_fraction: float = 0.1
    imitation_steps: int = 8192
    imitation_epochs: int = 5
    imitation_lr: float = 1e-3
    kl_coef: float = 0.1
    adaptive_kl: bool = True
    kl_target: float = 0.01


# --------------------------------------------------------------------------- logging
@dataclass
class LoggerConfig:
    #: mirror the TensorBoard scalars and the config to Weights & Biases (imported only then;
    #: WANDB_MODE=offline keeps it off the network)
    wandb: bool = False
    wandb_project: str = "dgsolve"
    wandb_entity: str | None = None
    #: record the run in the results index (``dgsolve-results``); the index file is
    #: $DGSOLVE_INDEX, else ~/.local/share/dgsolve/index.sqlite ($XDG_DATA_HOME)
    index: bool = True


# --------------------------------------------------------------------------- root
@dataclass
class DGSolveConfig:
    seed: int = 0
    resume: str | None = None
    task: Any = MISSING
    env: Any = MISSING
    algo: Any = MISSING
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


SCHEMAS: dict[str, dict[str, type]] = {
    "env": {
        "pettingzoo": PettingZooEnvConfig,
        "mpe": MPEEnvConfig,
        "simple_adversary": SimpleAdversaryConfig,
        "simple_spread": SimpleSpreadConfig,
        "simple_tag": SimpleTagConfig,
        "simple_reference": SimpleReferenceConfig,
        "simple_world_comm": SimpleWorldCommConfig,
        "matrix": MatrixEnvConfig,
        "lq": LQEnvConfig,
        "bargain": BargainEnvConfig,
        "openspiel": OpenSpielEnvConfig,
    },
    "algo": {
        "ppo": PPOConfig,
        "exact": ExactConfig,
        "cfr": CFRConfig,
        "deep_cfr": DeepCFRConfig,
        "nfsp": NFSPConfig,
        "psro": PSROConfig,
        "fcp": FCPConfig,
        "ex2psro": Ex2PSROConfig,
    },
    "hierarchy": {"hierarchy": HierarchyConfig},
    "hardware": {"hardware": HardwareConfig},
    "task": {
        "train": TrainTaskConfig,
        "crossplay": CrossplayTaskConfig,
        "exploit": ExploitTaskConfig,
        "search": SearchTaskConfig,
    },
}


def schema_name(group: str, name: str) -> str:
    """The ConfigStore name of a schema: ``schema_<group>_<name>``, or ``schema_<group>`` for
    the groups with one schema (``hierarchy``, ``hardware``)."""
    return f"schema_{group}" if name == group else f"schema_{group}_{name}"


def structured_schema(schema: type) -> DictConfig:
    """``schema`` as a DictConfig whose :func:`open_mapping` fields are out of struct mode (the flag
    stays with the node through Hydra's merges, and Hydra sets struct mode on the root only)."""
    node = OmegaConf.structured(schema)
    for f in dataclasses.fields(schema):
        if f.metadata.get(OPEN_KEYS):
            OmegaConf.set_struct(node._get_node(f.name), False)
    return node


def config_dir() -> str:
    """``conf/`` shipped inside the package (wheel) or beside it (source checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"dgsolve's conf/ directory is missing (looked in {here})")


@functools.cache
def trusted_factories() -> frozenset[str]:
    """The ``env.factory`` values of dgsolve's own env configs (``conf/env/*.yaml``): the code a
    config from elsewhere may name without the caller confirming it."""
    import yaml

    out = set()
    for path in sorted((Path(config_dir()) / "env").glob("*.yaml")):
        factory = (yaml.safe_load(path.read_text()) or {}).get("factory")
        if factory:
            out.add(str(factory))
    return frozenset(out)


def register_configs() -> None:
    """Store every schema at the root of the ConfigStore (:func:`schema_name`; the root config
    as ``schema_config``), and register the ``dgsolve.prod`` resolver (a product of numbers, for
    budgets in configs)."""
    OmegaConf.register_new_resolver("dgsolve.prod", lambda *xs: math.prod(xs), replace=True)
    cs = ConfigStore.instance()
    cs.store(name="schema_config", node=DGSolveConfig)
    for group, schemas in SCHEMAS.items():
        for name, schema in schemas.items():
            cs.store(name=schema_name(group, name), node=structured_schema(schema))
