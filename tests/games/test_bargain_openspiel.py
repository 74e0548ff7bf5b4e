"""The bargaining game as an OpenSpiel game (``dgsolve_bargain``): the same observations and
payoffs as the batched torch game deal by deal, OpenSpiel's own consistency checks, loading
through dgsolve's adapter, and a CFR run on it end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pyspiel = pytest.importorskip("pyspiel")

from dgsolve.errors import ConfigError  # noqa: E402
from dgsolve.games.bargain import BargainConfig, BargainGame, BargainRules  # noqa: E402
from dgsolve.games.bargain import openspiel_game as osg  # noqa: E402
from dgsolve.games.bargain.reference import ACCEPTED  # noqa: E402
from dgsolve.games.openspiel import OpenSpielGame, load_game  # noqa: E402
from dgsolve.run import run  # noqa: E402
from tests.conftest import compose_config  # noqa: E402

TINY = "dgsolve_bargain(quantities=[1],max_value=2,rounds=1)"

VARIANTS = [
    {},  # BARGAIN.md's defaults
    {"quantities": [2, 1], "max_value": 3, "rounds": 1},
    {"quantities": [2, 1], "max_value": 3, "rounds": 3, "discount": 0.9},
    {"quantities": [1, 2], "max_value": 4, "rounds": 2, "outside_offer": "none"},
]


def random_deals(rules: BargainRules, n: int, gen: np.random.Generator) -> np.ndarray:
    """``[2, n, K + 2]`` int32: values uniform on 1..max_value, total M, outside offer
    uniform on 1..M (BARGAIN.md rules 2 and 3) or 0 (``outside_offer=none``)."""
    values = gen.integers(1, rules.max_value + 1, size=(2, n, rules.num_items))
    totals = values @ np.asarray(rules.quantities)
    if rules.outside_offer.value == "none":
        outside = np.zeros_like(totals)
    else:
        outside = np.floor(gen.random(totals.shape) * totals).astype(np.int64) + 1
    return np.concatenate([values, totals[..., None], outside[..., None]], -1).astype(np.int32)


def dealt_state(game, deal: np.ndarray, rules: BargainRules):
    """The OpenSpiel state after the chance nodes draw ``deal [2, K + 2]``."""
    state = game.new_initial_state()
    k = rules.num_items
    for p in (0, 1):
        draws = list(deal[p, :k]) + ([] if rules.outside_offer.value == "none" else [deal[p, -1]])
        for value in draws:
            assert state.is_chance_node() and state.dealing_player() == p
            outcomes = dict(state.chance_outcomes())
            assert int(value) - 1 in outcomes
            state.apply_action(int(value) - 1)
    assert state.current_player() == 0
    return state


def random_moves(rules: BargainRules, legal: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A legal action in most rows; in about one row in five any id from -3 to num_actions + 5,
    often illegal (ACCEPT with no offer, an offer on P2's last turn, out of range): WALK. Not
    -1, which OpenSpiel itself refuses (kInvalidAction)."""
    legal_pick = torch.multinomial(legal.float(), 1, generator=gen).squeeze(1)
    wild = torch.randint(-3, rules.num_actions + 6, legal_pick.shape, generator=gen)
    wild = torch.where(wild == -1, -2, wild)
    return torch.where(torch.rand(legal_pick.shape, generator=gen) < 0.2, wild, legal_pick)


def os_obs(state, player: int) -> np.ndarray:
    return np.asarray(state.observation_tensor(player), np.float32)


# --------------------------------------------------------------------------- torch == OpenSpiel
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(map(str, v.values())))
def test_observations_and_returns_equal_the_torch_game(variant):
    rules = BargainRules.from_config(variant)
    game = osg.load(rules)
    n = 96
    torch_game = BargainGame(BargainConfig(num_envs=n, backend="torch", **variant))
    torch_game.reset(seed=0)
    deals = random_deals(rules, n, np.random.default_rng(1))
    snapshot = torch_game.clone_state()
    snapshot["deal"] = torch.from_numpy(deals)
    ts = torch_game.restore_state(snapshot)
    states = [dealt_state(game, deals[:, i], rules) for i in range(n)]
    live = np.ones(n, bool)  # copies whose first game is still on (later ones are new deals)
    gen = torch.Generator().manual_seed(2)
    ended = {"accept": 0, "walk": 0}
    for _ in range(2 * rules.rounds):
        for i in np.flatnonzero(live):
            state = states[i]
            for p, agent in enumerate(torch_game.agents):
                assert np.array_equal(ts.obs[agent][i].numpy(), os_obs(state, p))
            mover = torch_game.agents[state.current_player()]
            assert ts.acting[mover][i]
            assert ts.legal[mover][i].tolist() == [bool(x) for x in state.legal_actions_mask()]
        moves = {a: random_moves(rules, ts.legal[a], gen) for a in torch_game.agents}
        ts = torch_game.step(moves)
        for i in np.flatnonzero(live):
            state = states[i]
            state.apply_action(int(moves[torch_game.agents[state.current_player()]][i]))
            assert bool(ts.terminated[i]) == state.is_terminal()
            returns = state.returns()
            for p, agent in enumerate(torch_game.agents):
                assert float(ts.reward[agent][i]) == pytest.approx(returns[p], rel=1e-6, abs=0)
            if state.is_terminal():
                # the terminal observation: the last decision's situation, nobody to move
                for p, agent in enumerate(torch_game.agents):
                    assert np.array_equal(ts.final_obs[agent][i].numpy(), os_obs(state, p))
                ended["accept" if state.node.outcome == ACCEPTED else "walk"] += 1
                live[i] = False
    assert not live.any()  # rule 9: every game ends within 2 * rounds decisions
    assert ended["accept"] > 0 and ended["walk"] > 0


def test_clone_and_restore_step_the_batch_identically():
    """The torch game's tree capability: a snapshot taken mid-game, with games ending and
    restarting after it, replays the very same TimeSteps."""
    g = BargainGame(BargainConfig(num_envs=37, backend="torch", rounds=2))
    ts = g.reset(seed=3)
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        ts = g.step({a: random_moves(g.rules, ts.legal[a], gen) for a in g.agents})
    snapshot = g.clone_state()
    moves, first = [], []
    for _ in range(7):
        moves.append({a: random_moves(g.rules, ts.legal[a], gen) for a in g.agents})
        ts = g.step(moves[-1])
        first.append(ts)
    end = g.clone_state()
    assert sum(int(t.terminated.sum()) for t in first) > 37  # games ended and restarted
    g.restore_state(snapshot)
    for m, before in zip(moves, first, strict=True):
        after = g.step(m)
        for field in ("terminated", "truncated"):
            assert torch.equal(getattr(after, field), getattr(before, field)), field
        for field in ("obs", "reward", "legal", "acting", "final_obs"):
            for agent in g.agents:
                a, b = getattr(after, field)[agent], getattr(before, field)[agent]
                assert torch.equal(a, b), (field, agent)
    again = g.clone_state()  # the same deals drawn, and the random stream in the same place
    for name, value in end.items():
        assert torch.equal(again[name], value), name


# --------------------------------------------------------------------------- OpenSpiel's checks
@pytest.mark.parametrize(
    "load_string",
    [
        TINY,
        "dgsolve_bargain(quantities=2_1,max_value=3,rounds=2,discount=0.9,outside_offer=none)",
        "dgsolve_bargain",
    ],
)
def test_openspiel_random_simulation_checks(load_string):
    game = load_game(load_string)
    pyspiel.random_sim_test(game, num_sims=20, serialize=True, verbose=False)


def test_the_whole_tiny_tree_is_consistent():
    """Every node of a small tree: chance outcomes sum to 1, legal actions match the mask,
    clones and serialised states are equal, information states are perfect recall and the
    Markov observation is a function of them; the tree has num_histories(rules) nodes."""
    load_string = "dgsolve_bargain(quantities=[1],max_value=2,rounds=2,discount=0.5)"
    game = load_game(load_string)
    rules = game.rules
    info_obs: dict[str, tuple[str, tuple]] = {}
    tensors: dict[str, tuple] = {}
    nodes, stack = 0, [game.new_initial_state()]
    while stack:
        state = stack.pop()
        nodes += 1
        assert str(game.deserialize_state(state.serialize())) == str(state)
        assert state.clone().history() == state.history()
        if state.is_terminal():
            assert all(0.0 <= r <= 1.0 for r in state.returns())
            continue
        if state.is_chance_node():
            outcomes = state.chance_outcomes()
            assert sum(p for _, p in outcomes) == pytest.approx(1.0, abs=1e-12)
            stack.extend(state.child(a) for a, _ in outcomes)
            continue
        p = state.current_player()
        mask = state.legal_actions_mask(p)
        assert state.legal_actions() == [a for a, ok in enumerate(mask) if ok]
        assert rules.walk in state.legal_actions()
        key = state.information_state_string(p)
        seen = (state.observation_string(p), tuple(state.observation_tensor(p)))
        assert info_obs.setdefault(key, seen) == seen
        tensor = tuple(state.information_state_tensor(p))
        assert tensors.setdefault(key, tensor) == tensor
        stack.extend(state.child(a) for a in state.legal_actions())
    assert nodes == osg.num_histories(rules) == 408
    assert len(set(tensors.values())) == len(tensors)  # one tensor per information state


def test_chance_is_exactly_uniform_and_payoffs_follow_the_rules():
    game = load_game("dgsolve_bargain(quantities=2_1,max_value=3,rounds=2,discount=0.9)")
    state = game.new_initial_state()
    assert state.chance_outcomes() == [(0, 1 / 3), (1, 1 / 3), (2, 1 / 3)]
    for value in (3, 2):  # P1 values 3, 2: M_1 = 3*2 + 2*1 = 8
        state.apply_action(value - 1)
    assert state.chance_outcomes() == [(o, 1 / 8) for o in range(8)]  # uniform on 1..M_1
    for outcome in (4, 0, 0, 2):  # P1 outside 5; P2 values 1, 1 (M_2 = 3), outside 3
        state.apply_action(outcome)
    rules = game.rules
    state.apply_action(rules.encode((1, 0)))  # P1 offers P2 one unit of item 0
    state.apply_action(rules.encode((2, 1)))  # P2 counteroffers: P2 takes everything
    assert state.information_state_string(1) == "p2 values=1,1 outside=3 history=2,5"
    state.apply_action(rules.accept)  # P1 accepts in round 1: one completed round, gamma 0.9
    assert state.is_terminal() and state.returns() == pytest.approx([0.0, 0.9 * 3 / 3])


def test_loads_through_the_adapter_and_refuses_bad_parameters():
    osg.register()  # idempotent: the import already registered it
    assert pyspiel.registered_names().count("dgsolve_bargain") == 1
    game = load_game("dgsolve_bargain(quantities=2_1,max_value=3,rounds=1)")
    assert game.get_parameters()["quantities"] == "2_1"
    assert game.num_distinct_actions() == 8 and game.observation_tensor_shape() == [16]
    assert pyspiel.load_game(str(game)) == game
    assert str(load_game(osg.load_string(BargainRules()))) == str(load_game("dgsolve_bargain"))
    env = OpenSpielGame({"game": TINY, "num_envs": 3})
    ts = env.reset(seed=0)
    assert ts.obs["player_0"].shape == (3, 2 + 1 + 1 + 2 * 4)
    for bad, fragment in [
        ("dgsolve_bargain(quantities=a_b)", "joined by '_'"),
        ("dgsolve_bargain(quantities=0_1)", "quantities"),
        ("dgsolve_bargain(max_value=0)", "max_value"),
        ("dgsolve_bargain(quantities=2)", "quantities"),  # a bare integer: OpenSpiel's type error
    ]:
        with pytest.raises(ConfigError, match=fragment) as err:
            load_game(bad)
        assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- through dgsolve.run
def test_a_cfr_run_on_the_tiny_variant(tmp_path):
    cfg = compose_config(
        ["env=openspiel", f"env.game='{TINY}'", "algo=cfr", "algo.iterations=20"]
        + ["hardware=cpu", "task.progress=false", "task.eval_episodes=4", "task.render=false"]
    )
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed", summary.get("missing")
    eq = summary["eq"]
    assert eq["game"] == TINY and eq["num_info_states"] == 9
    assert 0.0 <= eq["nash_conv"] < 0.5
    assert summary["cfr"]["nash_conv"] == pytest.approx(eq["nash_conv"], abs=1e-12)
