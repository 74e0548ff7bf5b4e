"""Exact resume: a run that stops after k iterations and continues from its checkpoint in a fresh
process (here: a fresh game and solver) plays the same episodes and computes the same losses as
the run that never stopped, for the games whose state dgsolve owns (matrix, LQ, bargaining).
PettingZoo games do not save state, and a resumed run restarts them.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from dgsolve import games, solvers
from dgsolve.games.base import TimeStep, saves_state
from dgsolve.hierarchy import Hierarchy
from tests.conftest import TINY

#: leaders learn from the first iteration on, and every iteration (the draws they learn from
#: are then part of every update of the resumed run)
LEADER_EVERY_ITERATION = ["algo.follower_updates_per_leader=1", "algo.leader_warmup=0"]
QUERIES = ["algo=stackelberg_ppo", "hierarchy.follower_observes=queries", *LEADER_EVERY_ITERATION]

#: (overrides, k): 2 copies and 4 iterations each; the checkpoint is taken after k of them
CASES = {
    "one_shot_mixed": (
        ["env=matrix", *QUERIES, "algo.num_steps=1", "algo.total_timesteps=8"],
        2,
    ),
    "one_shot_pure": (
        ["env=matrix", *QUERIES, "hierarchy.commitment=pure", "algo.num_steps=1"]
        + ["algo.total_timesteps=8"],
        2,
    ),
    "repeated_pure": (
        ["env=matrix", "env.rounds=3", *QUERIES, "algo.num_steps=3", "algo.total_timesteps=24"],
        2,
    ),
    "repeated_mixed": (
        ["env=matrix", "env.rounds=3", *QUERIES, "hierarchy.commitment=mixed"]
        + ["algo.num_steps=3", "algo.total_timesteps=24"],
        2,
    ),
    # queries mode needs whole episodes per rollout; leaders that commit per action do not, so
    # 5-round episodes run across 2-step rollouts and the checkpoint falls mid-episode
    "repeated_mid_episode": (
        ["env=matrix", "env.rounds=5", "algo=stackelberg_ppo", *LEADER_EVERY_ITERATION]
        + ["algo.num_steps=2", "algo.total_timesteps=16"],
        1,
    ),
    # 6-step episodes, truncated and bootstrapped, across 4-step rollouts; leader probes draw
    # uniform actions from torch's generator, the game's noise from its own
    "lq_stackelberg": (
        ["env=lq", "env.max_steps=6", "algo=stackelberg_ppo", "algo.leader_probe_rate=0.2"]
        + [*LEADER_EVERY_ITERATION, "algo.num_steps=4", "algo.total_timesteps=32"],
        1,
    ),
    "lq_nash": (
        ["env=lq", "env.max_steps=6", "algo=nash_ppo", "algo.num_steps=4"]
        + ["algo.total_timesteps=32"],
        1,
    ),
    "bargain": (
        ["env=bargain", "algo=ppo", "algo.num_steps=6", "algo.total_timesteps=48"],
        1,
    ),
    # torch MPE: 25-step episodes across 16-step rollouts, Stackelberg probes included
    "mpe_stackelberg": (
        ["env=simple_adversary", "algo=stackelberg_ppo", *LEADER_EVERY_ITERATION]
        + ["algo.num_steps=16", "algo.total_timesteps=128"],
        1,
    ),
    # follower restarts: the checkpoint falls just before the second round's fresh followers
    "mpe_follower_restart": (
        ["env=simple_adversary", "algo=stackelberg_ppo", *LEADER_EVERY_ITERATION]
        + ["algo.follower_restarts=1", "algo.num_steps=16", "algo.total_timesteps=128"],
        2,
    ),
}


def build(make_cfg, overrides: list[str]):
    cfg = make_cfg([*TINY, "algo.hidden_sizes=[16]", *overrides])
    game = games.make(cfg.env)
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    return solvers.make(cfg.algo, game, hierarchy, torch.device("cpu"), cfg.seed)


def plain(value):
    """``value`` with NaN floats replaced by a marker, so that equal histories compare equal
    (an explained variance is NaN where returns do not vary)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def history(solver, iterations: int) -> list:
    """Per iteration: the episodes that finished (env step, returns) and the losses."""
    out = []
    for _ in range(iterations):
        metrics = solver.step()
        out.append(plain({"episodes": metrics["episodes"], "losses": metrics["losses"]}))
    return out


def through_disk(state: dict) -> dict:
    """``state`` saved and read back the way a run reads its checkpoint."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=True)


def no_reset(seed=None):
    raise AssertionError("an exactly resumed run must not reset its games")


@pytest.mark.parametrize("case", list(CASES))
def test_resumed_run_continues_exactly(make_cfg, case):
    overrides, k = CASES[case]
    uninterrupted = build(make_cfg, overrides)
    n = uninterrupted.num_iterations
    assert 0 < k < n
    expected = history(uninterrupted, n)

    stopped = build(make_cfg, overrides)
    history(stopped, k)
    state = through_disk(stopped.state_dict())
    assert state["game"] is not None

    resumed = build(make_cfg, overrides)
    resumed.load_state_dict(state)
    resumed.game.reset = no_reset
    assert history(resumed, n - k) == expected[k:]
    assert sum(len(it["episodes"]) for it in expected[k:]) > 0


@pytest.mark.parametrize(
    ("case", "counter"), [("repeated_mid_episode", "round"), ("lq_stackelberg", "t")]
)
def test_the_checkpoint_falls_mid_episode(make_cfg, case, counter):
    overrides, k = CASES[case]
    solver = build(make_cfg, overrides)
    history(solver, k)
    assert (solver.state_dict()["game"]["state"][counter] > 0).all()


@pytest.mark.parametrize("case", ["one_shot_mixed", "one_shot_pure"])
def test_commitment_draws_are_restored(make_cfg, case):
    # Queries mode rolls out whole episodes, so at a checkpoint every copy is about to redraw;
    # the draws are saved all the same, as everything that the next step reads.
    overrides, k = CASES[case]
    stopped = build(make_cfg, overrides)
    history(stopped, k)
    resumed = build(make_cfg, overrides)
    resumed.load_state_dict(through_disk(stopped.state_dict()))
    saved, restored = stopped._draws().state_dict(), resumed._draws().state_dict()
    assert set(saved) == set(type(stopped._draws()).STATE)
    for name, per_leader in saved.items():
        for leader, x in per_leader.items():
            assert torch.equal(restored[name][leader], x), (name, leader)
    assert torch.equal(resumed.episode_start, stopped.episode_start)


def leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from leaves(v)
    else:
        yield value


@pytest.mark.parametrize("case", ["repeated_mixed", "repeated_pure", "lq_nash", "bargain"])
def test_state_holds_only_tensors_and_plain_values(make_cfg, case):
    solver = build(make_cfg, CASES[case][0])
    history(solver, 1)
    state = solver.state_dict()
    for leaf in leaves(state):
        assert leaf is None or isinstance(leaf, (torch.Tensor, bool, int, float, str)), type(leaf)
    back = through_disk(state)
    assert TimeStep.from_state(back["game"]["timestep"], torch.device("cpu")).obs.keys() == set(
        solver.game.agents
    )


def test_pettingzoo_games_restart_on_resume(make_cfg):
    solver = build(make_cfg, ["algo=nash_ppo", "env.backend=mpe2"])
    assert not saves_state(solver.game)
    history(solver, 1)
    state = through_disk(solver.state_dict())
    assert state["game"] is None
    resumed = build(make_cfg, ["algo=nash_ppo", "env.backend=mpe2"])
    resumed.load_state_dict(state)
    assert resumed.ts is None and resumed.iteration == 1
    assert resumed.step()["losses"]


# ---------------------------------------------------------------- the games on their own
GAME_CASES = {
    "matrix": ["env=matrix", "env.rounds=4"],
    "lq": ["env=lq", "env.max_steps=3"],
    "bargain": ["env=bargain"],
    "mpe": ["env=simple_world_comm", "env.max_cycles=3"],
}


def random_actions(game, gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for a in game.agents:
        spec = game.spec(a)
        if spec.discrete:
            out[a] = torch.randint(spec.num_actions, (game.num_envs,), generator=gen)
        else:
            out[a] = torch.randn(game.num_envs, spec.action_dim, generator=gen)
    return out


def assert_same_step(x: TimeStep, y: TimeStep) -> None:
    for field in ("obs", "reward", "legal", "acting", "final_obs"):
        for a in x.obs:
            assert torch.equal(getattr(x, field)[a], getattr(y, field)[a]), field
    assert torch.equal(x.terminated, y.terminated) and torch.equal(x.truncated, y.truncated)


@pytest.mark.parametrize("case", list(GAME_CASES))
def test_a_loaded_game_steps_like_the_saved_one(make_cfg, case):
    cfg = make_cfg([*GAME_CASES[case], "env.num_envs=5", "hardware=cpu"])
    game = games.make(cfg.env)
    assert saves_state(game)
    gen = torch.Generator().manual_seed(0)
    game.reset(seed=3)
    for _ in range(5):
        game.step(random_actions(game, gen))
    state = through_disk(game.state_dict())
    fresh = games.make(cfg.env)
    fresh.load_state_dict(state)
    for _ in range(20):  # long enough for games that start after the snapshot to end
        actions = random_actions(game, gen)
        assert_same_step(game.step(actions), fresh.step(actions))


def test_the_triton_backend_continues_a_torch_snapshot(make_cfg):
    pytest.importorskip("triton")
    overrides = ["env=bargain", "env.num_envs=5", "hardware=cpu"]
    ref = games.make(make_cfg(overrides).env)
    gen = torch.Generator().manual_seed(0)
    ref.reset(seed=3)
    for _ in range(4):
        ref.step(random_actions(ref, gen))
    kernel = games.make(make_cfg([*overrides, "env.backend=triton_interpret"]).env)
    kernel.load_state_dict(through_disk(ref.state_dict()))
    for _ in range(6):
        actions = random_actions(ref, gen)
        assert_same_step(ref.step(actions), kernel.step(actions))
