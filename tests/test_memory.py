"""Sizes that cannot fit are refused at the door; an allocation failure is one line (issue 25).

The machine's memory is injected (``dgsolve.memory.machine_memory``), so every refusal here is
checked in-process, the same on any host: a 24 GB workstation and a 4 GB laptop.
"""

from __future__ import annotations

import functools
import io
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dgsolve import memory
from dgsolve import run as run_module
from dgsolve.cli import config_dir
from dgsolve.errors import ConfigError, OutOfMemory
from dgsolve.run import run
from dgsolve.solvers.ppo import PPOSolver
from dgsolve.validation import validate
from tests.conftest import TINY, compose_config
from tests.test_cli import dgsolve

GB = 10**9
#: what torch 2.x's CPU allocator raises when the operating system refuses an allocation
CPU_ALLOCATOR = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 40000000000000 bytes. Error code 12 (Cannot allocate memory)"
)
MATRIX = [*TINY, "env=matrix", "algo=nash_ppo", "task.render=false"]


@functools.cache
def composed(overrides: tuple[str, ...]):
    return compose_config(list(overrides))


@pytest.fixture
def machine(monkeypatch):
    """``machine(n)`` makes this machine have ``n`` bytes of memory, for the test."""

    def set_size(nbytes: int) -> None:
        monkeypatch.setattr(memory, "machine_memory", lambda: nbytes)

    return set_size


def refusal(overrides: tuple[str, ...]) -> str:
    with pytest.raises(ConfigError) as err:
        validate(composed(overrides))
    message = str(err.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- refused at the door
#: (overrides, the options the message names first, the part of the run it names): the three
#: cases of the issue that ended in allocation tracebacks or the kernel's OOM kill
TOO_BIG = [
    (
        ("algo.hidden_sizes=[100000,100000]",),
        "algo.hidden_sizes=[100000, 100000] needs about 960 GB",
        "for 3 agents' networks (weights, gradients, Adam)",
    ),
    (
        ("env=matrix", "env.num_envs=100000000"),
        "env.num_envs=100000000, algo.num_steps=1, algo.num_minibatches=1 and "
        "algo.hidden_sizes=[64, 64] need about 323 GB",
        "for one minibatch's activations (100,000,000 rows)",
    ),
    (
        ("env=bargain", "env.num_envs=100000000"),
        "env.num_envs=100000000, algo.num_steps=8, algo.num_minibatches=4 and "
        "algo.hidden_sizes=[256, 256] need about 3,098 GB",
        "for one minibatch's activations (200,000,000 rows)",
    ),
    (
        ("env=simple_spread", "env.N=1000"),
        "env.N=1000, env.num_envs=512 and algo.num_steps=25 need about 618 GB",
        "for the rollout buffers (1,000 agents × about 12,062 floats per step and copy)",
    ),
]


@pytest.mark.parametrize("overrides,names,part", TOO_BIG, ids=[" ".join(o) for o, _, _ in TOO_BIG])
def test_sizes_that_cannot_fit_are_refused_in_one_line(machine, overrides, names, part):
    machine(24 * GB)
    message = refusal(overrides)
    assert message.startswith(f"{names} {part}, more than this machine's 24 GB; use ")


def test_the_refusal_says_how_to_shrink_the_largest_part(machine):
    machine(24 * GB)
    assert refusal(TOO_BIG[0][0]).endswith("; use smaller widths")
    assert refusal(("env=simple_spread", "env.N=1000")).endswith(
        "; use fewer copies (env.num_envs), shorter rollouts (algo.num_steps) or a smaller game "
        "(env.N)"
    )


def test_a_run_too_big_in_all_names_its_largest_part(machine):
    machine(600 * 10**6)  # bargaining PPO: about 0.8 GB, no part above 0.3 GB
    assert refusal(("env=bargain", "algo=ppo")) == (
        "the run needs about 0.8 GB, more than this machine's 0.6 GB; 0.3 GB of it for one "
        "minibatch's activations (16,384 rows), with env.num_envs=4096, algo.num_steps=8, "
        "algo.num_minibatches=4 and algo.hidden_sizes=[256, 256]; use more minibatches "
        "(algo.num_minibatches), fewer copies (env.num_envs), shorter rollouts (algo.num_steps) "
        "or a smaller game (env.quantities)"
    )


#: (overrides, what the refusal names): one per kind of term
EVERY_TERM = [
    (("env=bargain", "algo=nfsp", "algo.reservoir_size=100000000"), "algo.replay_size=500000"),
    (("env=bargain", "algo=deep_cfr", "algo.memory_size=100000000"), "algo.memory_size="),
    (("env=bargain", "algo=psro", "algo.max_policies=100000000"), "algo.max_policies="),
    (("env=simple_world_comm", "env.num_food=3000"), "env.num_food=3000"),
    (("env=bargain", "env.quantities=[40,40,40]"), "env.quantities=[40, 40, 40]"),
]


@pytest.mark.parametrize("overrides,says", EVERY_TERM, ids=[o[-1] for o, _ in EVERY_TERM])
def test_every_family_of_terms_can_refuse(machine, overrides, says):
    machine(24 * GB)
    assert says in refusal(overrides)


def test_what_fits_the_machine_passes_and_what_does_not_is_refused(machine):
    cfg = composed(("env=bargain", "algo=deep_cfr"))
    need = memory.estimate(cfg).total
    machine(need)
    validate(cfg)
    machine(need - 1)
    with pytest.raises(ConfigError, match="more than this machine's"):
        validate(cfg)


# --------------------------------------------------------------------------- shipped configs pass
def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


#: the algorithms each family is run with (conf/env/*.yaml's tuned sections, README)
USUAL = {
    "bargain": ["ppo", "nash_ppo", "deep_cfr", "nfsp", "psro", "ex2psro", "fcp"],
    "openspiel": ["cfr", "deep_cfr", "nfsp", "psro", "exact", "ppo"],
    "matrix": ["nash_ppo", "psro", "ex2psro", "exact"],
    "lq": ["nash_ppo", "mappo", "exact"],
    "pettingzoo": ["nash_ppo", "nfsp"],
}
SHIPPED = [(f"env={env}",) for env in options("env")]  # with the default algo
SHIPPED += [(f"env={env}", f"algo={a}") for env in options("env") for a in USUAL.get(env, [])]
SHIPPED += [(f"env={env}", "algo=mappo") for env in options("env")]  # a critic on all agents
SHIPPED += [(f"+experiment={o}",) for o in options("experiment")]


@pytest.mark.parametrize("overrides", sorted(set(SHIPPED)), ids=" ".join)
def test_shipped_configs_fit_a_workstation_and_a_laptop(machine, overrides):
    for size in (24 * GB, 4 * GB):
        machine(size)
        validate(composed(overrides))


def test_the_largest_shipped_estimate_is_the_deep_cfr_memories():
    # bargaining's Deep CFR keeps four reservoirs of 1,000,000 rows of 782 bytes: 3.1 GB
    found = memory.estimate(composed(("env=bargain", "algo=deep_cfr")))
    assert 3.5 * GB < found.total < 4 * GB
    assert found.largest()[0].what == "2 players' advantage and strategy memories"


# --------------------------------------------------------------------------- the estimate's terms
def test_network_term_is_four_copies_of_every_parameter():
    cfg = composed(("env=matrix", "algo=nash_ppo", "algo.hidden_sizes=[8]"))
    # matrix: 5 observation floats (memory-1 states of a 2x2 game), 2 actions; actor 5-8-2 and
    # critic 5-8-1 per agent
    params = (6 * 8 + 9 * 2) + (6 * 8 + 9 * 1)
    networks = next(t for t in memory.estimate(cfg).terms if "networks" in t.what)
    assert networks.nbytes == 2 * params * 4 * 4


def test_mpe_game_state_grows_with_the_square_of_the_entities():
    def per_copy(n: int) -> int:
        return memory.game_dims(composed(("env=simple_spread", f"env.N={n}"))).copy_bytes

    assert 3.5 < per_copy(200) / per_copy(100) < 4.1


def test_bargaining_observations_follow_the_quantities():
    dims = memory.game_dims(composed(("env=bargain",)))
    assert (dims.agents, dims.obs, dims.actions) == (2, 92, 82)  # BargainRules for [7, 4, 1]


# --------------------------------------------------------------------------- the machine
def test_machine_memory_honours_a_cgroup_limit(monkeypatch):
    real_open = open

    def fake_open(path, *args, **kwargs):
        if str(path) == "/sys/fs/cgroup/memory.max":
            return io.StringIO("2147483648\n")
        if str(path).startswith("/sys/fs/cgroup/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(memory, "open", fake_open, raising=False)
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY,) * 2)
    assert memory.machine_memory() == 2**31


def test_machine_memory_honours_rlimit_as_and_ignores_an_unlimited_cgroup(monkeypatch):
    monkeypatch.setattr(memory, "open", lambda *a, **k: io.StringIO("max\n"), raising=False)
    monkeypatch.setattr(resource, "getrlimit", lambda _: (3 * 2**30, resource.RLIM_INFINITY))
    assert memory.machine_memory() == 3 * 2**30
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY,) * 2)
    assert memory.machine_memory() > 3 * 2**30  # the physical memory of any test machine


# --------------------------------------------------------------------------- allocation failures
@pytest.mark.parametrize(
    "err,detail",
    [
        (RuntimeError(CPU_ALLOCATOR), "an allocation of 40,000 GB failed"),
        (MemoryError(), "Python could not allocate memory"),
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0)"),
            "the GPU could not allocate 20.00 GiB",
        ),
    ],
    ids=["cpu-allocator", "MemoryError", "cuda"],
)
def test_an_allocation_failure_becomes_one_line_naming_the_sizes(machine, err, detail):
    machine(24 * GB)
    oom = memory.allocation_failure(err, composed(("env=simple_spread", "env.N=10")))
    assert isinstance(oom, OutOfMemory) and oom.exit_code == 1
    assert str(oom) == (
        f"the run ran out of memory ({detail}) with env.N=10, env.num_envs=512 and "
        "algo.num_steps=25, the sizes behind its largest parts (the rollout buffers and 512 "
        "copies of the game); make them smaller or use a machine with more memory (this one "
        "has 24 GB)"
    )


def test_other_runtime_errors_are_not_allocation_failures():
    assert memory.allocation_failure(RuntimeError("shape mismatch"), composed(())) is None


def test_an_allocation_failure_mid_run_is_out_of_memory_and_recorded_failed(
    make_cfg, tmp_path, monkeypatch
):
    def allocation_fails(self, *args):
        raise RuntimeError(CPU_ALLOCATOR)

    recorded = []
    real_record = run_module.record_run

    def record(path, fallback=None, **kwargs):
        recorded.append(fallback)
        return real_record(path, fallback=fallback, **kwargs)

    monkeypatch.setattr(PPOSolver, "_minibatch_loss", allocation_fails)
    monkeypatch.setattr(run_module, "record_run", record)
    with pytest.raises(OutOfMemory) as info:
        run(make_cfg(MATRIX), tmp_path / "run")
    message = str(info.value)
    assert info.value.exit_code == 1 and "\n" not in message
    assert message.startswith("the run ran out of memory (an allocation of 40,000 GB failed)")
    assert "algo.hidden_sizes=[64, 64]" in message and "env.num_envs=2" in message
    assert info.value.__context__ is None  # the failed allocation's frames are not kept
    assert recorded == ["running", "failed"]


def test_a_refused_run_leaves_no_directory(make_cfg, tmp_path, machine):
    machine(100 * 10**6)  # below Python and torch themselves: a tiny run is refused too
    with pytest.raises(ConfigError) as err:
        run(make_cfg(MATRIX), tmp_path / "run")
    assert str(err.value) == (
        "the run needs about 0.5 GB, more than this machine's 0.1 GB; 0.5 GB of it for Python, "
        "torch and dgsolve; use a machine with more memory"
    )
    assert not (tmp_path / "run").exists()


def address_space_of_8_gib() -> None:
    """A subprocess's RLIMIT_AS: the machine size the memory check reads, and a bound that
    makes an allocation past it fail at once rather than swap."""
    resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))


def test_the_command_refuses_at_the_door_and_fails_in_one_line(tmp_path):
    out = tmp_path / "run"
    # a million-wide layer squared: 48 TB of networks
    proc = dgsolve(
        *MATRIX,
        "algo.hidden_sizes=[1000000,1000000]",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
        preexec_fn=address_space_of_8_gib,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("dgsolve: error: algo.hidden_sizes=[1000000, 1000000] needs about")
    assert "more than this machine's 8.6 GB; use smaller widths" in lines[0]
    assert not out.exists()
    script = (
        "import sys\n"
        "from dgsolve.solvers.ppo import PPOSolver\n"
        "def fail(self, *a): raise MemoryError()\n"
        "PPOSolver._minibatch_loss = fail\n"
        "from dgsolve.cli import entry\n"
        f"sys.argv = ['dgsolve', *{MATRIX!r}, 'hydra.run.dir={out}']\n"
        "entry()\n"
    )
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    env.pop("HYDRA_FULL_ERROR", None)  # set, it would turn one-line errors into tracebacks
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        preexec_fn=address_space_of_8_gib,
    )
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("dgsolve: error: the run ran out of memory (Python could not")
