"""task=search: IS-MCTS at play time (dgsolve/search, dgsolve/tasks/search.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import OmegaConfBaseException

from dgsolve import games
from dgsolve.errors import ConfigError
from dgsolve.games.openspiel import OpenSpielGame
from dgsolve.hierarchy import Hierarchy
from dgsolve.nets import ActorCritic
from dgsolve.policy import JointPolicy, NetPolicy, UniformPolicy
from dgsolve.run import run
from dgsolve.search import Leaf, Root
from dgsolve.search.determinise import OpenSpielTree, TreeGame, make_tree
from dgsolve.search.ismcts import ISMCTS, SearchConfig, considered_visits
from dgsolve.search.model import PolicyModel
from tests.conftest import TINY, compose_config


def small_bargain():
    """A bargaining game with few offers, and an untrained shared actor-critic for both seats."""
    game = games.make(
        compose_config(["env=bargain", "env.num_envs=1", "env.quantities=[2,1]"]).env, "cpu"
    )
    spec = game.spec("p1")
    torch.manual_seed(0)
    net = ActorCritic(spec.obs_dim + 2, spec, [16])
    policies = {a: NetPolicy(net, spec, i, 2) for i, a in enumerate(game.agents)}
    joint = JointPolicy(policies, Hierarchy((game.agents,)), {a: spec for a in game.agents})
    return game, joint


def uniform_kuhn():
    game = OpenSpielGame({"game": "kuhn_poker", "num_envs": 1})
    specs = {a: game.spec(a) for a in game.agents}
    policies = {a: UniformPolicy(specs[a]) for a in game.agents}
    return game, JointPolicy(policies, Hierarchy((game.agents,)), specs)


def decision_states(tree: TreeGame, n: int, rng: np.random.Generator):
    """States at every depth of ``n`` uniformly random games (each at a decision)."""
    states = tree.roots(n, rng)
    out = []
    while True:
        rows = np.flatnonzero(tree.player(states, np.arange(n)) >= 0)
        if not len(rows):
            return out
        out.append(tree.select(states, rows))
        legal = tree.legal(states, rows).double().numpy()
        u = rng.random(len(rows))[:, None] * legal.sum(1, keepdims=True)
        act = np.minimum((np.cumsum(legal, 1) <= u).sum(1), legal.shape[1] - 1)
        tree.step(states, rows, act, rng)


# --------------------------------------------------------------------------- legality
@pytest.mark.parametrize("root", ["puct", "gumbel"])
@pytest.mark.parametrize("greedy", [False, True])
def test_search_never_returns_an_illegal_action_in_bargaining(root, greedy):
    game, joint = small_bargain()
    tree = make_tree(game)
    rng = np.random.default_rng(1)
    cfg = SearchConfig(simulations=12, root=Root(root), considered=4, greedy=greedy)
    search = ISMCTS(tree, PolicyModel(joint, tree.agents), cfg)
    few = 0
    for states in decision_states(tree, 64, rng):
        rows = np.arange(len(states))
        legal = tree.legal(states, rows).numpy()
        result = search.search(states, tree.player(states, rows), rng)
        assert legal[rows, result.action].all()
        assert (result.policy[~legal] == 0).all()
        np.testing.assert_allclose(result.policy.sum(1), 1.0)
        few += int((legal.sum(1) == 2).sum())  # P2's last turn: ACCEPT or WALK only
    assert few > 0


@pytest.mark.parametrize("root", ["puct", "gumbel"])
def test_search_never_returns_an_illegal_action_in_kuhn(root):
    game, joint = uniform_kuhn()
    tree = make_tree(game)
    rng = np.random.default_rng(2)
    cfg = SearchConfig(simulations=8, root=Root(root), leaf=Leaf.rollout)
    search = ISMCTS(tree, PolicyModel(joint, tree.agents), cfg)
    for states in decision_states(tree, 40, rng):
        rows = np.arange(len(states))
        legal = tree.legal(states, rows).numpy()
        result = search.search(states, tree.player(states, rows), rng)
        assert legal[rows, result.action].all()


# --------------------------------------------------------------------------- determinisation
def test_determinisations_keep_the_viewers_information_and_draw_the_rest_by_chance():
    game, _ = uniform_kuhn()
    rng = np.random.default_rng(3)
    for resample in (True, False):  # OpenSpiel's resample_from_infostate, or enumeration
        tree = OpenSpielTree(game.os_game)
        tree._can_resample = None if resample else False
        root = tree.roots(1, rng)
        root[0].apply_action(0)  # player 0 passes; player 1 to move
        cards = []
        for _ in range(600):
            det = tree.determinise(root, np.array([0]), 1, rng)[0]
            assert det.information_state_string(1) == root[0].information_state_string(1)
            cards.append(det.history()[0])
        own = root[0].history()[1]
        counts = np.bincount(cards, minlength=3)
        assert counts[own] == 0
        # player 0's card is uniform on the two cards player 1 does not hold
        assert all(abs(c / 600 - 0.5) < 0.08 for i, c in enumerate(counts) if i != own)
    bargain, _ = small_bargain()
    tree = make_tree(bargain)
    states = tree.roots(50, rng)
    det = tree.determinise(states, np.arange(50), 0, rng)
    rows = np.arange(50)
    torch.testing.assert_close(tree.observe(det, rows, 0), tree.observe(states, rows, 0))
    assert not torch.equal(tree.observe(det, rows, 1), tree.observe(states, rows, 1))


# --------------------------------------------------------------------------- Gumbel root
class Bandit(TreeGame):
    """One decision of one player, then the game ends paying ``payoff[action]``."""

    agents = ("solo",)

    def __init__(self, payoff):
        self.payoff = np.asarray(payoff, np.float64)
        self.num_actions = len(payoff)

    def roots(self, n, rng):
        return np.zeros(n, dtype=bool)

    def select(self, states, idx):
        return states[idx].copy()

    def player(self, states, idx):
        return np.where(states[idx], -1, 0)

    def legal(self, states, idx):
        return torch.ones(len(idx), self.num_actions, dtype=torch.bool)

    def observe(self, states, idx, viewer):
        return torch.zeros(len(idx), 1)

    def keys(self, states, idx, viewer):
        return [0] * len(idx)

    def step(self, states, idx, actions, rng):
        states[idx] = True
        return self.payoff[actions][:, None]

    def determinise(self, states, idx, viewer, rng):
        return states[idx].copy()


class FixedPrior:
    """A prior that favours a bad action, and a value of zero."""

    def __init__(self, prior):
        self.prior = np.asarray(prior, np.float64)

    def probs(self, player, obs, legal):
        return np.tile(self.prior, (len(obs), 1))

    def value(self, player, obs):
        return np.zeros(len(obs))


def test_gumbel_root_finds_the_best_action_against_its_prior():
    bandit = Bandit([0.1, 0.5, 0.9, 0.3, 0.2])  # action 2 is best
    model = FixedPrior([0.05, 0.05, 0.05, 0.8, 0.05])  # the prior prefers action 3
    rng = np.random.default_rng(4)
    roots = bandit.roots(200, rng)
    players = np.zeros(200, dtype=np.int64)
    cfg = SearchConfig(simulations=64, root=Root.gumbel, considered=5, greedy=True)
    result = ISMCTS(bandit, model, cfg).search(roots, players, rng)
    assert (result.action == 2).all()
    assert (result.policy.argmax(1) == 2).all() and (result.policy[:, 2] > 0.9).all()
    cfg.greedy = False  # with the Gumbel noise the winner is still the best action nearly always
    result = ISMCTS(bandit, model, cfg).search(roots, players, rng)
    assert (result.action == 2).mean() > 0.9
    # with no simulations, Gumbel-Top-1 is a sample of the prior
    cfg.simulations = 0
    result = ISMCTS(bandit, model, cfg).search(roots, players, rng)
    assert 0.65 < (result.action == 3).mean() < 0.95


def test_sequential_halving_schedule():
    # mctx's get_sequence_of_considered_visits(4, 12), by hand: one visit to each of the 4
    # actions (12 / (log2(4) * 4) rounds down to 1), then the best 2 get 3 visits a phase
    assert considered_visits(4, 12) == (0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4)
    assert considered_visits(1, 3) == (0, 1, 2)


# --------------------------------------------------------------------------- the task
def search_cfg(target: str, *extra: str):
    return compose_config(
        [
            "task=search",
            f"task.target={target}",
            "task.progress=false",
            "hardware=cpu",
            *extra,
        ]
    )


# measured NashConv at 64 simulations: PUCT 0.47 (visit frequencies stay mixed); Gumbel 0.83,
# the pure best response to the uniform opponent model (its π' sharpens on any Q gap, as
# mctx's rescaled σ does)
@pytest.mark.parametrize("root,margin", [("puct", 0.3), ("gumbel", 0.05)])
def test_search_lowers_kuhn_exploitability_of_a_uniform_prior(tmp_path, root, margin):
    cfg = search_cfg(
        "random",
        "env=openspiel",
        "task.leaf=rollout",
        "task.games=20",
        "task.simulations=[0,64]",
        f"task.root={root}",
    )
    summary = run(cfg, tmp_path)
    exact = summary["search"]["exact"]
    # 11/12 is the NashConv of the uniform policy in Kuhn poker (its exploitability is 0.458)
    assert exact["raw"]["nash_conv"] == pytest.approx(11 / 12)
    assert exact["64"]["nash_conv"] < exact["raw"]["nash_conv"] - margin
    assert (tmp_path / "policy_table_64.json").is_file()


def test_search_on_a_trained_bargaining_run_end_to_end(tmp_path):
    target = tmp_path / "target"
    train = compose_config(
        ["env=bargain", "algo=ppo", "env.quantities=[2,1]", "algo.hidden_sizes=[16]", *TINY]
        + ["task.eval_games=64", "task.render=false"]
    )
    run(train, target)
    cfg = search_cfg(str(target), "task.games=6", "task.simulations=[0,4]")
    summary = run(cfg, tmp_path / "search")
    payoffs = summary["search"]["payoffs"]
    assert set(payoffs) == {"random", "always_walk", "greedy", "fair_split"}
    assert set(payoffs["greedy"]) == {"p1", "p2"}
    # with zero simulations the search plays the raw policy, draw for draw
    gains = summary["search"]["gains"]
    assert all(seat["0"]["mean"] == 0 for opp in gains.values() for seat in opp.values())


def test_search_config_composes_and_refuses_bad_input(tmp_path):
    cfg = compose_config(["task=search"])
    assert cfg.task.name == "search" and list(cfg.task.simulations) == [0, 16, 64]
    assert cfg.task.root is Root.puct and cfg.task.leaf is Leaf.critic
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException)):
        compose_config(["task=search", "task.root=halving"])
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException)):
        compose_config(["task=search", "task.simulations=64"])  # a list: [64]
    with pytest.raises(ConfigError, match="needs task.target"):
        run(search_cfg("null"), tmp_path / "a")
    with pytest.raises(ConfigError, match="not a run directory"):
        run(search_cfg(str(tmp_path / "nowhere")), tmp_path / "b")
    with pytest.raises(Exception, match="task.leaf=rollout"):
        run(search_cfg("random", "env=openspiel"), tmp_path / "c")
