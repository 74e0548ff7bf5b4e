"""Tiers: validation against the game's agents and follower observation augmentation."""

from __future__ import annotations

import pytest
import torch

from dgsolve.errors import HierarchyError
from dgsolve.games.base import AgentSpec
from dgsolve.hierarchy import Hierarchy

AGENTS = ("adversary_0", "agent_0", "agent_1")


class Cfg:
    def __init__(self, mode="simultaneous", action_sequence=None):
        self.mode, self.action_sequence = mode, action_sequence


def test_null_sequence_is_one_tier():
    h = Hierarchy.from_config(Cfg(), AGENTS)
    assert h.tiers == (AGENTS,)
    assert h.is_simultaneous


def test_leader_follower_uses_natural_leader_or_first_agent():
    h = Hierarchy.from_config(Cfg("leader_follower"), AGENTS, leader="agent_1")
    assert h.tiers == (("agent_1",), ("adversary_0", "agent_0"))
    h = Hierarchy.from_config(Cfg("leader_follower"), AGENTS, leader=None)
    assert h.tiers == (("adversary_0",), ("agent_0", "agent_1"))


def test_explicit_sequence_wins_over_mode():
    seq = [["agent_0"], ["agent_1"], ["adversary_0"]]
    h = Hierarchy.from_config(Cfg("leader_follower", seq), AGENTS, leader="adversary_0")
    assert h.tiers == (("agent_0",), ("agent_1",), ("adversary_0",))
    assert h.predecessors("adversary_0") == ("agent_0", "agent_1")


@pytest.mark.parametrize(
    "seq,needle",
    [
        ([["bob"], ["agent_0", "agent_1", "adversary_0"]], "unknown agent 'bob'"),
        ([["agent_0"], ["agent_0", "agent_1", "adversary_0"]], "appears twice"),
        ([["agent_0"], ["agent_1"]], "leaves out ['adversary_0']"),
        ([[], ["agent_0", "agent_1", "adversary_0"]], "empty tier"),
        (["agent_0", ["agent_1", "adversary_0"]], "list of lists"),
    ],
)
def test_bad_sequences_name_the_problem_and_the_agents(seq, needle):
    with pytest.raises(HierarchyError) as err:
        Hierarchy.from_sequence(seq, AGENTS)
    msg = str(err.value)
    assert needle in msg
    assert "\n" not in msg


def test_unknown_leader_is_an_error():
    with pytest.raises(HierarchyError, match="env.leader 'boss'"):
        Hierarchy.from_config(Cfg("leader_follower"), AGENTS, leader="boss")


def test_augment_one_hot_and_raw_vectors():
    specs = {
        "adversary_0": AgentSpec(obs_dim=2, num_actions=3),
        "agent_0": AgentSpec(obs_dim=1, action_dim=2, low=(0, 0), high=(1, 1)),
        "agent_1": AgentSpec(obs_dim=4, num_actions=5),
    }
    h = Hierarchy.from_sequence([["adversary_0"], ["agent_0"], ["agent_1"]], AGENTS)
    actions = {"adversary_0": torch.tensor([2, 0]), "agent_0": torch.tensor([[0.5, 0.25]] * 2)}
    obs = torch.zeros(2, 4)
    x = h.augment("agent_1", obs, actions, specs)
    assert x.shape == (2, 4 + 3 + 2)
    assert h.augmented_obs_dim("agent_1", specs) == 9
    assert x[0, 4:7].tolist() == [0, 0, 1]
    assert x[1, 4:7].tolist() == [1, 0, 0]
    assert x[0, 7:].tolist() == [0.5, 0.25]
    assert torch.equal(h.augment("adversary_0", obs[:, :2], actions, specs), obs[:, :2])


def test_queries_mode_sees_the_leaders_answers_not_its_action(make_cfg):
    from dgsolve import games
    from dgsolve.solvers.ppo import PPOSolver

    cfg = make_cfg(
        [
            "env=matrix",
            "env.rounds=3",
            "hierarchy.follower_observes=queries",
            "env.num_envs=4",
            "algo.num_steps=3",
        ]
    )
    game = games.make(cfg.env)
    h = Hierarchy.for_game(cfg.hierarchy, game)
    assert h.observes_queries and h.queries["row"].shape == (5, 5)  # 2x2 joint actions + start
    specs = {a: game.spec(a) for a in game.agents}
    assert h.augmented_obs_dim("column", specs) == 5 + 5 * 2
    solver = PPOSolver(cfg.algo, game, h, torch.device("cpu"), 0)
    joint = solver.joint_policy()
    answers = joint.query_answers()["row"]
    assert answers.shape == (10,)
    assert torch.allclose(answers.reshape(5, 2).sum(1), torch.ones(5))
    ts = game.reset()
    x = joint.context("column", ts.obs["column"], joint.query_answers())
    assert torch.equal(x[:, 5:], answers.expand(4, -1))


def test_queries_mode_needs_query_observations(make_cfg):
    from dgsolve import games
    from dgsolve.errors import CapabilityError

    cfg = make_cfg(["hierarchy.follower_observes=queries", "env.num_envs=1"])
    with pytest.raises(CapabilityError, match="query observations"):
        Hierarchy.for_game(cfg.hierarchy, games.make(cfg.env))
