"""The bargaining game's batched tree capability (BargainGame.tree_*): nodes step, observe and
pay exactly as the batched game does, and tree methods draw deals without touching the game."""

from __future__ import annotations

import pytest
import torch

from dgsolve.games.bargain import BargainConfig, BargainGame
from dgsolve.games.bargain.reference import BargainNodes

VARIANTS = [
    {},
    {"quantities": [2, 1], "max_value": 3, "rounds": 1},
    {"quantities": [3, 2, 1], "rounds": 4, "discount": 0.9},
    {"outside_offer": "none", "rounds": 2},
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_tree_nodes_step_as_the_batched_game(variant):
    """Random legal play (and some illegal ids, which walk), compared step by step while each
    game lasts: observations of both viewers, the mover's legal mask, rewards and endings."""
    b = 256
    game = BargainGame(BargainConfig(num_envs=b, **variant), "cpu")
    ts = game.reset(seed=7)
    nodes = BargainNodes(game._deal.clone(), game._situation.clone())
    gen = torch.Generator().manual_seed(1)
    alive = torch.ones(b, dtype=torch.bool)
    ended = 0
    while alive.any():
        for viewer, agent in enumerate(game.agents):
            assert torch.equal(game.tree_observe(nodes, viewer)[alive], ts.obs[agent][alive])
        mover = nodes.player.bool()[:, None]
        legal = game.tree_legal(nodes)
        assert torch.equal(legal[alive], torch.where(mover, ts.legal["p2"], ts.legal["p1"])[alive])
        action = torch.multinomial(legal.float(), 1, generator=gen).squeeze(1)
        wild = torch.rand(b, generator=gen) < 0.05
        action = torch.where(wild, torch.randint(-2, 100, (b,), generator=gen), action)
        ts = game.step({"p1": action, "p2": action})
        nodes, done, reward = game.tree_step(nodes, action)
        for i, agent in enumerate(game.agents):
            assert torch.equal(reward[i][alive], ts.reward[agent][alive])
        assert torch.equal(done[alive], ts.terminated[alive])
        assert (reward[:, ~done] == 0).all()
        ended += int((done & alive).sum())
        alive &= ~done
    assert ended == b


def test_tree_roots_draw_from_the_callers_generator_and_leave_the_game_alone():
    game = BargainGame(BargainConfig(num_envs=8), "cpu")
    game.reset(seed=3)
    before = game.clone_state()
    a = game.tree_roots(100, torch.Generator().manual_seed(5))
    b = game.tree_roots(100, torch.Generator().manual_seed(5))
    assert torch.equal(a.deal, b.deal) and (a.situation == 0).all() and len(a) == 100
    after = game.clone_state()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the deals follow the rules: values in 1..max_value, totals, outside offers in 1..M
    k = game.rules.num_items
    values, totals, outside = a.deal[..., :k], a.deal[..., k], a.deal[..., k + 1]
    q = torch.tensor(game.rules.quantities, dtype=torch.int32)
    assert ((values >= 1) & (values <= game.rules.max_value)).all()
    assert torch.equal(totals, (values * q).sum(-1, dtype=torch.int32))
    assert ((outside >= 1) & (outside <= totals)).all()


def test_node_selection_keeps_rows_together():
    game = BargainGame(BargainConfig(num_envs=4), "cpu")
    nodes = game.tree_roots(10, torch.Generator().manual_seed(0))
    picked = nodes.select(torch.tensor([7, 2, 2]))
    assert torch.equal(picked.deal[:, 0], nodes.deal[:, 7])
    assert torch.equal(picked.deal[:, 1], picked.deal[:, 2])
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[1, 4]] = True
    assert torch.equal(nodes.select(mask).deal, nodes.deal[:, [1, 4]])
