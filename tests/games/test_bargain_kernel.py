"""The Triton step kernel against the torch reference, step for step, on seeded irregular batches.

On the CPU the kernel runs in Triton's interpreter (backend ``triton_interpret``), in this process
and once more in a subprocess that exports ``TRITON_INTERPRET=1`` before Python starts, the way
Triton documents it. The interpreter is slow, so batches stay small. With a GPU, the compiled
kernel is compared on a larger batch (``gpu`` marker).
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dgsolve.games.bargain import BargainConfig, BargainGame, make_bargain
from dgsolve.games.bargain.baselines import RandomBaseline
from dgsolve.games.bargain.kernel import TritonBargainGame
from dgsolve.games.base import TimeStep

ROOT = Path(__file__).resolve().parents[2]
FIELDS = ("obs", "reward", "legal", "acting", "final_obs")


def assert_same(ref: TimeStep, other: TimeStep, where: str) -> None:
    for field in FIELDS:
        for agent in ("p1", "p2"):
            x, y = getattr(ref, field)[agent], getattr(other, field)[agent]
            assert x.dtype == y.dtype and torch.equal(x, y.cpu()), f"{field}[{agent}] at {where}"
    assert torch.equal(ref.terminated, other.terminated.cpu()), f"terminated at {where}"
    assert torch.equal(ref.truncated, other.truncated.cpu()), f"truncated at {where}"


def compare(cfg: BargainConfig, other: BargainGame, steps: int, seed: int) -> int:
    """Step the reference and ``other`` with the same actions; returns games finished."""
    ref = BargainGame(cfg, "cpu")
    b, dev = cfg.num_envs, other.device
    ts = ref.reset(seed=seed)
    assert_same(ts, other.reset(seed=seed), "reset")
    legal_policy = RandomBaseline(ref.rules, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    finished = 0
    for t in range(steps):
        if t % 3 == 2:  # every third step: anything, illegal and out-of-range ids included
            actions = {a: torch.randint(-2, ref.rules.num_actions + 2, (b,), generator=gen)
                       for a in ref.agents}  # fmt: skip
        else:
            actions = {a: legal_policy.act(ts.obs[a], ts.legal[a]) for a in ref.agents}
        ts = ref.step(actions)
        got = other.step({a: x.to(dev) for a, x in actions.items()})
        assert_same(ts, got, f"step {t}")
        assert torch.equal(ref.last_outcome, other.last_outcome.cpu()), f"outcome at step {t}"
        finished += int(ts.terminated.sum())
    for name, value in ref.clone_state().items():
        if name != "generator":
            assert torch.equal(value, other.clone_state()[name].cpu()), name
    return finished


@pytest.mark.parametrize("num_envs", [1, 7, 33])
def test_interpreted_kernel_matches_reference(num_envs):
    cfg = BargainConfig(num_envs=num_envs, backend="triton_interpret")
    game = make_bargain(cfg)
    assert isinstance(game, TritonBargainGame) and game.interpret
    game.block = 16  # several programs, the last one partly masked
    assert compare(cfg, game, steps=24, seed=num_envs) > 0


def test_interpreted_kernel_matches_reference_on_other_rules():
    cfg = BargainConfig(
        num_envs=9,
        backend="triton_interpret",
        quantities=[2, 3],
        rounds=2,
        max_value=10,
        discount=0.9,
        outside_offer="none",
    )
    assert compare(cfg, make_bargain(cfg), steps=12, seed=3) > 0


def test_whole_batch_path_matches_too():
    """The GPU's way (no listing of ended games, every next deal drawn), run on the CPU."""
    cfg = BargainConfig(num_envs=20, backend="triton_interpret")
    game = make_bargain(cfg)
    game.list_ended = False
    reference = BargainGame(cfg)
    reference.list_ended = False
    ts = reference.reset(seed=9)
    assert_same(ts, game.reset(seed=9), "reset")
    policy = RandomBaseline(reference.rules, seed=9)
    for t in range(12):
        actions = {a: policy.act(ts.obs[a], ts.legal[a]) for a in reference.agents}
        ts = reference.step(actions)
        assert_same(ts, game.step(actions), f"step {t}")


def test_kernel_matches_reference_with_triton_interpret_exported():
    """The documented setup: TRITON_INTERPRET=1 in the environment before triton is imported."""
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    test = f"{Path(__file__).resolve()}::test_interpreted_kernel_matches_reference[7]"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_kernel_compiles_for_a_gpu_without_one():
    """Triton compiles the kernel for an H100 (sm_90) with no GPU present: IEEE divisions only
    and no fused multiply-adds, so its floats can match torch's exactly."""
    backends = pytest.importorskip("triton.backends")
    if "nvidia" not in backends.backends:
        pytest.skip("triton has no CUDA backend here")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from dgsolve.games.bargain.kernel import _bargain_step, _kernel

    pointers = {
        "deal_ptr": "*i32", "situation_ptr": "*i32", "next_deal_ptr": "*i32",
        "act1_ptr": "*i64", "act2_ptr": "*i64", "quantities_ptr": "*i32", "strides_ptr": "*i32",
        "discounts_ptr": "*fp32", "obs_ptr": "*fp32", "final_ptr": "*fp32", "legal_ptr": "*u8",
        "reward_ptr": "*fp32", "done_ptr": "*u8", "outcome_ptr": "*i8", "B": "i32",
    }  # fmt: skip
    meta = {"K": 3, "NUM_OFFERS": 80, "A_PAD": 128, "ROUNDS": 3, "MAX_VALUE": 100, "BLOCK": 64}
    names = list(inspect.signature(_bargain_step).parameters)
    assert set(names) == set(pointers) | set(meta)
    source = ASTSource(
        fn=_kernel(False),
        signature={n: pointers.get(n, "constexpr") for n in names},
        constexprs={(names.index(n),): v for n, v in meta.items()},
    )
    compiled = triton.compile(
        source, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False}
    )
    ptx = compiled.asm["ptx"]
    assert "div.rn.f32" in ptx and "div.full.f32" not in ptx and "fma.rn.f32" not in ptx


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_kernel_matches_reference_on_gpu():
    # the same draws need the same device: the reference also runs on the GPU here
    for num_envs in (1, 1000, 4099):
        cfg = BargainConfig(num_envs=num_envs, backend="triton")
        triton_game = make_bargain(cfg, "cuda")
        reference = BargainGame(cfg, "cuda")
        assert isinstance(triton_game, TritonBargainGame) and not triton_game.interpret
        a, b = reference.reset(seed=num_envs), triton_game.reset(seed=num_envs)
        gen = torch.Generator(device="cuda").manual_seed(num_envs)
        for t in range(40):
            actions = {
                p: torch.randint(-1, 83, (num_envs,), generator=gen, device="cuda")
                for p in ("p1", "p2")
            }
            a, b = reference.step(actions), triton_game.step(actions)
            for field in FIELDS:
                for p in ("p1", "p2"):
                    assert torch.equal(getattr(a, field)[p], getattr(b, field)[p]), (field, t)
            assert torch.equal(reference.last_outcome, triton_game.last_outcome)
