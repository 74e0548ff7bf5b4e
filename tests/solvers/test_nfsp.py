"""algo=nfsp: its memories, per-player transitions in a turn-based game, learning on Kuhn
poker, exact resume, and a run end to end."""

from __future__ import annotations

import pytest
import torch

pyspiel = pytest.importorskip("pyspiel")

from dgsolve import games, solvers  # noqa: E402
from dgsolve.errors import CapabilityError  # noqa: E402
from dgsolve.eval.openspiel_eq import nash_conv_of_table, policy_table  # noqa: E402
from dgsolve.hierarchy import Hierarchy  # noqa: E402
from dgsolve.run import run  # noqa: E402
from dgsolve.solvers.nfsp import ReplayBuffer, ReservoirBuffer  # noqa: E402
from tests.conftest import compose_config, through_torch  # noqa: E402

#: NashConv of the uniform policy in Kuhn poker (OpenSpiel's exploitability_test.py: 11/12)
UNIFORM_NASH_CONV = 11 / 12


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one thread is several times faster than two on a shared 2-core CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_solver(*overrides: str, env: str = "openspiel"):
    small = ["algo.reservoir_size=100000", "algo.replay_size=20000"]
    cfg = compose_config([f"env={env}", "algo=nfsp", "hardware=cpu", *small, *overrides])
    game = games.make(cfg.env, "cpu")
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    return solvers.make(cfg.algo, game, hierarchy, torch.device("cpu"), cfg.seed)


def nash_conv(solver) -> float:
    return nash_conv_of_table("kuhn_poker", policy_table("kuhn_poker", solver.joint_policy()))[
        "nash_conv"
    ]


# --------------------------------------------------------------------------- memories
def test_reservoir_keeps_a_uniform_sample():
    gen = torch.Generator().manual_seed(0)
    buf = ReservoirBuffer(1000, 1, 2, torch.device("cpu"))
    offers = torch.arange(20_000)
    for chunk in offers.split(257):  # irregular batches, the first smaller than the capacity
        buf.add(gen, obs=chunk[:, None].float(), legal=torch.ones(len(chunk), 2, dtype=bool),
                action=chunk)  # fmt: skip
    kept = buf.data["action"]
    assert len(buf) == 1000 and buf.seen == 20_000
    assert kept.unique().numel() == 1000  # no offer is stored twice
    assert torch.equal(buf.data["obs"][:, 0].long(), kept)  # fields stay aligned
    # each of 20 equal bins of the offers should hold ~50 of the 1000 kept; a chi-square test
    # with 19 degrees of freedom, refused above its 0.999 quantile (43.8)
    counts = torch.bincount(kept // 1000, minlength=20).float()
    chi2 = float(((counts - 50) ** 2 / 50).sum())
    assert chi2 < 43.8, counts.tolist()


def test_reservoir_takes_everything_while_there_is_room():
    gen = torch.Generator().manual_seed(1)
    buf = ReservoirBuffer(10, 1, 2, torch.device("cpu"))
    x = torch.arange(7)
    buf.add(gen, obs=x[:, None].float(), legal=torch.ones(7, 2, dtype=bool), action=x)
    assert len(buf) == 7 and torch.equal(buf.data["action"][:7], x)


def test_replay_buffer_is_circular():
    buf = ReplayBuffer(5, 1, 2, torch.device("cpu"))

    def items(xs):
        n = len(xs)
        return dict(
            obs=xs[:, None].float(),
            action=xs,
            reward=xs.float(),
            next_obs=xs[:, None].float(),
            next_legal=torch.ones(n, 2, dtype=bool),
            done=torch.zeros(n, dtype=bool),
        )

    buf.add(**items(torch.arange(3)))
    buf.add(**items(torch.arange(3, 7)))
    assert len(buf) == 5 and buf.pos == 2
    assert buf.data["action"].tolist() == [5, 6, 2, 3, 4]  # 0 and 1 overwritten
    restored = ReplayBuffer(5, 1, 2, torch.device("cpu"))
    restored.load_state_dict(through_torch(buf.state_dict()))
    assert restored.pos == 2 and torch.equal(restored.data["reward"], buf.data["reward"])


# --------------------------------------------------------------------------- transitions
def test_transitions_run_from_a_players_decision_to_its_next(monkeypatch):
    # One Kuhn game, player 0 holds the king (card 2), player 1 the jack (card 0): player 0
    # passes, player 1 bets, player 0 calls; player 0 wins the pot of 2 each, +2 / -2.
    solver = make_solver("env.num_envs=1", "algo.steps_per_iteration=3", "algo.anticipatory=1.0")
    game = solver.game
    deal = game.os_game.new_initial_state()
    deal.apply_action(2)
    deal.apply_action(0)
    reset = game.reset

    def fixed_reset(seed=None):
        reset(seed)
        game.restore_copy(0, deal)
        return game.observe()

    monkeypatch.setattr(game, "reset", fixed_reset)
    script = [0, 1, 1]  # the acting player's action at each step (the other's is ignored)
    monkeypatch.setattr(
        solver, "_act", lambda agent, obs, legal, best: torch.tensor([script[solver.global_step]])
    )
    solver.step()

    states = [deal.clone()]
    for a in script:
        states.append(states[-1].child(a))

    def info(state, player):
        return torch.tensor(state.information_state_tensor(player))

    r0, r1 = solver.players["player_0"].replay, solver.players["player_1"].replay
    assert len(r0) == 2 and len(r1) == 1
    # player 0: pass at the start, to its next decision after player 1's bet (reward 0) ...
    assert torch.equal(r0.data["obs"][0], info(states[0], 0))
    assert r0.data["action"][0] == 0 and r0.data["reward"][0] == 0 and not r0.data["done"][0]
    assert torch.equal(r0.data["next_obs"][0], info(states[2], 0))
    assert r0.data["next_legal"][0].tolist() == [True, True]
    # ... then the call, which ends the game with +2
    assert torch.equal(r0.data["obs"][1], info(states[2], 0))
    assert r0.data["action"][1] == 1 and r0.data["reward"][1] == 2 and r0.data["done"][1]
    # player 1: its bet after player 0's pass ends its part of the game with -2
    assert torch.equal(r1.data["obs"][0], info(states[1], 1))
    assert r1.data["action"][0] == 1 and r1.data["reward"][0] == -2 and r1.data["done"][0]
    # anticipatory=1: every decision was best-response play, so all went to the reservoirs
    s0, s1 = solver.players["player_0"].reservoir, solver.players["player_1"].reservoir
    assert s0.seen == 2 and s1.seen == 1
    assert s0.data["action"][:2].tolist() == [0, 1] and s1.data["action"][:1].tolist() == [1]


# --------------------------------------------------------------------------- learning
def test_runs_saved_before_the_optimizer_option_still_load():
    """A run directory's config from before ``algo.optimizer`` existed rebuilds its solver
    (with Adam, what it trained with), so its policies can be loaded for task=exploit."""
    from omegaconf import OmegaConf

    cfg = compose_config(["env=openspiel", "algo=nfsp", "hardware=cpu", "algo.replay_size=100"])
    algo = OmegaConf.create({k: v for k, v in OmegaConf.to_container(cfg.algo).items()
                             if k != "optimizer"})  # fmt: skip
    game = games.make(cfg.env, "cpu")
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    solver = solvers.make(algo, game, hierarchy, torch.device("cpu"), 0)
    assert isinstance(solver.players["player_0"].q_opt, torch.optim.Adam)


def test_q_values_learn_the_mean_of_stochastic_returns():
    """Terminal returns -2, 1, 1, 1 of one (state, action): the DQN target's minimiser must be
    their mean, 0.25. A Huber loss (δ = 1) would settle at its M-estimate, 2/3, which biased
    Kuhn poker's best responses (payoffs ±1, ±2) and with them the average policy."""
    solver = make_solver("algo.batch_size=256")
    player = solver.players["player_0"]
    obs_dim, n = solver.specs["player_0"].obs_dim, 400
    obs = torch.zeros(n, obs_dim)
    obs[:, 0] = 1.0
    player.replay.add(
        obs=obs,
        action=torch.zeros(n, dtype=torch.long),
        reward=torch.tensor([-2.0, 1.0, 1.0, 1.0]).repeat(n // 4),
        next_obs=obs,
        next_legal=torch.ones(n, 2, dtype=torch.bool),
        done=torch.ones(n, dtype=torch.bool),
    )
    for _ in range(1500):
        solver._learn("player_0")
    with torch.no_grad():
        q = float(player.q(obs[:1])[0, 0])
    assert q == pytest.approx(0.25, abs=0.1)


def test_a_short_run_beats_the_uniform_policy_on_kuhn():
    # measured (seed 0, the default learning rates): NashConv 0.21 after 50k environment steps
    solver = make_solver("algo.total_timesteps=48000", "algo.steps_per_iteration=16000")
    assert nash_conv(solver) > 0.5
    while not solver.done:
        solver.step()
    assert solver.global_step == 48_000
    assert nash_conv(solver) < 0.5 < UNIFORM_NASH_CONV


def test_resumed_training_equals_uninterrupted_training():
    overrides = ("algo.total_timesteps=4096", "algo.steps_per_iteration=1024",
                 "algo.batch_size=32", "algo.target_update=5", "env.num_envs=16")  # fmt: skip
    straight = make_solver(*overrides)
    losses = [straight.step()["losses"] for _ in range(4)]

    first = make_solver(*overrides)
    for _ in range(2):
        first.step()
    state = through_torch(first.state_dict())
    resumed = make_solver(*overrides)
    resumed.load_state_dict(state)
    assert [resumed.step()["losses"] for _ in range(2)] == losses[2:]
    assert "sl_loss" in losses[-1]["player_0"] and "rl_loss" in losses[-1]["player_1"]
    for a in straight.agents:
        for name, x in straight.players[a].avg.state_dict().items():
            assert torch.equal(x, resumed.players[a].avg.state_dict()[name])


def test_a_run_on_kuhn_records_its_nash_conv(tmp_path):
    cfg = compose_config(
        ["env=openspiel", "algo=nfsp", "algo.total_timesteps=4096", "task.progress=false"]
        + ["algo.reservoir_size=10000", "algo.replay_size=10000"]
        + ["algo.steps_per_iteration=2048", "task.eval_every=1", "hardware=cpu"]
        + ["task.eval_episodes=20", "task.render=false"]
    )
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed", summary.get("missing")
    assert 0 <= summary["eq"]["nash_conv"] <= 2 * UNIFORM_NASH_CONV
    assert summary["nfsp"]["player_0"]["updates"] > 0
    assert (tmp_path / "policy.pt").is_file()


def test_discrete_turn_based_games_other_than_openspiel_run():
    solver = make_solver(
        "env.num_envs=4", "algo.total_timesteps=512", "algo.steps_per_iteration=256",
        "algo.batch_size=16", "algo.train_every=16", env="bargain",
    )  # fmt: skip
    while not solver.done:
        metrics = solver.step()
    assert metrics["episodes"] and metrics["losses"]


def test_continuous_actions_are_refused():
    with pytest.raises(CapabilityError, match="discrete actions"):
        make_solver(env="lq")
