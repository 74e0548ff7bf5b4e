"""Tiered PPO: advantages over each agent's own decisions, sharing, timescales, divergence."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from dgsolve import games, solvers
from dgsolve.errors import ConfigError, TrainingDiverged
from dgsolve.games.base import AgentSpec
from dgsolve.hierarchy import Hierarchy
from dgsolve.solvers.ppo import gae, group_agents, minibatches
from tests.conftest import TINY


def reference_gae(rewards, values, dones, bootstrap, acting, cut, last_value, gamma, lam):
    """Plain-Python GAE on one copy, decision by decision, looking forward: a decision at t whose
    next decision (or cut step) is at t' has the target sum_{k=t}^{t'-1} gamma^(k-t) r_k +
    gamma^(t'-t) V(t'), where V is the bootstrap value if the episode ends at t' - 1 (then the
    next advantage is 0), the value at t' otherwise (0 as next advantage at a cut step), and
    the last value at the end of the rollout; A_t = delta_t + lam gamma^(t'-t) A_t'."""
    T = len(rewards)
    adv = [0.0] * T
    for t in reversed(range(T)):
        if not acting[t] or cut[t]:
            continue
        ret, disc, k = 0.0, 1.0, t
        while True:
            ret += disc * rewards[k]
            disc *= gamma
            if dones[k]:
                nv, na = bootstrap[k], 0.0
                break
            k += 1
            if k == T:
                nv, na = last_value, 0.0
                break
            if acting[k] or cut[k]:
                nv, na = values[k], (0.0 if cut[k] else adv[k])
                break
        adv[t] = ret + disc * nv - values[t] + lam * disc * na
    return adv


def random_buffer(T: int, B: int, seed: int = 0, cuts: bool = False) -> dict:
    gen = torch.Generator().manual_seed(seed)
    buf = {
        "rewards": torch.randn(T, B, generator=gen),
        "values": torch.randn(T, B, generator=gen),
        "dones": torch.rand(T, B, generator=gen) < 0.2,
        "bootstrap": torch.randn(T, B, generator=gen),
        "acting": torch.rand(T, B, generator=gen) < 0.6,
        "last_value": torch.randn(B, generator=gen),
        "cut": torch.rand(T, B, generator=gen) < (0.2 if cuts else 0.0),
    }
    buf["bootstrap"] = torch.where(buf["dones"], buf["bootstrap"], 0.0)
    return buf


@pytest.mark.parametrize("cuts", [False, True])
def test_gae_matches_reference_with_waiting_steps_truncation_and_cuts(cuts):
    buf = random_buffer(12, 6, seed=1, cuts=cuts)
    gae(buf, 0.9, 0.8)
    keys = ("rewards", "values", "dones", "bootstrap", "acting", "cut")
    for b in range(6):
        columns = [buf[k][:, b].tolist() for k in keys]
        ref = reference_gae(*columns, float(buf["last_value"][b]), 0.9, 0.8)
        assert buf["advantages"][:, b].tolist() == pytest.approx(ref, abs=1e-5)
    skipped = ~buf["acting"] | buf["cut"]
    assert torch.equal(buf["advantages"][skipped], torch.zeros(int(skipped.sum())))


def test_gae_discounts_waiting_steps_per_environment_step():
    # One decision, then three waiting steps with reward 1 and a terminal end: the target is
    # 1 + g + g^2 + g^3 with g = 0.5, i.e. 1.875 (the old per-decision discount gave 4).
    buf = {
        "rewards": torch.ones(4, 1),
        "values": torch.zeros(4, 1),
        "dones": torch.tensor([[False], [False], [False], [True]]),
        "bootstrap": torch.zeros(4, 1),
        "acting": torch.tensor([[True], [False], [False], [False]]),
        "last_value": torch.zeros(1),
    }
    gae(buf, 0.5, 1.0)
    assert buf["advantages"][0, 0].item() == pytest.approx(1.875)


def test_gae_one_step_episodes_is_reward_minus_value():
    buf = {
        "rewards": torch.tensor([[1.0], [2.0]]),
        "values": torch.tensor([[0.5], [0.5]]),
        "dones": torch.tensor([[True], [True]]),
        "bootstrap": torch.zeros(2, 1),
        "acting": torch.ones(2, 1, dtype=torch.bool),
        "last_value": torch.tensor([9.0]),
    }
    gae(buf, 0.99, 0.95)
    assert buf["advantages"].flatten().tolist() == [0.5, 1.5]


def test_probed_step_cuts_the_leaders_trace():
    # decisions at 0 and 2; the leader's action at 1 was a probe: the decision at 0 bootstraps
    # from V(s_1) = 4 and ignores every reward from step 1 on
    buf = {
        "rewards": torch.tensor([[1.0], [100.0], [100.0]]),
        "values": torch.tensor([[0.0], [4.0], [0.0]]),
        "dones": torch.zeros(3, 1, dtype=torch.bool),
        "bootstrap": torch.zeros(3, 1),
        "acting": torch.ones(3, 1, dtype=torch.bool),
        "cut": torch.tensor([[False], [True], [False]]),
        "last_value": torch.zeros(1),
    }
    gae(buf, 0.5, 0.9)
    assert buf["advantages"][0, 0].item() == pytest.approx(1.0 + 0.5 * 4.0)
    assert buf["advantages"][1, 0].item() == 0.0


@pytest.mark.parametrize("n,parts", [(10, 4), (7, 3), (4096, 4), (3, 8)])
def test_minibatches_have_equal_sizes(n, parts):
    batches = minibatches(torch.randperm(n), parts)
    sizes = [len(b) for b in batches]
    assert len(batches) == min(n, parts) and sum(sizes) == n
    assert max(sizes) - min(sizes) <= 1  # no small tail step
    assert sorted(torch.cat(batches).tolist()) == list(range(n))


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
        ["algo=stackelberg_ppo", "algo.follower_updates_per_leader=3", "algo.total_timesteps=192"]
        + ["algo.follower_restarts=0"],  # simple_adversary's own default restarts half-way
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


@pytest.mark.parametrize("backend", ["torch", "mpe2"])
def test_state_dict_round_trip_continues_identically(make_cfg, backend):
    overrides = ["algo=nash_ppo", "algo.total_timesteps=256", f"env.backend={backend}"]
    _, _, a = build(make_cfg, overrides)
    a.step()
    state = copy.deepcopy(a.state_dict())
    assert (state["game"] is not None) is (backend == "torch")  # torch MPE saves its games
    if backend == "mpe2":
        a.ts = None  # a resumed run restarts mpe2's games from the seed too
    la = a.step()["losses"]
    _, _, b = build(make_cfg, overrides)
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


def pettingzoo_rollout(make_cfg, factory: str, algo: str, num_envs: int, num_steps: int):
    """A solver on ``env.factory=factory`` and the batch of its first rollout."""
    cfg = make_cfg(
        [
            "env=pettingzoo",
            f"env.factory={factory}",
            f"env.num_envs={num_envs}",
            f"algo={algo}",
            f"algo.num_steps={num_steps}",
            f"algo.total_timesteps={2 * num_envs * num_steps}",
            "hardware=cpu",
        ]
    )
    game = games.make(cfg.env)
    solver = solvers.make(cfg.algo, game, Hierarchy.for_game(cfg.hierarchy, game), "cpu", 0)
    solver.ts = game.reset(seed=0)
    return solver, solver._rollout()[0]


def test_agent_that_terminated_early_is_not_bootstrapped_at_truncation(make_cfg):
    # tests/games/test_pettingzoo_adapter.py's QuitThenTimeout: 'a' leaves when it plays 1, the
    # env truncates whoever is left after 3 steps. At the truncation 'b' bootstraps from its
    # final observation; 'a' only where it was still playing.
    _, batch = pettingzoo_rollout(
        make_cfg, "tests.games.test_pettingzoo_adapter:QuitThenTimeout", "nash_ppo", 16, 3
    )
    quit_early = (batch["a"]["acting"] & (batch["a"]["actions"] == 1)).any(dim=0)
    assert batch["a"]["dones"][2].all() and quit_early.any() and (~quit_early).any()
    assert (batch["a"]["bootstrap"][2][quit_early] == 0).all()
    assert (batch["a"]["bootstrap"][2][~quit_early] != 0).all()
    assert (batch["b"]["bootstrap"][2] != 0).all()


def test_turn_based_follower_sees_no_action_from_a_waiting_leader(make_cfg):
    # tic-tac-toe in tiers: player_2 follows player_1, but they alternate, so at player_2's
    # turns player_1 sampled an action it does not play: the follower must see zeros there.
    solver, batch = pettingzoo_rollout(
        make_cfg, "pettingzoo.classic.tictactoe_v3:env", "stackelberg_ppo", 4, 6
    )
    game = solver.game
    leader, follower = solver.hierarchy.tiers[0][0], solver.hierarchy.tiers[1][0]
    seen = batch[follower]["obs"][..., game.spec(follower).obs_dim :]  # the leader's one-hot
    leader_moved = batch[leader]["acting"]
    assert (seen[~leader_moved] == 0).all()
    assert (seen[leader_moved].sum(-1) == 1).all()
    assert leader_moved.any() and (~leader_moved).any()


def test_a_budget_below_one_iteration_is_refused_with_the_minimum(make_cfg):

    with pytest.raises(ConfigError, match=r"less than one iteration .* use at least 32"):
        build(make_cfg, ["algo=nash_ppo", "algo.total_timesteps=20"])
    # stackelberg_ppo's leader updates every 2nd iteration: one iteration would never train it
    with pytest.raises(ConfigError, match=r"never learn; use algo.total_timesteps of at least 64"):
        build(make_cfg, ["algo=stackelberg_ppo", "algo.total_timesteps=32"])


def matrix_solver(make_cfg, overrides):
    cfg = make_cfg(["env=matrix", "env.num_envs=32", "hardware=cpu", *overrides])
    game = games.make(cfg.env)
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    solver = solvers.make(cfg.algo, game, hierarchy, torch.device("cpu"), 0)
    solver.ts = game.reset()
    return solver


def test_probes_show_followers_every_leader_action_and_cut_the_leaders_trace(make_cfg):
    solver = matrix_solver(
        make_cfg,
        ["algo=stackelberg_ppo", "env.payoffs=[[[1,1],[3,0]],[[0,0],[2,1]],[[0,0],[0,0]]]"],
    )
    solver.probe_rate = 1.0  # every leader action a probe: uniform over the three rows
    with torch.no_grad():  # a leader that (almost) always plays row 0
        solver.learner_of["row"].net.actor_head.bias.copy_(torch.tensor([20.0, 0.0, 0.0]))
    batch, _ = solver._rollout()
    seen = batch["column"]["obs"][..., 7:].argmax(-1)  # after the 3 x 2 + 1 states: the action
    assert set(seen.flatten().tolist()) == {0, 1, 2}
    assert torch.equal(seen, batch["row"]["actions"])
    assert batch["row"]["cut"].all()
    for agent in ("row", "column"):
        gae(batch[agent], 1.0, 0.95)
    assert solver._update(solver.learner_of["row"], batch) == {}  # nothing for the leader
    assert solver._update(solver.learner_of["column"], batch)


def test_mixed_commitment_ratio_starts_at_one(make_cfg):
    # The leader's log-probability in queries mode is that of the joint action: its own under
    # the drawn commitment plus the follower's, recomputed from answers of the leader's current
    # network. At the rollout's parameters it must equal what the rollout recorded.
    solver = matrix_solver(
        make_cfg, ["hierarchy.follower_observes=queries", "hierarchy.commitment=mixed"]
    )
    batch, _ = solver._rollout()
    answers = batch["column"]["obs"][0, :, 5:]  # the drawn commitment each copy showed
    assert answers.unique(dim=0).shape[0] == 32  # one draw per copy
    learner = solver.learner_of["row"]
    for a in solver.game.agents:
        gae(batch[a], 1.0, 0.95)
    data = solver._reaction_data("row", batch, batch["row"]["acting"].reshape(-1))
    recomputed = solver._reaction_logp(data)
    assert torch.allclose(recomputed, data["old_logp"], atol=1e-5)
    assert set(solver._update(learner, batch)) >= {"policy_loss", "approx_kl"}


def test_pure_commitments_show_and_play_the_drawn_table(make_cfg):
    solver = matrix_solver(
        make_cfg,
        ["hierarchy.follower_observes=queries", "env.rounds=3", "algo.num_steps=3"],
    )
    assert solver.hierarchy.pure_commitments  # auto: pure in a repeated game
    batch, _ = solver._rollout()
    tables = batch["row"]["commit_table"][0]  # [copies, 5 states]
    shown = batch["column"]["obs"][0, :, 5:].reshape(32, 5, 2)
    assert torch.equal(shown.argmax(-1), tables) and torch.equal(shown.sum(-1), torch.ones(32, 5))
    states = batch["row"]["obs"][..., :5].argmax(-1)  # [steps, copies]
    assert torch.equal(batch["row"]["actions"], tables.gather(1, states.T).T)
    assert batch["row"]["acting"][0].all() and not batch["row"]["acting"][1:].any()
    net = solver.learner_of["row"].net
    from dgsolve.solvers.commitment import PureCommitments

    logp, _ = PureCommitments.log_prob_entropy(net, batch["row"]["commit_inputs"][0], tables)
    assert torch.allclose(logp, batch["row"]["logprobs"][0])


def test_follower_restarts_renew_one_follower_a_round_and_rest_the_leaders_in_the_last(make_cfg):
    # 6 iterations, 2 restarts: rounds (0, 2], (2, 4], (4, 6]; round 1 renews agent_0, round 2
    # agent_1; the leader waits the first iteration of every round (leader_warmup 0.5) and all
    # of the last
    _, _, solver = build(
        make_cfg,
        [
            "algo=stackelberg_ppo",
            "algo.follower_updates_per_leader=1",
            "algo.leader_warmup=0.5",
            "algo.follower_restarts=2",
            "algo.total_timesteps=192",
        ],
    )
    assert solver.round_bounds == [(0, 2), (2, 4), (4, 6)]
    assert solver.summary()["learner"]["follower_rounds"] == [
        {"from_step": 64, "renewed": "agent_0"},
        {"from_step": 128, "renewed": "agent_1"},
    ]
    nets = {a: solver.learner_of[a].net for a in ("adversary_0", "agent_0", "agent_1")}
    opts = {a: solver.learner_of[a].optimizer for a in nets}
    updated, lrs, after = [], [], []
    for _ in range(solver.num_iterations):
        updated.append("adversary_0" in solver.step()["losses"])
        lrs.append({a: o.param_groups[0]["lr"] for a, o in opts.items()})
        after.append({a: [p.clone() for p in n.parameters()] for a, n in nets.items()})
    assert updated == [False, True, False, True, False, False]
    # the last round's leader does not move
    assert all(
        torch.equal(p, q)
        for p, q in zip(after[3]["adversary_0"], after[5]["adversary_0"], strict=True)
    )
    # the renewed follower's decay spans its round; the others' the budget
    lr = solver.cfg.lr
    assert [x["agent_0"] for x in lrs] == pytest.approx(
        [lr, 5 * lr / 6, lr, lr / 2, lr / 3, lr / 6]
    )
    assert [x["agent_1"] for x in lrs] == pytest.approx(
        [lr, 5 * lr / 6, 4 * lr / 6, lr / 2, lr, lr / 2]
    )
    assert [x["adversary_0"] for x in lrs] == pytest.approx([lr * (6 - i) / 6 for i in range(6)])


def test_a_renewed_follower_is_drawn_as_at_construction_in_the_same_tensors(make_cfg):
    _, _, solver = build(make_cfg, ["algo=stackelberg_ppo", "algo.total_timesteps=128"])
    net = solver.learner_of["agent_0"].net
    params = list(net.parameters())
    solver.step(), solver.step()
    torch.manual_seed(11)
    net.reinitialise()
    drawn = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(11)
    fresh = type(net)(**net._init_args).state_dict()
    assert all(torch.equal(drawn[k], fresh[k]) for k in fresh)
    assert list(net.parameters()) == params  # the same tensors: optimiser and policy see them
    # ... and keeps a shared critic when asked
    critic = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("critic")}
    net.reinitialise(critic=False)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in critic.items())
    assert not torch.equal(drawn["actor_head.weight"], net.state_dict()["actor_head.weight"])


def test_with_three_tiers_only_the_last_is_restarted_and_the_middle_rests_at_the_end(make_cfg):
    _, _, solver = build(
        make_cfg,
        ["algo=stackelberg_ppo", "algo.follower_restarts=1", "algo.total_timesteps=128"]
        + ["algo.follower_updates_per_leader=1"]
        + ["hierarchy.action_sequence=[[adversary_0],[agent_0],[agent_1]]"],
    )
    middle, last = solver.learner_of["agent_0"].net, solver.learner_of["agent_1"].net
    solver.step(), solver.step()
    middle_then = {k: v.clone() for k, v in middle.state_dict().items()}
    last_then = {k: v.clone() for k, v in last.state_dict().items()}
    losses = [solver.step()["losses"] for _ in range(2)]
    assert all(sorted(m) == ["agent_1"] for m in losses)  # the leading tiers rest
    assert all(torch.equal(v, middle.state_dict()[k]) for k, v in middle_then.items())
    assert not all(torch.equal(v, last.state_dict()[k]) for k, v in last_then.items())


def test_a_renewed_follower_starts_with_an_empty_optimiser_and_its_teammate_keeps_its_own(
    make_cfg,
):
    _, _, solver = build(
        make_cfg,
        ["algo=stackelberg_ppo", "algo.follower_restarts=1", "algo.total_timesteps=128"]
        + ["algo.follower_updates_per_leader=1"],
    )
    solver.step(), solver.step()
    kept = {k: v.clone() for k, v in solver.learner_of["agent_1"].net.state_dict().items()}
    solver.iteration = 3  # the first iteration of round 1, which renews agent_0
    solver._restart_followers()
    assert not solver.learner_of["agent_0"].optimizer.state
    assert solver.learner_of["agent_1"].optimizer.state
    assert solver.learner_of["adversary_0"].optimizer.state
    assert all(
        torch.equal(v, solver.learner_of["agent_1"].net.state_dict()[k]) for k, v in kept.items()
    )


def test_restarts_that_would_leave_the_leader_no_update_give_way_with_a_warning(make_cfg, capsys):
    # 2 iterations, leader every 2nd: a restart half-way would freeze it before its first update
    _, _, solver = build(make_cfg, ["algo=stackelberg_ppo", "algo.follower_restarts=1"])
    assert solver.round_bounds == [(0, 2)] and solver.restarts == 0
    err = capsys.readouterr().err
    assert "follower_restarts=1 leaves the leaders no update" in err
    assert "algo.total_timesteps of at least 128" in err
    updated = [sorted(solver.step()["losses"]) for _ in range(solver.num_iterations)]
    assert updated[-1] == ["adversary_0", "agent_0", "agent_1"]


def test_leaders_wait_for_the_warmup(make_cfg):
    _, _, solver = build(
        make_cfg,
        [
            "algo=stackelberg_ppo",
            "algo.follower_updates_per_leader=1",
            "algo.leader_warmup=0.5",
            "algo.total_timesteps=128",
            "algo.follower_restarts=0",
        ],
    )
    updated = [sorted(solver.step()["losses"]) for _ in range(solver.num_iterations)]
    assert [("adversary_0" in u) for u in updated] == [False, False, True, True]
    assert all("agent_0" in u for u in updated)
