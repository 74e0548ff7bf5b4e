"""algo=ex2psro: welfare functions, welfare-biased selection, the KL anchor, and the stag hunt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgsolve import games, solvers
from dgsolve.errors import ConfigError
from dgsolve.eval import meta_game
from dgsolve.games.base import AgentSpec
from dgsolve.hierarchy import Hierarchy
from dgsolve.nets import ActorCritic
from dgsolve.policy import MixturePolicy, UniformPolicy
from dgsolve.solvers.ppo import KLAnchor
from tests.conftest import compose_config, through_torch

#: Rousseau's stag hunt as Skyrms gives it ("The Stag Hunt and the Evolution of Social
#: Structure", 2004): (stag, stag) pays 4 each, hare pays 3 whatever the other does, stag alone
#: 0. Two strict equilibria: (stag, stag), welfare 8, and (hare, hare), welfare 6, which is
#: risk-dominant: against uniform play hare earns 3 and stag 2, so the best response to PSRO's
#: first (uniform) population is hare, and PSRO ends there.
STAG_HUNT = ["env=matrix", "env.payoffs=[[[4,4],[0,3]],[[3,0],[3,3]]]"]
BUDGET = ["algo.sims_per_entry=1024", "algo.iterations=2", "algo.br_steps=10000"]


def make_solver(algo: str, *overrides: str, seed: int = 0):
    cfg = compose_config([f"algo={algo}", "algo.oracle=ppo", "hardware=cpu", *overrides])
    game = games.make(cfg.env, "cpu")
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    return solvers.make(cfg.algo, game, hierarchy, torch.device("cpu"), seed)


def stag_probability(solver) -> list[float]:
    """Each player's probability of stag under the final meta-strategy mixture."""
    obs = solver.game.reset(seed=0).obs
    out = []
    for agent, policy in solver.policies().items():
        assert isinstance(policy, MixturePolicy)
        out.append(float(policy.first_decision_distribution(obs[agent][:1]).probs[0, 0]))
    return out


def run(solver):
    while not solver.done:
        solver.step()
    return solver


# --------------------------------------------------------------------------- the algorithm
def test_ex2psro_finds_the_stag_hunt_s_high_welfare_equilibrium_where_psro_ends_low():
    ex2 = run(make_solver("ex2psro", *STAG_HUNT, *BUDGET))
    assert min(stag_probability(ex2)) > 0.85
    assert sum(ex2.meta_values) > 7.0  # (stag, stag): 8
    kept = ex2.summary()["ex2psro"]["last_exploration"]
    assert kept["kept_returns"] == pytest.approx([4.0, 4.0])  # only (stag, stag) imitated
    psro = run(make_solver("psro", *STAG_HUNT, *BUDGET))
    assert max(stag_probability(psro)) < 0.15
    assert sum(psro.meta_values) < 6.5  # (hare, hare): 6


def test_oracle_exact_and_a_response_shorter_than_an_iteration_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="algo.oracle=ppo"):
        make_solver("ex2psro", *STAG_HUNT, "algo.oracle=exact")
    with pytest.raises(ConfigError, match="algo.br_steps=100 is less than one PPO iteration"):
        make_solver("ex2psro", *STAG_HUNT, "algo.br_steps=100")  # 256 copies x 1 step


def test_resumed_iterations_equal_uninterrupted_ones():
    budget = [*STAG_HUNT, "env.num_envs=32", "algo.sims_per_entry=64", "algo.br_steps=256"]
    budget += ["algo.iterations=2", "algo.imitation_steps=64"]
    straight = make_solver("ex2psro", *budget)
    metrics = [straight.step() for _ in range(2)]
    first = make_solver("ex2psro", *budget)
    first.step()
    resumed = make_solver("ex2psro", *budget)
    resumed.load_state_dict(through_torch(first.state_dict()))
    assert resumed.step() == metrics[1]
    assert resumed.summary()["ex2psro"] == straight.summary()["ex2psro"]


@pytest.mark.parametrize("welfare", ["utilitarian", "nash", "egalitarian"])
def test_every_welfare_function_composes_and_is_reported(welfare):
    solver = make_solver(
        "ex2psro", *STAG_HUNT, f"algo.welfare_fn={welfare}", "algo.sims_per_entry=64"
    )
    summary = solver.summary()["ex2psro"]
    assert summary["welfare_fn"] == welfare
    assert solver._meta_options() == {"select": "welfare", "welfare": welfare}


# --------------------------------------------------------------------------- welfare
def test_welfare_functions_rank_payoff_vectors_as_defined():
    values = np.array([[5.0, 1.0], [2.0, 2.0], [0.0, 0.0]])
    floor = values.min(0)
    assert meta_game.welfare_of("utilitarian", values, floor).tolist() == [6.0, 4.0, 0.0]
    assert meta_game.welfare_of("egalitarian", values, floor).tolist() == [1.0, 2.0, 0.0]
    nash = meta_game.welfare_of("nash", values, floor)
    assert nash[0] == pytest.approx(np.log(5.0)) and nash[1] == pytest.approx(np.log(4.0))
    assert nash[2] < -20  # no gain over the floor
    with pytest.raises(ConfigError, match="known"):
        meta_game.welfare_of("rawls", values, floor)


def test_welfare_selection_follows_the_welfare_function():
    # two pure equilibria: (5, 1) and (2, 2), and a mixed one below both
    A = np.array([[5.0, 0.0], [0.0, 2.0]])
    B = np.array([[1.0, 0.0], [0.0, 2.0]])
    pick = {
        fn: meta_game.expected_payoffs([A, B], meta_game.nash([A, B], "welfare", fn))
        for fn in meta_game.WELFARE_FNS
    }
    assert pick["utilitarian"] == pytest.approx([5.0, 1.0])
    assert pick["nash"] == pytest.approx([5.0, 1.0])  # 5·1 > 2·2
    assert pick["egalitarian"] == pytest.approx([2.0, 2.0])


def test_welfare_selection_beyond_enumeration_tries_every_lemke_howson_label():
    # a 12 x 12 coordination game: every diagonal cell is an equilibrium, worth k each
    values = np.arange(1.0, 13.0)
    A = B = np.diag(values)
    assert meta_game.enumeration_work(12, 12) > meta_game.MAX_ENUMERATION_WORK
    first = meta_game.nash([A, B])
    best = meta_game.nash([A, B], select="welfare")
    assert meta_game.expected_payoffs([A, B], best) == pytest.approx([12.0, 12.0])
    assert sum(meta_game.expected_payoffs([A, B], first)) < 24.0


# --------------------------------------------------------------------------- the KL anchor
def _net(seed: int) -> ActorCritic:
    torch.manual_seed(seed)
    net = ActorCritic(3, AgentSpec(obs_dim=3, num_actions=4), [8])
    with torch.no_grad():  # away from the near-uniform initial policy
        for p in net.actor_parameters():
            p.normal_()
    return net


def test_the_anchor_s_divergence_is_zero_at_the_reference_and_ignores_illegal_actions():
    reference, other = _net(0), _net(1)
    anchor = KLAnchor(reference, coef=1.0)
    obs = torch.randn(64, 3)
    legal = torch.tensor([[True, True, False, False]]).expand(64, 4)
    assert float(anchor.divergence(reference, obs, legal)) == pytest.approx(0.0, abs=1e-6)
    kl = anchor.divergence(other, obs, legal)
    with torch.no_grad():
        value = float(kl)
    # equal to the divergence of the distributions over the two legal actions alone
    with torch.no_grad():
        p = torch.softmax(other.actor_out(obs)[:, :2], -1)
        q = torch.softmax(reference.actor_out(obs)[:, :2], -1)
    assert value > 0.01
    assert value == pytest.approx(float((p * (p / q).log()).sum(-1).mean()), rel=1e-4)
    kl.backward()
    assert all(torch.isfinite(p.grad).all() for p in other.parameters() if p.grad is not None)
    assert all(p.grad is None for p in reference.parameters())


def test_the_adaptive_penalty_follows_ppo_s_rule():
    anchor = KLAnchor(_net(0), coef=0.1, target=0.01)
    anchor.adapt(0.05)
    assert anchor.coef == pytest.approx(0.2)
    anchor.adapt(0.001)
    assert anchor.coef == pytest.approx(0.1)
    anchor.adapt(0.012)
    assert anchor.coef == pytest.approx(0.1)
    fixed = KLAnchor(_net(0), coef=0.1)
    fixed.adapt(5.0)
    assert fixed.coef == pytest.approx(0.1)


def test_a_mixture_s_first_decision_distribution_weights_its_members():
    spec = AgentSpec(obs_dim=3, num_actions=4)
    net = _net(0)
    from dgsolve.policy import NetPolicy

    mixture = MixturePolicy([UniformPolicy(spec), NetPolicy(net, spec)], [0.25, 0.75])
    obs = torch.randn(5, 3)
    legal = torch.tensor([[True, False, True, True]]).expand(5, 4)
    expected = 0.25 * legal.float() / 3 + 0.75 * net.distribution(obs, legal).probs
    assert torch.allclose(
        mixture.first_decision_distribution(obs, legal).probs, expected, atol=1e-6
    )
