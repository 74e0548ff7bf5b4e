"""Exact bimatrix equilibria: Nash, pure and mixed Stackelberg, repeated memory-1 commitment.

Every expected value below is derived by hand in the comments (or cited).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgsolve.errors import CapabilityError, ConfigError, HierarchyError
from dgsolve.eval.exact import exact_reference
from dgsolve.eval.exact_matrix import (
    memory1_policies,
    nash_equilibria,
    nash_gap,
    repeated_equilibria,
    repeated_returns,
    stackelberg_gaps,
    stackelberg_mixed,
    stackelberg_pure,
)
from dgsolve.games.lq import LQConfig
from dgsolve.games.matrix import CANONICAL_GAMES, MatrixConfig, MatrixGame, payoff_matrices

C, D = [1.0, 0.0], [0.0, 1.0]

# Hand derivation for the twelve games of MATRIX_GAMES.md (row = leader; action 0 = C, 1 = D).
# Pure-commitment Stackelberg: for each leader action the follower's best response, then the
# leader's best action. E.g. prisoners_dilemma: C -> follower D (4 > 3), leader gets 1;
# D -> follower D (2 > 1), leader gets 2; so (D, D) with (2, 2).
# Nash: dominant actions where they exist; in 2x2 games with two pure equilibria the mixed one
# makes the opponent indifferent, e.g. chicken: column indifferent when 3p + 2(1-p) = 4p + (1-p),
# p = 1/2; both then get 2.5.
#   name: (stackelberg profile, stackelberg payoffs, [(nash p_row(C), q_col(C), payoffs), ...])
HAND_TABLE = {
    # D dominant for both (4 > 3, 2 > 1).
    "prisoners_dilemma": ((D, D), (2, 2), [(0, 0, (2, 2))]),
    # C -> C (4 > 3): leader gets its maximum 4. Mixed: col C 4p + (1-p) = col D 3p + 2(1-p).
    "stag_hunt": ((C, C), (4, 4), [(1, 1, (4, 4)), (0.5, 0.5, (2.5, 2.5)), (0, 0, (2, 2))]),
    # C -> C (4 > 2). Mixed: 4p + (1-p) = 2p + 3(1-p) -> p = 1/2, value 2.5.
    "assurance": ((C, C), (4, 4), [(1, 1, (4, 4)), (0.5, 0.5, (2.5, 2.5)), (0, 0, (3, 3))]),
    # C -> C (4 > 1). Mixed: 4p + 2(1-p) = p + 3(1-p) -> p = 1/4, value 2.5.
    "coordination": ((C, C), (4, 4), [(1, 1, (4, 4)), (0.25, 0.25, (2.5, 2.5)), (0, 0, (3, 3))]),
    # C dominant for both in the next three games.
    "mixed_harmony": ((C, C), (4, 4), [(1, 1, (4, 4))]),
    "harmony": ((C, C), (4, 4), [(1, 1, (4, 4))]),
    "no_conflict": ((C, C), (4, 4), [(1, 1, (4, 4))]),
    # D dominant for both: row 4 > 2, 3 > 1; column 4 > 2, 3 > 1.
    "deadlock": ((D, D), (3, 3), [(0, 0, (3, 3))]),
    # D dominant for both: row 4 > 1, 3 > 2; column 4 > 1, 3 > 2.
    "prisoners_delight": ((D, D), (3, 3), [(0, 0, (3, 3))]),
    # C -> D (leader 3), D -> C (leader 4). Mixed: 1p + 3(1-p) = 4p + 2(1-p) -> p = 1/4.
    "hero": ((D, C), (4, 3), [(1, 0, (3, 4)), (0.25, 0.25, (2.5, 2.5)), (0, 1, (4, 3))]),
    # C -> D (leader 3), D -> C (leader 4). Mixed: 2p + 3(1-p) = 4p + (1-p) -> p = 1/2.
    "battle": ((D, C), (4, 3), [(1, 0, (3, 4)), (0.5, 0.5, (2.5, 2.5)), (0, 1, (4, 3))]),
    # C -> D (leader 2), D -> C (leader 4). Mixed: p = 1/2 as above.
    "chicken": ((D, C), (4, 2), [(1, 0, (2, 4)), (0.5, 0.5, (2.5, 2.5)), (0, 1, (4, 2))]),
}


@pytest.mark.parametrize("name", sorted(CANONICAL_GAMES))
def test_canonical_games_stackelberg_and_nash_by_hand(name):
    A, B = payoff_matrices(MatrixConfig(game=name))
    (lead, follow), payoffs, nash = HAND_TABLE[name]
    s = stackelberg_pure(A, B)
    assert s["strategies"] == {"row": lead, "column": follow}
    assert (s["payoffs"]["row"], s["payoffs"]["column"]) == payoffs
    found = nash_equilibria(A, B)
    assert len(found) == len(nash)
    for eq, (p, q, value) in zip(found, nash, strict=True):
        assert eq["strategies"]["row"] == pytest.approx([p, 1 - p], abs=1e-12)
        assert eq["strategies"]["column"] == pytest.approx([q, 1 - q], abs=1e-12)
        assert (eq["payoffs"]["row"], eq["payoffs"]["column"]) == pytest.approx(value, abs=1e-12)
        assert nash_gap(A, B, eq["strategies"]["row"], eq["strategies"]["column"]) < 1e-12
    # No 2x2 canonical game gains from mixed commitment: the leader already gets its best
    # payoff among the follower's best responses (checked against the hand values above).
    assert stackelberg_mixed(A, B)["payoffs"]["row"] == pytest.approx(payoffs[0])


def test_matching_pennies_has_a_unique_half_half_equilibrium():
    # Textbook: no pure equilibrium, indifference forces (1/2, 1/2) for both, value 0.
    A = np.array([[1.0, -1.0], [-1.0, 1.0]])
    (eq,) = nash_equilibria(A, -A)
    assert eq["strategies"]["row"] == pytest.approx([0.5, 0.5])
    assert eq["strategies"]["column"] == pytest.approx([0.5, 0.5])
    assert eq["payoffs"]["row"] == pytest.approx(0.0)


def test_mixed_commitment_beats_pure_commitment():
    # The standard illustration of commitment to a mixed strategy (the example used after
    # Conitzer & Sandholm, "Computing the optimal strategy to commit to", EC 2006):
    #            L        R
    #   U     (2, 1)   (4, 0)
    #   D     (1, 0)   (3, 1)
    # Nash: U strictly dominates D, so (U, L) with (2, 1).
    # Pure commitment: U -> L gives 2, D -> R gives 3: commit to D, value 3.
    # Mixed: with P(U) = p the follower's L pays p and R pays 1 - p; R (better for the leader,
    # 3 + p vs 1 + p) is a best response while p <= 1/2, so p = 1/2 and the leader gets 3.5,
    # the follower 0.5.
    A = np.array([[2.0, 4.0], [1.0, 3.0]])
    B = np.array([[1.0, 0.0], [0.0, 1.0]])
    (nash,) = nash_equilibria(A, B)
    assert nash["strategies"] == {"row": C, "column": C}
    pure = stackelberg_pure(A, B)
    assert pure["payoffs"] == {"row": 3.0, "column": 1.0}
    assert pure["response"] == {"column": [C, D]}
    mixed = stackelberg_mixed(A, B)
    assert mixed["strategies"]["row"] == pytest.approx([0.5, 0.5])
    assert mixed["strategies"]["column"] == D
    assert mixed["payoffs"]["row"] == pytest.approx(3.5)
    assert mixed["payoffs"]["column"] == pytest.approx(0.5)


def test_degenerate_game_returns_the_extreme_equilibria():
    # von Stengel, "Equilibrium computation for two-player games in strategic and extensive
    # form" (Algorithmic Game Theory, 2007, ch. 3), degenerate 3x2 example. Against the top row
    # the column player is indifferent (3, 3), so (top, y) is an equilibrium for every y with
    # 3 >= 2 y1 + 5 y2 and 3 >= 6 y2, i.e. y2 <= 1/3: a segment with ends y = (1, 0) and
    # (2/3, 1/3). Besides it, x = (0, 1/3, 2/3), y = (1/3, 2/3): rows 2 and 3 both pay 4 >= 3 and
    # columns both pay 8/3.
    A = np.array([[3.0, 3.0], [2.0, 5.0], [0.0, 6.0]])
    B = np.array([[3.0, 3.0], [2.0, 6.0], [3.0, 1.0]])
    found = nash_equilibria(A, B)
    got = [(e["strategies"]["row"], e["strategies"]["column"]) for e in found]
    want = [
        ([1, 0, 0], [1, 0]),
        ([1, 0, 0], [2 / 3, 1 / 3]),
        ([0, 1 / 3, 2 / 3], [1 / 3, 2 / 3]),
    ]
    assert len(got) == len(want)
    for (p, q), (wp, wq) in zip(got, want, strict=True):
        assert p == pytest.approx(wp) and q == pytest.approx(wq)


def test_game_where_every_profile_is_an_equilibrium_lists_all_pure_ones():
    # Constant payoffs: everything is an equilibrium; the extreme ones are the four pure profiles.
    found = nash_equilibria(np.ones((2, 2)), np.ones((2, 2)))
    got = {(tuple(e["strategies"]["row"]), tuple(e["strategies"]["column"])) for e in found}
    assert got == {(tuple(a), tuple(b)) for a in (C, D) for b in (C, D)}
    assert len(found) == 4


def test_follower_ties_are_broken_in_the_leaders_favour():
    # The follower is indifferent in both rows; the leader's payoffs decide: row 0 -> column 1
    # (leader 5), row 1 -> column 0 (leader 1). The leader commits to row 0.
    A = np.array([[0.0, 5.0], [1.0, 0.0]])
    B = np.zeros((2, 2))
    s = stackelberg_pure(A, B)
    assert s["response"]["column"] == [D, C]
    assert s["payoffs"]["row"] == 5.0
    assert stackelberg_mixed(A, B)["payoffs"]["row"] == pytest.approx(5.0)


def test_nash_gap_and_stackelberg_gaps():
    A, B = payoff_matrices(MatrixConfig(game="prisoners_dilemma"))
    # Both cooperate: each gains 4 - 3 = 1 by defecting.
    assert nash_gap(A, B, C, C) == pytest.approx(1.0)
    # The pure Stackelberg profile (D, always D) has no gaps.
    gaps = stackelberg_gaps(A, B, np.array(D), np.array([D, D]))
    assert gaps == {"nash_gap": 0.0, "stackelberg_gap": 0.0}
    # Leader plays C for sure, follower answers C to C (gain 4 - 3 = 1) and D to D. The
    # leader's value is 3 (vs Stackelberg 2); switching to D gives it 2, so it has no gain.
    gaps = stackelberg_gaps(A, B, np.array(C), np.array([C, D]))
    assert gaps["nash_gap"] == pytest.approx(1.0)
    assert gaps["stackelberg_gap"] == pytest.approx(1.0)
    # Chicken, leader mixes 1/2: follower answers D to C (its best) and D to D (1 < 2: loses 1
    # with weight 1/2). Leader values: C -> 2, D -> 1; mean 1.5, best 2: leader gain 0.5.
    A, B = payoff_matrices(MatrixConfig(game="chicken"))
    gaps = stackelberg_gaps(A, B, np.array([0.5, 0.5]), np.array([D, D]))
    assert gaps["nash_gap"] == pytest.approx(0.5)
    assert gaps["stackelberg_gap"] == pytest.approx(4.0 - 1.5)


def test_repeated_one_round_is_the_one_shot_game():
    for name in CANONICAL_GAMES:
        A, B = payoff_matrices(MatrixConfig(game=name))
        rep = repeated_equilibria(A, B, rounds=1)
        assert rep["stackelberg"]["payoffs"] == stackelberg_pure(A, B)["payoffs"]
        # Deterministic policies: the one-shot game's pure equilibria, and only those.
        pure = [e for e in nash_equilibria(A, B) if 1.0 in e["strategies"]["row"]]
        pure = [e for e in pure if 1.0 in e["strategies"]["column"]]
        assert sorted(tuple(e["payoffs"].values()) for e in rep["nash"]) == sorted(
            tuple(e["payoffs"].values()) for e in pure
        )


def test_repeated_prisoners_dilemma_two_rounds_by_hand():
    # Two rounds: the round-2 state (the round-1 joint action) differs from the start state, so
    # memory-1 policies are complete contingent plans. In round 2 the follower plays D (dominant);
    # the leader can only reward round-1 cooperation through its round-2 action (C pays the
    # follower 4, D pays 2). Leader D in round 1, then C after (D,C) and D after (D,D): the
    # follower's C gives 1 + 4 = 5 > D's 2 + 2 = 4, so it cooperates and the leader gets
    # 4 + 1 = 5. Nothing better: the leader's round-2 payoff is at most 2 ((D,D)) and then the
    # follower's round-1 C earns 1 + 2 = 3 < 4. Nash: finitely repeated PD, (D,D) twice.
    A, B = payoff_matrices(MatrixConfig(game="prisoners_dilemma"))
    rep = repeated_equilibria(A, B, rounds=2)
    s = rep["stackelberg"]
    assert s["payoffs"] == {"row": 5.0, "column": 5.0}
    assert s["path"] == [[1, 0], [0, 1]]
    assert [e["path"] for e in rep["nash"]] == [[[1, 1], [1, 1]]]
    assert rep["nash"][0]["payoffs"] == {"row": 4.0, "column": 4.0}


def test_repeated_prisoners_dilemma_ten_rounds_checked_on_the_game():
    # "Oracles & Followers" setting: 10 rounds, -2.5 per round. The exact commitment: the leader
    # opens with D and then plays tit-for-tat; the follower always cooperates:
    # leader 4 + 9 * 3 = 31, follower 1 + 9 * 3 = 28, minus 25 each.
    cfg = MatrixConfig(game="prisoners_dilemma", rounds=10, reward_offset=-2.5)
    ref = exact_reference(cfg, "leader_follower")["stackelberg"]
    assert ref["payoffs"] == {"row": 6.0, "column": 3.0}
    assert ref["path"] == [[1, 0]] + [[0, 0]] * 9
    leader = np.array([p.index(1.0) for p in ref["strategies"]["row"]])
    # Play the committed leader policy against every memory-1 follower policy in the batched
    # game: none earns the follower more than the reference response.
    followers = memory1_policies(2, 5)
    game = MatrixGame(
        MatrixConfig(game="prisoners_dilemma", rounds=10, reward_offset=-2.5, num_envs=32)
    )
    ts = game.reset()
    totals = {a: torch.zeros(32) for a in game.agents}
    for _ in range(10):
        state = ts.obs["row"].argmax(dim=1).numpy()
        ts = game.step(
            {
                "row": torch.as_tensor(leader[state]),
                "column": torch.as_tensor(followers[np.arange(32), state]),
            }
        )
        for a in game.agents:
            totals[a] += ts.reward[a]
    assert ts.terminated.all()
    assert totals["column"].max().item() == pytest.approx(ref["payoffs"]["column"])
    best = totals["column"] == totals["column"].max()
    assert totals["row"][best].max().item() == pytest.approx(ref["payoffs"]["row"])


def test_repeated_returns_agree_with_the_game():
    A, B = payoff_matrices(MatrixConfig(game="chicken"))
    policies = memory1_policies(2, 5)
    row_ret, col_ret, _ = repeated_returns(A, B, 3, policies, policies)
    game = MatrixGame(MatrixConfig(game="chicken", rounds=3, num_envs=32 * 32))
    rows = np.repeat(np.arange(32), 32)
    cols = np.tile(np.arange(32), 32)
    ts = game.reset()
    totals = {a: torch.zeros(32 * 32) for a in game.agents}
    for _ in range(3):
        state = ts.obs["row"].argmax(dim=1).numpy()
        ts = game.step(
            {
                "row": torch.as_tensor(policies[rows, state]),
                "column": torch.as_tensor(policies[cols, state]),
            }
        )
        for a in game.agents:
            totals[a] += ts.reward[a]
    np.testing.assert_allclose(totals["row"].numpy(), row_ret.ravel())
    np.testing.assert_allclose(totals["column"].numpy(), col_ret.ravel())


def test_repeated_column_leader_is_the_mirror_image():
    # Chicken is symmetric: with the column player leading the payoffs swap.
    A, B = payoff_matrices(MatrixConfig(game="chicken"))
    row = repeated_equilibria(A, B, 4, leader="row")["stackelberg"]
    col = repeated_equilibria(A, B, 4, leader="column")["stackelberg"]
    assert col["payoffs"] == {"row": row["payoffs"]["column"], "column": row["payoffs"]["row"]}


def test_exact_reference_for_matrix_games():
    cfg = MatrixConfig(game="chicken", reward_offset=-1.0)
    ref = exact_reference(cfg, "simultaneous")
    assert set(ref) == {"nash"}
    assert [e["payoffs"]["row"] for e in ref["nash"]] == pytest.approx([1.0, 1.5, 3.0])
    ref = exact_reference(cfg, "leader_follower")
    assert set(ref) == {"nash", "stackelberg", "stackelberg_mixed"}
    assert ref["stackelberg"]["payoffs"] == {"row": 3.0, "column": 1.0}
    # The column player leading: it commits to D and the row player swerves (C): (2, 4) - 1.
    ref = exact_reference(MatrixConfig(game="chicken", leader="column"), "leader_follower")
    assert ref["stackelberg"]["strategies"] == {"column": D, "row": C}
    assert ref["stackelberg"]["payoffs"] == {"column": 4.0, "row": 2.0}
    assert ref["stackelberg"]["response"] == {"row": [D, C]}
    ref = exact_reference(cfg, "leader_follower", action_sequence=[["column"], ["row"]])
    assert ref["stackelberg"]["payoffs"] == {"column": 3.0, "row": 1.0}


def test_exact_reference_errors():
    with pytest.raises(ConfigError, match="hierarchy mode"):
        exact_reference(MatrixConfig(), "sequential")
    with pytest.raises(HierarchyError, match="action_sequence"):
        exact_reference(MatrixConfig(), "leader_follower", action_sequence=[["row", "column"]])
    with pytest.raises(CapabilityError, match="simple_tag"):
        exact_reference({"family": "simple_tag"}, "simultaneous")
    big = MatrixConfig(payoffs=[[[0, 0]] * 3] * 3, rounds=2)
    with pytest.raises(CapabilityError, match="memory-1"):
        exact_reference(big, "leader_follower")
    assert set(exact_reference(LQConfig(), "simultaneous")) == {"nash"}
