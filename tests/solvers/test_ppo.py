"""Tiered PPO: advantages over each agent's own decisions, sharing, timescales, divergence."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from dgsolve import games, solvers
from dgsolve.errors import TrainingDiverged
from dgsolve.games.base import AgentSpec
from dgsolve.hierarchy import Hierarchy
from dgsolve.solvers.ppo import PPOSolver, group_agents
from tests.conftest import TINY


def gae_solver(gamma=0.9, lam=0.8):
    solver = object.__new__(PPOSolver)
    solver.cfg = SimpleNamespace(gamma=gamma, gae_lambda=lam)
    return solver


def reference_gae(rewards, values, dones, bootstrap, acting, last_value, gamma, lam):
    """Plain-Python GAE on one copy: collapse the steps where the agent waits."""
    T = len(rewards)
    adv = [0.0] * T
    next_v, next_a, pending = last_value, 0.0, 0.0
    for t in reversed(range(T)):
        if dones[t]:
            next_v, next_a, pending = bootstrap[t], 0.0, 0.0
        pending += rewards[t]
        if acting[t]:
            delta = pending + gamma * next_v - values[t]
            adv[t] = delta + gamma * lam * next_a
            next_v, next_a, pending = values[t], adv[t], 0.0
    return adv


def test_gae_matches_reference_with_waiting_steps_and_truncation():
    gen = torch.Generator().manual_seed(0)
    T, B = 12, 5
    buf = {
        "rewards": torch.randn(T, B, generator=gen),
        "values": torch.randn(T, B, generator=gen),
        "dones": torch.rand(T, B, generator=gen) < 0.2,
        "bootstrap": torch.randn(T, B, generator=gen),
        "acting": torch.rand(T, B, generator=gen) < 0.6,
        "last_value": torch.randn(B, generator=gen),
    }
    buf["bootstrap"] = torch.where(buf["dones"], buf["bootstrap"], 0.0)
    gae_solver(0.9, 0.8)._gae(buf)
    for b in range(B):
        ref = reference_gae(
            *(buf[k][:, b].tolist() for k in ("rewards", "values", "dones", "bootstrap", "acting")),
            float(buf["last_value"][b]),
            0.9,
            0.8,
        )
        assert buf["advantages"][:, b].tolist() == pytest.approx(ref, abs=1e-5)
    assert torch.equal(buf["advantages"][~buf["acting"]], torch.zeros(int((~buf["acting"]).sum())))


def test_gae_one_step_episodes_is_reward_minus_value():
    buf = {
        "rewards": torch.tensor([[1.0], [2.0]]),
        "values": torch.tensor([[0.5], [0.5]]),
        "dones": torch.tensor([[True], [True]]),
        "bootstrap": torch.zeros(2, 1),
        "acting": torch.ones(2, 1, dtype=torch.bool),
        "last_value": torch.tensor([9.0]),
    }
    gae_solver(0.99, 0.95)._gae(buf)
    assert buf["advantages"].flatten().tolist() == [0.5, 1.5]


def test_share_policy_groups_identical_agents_within_a_tier():
    specs = {
        "a": AgentSpec(obs_dim=3, num_actions=2),
        "b": AgentSpec(obs_dim=3, num_actions=2),
        "c": AgentSpec(obs_dim=4, num_actions=2),
        "d": AgentSpec(obs_dim=3, num_actions=2),
    }
    tiers = Hierarchy.from_sequence([["d"], ["a", "b", "c"]], specs)
    assert group_agents(tiers, specs, share=True) == [("d",), ("a", "b"), ("c",)]
    assert group_agents(tiers, specs, share=False) == [("d",), ("a",), ("b",), ("c",)]


def build(make_cfg, overrides):
    cfg = make_cfg([*TINY, *overrides])
    game = games.make(cfg.env)
    hierarchy = Hierarchy.from_config(cfg.hierarchy, game.agents, game.leader)
    return cfg, game, solvers.make(cfg.algo, game, hierarchy, torch.device("cpu"), cfg.seed)


def test_followers_update_faster_than_leaders(make_cfg):
    _, _, solver = build(
        make_cfg,
        ["algo=stackelberg_ppo", "algo.follower_updates_per_leader=3", "algo.total_timesteps=192"],
    )
    updated = [sorted(solver.step()["losses"]) for _ in range(solver.num_iterations)]
    assert updated[0] == ["agent_0", "agent_1"]
    assert updated[2] == ["adversary_0", "agent_0", "agent_1"]
    assert sum("adversary_0" in u for u in updated) == len(updated) // 3


def test_shared_policy_learner_updates_for_both_agents(make_cfg):
    _, _, solver = build(make_cfg, ["algo=nash_ppo", "algo.share_policy=true", "env=simple_spread"])
    assert [lr.name for lr in solver.learners] == ["agent_0+agent_1+agent_2"]
    metrics = solver.step()
    losses = metrics["losses"]["agent_0+agent_1+agent_2"]
    assert set(losses) >= {"policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"}
    assert all(math.isfinite(v) for v in losses.values())


def test_non_finite_loss_names_the_agent_and_update(make_cfg):
    _, _, solver = build(make_cfg, ["algo=nash_ppo"])
    solver.step()
    with torch.no_grad():
        solver.learner_of["agent_0"].net.critic_head.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"'agent_0' at update 2"):
        solver.step()


def test_state_dict_round_trip_continues_identically(make_cfg):
    _, _, a = build(make_cfg, ["algo=nash_ppo", "algo.total_timesteps=256"])
    a.step()
    state = copy.deepcopy(a.state_dict())
    a.ts = None  # a resumed run restarts its games from the seed too
    la = a.step()["losses"]
    _, _, b = build(make_cfg, ["algo=nash_ppo", "algo.total_timesteps=256"])
    b.load_state_dict(state)
    assert b.step()["losses"] == la


def test_linear_actor_has_no_hidden_layers(make_cfg):
    _, game, solver = build(make_cfg, ["env=lq", "algo=nash_ppo", "algo.policy=linear"])
    net = solver.learner_of["p1"].net
    assert len(net.actor_torso) == 0
    assert net.actor_head.in_features == game.spec("p1").obs_dim
    assert math.isfinite(solver.step()["losses"]["p1"]["policy_loss"])


def test_transformer_torso_takes_token_slices():
    from dgsolve.nets import ActorCritic

    spec = AgentSpec(obs_dim=10, num_actions=4)
    net = ActorCritic(12, spec, token_slices=[(0, 3), (3, 4), (4, 10)])
    assert len(net.actor_torso.slices) == 4  # three tokens and the appended columns
    legal = torch.tensor([[True, False, True, False]] * 6)
    action, logp = net.sample(torch.randn(6, 12), legal)
    assert legal[torch.arange(6), action].all()
    assert torch.isfinite(logp).all()


def test_mappo_shares_one_centralised_critic(make_cfg):
    _, game, solver = build(make_cfg, ["algo=mappo", "env=simple_adversary"])
    nets = [lr.net for lr in solver.learners]
    assert len(nets) == 3 and all(n.critic_torso is nets[0].critic_torso for n in nets)
    joint_obs = sum(game.spec(a).obs_dim for a in game.agents)
    assert nets[0].critic_dim == joint_obs + 3
    assert nets[0].actor_torso[0].in_features == game.spec("adversary_0").obs_dim
    critic_ids = {id(p) for p in nets[0].critic_parameters()}
    for lr in solver.learners:  # actors' optimisers leave the shared critic to its own
        assert not critic_ids & {id(p) for g in lr.optimizer.param_groups for p in g["params"]}
    before = [p.clone() for p in nets[0].critic_parameters()]
    solver.step()
    after = nets[0].critic_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
