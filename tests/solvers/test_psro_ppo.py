"""algo=psro algo.oracle=ppo: PPO responses to mixtures, on OpenSpiel games and bargaining."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dgsolve import games, solvers
from dgsolve.errors import ConfigError, RunDirError
from dgsolve.games.base import AgentSpec
from dgsolve.hierarchy import Hierarchy
from dgsolve.policy import MixturePolicy
from dgsolve.run import run
from dgsolve.rundir import load_policies
from tests.conftest import compose_config, through_torch

#: a small bargaining variant (one item kind of 2, values up to 3, one round of offers)
SMALL_BARGAIN = ["env=bargain", "env.quantities=[2]", "env.max_value=3", "env.rounds=1"]


def make_solver(*overrides: str, seed: int = 0):
    cfg = compose_config(["algo=psro", "algo.oracle=ppo", "hardware=cpu", *overrides])
    game = games.make(cfg.env, "cpu")
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    return solvers.make(cfg.algo, game, hierarchy, torch.device("cpu"), seed)


class Constant:
    """A policy that always plays ``action``."""

    def __init__(self, action: int):
        self.action = action

    def act(self, obs, legal=None, greedy=False):
        return torch.full((obs.shape[0],), self.action, dtype=torch.long)


def test_a_mixture_draws_members_by_weight_once_per_episode():
    generator = torch.Generator().manual_seed(0)
    mixture = MixturePolicy([Constant(0), Constant(1), Constant(2)], [0.2, 0.0, 0.8], generator)
    obs = torch.zeros(20_000, 3)
    first = mixture.act(obs)
    assert set(first.tolist()) == {0, 2}
    assert (first == 2).double().mean().item() == pytest.approx(0.8, abs=0.01)
    # no episode started: every copy keeps its member
    assert torch.equal(mixture.act(obs), first)
    started = torch.zeros(20_000, dtype=torch.bool)
    started[:10_000] = True
    mixture.new_episodes(started)
    again = mixture.act(obs)
    assert torch.equal(again[10_000:], first[10_000:])
    assert not torch.equal(again[:10_000], first[:10_000])
    assert (again[:10_000] == 2).double().mean().item() == pytest.approx(0.8, abs=0.02)
    with pytest.raises(ValueError, match="one weight"):
        MixturePolicy([Constant(0)], [0.5, 0.5])


def test_ppo_responses_lower_kuhn_nash_conv():
    # measured: 0.65, 0.33, 0.24 after 1-3 iterations (uniform play: 0.917)
    solver = make_solver("env=openspiel", "algo.iterations=2")
    first = solver.report()["nash_conv"]
    curve = [solver.step()["losses"]["psro"]["nash_conv"] for _ in range(2)]
    assert first == pytest.approx(0.9166666, abs=1e-6)
    assert curve[-1] < 0.45, curve
    summary = solver.summary()
    assert summary["psro"]["oracle"] == "ppo" and summary["psro"]["population"]["player_0"] == 3
    assert summary["psro"]["br_steps"] == 50_000 and solver.global_step >= 4 * 50_000
    meta = summary["meta"]
    assert meta["policies"][0] == "player_0:0" and meta["column_policies"][0] == "player_1:0"
    assert len(meta["leave_one_out"]) == 6  # each member of each seat
    # the empirical game is exact: the mixture's value is the meta-game's value
    assert solver.report()["values"]["player_0"] == pytest.approx(
        summary["psro"]["meta_values"]["player_0"], abs=1e-9
    )


def test_exact_payoffs_need_an_openspiel_game():
    with pytest.raises(ConfigError, match="sims_per_entry"):
        make_solver(*SMALL_BARGAIN, "algo.sims_per_entry=null")


def test_bargaining_run_writes_the_meta_game_and_plays_its_mixture(tmp_path):
    cfg = compose_config(
        ["algo=psro", *SMALL_BARGAIN, "env.num_envs=256", "algo.iterations=2"]
        + ["algo.br_steps=4096", "algo.sims_per_entry=512", "hardware=cpu"]
        + ["task.progress=false", "task.render=false", "task.eval_games=256"]
    )
    assert cfg.algo.oracle.value == "ppo"  # the bargaining game's tuned oracle
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed", summary.get("missing")
    psro = summary["psro"]
    assert psro["population"] == {"p1": 3, "p2": 3}
    for probs in psro["meta_strategy"].values():
        assert sum(probs) == pytest.approx(1.0)
    meta = summary["meta"]
    assert meta["nash"]["p1"] == pytest.approx(psro["meta_strategy"]["p1"])
    assert min(meta["regret"]["p1"].values()) >= -1e-9
    # a mixture of Markov policies is no Markov policy: no exact NashConv, and it says why
    assert "task=exploit" in summary["eq"]["reference_error"]
    assert "bargain" in summary
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["psro"]["population"] == psro["population"]
    joint, _ = load_policies(tmp_path)
    assert all(isinstance(p, MixturePolicy) for p in joint.policies.values())
    assert [len(p.members) for p in joint.policies.values()] == [3, 3]


def test_resumed_iterations_equal_uninterrupted_ones():
    budget = [*SMALL_BARGAIN, "env.num_envs=64", "algo.iterations=2"]
    budget += ["algo.br_steps=1024", "algo.sims_per_entry=128"]
    straight = make_solver(*budget)
    metrics = [straight.step() for _ in range(2)]
    first = make_solver(*budget)
    first.step()
    resumed = make_solver(*budget)
    resumed.load_state_dict(through_torch(first.state_dict()))
    assert resumed.step() == metrics[1]
    for a, b in zip(straight.payoffs, resumed.payoffs, strict=True):
        assert np.array_equal(a, b)
    other = make_solver("env=openspiel")
    with pytest.raises(RunDirError, match="agents"):
        other.load_policy_state(through_torch(first.policy_state()))


def test_uniform_first_members_are_the_game_s_uniform_policy():
    solver = make_solver(*SMALL_BARGAIN, "env.num_envs=16", "algo.sims_per_entry=64")
    spec = solver.specs["p1"]
    assert isinstance(spec, AgentSpec) and solver.sizes() == [1, 1]
    assert solver.member_states == [[{"kind": "uniform"}], [{"kind": "uniform"}]]
