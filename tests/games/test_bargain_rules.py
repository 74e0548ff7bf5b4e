"""The bargaining game's rules (BARGAIN.md), case by case, on the torch reference backend."""

from __future__ import annotations

import itertools

import pytest
import torch

from dgsolve.errors import ConfigError
from dgsolve.games.bargain import BargainConfig, BargainGame, BargainRules, make_bargain
from dgsolve.games.bargain.reference import ACCEPTED, RUNNING, WALKED
from dgsolve.games.bargain.rules import ACCEPT, AGENTS, NUM_ACTIONS, OBS_DIM, WALK

R = BargainRules()


def game(num_envs: int = 4, **kwargs) -> BargainGame:
    return BargainGame(BargainConfig(num_envs=num_envs, backend="torch", **kwargs))


def deal(obs: torch.Tensor, rules: BargainRules = R) -> tuple[torch.Tensor, ...]:
    """Integer values [B, K], totals [B] and outside offers [B] recovered from observations."""
    q = torch.tensor(rules.quantities, dtype=torch.float64)
    values = torch.round(obs[:, rules.values_slice].double() * rules.max_value)
    totals = values @ q
    outside = torch.round(obs[:, rules.outside_index].double() * totals)
    return values, totals, outside


def act(g: BargainGame, a1, a2=WALK):
    full = lambda a: torch.as_tensor(a).expand(g.num_envs).clone()  # noqa: E731
    return g.step({"p1": full(a1), "p2": full(a2)})


# --------------------------------------------------------------------------- sizes and layout
def test_default_sizes_and_observation_layout():
    assert (R.num_offers, ACCEPT, WALK, NUM_ACTIONS, OBS_DIM) == (80, 80, 81, 82, 92)
    tokens = R.tokens
    assert [(s.start, s.stop) for s in tokens.values()] == [
        (0, 3),
        (3, 4),
        (4, 7),
        (7, 10),
        (10, 92),
    ]
    assert game().spec("p1").obs_dim == 92 and game().spec("p2").num_actions == 82


def test_sizes_follow_the_quantities():
    rules = BargainRules(quantities=(2, 3))
    assert rules.num_offers == 12 and rules.num_actions == 14
    assert rules.obs_dim == 2 * 2 + 4 + 14
    assert rules.mask_slice == slice(8, 22)


def test_offer_encoding_both_ways():
    for n0, n1, n2 in itertools.product(range(8), range(5), range(2)):
        a = n0 * 10 + n1 * 2 + n2  # BARGAIN.md rule 6
        assert R.encode((n0, n1, n2)) == a
        assert R.decode(a) == (n0, n1, n2)
    table = R.offer_table()
    assert torch.equal(R.encode_batch(table), torch.arange(80, dtype=torch.int32))
    odd = BargainRules(quantities=(3, 1, 2, 4))
    ids = torch.arange(odd.num_offers)
    assert torch.equal(odd.encode_batch(odd.decode_batch(ids)), ids)
    assert [odd.encode(odd.decode(a)) for a in range(odd.num_offers)] == list(range(120))
    with pytest.raises(ValueError):
        R.decode(80)
    with pytest.raises(ValueError):
        R.encode((8, 0, 0))


# --------------------------------------------------------------------------- masks
def test_first_turn_mask_has_no_accept():
    ts = game().reset(seed=0)
    legal = ts.legal["p1"]
    assert legal[:, :80].all() and legal[:, WALK].all() and not legal[:, ACCEPT].any()
    assert torch.equal(ts.obs["p1"][:, R.mask_slice], legal.float())
    # the idle player: empty mask block, WALK alone in `legal`
    assert not ts.obs["p2"][:, R.mask_slice].any()
    assert torch.equal(ts.legal["p2"].sum(1), torch.ones(4, dtype=torch.int64))
    assert ts.acting["p1"].all() and not ts.acting["p2"].any()


def test_masks_and_round_counter_through_a_full_game():
    g = game()
    ts = g.reset(seed=1)
    seen = []
    # P1 offers, P2 counteroffers twice, then P2 faces the last round
    for a1, a2 in [(3, WALK), (WALK, 5), (7, WALK), (WALK, 9), (11, WALK)]:
        ts = act(g, a1, a2)
        assert not ts.terminated.any()
        obs = ts.obs["p2" if ts.acting["p2"].all() else "p1"]
        seen.append(obs[0, R.round_index].item())
    assert seen == [0.0, 0.5, 0.5, 1.0, 1.0]  # the round advances only after P2's counteroffer
    legal = ts.legal["p2"]  # P2 in the last round: only ACCEPT or WALK
    assert torch.equal(legal[0].nonzero().flatten(), torch.tensor([ACCEPT, WALK]))
    assert torch.equal(ts.obs["p2"][:, R.mask_slice], legal.float())
    ts = act(g, WALK, 12)  # a counteroffer now is illegal: played as WALK
    assert ts.terminated.all() and (g.last_outcome == WALKED).all()


def test_respond_mask_has_everything():
    g = game()
    g.reset(seed=2)
    ts = act(g, 44)
    assert ts.legal["p2"].all() and ts.acting["p2"].all()
    assert ts.obs["p2"][:, R.player_index].eq(1).all()


# --------------------------------------------------------------------------- payoffs
def test_accept_pays_the_offer_normalised():
    g = game(num_envs=64)
    ts = g.reset(seed=3)
    v1, m1, _ = deal(ts.obs["p1"])
    v2, m2, _ = deal(ts.obs["p2"])
    offer = torch.arange(64) % 80
    n = R.decode_batch(offer).double()
    ts = g.step({"p1": offer, "p2": torch.full((64,), WALK)})
    assert not ts.terminated.any() and ts.reward["p1"].eq(0).all()
    # P2 sees n / Q, P1 sees (Q - n) / Q
    q = torch.tensor(R.quantities, dtype=torch.float64)
    assert torch.allclose(ts.obs["p2"][:, R.offer_slice].double(), n / q)
    assert torch.allclose(ts.obs["p1"][:, R.offer_slice].double(), (q - n) / q)
    ts = g.step({"p1": torch.full((64,), WALK), "p2": torch.full((64,), ACCEPT)})
    assert ts.terminated.all() and (g.last_outcome == ACCEPTED).all()
    u1 = (v1 * (q - n)).sum(1) / m1  # BARGAIN.md rule 7
    u2 = (v2 * n).sum(1) / m2
    assert torch.allclose(ts.reward["p1"].double(), u1, atol=1e-6)
    assert torch.allclose(ts.reward["p2"].double(), u2, atol=1e-6)


def test_walk_pays_own_outside_offer():
    g = game(num_envs=64)
    ts = g.reset(seed=4)
    outs = [deal(ts.obs[a])[2] / deal(ts.obs[a])[1] for a in ("p1", "p2")]
    ts = act(g, WALK)
    assert ts.terminated.all() and (g.last_outcome == WALKED).all()
    assert torch.allclose(ts.reward["p1"].double(), outs[0], atol=1e-6)
    assert torch.allclose(ts.reward["p2"].double(), outs[1], atol=1e-6)
    assert ((ts.reward["p1"] > 0) & (ts.reward["p1"] <= 1)).all()


@pytest.mark.parametrize("illegal", [ACCEPT, -1, 82, 1000])
def test_illegal_first_move_is_a_walk(illegal):
    g = game()
    ts = g.reset(seed=5)
    outside = deal(ts.obs["p1"])[2] / deal(ts.obs["p1"])[1]
    ts = act(g, illegal)
    assert ts.terminated.all() and (g.last_outcome == WALKED).all()
    assert torch.allclose(ts.reward["p1"].double(), outside, atol=1e-6)


def test_reward_is_paid_exactly_once_and_games_restart():
    g = game(num_envs=3)
    ts = g.reset(seed=6)
    old = ts.obs["p1"].clone()
    ts = act(g, 0, WALK)
    ts = act(g, WALK, ACCEPT)
    assert ts.terminated.all()
    # P1 gave nothing away and P2 accepted: P1 keeps everything, P2 gets nothing
    assert ts.reward["p1"].eq(1).all() and ts.reward["p2"].eq(0).all()
    # terminal observation: old deal, the offer still on the table, empty mask block
    final = ts.final_obs["p1"]
    assert torch.equal(final[:, : R.outside_index + 1], old[:, : R.outside_index + 1])
    assert final[:, R.has_offer_index].eq(1).all() and not final[:, R.mask_slice].any()
    # the new game: new deal, no offer, round 0, P1 to move
    new = ts.obs["p1"]
    assert not torch.equal(new[:, :3], old[:, :3])
    assert new[:, R.offer_slice].eq(-1).all() and new[:, R.round_index].eq(0).all()
    assert ts.acting["p1"].all() and (g.last_outcome == ACCEPTED).all()
    for _ in range(2):  # nothing more is paid until the new game ends
        ts = act(g, 5, 6)
        assert ts.reward["p1"].eq(0).all() and ts.reward["p2"].eq(0).all()
        assert not ts.terminated.any() and (g.last_outcome == RUNNING).all()


def test_final_obs_read_late_is_the_same():
    """The torch backend builds final_obs when first read; later steps must not change it."""
    eager, lazy = game(num_envs=64), game(num_envs=64)
    eager.reset(seed=15)
    lazy.reset(seed=15)
    gen = torch.Generator().manual_seed(2)
    moves = [{a: torch.randint(0, 82, (64,), generator=gen) for a in AGENTS} for _ in range(6)]
    kept, seen = [], []
    for m in moves:
        ts = eager.step(m)
        seen.append({a: ts.final_obs[a].clone() for a in AGENTS})
        kept.append(lazy.step(m))
    assert any(ts.terminated.any() for ts in kept)
    for ts, expected in zip(kept, seen, strict=True):
        for a in AGENTS:
            assert torch.equal(ts.final_obs[a], expected[a])


def test_rewards_lie_in_unit_interval_and_truncated_is_false():
    g = game(num_envs=512)
    ts = g.reset(seed=7)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        ts = g.step({a: torch.randint(0, 82, (512,), generator=gen) for a in g.agents})
        for a in g.agents:
            assert ts.reward[a].ge(0).all() and ts.reward[a].le(1).all()
            assert torch.equal(ts.final_obs[a][~ts.terminated], ts.obs[a][~ts.terminated])
        assert not ts.truncated.any()
        assert torch.equal(ts.acting["p1"], ~ts.acting["p2"])


# --------------------------------------------------------------------------- extensions
def test_discount_applies_per_completed_round():
    g = game(num_envs=8, discount=0.9)
    ts = g.reset(seed=8)
    outside = deal(ts.obs["p1"])[2] / deal(ts.obs["p1"])[1]
    act(g, 3)
    act(g, WALK, 4)  # round 1 begins
    ts = act(g, WALK)
    assert torch.allclose(ts.reward["p1"].double(), outside * 0.9, atol=1e-6)


def test_outside_offer_none_pays_nothing_on_walk():
    g = game(outside_offer="none")
    ts = g.reset(seed=9)
    assert ts.obs["p1"][:, R.outside_index].eq(0).all()
    ts = act(g, WALK)
    assert ts.reward["p1"].eq(0).all() and ts.reward["p2"].eq(0).all()


def test_other_quantities_and_a_single_round():
    g = game(num_envs=5, quantities=[2, 3], rounds=1, max_value=10)
    ts = g.reset(seed=10)
    assert ts.obs["p1"].shape == (5, 22)
    ts = act(g, 7)
    legal = ts.legal["p2"][0].nonzero().flatten().tolist()
    assert legal == [g.rules.accept, g.rules.walk]  # one round: P2 may only answer
    assert ts.obs["p2"][:, g.rules.round_index].eq(0).all()


# --------------------------------------------------------------------------- statistics
def test_walk_welfare_is_about_one():
    g = game(num_envs=200_000)
    g.reset(seed=11)
    ts = act(g, WALK)
    welfare = (ts.reward["p1"] + ts.reward["p2"]).mean().item()
    # E[o / M] = E[(M + 1) / 2M], a little above 1/2 per player (BARGAIN.md: about 1.00)
    assert welfare == pytest.approx(1.0, abs=0.01)
    values = g.clone_state()["deal"][..., :3].float()
    assert values.mean().item() == pytest.approx(50.5, abs=0.1)


# --------------------------------------------------------------------------- seeding and state
def test_same_seed_same_games_and_reset_none_continues():
    a, b = game(), game()
    assert torch.equal(a.reset(seed=12).obs["p1"], b.reset(seed=12).obs["p1"])
    first = a.reset(seed=13).obs["p1"]
    assert not torch.equal(a.reset().obs["p1"], first)
    torch.manual_seed(0)
    c = game().reset().obs["p1"]
    torch.manual_seed(0)
    assert torch.equal(game().reset().obs["p1"], c)


def test_clone_and_restore_replay_the_same_future():
    g = game(num_envs=16)
    g.reset(seed=14)
    act(g, 21)
    saved = g.clone_state()
    gen = torch.Generator().manual_seed(1)
    moves = [{a: torch.randint(0, 82, (16,), generator=gen) for a in g.agents} for _ in range(8)]
    first = [g.step(m) for m in moves]
    g.restore_state(saved)
    for m, ts in zip(moves, first, strict=True):
        again = g.step(m)
        assert torch.equal(again.obs["p2"], ts.obs["p2"])
        assert torch.equal(again.reward["p1"], ts.reward["p1"])


def test_step_before_reset_is_an_error():
    with pytest.raises(RuntimeError, match="reset"):
        act(game(), 0)


# --------------------------------------------------------------------------- config and factory
@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"quantities": [0, 2]}, "quantities"),
        ({"quantities": [9, 9, 9]}, "offers"),
        ({"backend": "cuda"}, "backend"),
        ({"outside_offer": "gaussian"}, "outside_offer"),
        ({"discount": 0.0}, "discount"),
        ({"rounds": 0}, "rounds"),
        ({"rounds": 17}, "rounds"),
        ({"max_value": 0}, "max_value"),
        ({"num_envs": 0}, "num_envs"),
        ({"leader": "p3"}, "leader"),
        ({"render": True}, "render"),
    ],
)
def test_bad_config_is_a_one_line_config_error(kwargs, fragment):
    with pytest.raises(ConfigError) as err:
        BargainConfig(**kwargs).validate()
    message = str(err.value)
    assert fragment in message and "\n" not in message


def test_unknown_setting_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known settings"):
        BargainConfig.coerce({"quantity": [1]})


def test_factory_picks_torch_on_cpu():
    g = make_bargain({"num_envs": 3}, "cpu")
    assert type(g) is BargainGame and g.num_envs == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_triton_backend_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA") as err:
        make_bargain({"backend": "triton"}, "cpu")
    assert "\n" not in str(err.value)
