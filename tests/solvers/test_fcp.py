"""algo=fcp: Fictitious Co-Play's pool, its agents, their held-out evaluation and exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dgsolve import games, solvers
from dgsolve.errors import ConfigError, RunDirError
from dgsolve.hierarchy import Hierarchy
from dgsolve.policy import NetPolicy
from dgsolve.run import run
from dgsolve.rundir import load_policies
from dgsolve.solvers.fcp import FCPSolver, rank_weights
from tests.conftest import compose_config, through_torch

#: a one-shot common-payoff game with two equally good conventions (A, A) and (B, B) worth 1
#: each, and a safe action S worth 0.8 to both against A or B (0 against S). Self-play settles on
#: a convention: from uniform play A is worth (1 + 0.8) / 3 > S's 1.6 / 3, and against A, A pays
#: 1 > 0.8. Against a pool of both conventions A is worth 0.5 and S 0.8: an agent that must play
#: with either does best with S, welfare 1.6, where a self-play agent earns 2 with its own
#: convention and 0 with the other.
SAFE = 0.8
CONVENTIONS = [
    "env=matrix",
    f"env.payoffs=[[[1,1],[0,0],[{SAFE},{SAFE}]],[[0,0],[1,1],[{SAFE},{SAFE}]],"
    f"[[{SAFE},{SAFE}],[{SAFE},{SAFE}],[0,0]]]",
    "env.num_envs=256",
    "algo.ppo.hidden_sizes=[16]",
    "algo.ppo.lr=0.05",
    "algo.ppo.num_epochs=2",
]


def make_solver(*overrides: str, seed: int = 0) -> FCPSolver:
    cfg = compose_config(["algo=fcp", "hardware=cpu", *overrides])
    game = games.make(cfg.env, "cpu")
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    return solvers.make(cfg.algo, game, hierarchy, torch.device("cpu"), seed)


def greedy_first_actions(solver: FCPSolver, policies: dict) -> dict[str, int]:
    ts = solver.game.reset(seed=0)
    return {a: int(p.act(ts.obs[a][:1], ts.legal[a][:1], True)) for a, p in policies.items()}


def test_fcp_agent_plays_safe_with_held_out_partners_where_self_play_bets_on_a_convention():
    # 32 PPO iterations per run; checkpoints at 0, 16 and 32: a pool of 4 x 3 members
    solver = make_solver(*CONVENTIONS, "algo.partner_steps=8192", "algo.snapshot_interval=16")
    assert solver.pool_size == 12 and solver.snapshot_iterations == [0, 16, 32]
    while not solver.done:
        solver.step()
    assert solver.global_step == 8 * 8192  # 4 pool runs, 2 held-out runs, 2 FCP agents
    pool = [greedy_first_actions(solver, solver._self_play(s[-1])) for s in solver.snapshots]
    conventions = {c["row"] for c in pool}
    assert conventions == {0, 1}, pool  # different seeds, different conventions
    assert all(c["row"] == c["column"] for c in pool)
    # against a pool holding both conventions, the FCP agent takes the safe action in each seat
    assert greedy_first_actions(solver, solver.policies()) == {"row": 2, "column": 2}
    fcp = solver.summary()["fcp"]
    assert fcp["pool_self_play_welfare"] == pytest.approx(2.0, abs=0.05)
    assert fcp["fcp"]["welfare"] > fcp["self_play"]["welfare"] + 0.2, fcp
    assert fcp["fcp"]["welfare"] > fcp["self_play_pool_welfare"], fcp
    assert fcp["welfare_gain"]["mean"] > 5 * fcp["welfare_gain"]["se"]
    assert fcp["welfare_gain"]["mean"] == pytest.approx(
        fcp["fcp"]["welfare"] - fcp["self_play"]["welfare"], abs=1e-9
    )
    seat = fcp["fcp"]["seats"]["row"]
    assert len(seat["welfare_by_partner"]) == 2 and set(seat["returns"]) == {"row", "column"}


def test_rank_weights_favour_the_poorest_partner():
    # ranks 3, 1, 2 -> weights proportional to 1/3, 1, 1/2
    assert rank_weights(np.array([3.0, 1.0, 2.0]), 1.0) == pytest.approx([2 / 11, 6 / 11, 3 / 11])
    # unmet members rank poorest; ties share their ranks
    w = rank_weights(np.array([np.nan, 5.0, 5.0]), 1.0)
    assert w[0] > w[1] == w[2]
    # a higher temperature flattens the weights
    flat = rank_weights(np.array([3.0, 1.0, 2.0]), 100.0)
    assert flat.max() - flat.min() < 0.02


TINY = [
    *CONVENTIONS,
    "env.num_envs=32",
    "algo.population_size=2",
    "algo.heldout_partners=1",
    "algo.partner_steps=128",  # 4 iterations a run
    "algo.snapshot_interval=2",
    "algo.eval_games=64",
]


def test_prioritized_draws_follow_the_agent_s_returns():
    solver = make_solver(*TINY, "algo.prioritized=true")
    while not solver.done:
        solver.step()
    for learner, by_seat in solver.weights.items():
        for other, weights in by_seat.items():
            scores = solver.scores[learner][other]
            assert not np.isnan(scores).any()
            assert weights == pytest.approx(rank_weights(scores, 1.0))
            assert weights[np.argmin(scores)] == weights.max() > weights.min()
    assert "priorities" in solver.summary()["fcp"]


@pytest.mark.parametrize("stop", [2, 4, 15], ids=["mid-run", "between-runs", "mid-fcp-agent"])
def test_resumed_runs_equal_uninterrupted_ones(stop):
    overrides = [*TINY, "algo.prioritized=true"]
    straight = make_solver(*overrides)
    metrics = []
    while not straight.done:
        metrics.append(straight.step())
    assert straight.num_iterations == len(metrics) == 5 * 4
    first = make_solver(*overrides)
    for _ in range(stop):
        first.step()
    resumed = make_solver(*overrides)
    resumed.load_state_dict(through_torch(first.state_dict()))
    again = []
    while not resumed.done:
        again.append(resumed.step())
    assert again == metrics[stop:]
    assert resumed.summary() == straight.summary()
    ours, theirs = resumed.policy_state()["fcp"], straight.policy_state()["fcp"]
    for a in ours:
        for x, y in zip(ours[a]["learners"], theirs[a]["learners"], strict=True):
            assert all(torch.equal(x["state_dict"][k], y["state_dict"][k]) for k in x["state_dict"])


def test_tiers_short_budgets_and_foreign_policies_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="one tier; use hierarchy=simultaneous"):
        make_solver(*TINY, "hierarchy=leader_follower")
    with pytest.raises(ConfigError, match=r"algo.fcp_steps=8 is less than one PPO iteration"):
        make_solver(*TINY, "algo.fcp_steps=8")
    solver = make_solver(*TINY)
    with pytest.raises(RunDirError, match="not written by algo=fcp"):
        solver.load_policy_state({"solver": "psro", "agents": ["row", "column"]})


def test_options_compose():
    plain = compose_config(["algo=fcp"]).algo
    assert (plain.population_size, plain.heldout_partners, plain.prioritized) == (4, 2, False)
    assert plain.fcp_steps == plain.partner_steps  # the self-play agent's budget per agent
    chosen = compose_config(
        ["algo=fcp", "algo.prioritized=true", "algo.snapshot_interval=null", "algo.fcp_steps=7"]
    ).algo
    assert chosen.prioritized and chosen.snapshot_interval is None and chosen.fcp_steps == 7
    assert compose_config(["algo=fcp", "hierarchy=leader_follower"]).hierarchy.mode.value == (
        "leader_follower"
    )
    bargain = compose_config(["algo=fcp", "env=bargain"]).algo
    assert (bargain.partner_steps, bargain.snapshot_interval, bargain.eval_games) == (
        524288,
        8,
        4096,
    )
    assert list(bargain.ppo.hidden_sizes) == [256, 256] and bargain.ppo.num_steps == 8
    matrix = compose_config(["algo=fcp", "env=matrix"]).algo
    assert matrix.partner_steps == 256 * 200 and matrix.ppo.lr == 0.01  # the game's PPO budget
    solver = make_solver(*TINY, "algo.snapshot_interval=null")
    assert solver.snapshot_iterations == [4] and solver.pool_size == 2


#: a small bargaining variant (one item kind of 2, values up to 3, one round of offers)
SMALL_BARGAIN = ["env=bargain", "env.quantities=[2]", "env.max_value=3", "env.rounds=1"]


def test_bargaining_run_reports_held_out_welfare_and_plays_its_fcp_agents(tmp_path):
    cfg = compose_config(
        ["algo=fcp", *SMALL_BARGAIN, "env.num_envs=64", "algo.population_size=2"]
        + ["algo.heldout_partners=1", "algo.partner_steps=1024", "algo.snapshot_interval=1"]
        + ["algo.eval_games=128", "algo.ppo.hidden_sizes=[32]", "hardware=cpu"]
        + ["task.progress=false", "task.render=false", "task.eval_games=128"]
    )
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed", summary.get("missing")
    fcp = summary["fcp"]
    assert fcp["pool_size"] == 2 * 3  # checkpoints at iterations 0, 1 and 2
    for agent in ("fcp", "self_play"):
        for seat in ("p1", "p2"):
            report = fcp[agent]["seats"][seat]
            assert report["welfare"] == pytest.approx(sum(report["returns"].values()))
    assert "bargain" in summary and summary["env_steps"] == 5 * 1024
    assert json.loads((tmp_path / "summary.json").read_text())["fcp"] == fcp
    updates = json.loads((tmp_path / "history.json").read_text())["updates"]
    assert {"partner_0/p1", "heldout_0/p2", "fcp/p1", "fcp_pool/p2"} <= set(updates)
    joint, _ = load_policies(tmp_path)
    assert all(isinstance(p, NetPolicy) for p in joint.policies.values())
    trained = torch.load(tmp_path / "policy.pt", weights_only=True)["fcp"]["p1"]
    loaded = joint.policies["p1"].net.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in trained["learners"][0]["state_dict"].items())
