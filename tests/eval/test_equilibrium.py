"""``equilibrium_report``: gaps of hand-built policies whose distance from equilibrium is known.

Payoffs are those of shared/MATRIX_GAMES.md (row = leader; action 0 = C, 1 = D); every expected
gap is worked out by hand in the comments.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.distributions import Normal

from dgsolve.eval import exact_lq
from dgsolve.eval.equilibrium import equilibrium_report, verdict_line
from dgsolve.games.lq import LQConfig, LQGame
from dgsolve.games.matrix import MatrixConfig, MatrixGame
from dgsolve.hierarchy import Hierarchy
from dgsolve.policy import (
    ConditionalTablePolicy,
    JointPolicy,
    LinearPolicy,
    MixedResponsePolicy,
    TablePolicy,
)
from dgsolve.solvers.exact import ExactSolver

C, D = [1.0, 0.0], [0.0, 1.0]
CPU = torch.device("cpu")

# A game where commitment pays: row 0 strictly dominates for the leader (1 > 0, 3 > 2), so the
# unique Nash equilibrium is (0, 0) = (1, 1). Committing to row 1 makes the follower answer
# column 1 (1 > 0): (2, 1). Mixing p on row 0 keeps column 1 a best reply while p <= 1/2
# (follower: p vs 1 - p), worth 3p + 2(1 - p) to the leader: the mixed commitment is p = 1/2,
# worth 2.5 (Conitzer & Sandholm, EC 2006).
COMMITMENT_GAME = [[[1, 1], [3, 0]], [[0, 0], [2, 1]]]


def hierarchy_for(game, mode: str, observes: str = "action") -> Hierarchy:
    cfg = SimpleNamespace(mode=mode, action_sequence=None, follower_observes=observes)
    return Hierarchy.for_game(cfg, game)


def matrix_setup(mode: str, observes: str = "action", **env):
    env_cfg = MatrixConfig(**{"num_envs": 4, **env})
    game = MatrixGame(env_cfg)
    hierarchy = hierarchy_for(game, mode, observes)
    cfg = OmegaConf.create({"seed": 0, "env": {**vars(env_cfg), "name": "matrix"}})
    return cfg, game, hierarchy


def report(cfg, game, hierarchy, policies):
    joint = JointPolicy(policies, hierarchy, {a: game.spec(a) for a in game.agents})
    return equilibrium_report(cfg, joint, hierarchy, CPU)


def every_state(probs, game) -> list:
    return [probs] * game.num_states


def test_families_without_a_reference_get_no_report():
    cfg = OmegaConf.create({"seed": 0, "env": {"family": "mpe"}})
    assert equilibrium_report(cfg, None, Hierarchy((("a",),)), CPU) is None


# --------------------------------------------------------------------------- one-shot
@pytest.mark.parametrize(
    "row,column,gap,payoffs",
    [
        # prisoner's dilemma: (D, D) is the equilibrium
        (D, D, 0.0, (2.0, 2.0)),
        # (C, C): each gains 4 - 3 = 1 by defecting
        (C, C, 1.0, (3.0, 3.0)),
        # row half-half, column C: row's best reply D pays 4 against 3.5 (gain 0.5); column
        # faces 0.5 * (3, 4) + 0.5 * (1, 2) = (2, 3), so D gains 3 - 2 = 1
        ([0.5, 0.5], C, 1.0, (3.5, 2.0)),
    ],
)
def test_one_shot_nash_gap_by_hand(row, column, gap, payoffs):
    cfg, game, hierarchy = matrix_setup("simultaneous", game="prisoners_dilemma")
    policies = {
        "row": TablePolicy(every_state(row, game)),
        "column": TablePolicy(every_state(column, game)),
    }
    eq = report(cfg, game, hierarchy, policies)
    assert eq["nash_gap"] == pytest.approx(gap)
    assert tuple(eq["payoffs"].values()) == pytest.approx(payoffs)
    assert "stackelberg_gap" not in eq
    assert eq["strategies"]["row"] == pytest.approx(row)


@pytest.mark.parametrize(
    "leader,response,stackelberg_gap,nash_gap",
    [
        # chicken's Stackelberg solution: commit to D, the follower answers C -> D, D -> C
        (D, [D, C], 0.0, 0.0),
        # leader C with correct replies: it gets 2 instead of 4, and switching to D gains 2
        (C, [D, C], 2.0, 2.0),
        # leader D, follower answers D with D: leader gets 1 (gap 3); the follower gains
        # 2 - 1 = 1 by answering C; the leader gains 3 - 1 = 2 by playing C, answered with C
        (D, [C, D], 3.0, 2.0),
    ],
)
def test_one_shot_stackelberg_gaps_by_hand(leader, response, stackelberg_gap, nash_gap):
    cfg, game, hierarchy = matrix_setup("leader_follower", game="chicken")
    policies = {
        "row": TablePolicy(every_state(leader, game)),
        "column": ConditionalTablePolicy(every_state(response, game)),
    }
    eq = report(cfg, game, hierarchy, policies)
    assert eq["stackelberg_gap"] == pytest.approx(stackelberg_gap)
    assert eq["nash_gap"] == pytest.approx(nash_gap)
    np.testing.assert_allclose(eq["strategies"]["column"], response)
    assert eq["reference"]["commitment"] == "pure"


def test_column_leader_exact_policies_have_no_gap():
    # chicken is symmetric: with the column player leading it commits to D and gets 4
    cfg, game, hierarchy = matrix_setup("leader_follower", game="chicken", leader="column")
    solver = ExactSolver(SimpleNamespace(name="exact"), game, hierarchy, CPU, 0)
    eq = equilibrium_report(cfg, solver.joint_policy(), hierarchy, CPU)
    assert eq["stackelberg_gap"] == 0.0 and eq["nash_gap"] == 0.0
    assert eq["payoffs"] == {"column": 4.0, "row": 2.0}


def test_verdict_line_says_what_the_run_found():
    cfg, game, hierarchy = matrix_setup("leader_follower", game="chicken")
    solver = ExactSolver(SimpleNamespace(name="exact"), game, hierarchy, CPU, 0)
    eq = equilibrium_report(cfg, solver.joint_policy(), hierarchy, CPU)
    assert verdict_line(eq, hierarchy) == (
        "ε-Stackelberg equilibrium (pure commitment): leader gap 0, follower gap 0, "
        "value gap 0 (tolerance 0.05)"
    )
    policies = {  # leader C with correct replies: 2 instead of 4 (see above)
        "row": TablePolicy(every_state(C, game)),
        "column": ConditionalTablePolicy(every_state([D, C], game)),
    }
    line = verdict_line(report(cfg, game, hierarchy, policies), hierarchy)
    assert line.startswith("not an ε-Stackelberg equilibrium (pure commitment): worst gap 2")


@pytest.mark.parametrize(
    "leader,payoff,stackelberg_gap,nash_gap",
    [
        # the mixed commitment itself: column 1 on the tie, 2.5 for the leader, no gap
        (None, 2.5, 0.0, 0.0),
        # pure row 1: 2, short of 2.5 by 0.5; committing to (1/2, 1/2) instead gains 0.5 (a
        # search over pure commitments only would have called this an equilibrium)
        (D, 2.0, 0.5, 0.5),
        # (0.8, 0.2): the follower answers column 0 (0.8 > 0.2), leader gets 0.8; the mixed
        # commitment would get 2.5: gain 1.7, and the gap to 2.5 is 1.7 as well
        ([0.8, 0.2], 0.8, 1.7, 1.7),
    ],
)
def test_one_shot_queries_use_the_mixed_commitment(leader, payoff, stackelberg_gap, nash_gap):
    cfg, game, hierarchy = matrix_setup("leader_follower", "queries", payoffs=COMMITMENT_GAME)
    policies = ExactSolver(SimpleNamespace(name="exact"), game, hierarchy, CPU, 0).policies()
    assert isinstance(policies["column"], MixedResponsePolicy)
    if leader is not None:
        policies["row"] = TablePolicy(every_state(leader, game))
    eq = report(cfg, game, hierarchy, policies)
    assert eq["strategies"]["best_commitment"] == pytest.approx([0.5, 0.5])
    assert eq["reference"]["commitment"] == "mixed"
    assert eq["reference"]["stackelberg"]["payoffs"]["row"] == 2.0  # pure commitment
    assert eq["payoffs"]["row"] == pytest.approx(payoff, abs=1e-6)
    assert eq["stackelberg_gap"] == pytest.approx(stackelberg_gap, abs=1e-6)
    assert eq["nash_gap"] == pytest.approx(nash_gap, abs=1e-6)


# --------------------------------------------------------------------------- repeated
REPEATED_PD = {"game": "prisoners_dilemma", "rounds": 10, "reward_offset": -2.5}


@pytest.mark.parametrize(
    "action,returns,gap",
    [
        # always D: -0.5 a round; cooperating anywhere against always-D pays -1.5 instead
        (D, -5.0, 0.0),
        # always C: 0.5 a round; always D against always C pays 1.5 a round: gain 10
        (C, 5.0, 10.0),
    ],
)
def test_repeated_nash_gap_by_hand(action, returns, gap):
    cfg, game, hierarchy = matrix_setup("simultaneous", **REPEATED_PD)
    policies = {a: TablePolicy(every_state(action, game)) for a in game.agents}
    eq = report(cfg, game, hierarchy, policies)
    assert eq["values"] == {"row": returns, "column": returns}
    assert eq["returns"] == {"row": returns, "column": returns}  # sampled play agrees
    assert eq["nash_gap"] == pytest.approx(gap)
    assert "stackelberg_gap" not in eq
    assert eq["verdict"]["equilibrium"] is (gap == 0.0)


def test_repeated_mixed_policy_is_judged_as_it_plays():
    # Row defects with probability 0.51 at every state, column always defects. Each round row
    # gets 0.51 (2 - 2.5) + 0.49 (1 - 2.5) = -0.99: -9.9 over ten rounds, where always-D gets
    # -5: a gain of 4.9. Column's reply is already best (D pays 0.48 a round, C -0.52). Read
    # greedily (D everywhere), the profile would be an exact equilibrium with gap 0.
    cfg, game, hierarchy = matrix_setup("simultaneous", **REPEATED_PD)
    policies = {
        "row": TablePolicy(every_state([0.49, 0.51], game)),
        "column": TablePolicy(every_state(D, game)),
    }
    eq = report(cfg, game, hierarchy, policies)
    assert eq["values"]["row"] == pytest.approx(-9.9)
    assert eq["deviation_gain"] == pytest.approx({"row": 4.9, "column": 0.0})
    assert eq["nash_gap"] == pytest.approx(4.9)
    assert eq["returns"]["row"] == pytest.approx(-9.9, abs=0.15)  # 1024 sampled episodes
    assert not eq["verdict"]["equilibrium"]


def test_repeated_leader_against_an_oracle_follower():
    # The leader always cooperates; the exact follower, reading that commitment from its query
    # answers, defects throughout: the leader gets 10 * (1 - 2.5) = -15. The optimal memory-1
    # commitment is worth 6 (tests/solvers/test_exact.py), so the stackelberg gap is 21, and as
    # the follower answers every commitment optimally, the leader's deviation gain is also 21.
    cfg, game, hierarchy = matrix_setup("leader_follower", "queries", **REPEATED_PD)
    policies = ExactSolver(SimpleNamespace(name="exact"), game, hierarchy, CPU, 0).policies()
    policies["row"] = TablePolicy(every_state(C, game))
    eq = report(cfg, game, hierarchy, policies)
    assert eq["values"] == {"row": -15.0, "column": 15.0}
    assert eq["stackelberg_gap"] == pytest.approx(21.0)
    assert eq["deviation_gain"] == pytest.approx({"row": 21.0, "column": 0.0})
    assert eq["nash_gap"] == pytest.approx(21.0)
    assert eq["verdict"]["kind"] == "stackelberg (memory-1 commitment)"


def test_repeated_action_mode_with_fixed_replies():
    # Both always cooperate, the follower whatever it sees: 0.5 a round, 5 in all, 1 short of
    # the commitment value 6. Either player gains 10 by always defecting (15 - 5); the follower's
    # deviations may depend on the leader's current action (2^10 tables).
    cfg, game, hierarchy = matrix_setup("leader_follower", **REPEATED_PD)
    policies = {
        "row": TablePolicy(every_state(C, game)),
        "column": ConditionalTablePolicy(every_state([C, C], game)),
    }
    eq = report(cfg, game, hierarchy, policies)
    assert eq["stackelberg_gap"] == pytest.approx(1.0)
    assert eq["deviation_gain"] == pytest.approx({"row": 10.0, "column": 10.0})
    assert eq["values"] == {"row": 5.0, "column": 5.0}


# --------------------------------------------------------------------------- LQ
def lq_setup(mode: str, **env):
    env_cfg = LQConfig(**{"num_envs": 4, **env})
    game = LQGame(env_cfg)
    hierarchy = hierarchy_for(game, mode)
    cfg = OmegaConf.create({"seed": 0, "env": OmegaConf.structured(env_cfg)})
    return env_cfg, cfg, game, hierarchy


def test_lq_exact_and_scaled_nash_gains():
    env_cfg, cfg, game, hierarchy = lq_setup("simultaneous")
    ref = exact_lq.feedback_nash(env_cfg)
    exact = {a: LinearPolicy(ref["gains"][a], game.spec(a), 2, None) for a in game.agents}
    eq = report(cfg, game, hierarchy, exact)
    assert max(eq["gain_error"].values()) < 1e-5
    assert max(abs(v) for v in eq["cost_gap"].values()) < 1e-5
    assert eq["reference"]["equilibrium"] == "feedback_nash"

    # every gain 10% too large: relative Frobenius error 0.1; costs as evaluate_gains says
    scaled = {a: (1.1 * np.asarray(ref["gains"][a])).tolist() for a in game.agents}
    policies = {a: LinearPolicy(scaled[a], game.spec(a), 2, None) for a in game.agents}
    eq = report(cfg, game, hierarchy, policies)
    assert eq["gain_error"] == pytest.approx({"p1": 0.1, "p2": 0.1}, abs=1e-5)
    costs = exact_lq.evaluate_gains(env_cfg, scaled)
    for a in game.agents:
        expected = (costs[a] - ref["costs"][a]) / abs(ref["costs"][a])
        assert eq["cost_gap"][a] == pytest.approx(expected, abs=1e-5)
        np.testing.assert_allclose(eq["gains"][a], scaled[a], atol=1e-5)


def test_lq_follower_gain_is_its_reaction_to_the_leaders_mean_action():
    # Finite horizon: one gain per step. The leader does nothing (u1 = 0), so the exact
    # follower's reaction u2 = -G [x; u1] reduces to its state part: its fitted gain at step t
    # is G_t[:, :2]. The leader's error is |0 - K| / |K| = 1.
    env_cfg, cfg, game, hierarchy = lq_setup(
        "leader_follower", horizon=3, discount=None, noise_std=0.0
    )
    ref = exact_lq.feedback_stackelberg(env_cfg)
    G = np.asarray(ref["response"]["p2"])  # [T, 1, 2 + 1]
    policies = {
        "p1": LinearPolicy(np.zeros((3, 1, 2)), game.spec("p1"), 2, 3),
        "p2": LinearPolicy(G, game.spec("p2"), 2, 3, seen_dim=1),
    }
    eq = report(cfg, game, hierarchy, policies)
    np.testing.assert_allclose(eq["gains"]["p2"], G[:, :, :2], atol=1e-5)
    assert eq["gain_error"]["p1"] == pytest.approx(1.0)
    expected = exact_lq.gain_error(G[:, :, :2], ref["gains"]["p2"])
    assert eq["gain_error"]["p2"] == pytest.approx(expected, abs=1e-5)
    assert eq["reference"]["equilibrium"] == "feedback_stackelberg"


class AffinePolicy(LinearPolicy):
    """``u = -K x + b``: a linear policy with an intercept."""

    def __init__(self, gains, spec, intercept):
        super().__init__(gains, spec, 2, None)
        self.intercept = torch.tensor(intercept, dtype=torch.float32)

    def distribution(self, obs, legal=None):
        u = super().distribution(obs, legal).mean + self.intercept
        return Normal(u, torch.zeros_like(u), validate_args=False)


def test_lq_intercept_is_not_dropped():
    # The exact Nash gains plus a constant push of 1 in every state: the fitted gains are exact
    # (gain_error 0) but the profile costs several times more (the affine costs include the
    # intercept) and each player gains from a best response, so it is not an equilibrium.
    env_cfg, cfg, game, hierarchy = lq_setup("simultaneous")
    ref = exact_lq.feedback_nash(env_cfg)
    policies = {a: AffinePolicy(ref["gains"][a], game.spec(a), [1.0]) for a in game.agents}
    eq = report(cfg, game, hierarchy, policies)
    assert max(eq["gain_error"].values()) < 1e-5
    rules = {a: exact_lq.AffineRule(K=ref["gains"][a], b=[1.0]) for a in game.agents}
    costs = exact_lq.affine_costs(env_cfg, [list(game.agents)], rules)
    for a in game.agents:
        assert eq["costs"][a] == pytest.approx(costs[a], rel=1e-4)
        assert eq["cost_gap"][a] > 3.0
        assert eq["deviation_gain"][a] > 0.5
    assert not eq["verdict"]["equilibrium"]


def test_lq_follower_that_ignores_its_leader_is_no_stackelberg_equilibrium():
    # Both play their feedback Nash gains and the follower does not react to the leader's
    # action at all. Each is then a best response to the other, so the deviation gains are 0,
    # but the fitted reaction is 0 against a nonzero exact one (error 1) and the leader's cost
    # is off the feedback Stackelberg value: the verdict says no.
    env_cfg, cfg, game, hierarchy = lq_setup("leader_follower")
    nash = exact_lq.feedback_nash(env_cfg)
    policies = {a: LinearPolicy(nash["gains"][a], game.spec(a), 2, None) for a in game.agents}
    eq = report(cfg, game, hierarchy, policies)
    assert max(eq["deviation_gain"].values()) < 1e-4
    np.testing.assert_allclose(eq["reaction"]["p2"]["p1"], [[0.0]], atol=1e-6)
    assert eq["reaction_error"]["p2"] == pytest.approx(1.0, abs=1e-6)
    assert eq["stackelberg_gap"] > 0.05
    assert not eq["verdict"]["equilibrium"]


def test_lq_exact_stackelberg_reaction_is_recovered():
    env_cfg, cfg, game, hierarchy = lq_setup("leader_follower")
    solver = ExactSolver(SimpleNamespace(name="exact"), game, hierarchy, CPU, 0)
    eq = report(cfg, game, hierarchy, solver.policies())
    G = np.asarray(exact_lq.feedback_stackelberg(env_cfg)["response"]["p2"])
    np.testing.assert_allclose(eq["reaction"]["p2"]["p1"], -G[:, 2:], atol=1e-5)
    assert eq["reaction_error"]["p2"] < 1e-5
    assert eq["verdict"]["equilibrium"] and eq["verdict"]["kind"] == "feedback stackelberg"
