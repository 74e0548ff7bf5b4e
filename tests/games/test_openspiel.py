"""OpenSpielGame: specs, stepping against pyspiel itself, chance and seeding, tree capability,
one-line refusals, and the env composing and training through Hydra."""

from __future__ import annotations

import collections
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pyspiel = pytest.importorskip("pyspiel")

from dgsolve.errors import ConfigError  # noqa: E402
from dgsolve.games import make  # noqa: E402
from dgsolve.games.openspiel import OpenSpielGame  # noqa: E402
from tests.conftest import TINY, compose_config  # noqa: E402


def game(load_string: str = "kuhn_poker", num_envs: int = 8, **kw) -> OpenSpielGame:
    return OpenSpielGame({"game": load_string, "num_envs": num_envs, **kw})


def random_actions(g: OpenSpielGame, ts, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A uniform legal action for the acting agent; a wrong one (an out-of-range index) for
    every waiting agent, which the game must ignore."""
    out = {}
    for a in g.agents:
        legal = torch.multinomial(ts.legal[a].float(), 1, generator=gen).squeeze(1)
        out[a] = torch.where(ts.acting[a], legal, torch.full_like(legal, 10_000))
    return out


def acted(g: OpenSpielGame, ts, actions) -> list[int]:
    """The acting agent's action in every copy."""
    return [int(actions[a][i]) for i in range(g.num_envs) for a in g.agents if ts.acting[a][i]]


def info_tensors(state, num_players: int) -> np.ndarray:
    return np.array([state.information_state_tensor(p) for p in range(num_players)], np.float32)


# --------------------------------------------------------------------------- specs
@pytest.mark.parametrize(
    "load_string,obs_dim,num_actions", [("kuhn_poker", 11, 2), ("leduc_poker", 30, 3)]
)
def test_specs_and_shapes(load_string, obs_dim, num_actions):
    g = game(load_string, num_envs=5)
    assert g.agents == ("player_0", "player_1")
    assert g.spec("player_1").obs_dim == obs_dim and g.spec("player_1").num_actions == num_actions
    assert g.discount == 1.0 and g.episode_steps is None and g.can_clone
    assert g.os_game.get_type().short_name == load_string and g.load_string == load_string
    ts = g.reset(seed=0)
    for a in g.agents:
        assert ts.obs[a].shape == (5, obs_dim) and ts.obs[a].dtype == torch.float32
        assert ts.legal[a].shape == (5, num_actions) and ts.legal[a].dtype == torch.bool
        assert ts.reward[a].shape == (5,) and not ts.reward[a].any()
    assert ts.terminated.shape == (5,) and not ts.done.any()
    acting = torch.stack([ts.acting[a] for a in g.agents])
    assert (acting.sum(0) == 1).all() and acting[0].all()  # player 0 opens both pokers


def test_every_player_observes_its_own_information_state_and_waiting_rows_are_all_legal():
    g = game("leduc_poker", num_envs=6)
    ts = g.reset(seed=3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        for i, state in enumerate(g.states()):
            np.testing.assert_array_equal(
                torch.stack([ts.obs[a][i] for a in g.agents]).numpy(), info_tensors(state, 2)
            )
            p = state.current_player()
            assert ts.acting[g.agents[p]][i] and not ts.acting[g.agents[1 - p]][i]
            assert ts.legal[g.agents[p]][i].tolist() == [
                bool(x) for x in state.legal_actions_mask(p)
            ]
            assert ts.legal[g.agents[1 - p]][i].all()
        ts = g.step(random_actions(g, ts, gen))


def test_three_player_kuhn_has_one_acting_player_per_copy():
    g = game("kuhn_poker(players=3)", num_envs=4)
    ts = g.reset(seed=0)
    gen = torch.Generator().manual_seed(1)
    assert g.agents == ("player_0", "player_1", "player_2")
    for _ in range(20):
        assert (torch.stack([ts.acting[a] for a in g.agents]).sum(0) == 1).all()
        ts = g.step(random_actions(g, ts, gen))


# --------------------------------------------------------------------------- stepping
@pytest.mark.parametrize("load_string", ["kuhn_poker", "leduc_poker"])
def test_random_play_pays_the_pyspiel_returns_at_the_end_and_restarts(load_string):
    """Kuhn and Leduc end right after a player's action (no chance follows it), so a clone of
    each copy that takes the same action shows where the game ends and what it pays."""
    g = game(load_string, num_envs=16)
    ts = g.reset(seed=1)
    gen = torch.Generator().manual_seed(2)
    episodes = 0
    for _ in range(200):
        actions = random_actions(g, ts, gen)
        mine = acted(g, ts, actions)
        ends = []
        for state, action in zip(g.states(), mine, strict=True):
            clone = state.clone()
            clone.apply_action(action)
            ends.append(clone if clone.is_terminal() else None)
        ts = g.step(actions)
        for i, end in enumerate(ends):
            reward = np.array([float(ts.reward[a][i]) for a in g.agents])
            assert bool(ts.terminated[i]) == (end is not None)
            if end is None:
                assert not reward.any()
                continue
            episodes += 1
            np.testing.assert_allclose(reward, end.returns())
            assert reward.sum() == 0  # zero-sum
            final = torch.stack([ts.final_obs[a][i] for a in g.agents]).numpy()
            np.testing.assert_array_equal(final, info_tensors(end, 2))
            fresh = g.states()[i]  # a new game: the two deals, nothing else
            assert len(fresh.history()) == 2 and fresh.current_player() == 0
            obs = torch.stack([ts.obs[a][i] for a in g.agents]).numpy()
            np.testing.assert_array_equal(obs, info_tensors(fresh, 2))
        assert not ts.truncated.any()
    assert episodes > 100


def test_replaying_a_copys_history_on_a_fresh_state_gives_its_observations():
    g = game("leduc_poker", num_envs=3)
    ts = g.reset(seed=5)
    gen = torch.Generator().manual_seed(5)
    for _ in range(60):
        before = list(g.states()[0].history())
        actions = random_actions(g, ts, gen)
        action = acted(g, ts, actions)[0]
        ts = g.step(actions)
        history = g.states()[0].history()
        if not ts.terminated[0]:  # our action, then any chance outcomes (the public card)
            assert history[: len(before) + 1] == [*before, action]
        replay = g.os_game.new_initial_state()
        for a in history:
            replay.apply_action(a)
        obs = torch.stack([ts.obs[a][0] for a in g.agents]).numpy()
        np.testing.assert_array_equal(obs, info_tensors(replay, 2))


def test_illegal_action_of_the_acting_player_is_refused():
    g = game("leduc_poker", num_envs=2)
    g.reset(seed=0)
    fold = 0  # leduc: folding with nothing to call is not legal at the opening
    with pytest.raises(ValueError, match="player_0 chose action 0 in copy 0 .* legal: \\[1, 2\\]"):
        g.step({"player_0": torch.full((2,), fold), "player_1": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(RuntimeError, match="before reset"):
        game().step({})


def test_per_step_rewards_of_a_rewards_model_game():
    """cliff_walking (RewardModel.REWARDS, deterministic, one player) pays -1 a move as it goes."""
    g = game("cliff_walking", num_envs=4)
    ts = g.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    totals, paid = np.zeros(4), []
    for _ in range(300):
        actions = random_actions(g, ts, gen)
        expected = []
        for state, action in zip(g.states(), acted(g, ts, actions), strict=True):
            clone = state.clone()
            clone.apply_action(action)
            expected.append((clone.rewards()[0], clone.is_terminal(), clone.returns()[0]))
        ts = g.step(actions)
        for i, (reward, ended, episode_return) in enumerate(expected):
            assert float(ts.reward["player_0"][i]) == reward
            totals[i] += reward
            if ended:
                assert ts.terminated[i] and totals[i] == episode_return
                paid.append(totals[i])
                totals[i] = 0
    assert paid and all(r < 0 for r in paid)


def test_a_simultaneous_game_loads_turn_based():
    g = game("turn_based_simultaneous_game(game=goofspiel(num_cards=4))", num_envs=4)
    ts = g.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    ended = 0
    for _ in range(40):
        ts = g.step(random_actions(g, ts, gen))
        ended += int(ts.terminated.sum())
    assert ended > 0


# --------------------------------------------------------------------------- chance and seeds
def test_kuhn_deals_every_card_permutation_with_probability_one_sixth():
    g = game("kuhn_poker", num_envs=6000)
    g.reset(seed=7)
    deals = collections.Counter(tuple(s.history()[:2]) for s in g.states())
    assert len(deals) == 6
    freq = np.array(list(deals.values())) / 6000
    assert np.abs(freq - 1 / 6).max() < 0.02  # 4 standard deviations of a frequency


def trajectory(seed: int, steps: int = 40) -> list:
    g = game("leduc_poker", num_envs=4)
    ts = g.reset(seed=seed)
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(steps):
        ts = g.step(random_actions(g, ts, gen))
        out.append(tuple(tuple(s.history()) for s in g.states()))
        out.append(torch.cat([ts.obs[a] for a in g.agents]).sum().item())
    return out


def test_same_seed_same_games_other_seed_other_deals():
    assert trajectory(11) == trajectory(11)
    assert trajectory(11) != trajectory(12)


# --------------------------------------------------------------------------- tree capability
def test_clone_and_restore_one_copy():
    g = game("leduc_poker", num_envs=3)
    ts = g.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    saved, obs = g.clone_copy(1), ts.obs["player_0"][1].clone()
    assert saved is not g.states()[1] and str(saved) == str(g.states()[1])
    for _ in range(7):
        ts = g.step(random_actions(g, ts, gen))
    g.restore_copy(1, saved)
    assert str(g.states()[1]) == str(saved) and g.states()[1] is not saved
    ts = g.observe()
    assert torch.equal(ts.obs["player_0"][1], obs)
    assert ts.acting["player_0"][1] and not ts.reward["player_0"].any()
    g.step(random_actions(g, ts, gen))  # the restored legal rows check the next actions


def test_restore_copy_refuses_chance_terminal_and_foreign_states():
    g = game("kuhn_poker", num_envs=2)
    g.reset(seed=0)
    with pytest.raises(ValueError, match="decision node"):
        g.restore_copy(0, g.os_game.new_initial_state())  # the deal: a chance node
    with pytest.raises(ValueError, match="leduc_poker"):
        g.restore_copy(0, pyspiel.load_game("leduc_poker").new_initial_state())


def test_clone_and_restore_the_batch_replays_chance_too():
    g = game("leduc_poker", num_envs=4)
    ts = g.reset(seed=0)
    snapshot = g.clone_state()

    def play(ts) -> list:
        gen, out = torch.Generator().manual_seed(9), []
        for _ in range(30):
            ts = g.step(random_actions(g, ts, gen))
            out.append([s.history() for s in g.states()] + [ts.reward["player_0"].tolist()])
        return out

    first = play(ts)
    second = play(g.restore_state(snapshot))
    assert first == second


# --------------------------------------------------------------------------- refusals
def one_line_error(load_string: str, **kw) -> str:
    with pytest.raises(ConfigError) as err:
        game(load_string, **kw)
    message = str(err.value)
    assert "\n" not in message and message.startswith("env")
    return message


@pytest.mark.parametrize(
    "load_string,words",
    [
        ("no_such_game", "OpenSpiel has no game 'no_such_game'"),
        ("kuhn_pokr", "did you mean kuhn_poker"),
        ("kuhn_poker(players=x)", "does not load: Wrong type for parameter players"),
        ("kuhn_poker(bets=1)", "does not load: Unknown parameter 'bets'"),
        ("kuhn_poker(", "is not an OpenSpiel load string"),
        ("matrix_rps", "turn_based_simultaneous_game(game=matrix_rps())"),
        ("goofspiel(num_cards=4)", "turn_based_simultaneous_game(game=goofspiel(num_cards=4))"),
        ("tic_tac_toe", "has no information_state_tensor"),
    ],
)
def test_bad_games_are_refused_in_one_line(load_string, words, capfd):
    assert words in one_line_error(load_string)
    assert capfd.readouterr().err == ""  # OpenSpiel's own printout (all game names) is silenced


def test_bad_options_are_refused_in_one_line():
    assert "player_0, player_1 or null" in one_line_error("kuhn_poker", leader="player_2")
    assert "no frames" in one_line_error("kuhn_poker", render=True)
    assert "at least 1" in one_line_error("kuhn_poker", num_envs=0)


def test_missing_open_spiel_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspiel", None)  # import pyspiel now raises ImportError
    assert "pip install 'dgsolve[openspiel]'" in one_line_error("kuhn_poker")


# --------------------------------------------------------------------------- Hydra and training
def test_env_composes_and_builds():
    cfg = compose_config(["env=openspiel", "env.game=leduc_poker"])
    assert (cfg.env.family, cfg.env.game, cfg.env.num_envs) == ("openspiel", "leduc_poker", 64)
    g = make(cfg.env)
    assert isinstance(g, OpenSpielGame) and g.spec("player_0").num_actions == 3
    liars = compose_config(["env=openspiel", "env.game='liars_dice(numdice=1)'"])
    assert make(liars.env).spec("player_0").num_actions == 13


def test_ppo_trains_on_kuhn_poker(tmp_path):
    from dgsolve.run import run

    cfg = compose_config([*TINY, "env=openspiel", "algo=ppo"])
    assert run(cfg, tmp_path)["status"] == "completed"


@pytest.mark.gpu
def test_tensors_live_on_the_gpu():
    g = OpenSpielGame({"game": "leduc_poker", "num_envs": 8}, device="cuda")
    ts = g.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        seen = SimpleNamespace(
            legal={a: x.cpu() for a, x in ts.legal.items()},
            acting={a: x.cpu() for a, x in ts.acting.items()},
        )
        ts = g.step({a: x.cuda() for a, x in random_actions(g, seen, gen).items()})
        tensors = (*ts.obs.values(), *ts.legal.values(), *ts.reward.values(), ts.terminated)
        assert all(t.is_cuda for t in tensors)
