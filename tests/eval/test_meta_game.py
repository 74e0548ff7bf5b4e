"""Meta-game solvers and the meta-game analysis of cross-play tables.

Every expected equilibrium below is derived by hand in the comments or cited; the exact solvers
are also checked against each other (LP against vertex enumeration, Lemke–Howson against vertex
enumeration) and α-Rank against OpenSpiel's implementation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dgsolve.errors import ConfigError
from dgsolve.eval import meta_game
from dgsolve.eval.exact_matrix import nash_equilibria, nash_gap

# Rock-paper-scissors: the unique equilibrium is uniform with value 0 (von Neumann &
# Morgenstern 1944; by symmetry, and A is skew-symmetric).
RPS = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
UNIFORM3 = np.full(3, 1 / 3)

# Biased rock-paper-scissors, OpenSpiel's ``matrix_brps`` game (its matrix_games). Its unique
# equilibrium y makes every row
# indifferent: R: -25 y_P + 50 y_S = P: 25 y_R - 5 y_S = S: -50 y_R + 5 y_P = 0 (value 0, the
# game is symmetric zero-sum) gives y_P = 2 y_S, y_S = 5 y_R, so y = (1, 10, 5) / 16.
BRPS = np.array([[0.0, -25.0, 50.0], [25.0, 0.0, -5.0], [-50.0, 5.0, 0.0]])
BRPS_NASH = np.array([1.0, 10.0, 5.0]) / 16

# A general-sum 3x3 game built from two weighted RPS games, W_a = [[0, -1, a], [1, 0, -1],
# [-a, 1, 0]]: the row player is paid W_2, the column player -W_3 (A + B = W_2 - W_3 is not
# constant). The column mixture y makes the rows indifferent:
#   (W_2 y) = (-y_P + 2 y_S, y_R - y_S, -2 y_R + y_P) all 0  =>  y = (1, 2, 1) / 4;
# the row mixture x makes the columns indifferent:
#   -(x^T W_3) = -(x_P - 3 x_S, -x_R + x_S, 3 x_R - x_P) all 0  =>  x = (1, 3, 1) / 5.
# Both values are 0. No pure profile is an equilibrium (every action is beaten by the next), and
# vertex enumeration confirms this is the only one.
W2 = np.array([[0.0, -1.0, 2.0], [1.0, 0.0, -1.0], [-2.0, 1.0, 0.0]])
W3 = np.array([[0.0, -1.0, 3.0], [1.0, 0.0, -1.0], [-3.0, 1.0, 0.0]])
GENERAL_X = np.array([1.0, 3.0, 1.0]) / 5
GENERAL_Y = np.array([1.0, 2.0, 1.0]) / 4

# Prisoner's dilemma (T = 5, R = 3, P = 1, S = 0; Axelrod 1984), actions (C, D): D strictly
# dominates C for both, so (D, D) is the unique equilibrium, with payoffs (1, 1).
PD = np.array([[3.0, 0.0], [5.0, 1.0]])


def is_distribution(x: np.ndarray, size: int) -> bool:
    return (
        x.dtype == np.float64 and x.shape == (size,) and (x >= 0).all() and abs(x.sum() - 1) < 1e-12
    )


# --------------------------------------------------------------------------- known equilibria
@pytest.mark.parametrize(
    ("name", "tol"),
    [("nash", 1e-9), ("replicator", 1e-2), ("fictitious_play", 1e-2), ("alpharank", 1e-9)],
)
def test_rock_paper_scissors_is_solved_by_the_uniform_mixture(name, tol):
    sigma = meta_game.solve(name, [RPS, -RPS])
    for x in sigma:
        assert is_distribution(x, 3)
        np.testing.assert_allclose(x, UNIFORM3, atol=tol)


def test_rock_paper_scissors_has_value_zero():
    sigma = meta_game.nash([RPS, -RPS])
    assert meta_game.expected_payoffs([RPS, -RPS], sigma) == pytest.approx([0, 0], abs=1e-9)


def test_biased_rps_zero_sum_equilibrium():
    pyspiel = pytest.importorskip("pyspiel")
    game = pyspiel.load_game("matrix_brps")
    np.testing.assert_array_equal(np.array(game.row_utilities()), BRPS)
    sigma = meta_game.nash([BRPS, -BRPS])
    for x in sigma:
        np.testing.assert_allclose(x, BRPS_NASH, atol=1e-9)
    # the iterative solvers approximately; replicator dynamics on payoffs rescaled to [-1, 1]
    # (its Euler steps of 0.01 need payoffs of order 1)
    for x in meta_game.fictitious_play([BRPS, -BRPS]):
        np.testing.assert_allclose(x, BRPS_NASH, atol=1e-2)
    for x in meta_game.replicator([BRPS / 50, -BRPS / 50]):
        np.testing.assert_allclose(x, BRPS_NASH, atol=2e-2)
    # a non-uniform equilibrium, so the uniform solver is far from it
    assert np.abs(meta_game.uniform([BRPS, -BRPS])[0] - BRPS_NASH).max() > 0.25


def test_general_sum_equilibrium():
    game = [W2, -W3]
    (only,) = nash_equilibria(W2, -W3)
    np.testing.assert_allclose(only["strategies"]["row"], GENERAL_X, atol=1e-12)
    for select in ("first", "welfare"):
        x, y = meta_game.nash(game, select=select)
        np.testing.assert_allclose(x, GENERAL_X, atol=1e-9)
        np.testing.assert_allclose(y, GENERAL_Y, atol=1e-9)
    x, y = meta_game.replicator(game)
    np.testing.assert_allclose(x, GENERAL_X, atol=2e-2)
    np.testing.assert_allclose(y, GENERAL_Y, atol=2e-2)
    # fictitious play need not converge in general-sum games (Shapley 1964); here it does, slowly
    x, y = meta_game.fictitious_play(game)
    np.testing.assert_allclose(x, GENERAL_X, atol=3e-2)
    np.testing.assert_allclose(y, GENERAL_Y, atol=3e-2)


def test_welfare_selection_picks_the_better_pure_equilibrium():
    # Stag hunt (Skyrms 2004), actions (stag, hare): (stag, stag) pays 4 each, (hare, hare) 3
    # each, and a mixed equilibrium in between; "first" puts most weight on action 0 too, so
    # reverse the actions to tell the two rules apart.
    A = np.array([[3.0, 3.0], [0.0, 4.0]])  # (hare, stag)
    first = meta_game.nash([A, A.T], select="first")
    best = meta_game.nash([A, A.T], select="welfare")
    np.testing.assert_array_equal(first[0], [1.0, 0.0])
    np.testing.assert_array_equal(best[0], [0.0, 1.0])
    np.testing.assert_array_equal(best[1], [0.0, 1.0])
    with pytest.raises(ConfigError, match="select"):
        meta_game.nash([A, A.T], select="best")


# --------------------------------------------------------------------------- exact solvers agree
@pytest.mark.parametrize(
    ("m", "n", "seed"), [(3, 3, 0), (4, 5, 1), (5, 4, 2), (2, 7, 3), (6, 3, 4)]
)
def test_lemke_howson_finds_an_extreme_equilibrium(m, n, seed):
    rng = np.random.default_rng(seed)
    A, B = rng.normal(size=(m, n)), rng.normal(size=(m, n))
    known = [
        np.concatenate([e["strategies"]["row"], e["strategies"]["column"]])
        for e in nash_equilibria(A, B)
    ]
    for label in range(m + n):  # every starting label's path ends at a listed equilibrium
        x, y = meta_game.lemke_howson(A, B, first_label=label)
        found = np.concatenate([x, y])
        assert min(np.abs(found - k).max() for k in known) < 1e-9, (label, found)


def test_lemke_howson_on_degenerate_games():
    # integer payoffs in {0, 1, 2} tie often; the lexicographic ratio test still terminates at an
    # equilibrium
    rng = np.random.default_rng(7)
    for _ in range(20):
        A, B = rng.integers(0, 3, (4, 4)).astype(float), rng.integers(0, 3, (4, 4)).astype(float)
        x, y = meta_game.lemke_howson(A, B)
        assert nash_gap(A, B, x, y) <= 1e-9


def test_large_general_sum_games_use_lemke_howson():
    rng = np.random.default_rng(15)
    A, B = rng.normal(size=(15, 15)), rng.normal(size=(15, 15))
    assert meta_game.enumeration_work(15, 15) > meta_game.MAX_ENUMERATION_WORK
    x, y = meta_game.nash([A, B])  # "first": Lemke–Howson from label 0
    assert is_distribution(x, 15) and is_distribution(y, 15)
    assert nash_gap(A, B, x, y) <= 1e-9
    lh = meta_game.lemke_howson(A, B)
    np.testing.assert_array_equal(x, lh[0])
    np.testing.assert_array_equal(y, lh[1])
    # "welfare": the best of the equilibria Lemke–Howson reaches from the 30 labels
    ends = [meta_game.lemke_howson(A, B, label) for label in range(30)]
    best = max(sum(meta_game.expected_payoffs([A, B], e)) for e in ends)
    chosen = meta_game.nash([A, B], select="welfare")
    assert nash_gap(A, B, *chosen) <= 1e-9
    assert sum(meta_game.expected_payoffs([A, B], chosen)) == pytest.approx(best)
    assert best >= sum(meta_game.expected_payoffs([A, B], lh))


@pytest.mark.parametrize(("m", "n", "seed"), [(2, 2, 0), (3, 4, 1), (4, 4, 2), (5, 3, 3)])
def test_maximin_lp_matches_vertex_enumeration_on_zero_sum_games(m, n, seed):
    A = np.random.default_rng(seed).normal(size=(m, n))
    value = nash_equilibria(A, -A)[0]["payoffs"]["row"]  # every equilibrium has the same value
    for game in ([A, -A], [A, 3.0 - A]):  # zero- and constant-sum
        sigma = meta_game.nash(game)
        assert nash_gap(game[0], game[1], *sigma) <= 1e-9
        assert meta_game.expected_payoffs(game, sigma)[0] == pytest.approx(value, abs=1e-9)


# --------------------------------------------------------------------------- alpha-rank
def test_alpharank_puts_the_prisoners_dilemma_on_defection():
    # Omidshafiei et al. 2019, Fig. 3: for large α all mass goes to the sink (D, D)
    pi = meta_game.alpharank_profiles([PD, PD.T], alpha=100.0)
    assert pi.shape == (2, 2) and pi[1, 1] > 0.99
    for x in meta_game.alpharank([PD, PD.T]):
        assert x[1] > 0.99


@pytest.mark.parametrize(
    ("shape", "alpha", "m", "seed"),
    # the last two are above MAX_DENSE_CHAIN profiles, so they take the sparse solve
    [((3, 4), 1.0, 50, 0), ((4, 2), 10.0, 20, 1), ((2, 2, 3), 5.0, 50, 2), ((12, 12), 3.0, 50, 3)]
    + [((5, 5, 6), 2.0, 30, 4)],
)
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # OpenSpiel's
def test_alpharank_matches_openspiel(shape, alpha, m, seed):
    alpharank_os = pytest.importorskip("open_spiel.python.egt.alpharank")
    rng = np.random.default_rng(seed)
    payoffs = [rng.normal(size=shape) for _ in shape]  # asymmetric: one table per population
    _, _, pi, _, _ = alpharank_os.compute(payoffs, alpha=alpha, m=m)
    # OpenSpiel numbers profiles with the last population's strategy fastest (C order)
    ours = meta_game.alpharank_profiles(payoffs, alpha=alpha, population_size=m)
    np.testing.assert_allclose(ours.reshape(-1), pi, atol=1e-6)
    for p, x in enumerate(meta_game.alpharank(payoffs, alpha=alpha, population_size=m)):
        marginal = pi.reshape(shape).sum(axis=tuple(a for a in range(len(shape)) if a != p))
        np.testing.assert_allclose(x, marginal, atol=1e-6)


@pytest.mark.parametrize("k", [2, 12])
def test_alpharank_with_two_sinks_picks_the_harder_one_to_leave(k):
    # A coordination game paying both players j + 1 on the diagonal (j, j) and 0 elsewhere: every
    # diagonal profile is a sink, left at the rate of a mutant losing α (j + 1), whose fixation
    # probability is about e^{-α (j + 1) (m - 1)} (e^{-4900 (j + 1)} at α = 100, m = 50: far
    # below the smallest double). So all mass goes to the best sink (k - 1, k - 1). k = 12 has
    # 144 profiles: the sparse solve finds the system singular and the log-space one takes over.
    C = np.diag(np.arange(1.0, k + 1))
    assert (k * k > meta_game.MAX_DENSE_CHAIN) == (k == 12)
    pi = meta_game.alpharank_profiles([C, C], alpha=100.0, population_size=50)
    assert np.isfinite(pi).all() and pi[k - 1, k - 1] == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------- n players
@pytest.mark.parametrize("name", ["replicator", "fictitious_play", "alpharank"])
def test_n_player_solvers_find_a_dominant_profile(name):
    # three players, three members each; member 1 earns each player 1 more than the others
    # whatever the others do, so (1, 1, 1) is the unique equilibrium
    rng = np.random.default_rng(0)
    noise = rng.uniform(0.0, 0.5, (3, 3, 3, 3))
    payoffs = []
    for p in range(3):
        bonus = np.zeros(3)
        bonus[1] = 1.0
        shape = [1, 1, 1]
        shape[p] = 3
        # the noise must not depend on p's own member, or 1 would not be dominant
        payoffs.append(noise[p].mean(axis=p, keepdims=True) + bonus.reshape(shape))
    for x in meta_game.solve(name, payoffs):
        assert is_distribution(x, 3)
        assert x[1] > 0.99


def test_nash_refuses_more_than_two_players():
    payoffs = [np.zeros((2, 2, 2))] * 3
    with pytest.raises(ConfigError, match="two players") as err:
        meta_game.solve("nash", payoffs)
    for name in ("replicator", "alpharank", "fictitious_play"):
        assert name in str(err.value)


def test_uniform_and_shapes():
    payoffs = [np.zeros((2, 5))] * 2
    x, y = meta_game.solve("uniform", payoffs)
    np.testing.assert_array_equal(x, [0.5, 0.5])
    np.testing.assert_array_equal(y, [0.2] * 5)
    with pytest.raises(ValueError, match="dimensions"):
        meta_game.solve("uniform", [np.zeros((2, 2))] * 3)


# --------------------------------------------------------------------------- name lookup
def test_unknown_solver_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        meta_game.solve("prd", [RPS, -RPS])
    message = str(err.value)
    assert "'prd'" in message and "\n" not in message
    for name in meta_game.META_SOLVERS:
        assert name in message
    assert sorted(meta_game.META_SOLVERS) == [
        "alpharank",
        "fictitious_play",
        "nash",
        "replicator",
        "uniform",
    ]


def test_unknown_option_is_named_with_the_known_ones():
    with pytest.raises(ConfigError) as err:
        meta_game.solve("replicator", [RPS, -RPS], step_size=0.1)
    message = str(err.value)
    assert "step_size" in message
    for option in ("iterations", "step", "floor", "average_last"):
        assert option in message
    x, _ = meta_game.solve("replicator", [RPS, -RPS], iterations=10, step=0.1)
    assert is_distribution(x, 3)


# --------------------------------------------------------------------------- analysis
def test_analyse_rock_paper_scissors():
    names = ["rock", "paper", "scissors"]
    report = meta_game.analyse(RPS, -RPS, names)
    json.dumps(report)
    assert report["policies"] == names
    np.testing.assert_allclose(report["nash"]["p1"], UNIFORM3, atol=1e-9)
    np.testing.assert_allclose(report["nash"]["p2"], UNIFORM3, atol=1e-9)
    assert report["nash"]["values"]["p1"] == pytest.approx(0, abs=1e-9)
    assert report["welfare"] == pytest.approx(0, abs=1e-9)
    assert report["support"] == {"p1": names, "p2": names}
    for seat in ("p1", "p2"):
        assert set(report["regret"][seat]) == set(names)
        assert max(abs(r) for r in report["regret"][seat].values()) < 1e-9
    np.testing.assert_allclose(report["alpharank"]["p1"], UNIFORM3, atol=1e-9)
    assert len(report["alpharank"]["top_profiles"]) == 5
    # without one policy, its victim dominates: without scissors, paper beats rock
    rows = {row["removed"]: row for row in report["leave_one_out"]}
    assert list(rows) == names
    np.testing.assert_allclose(rows["scissors"]["nash"]["p1"], [0.0, 1.0])
    assert rows["scissors"]["welfare_change"] == pytest.approx(0, abs=1e-9)


def test_analyse_finds_the_dominated_policy():
    # RPS plus "dud", which pays 0.5 less than rock against everything (and, zero-sum and
    # symmetric, rock pays 0.5 more against it): the RPS equilibrium survives with dud unplayed,
    # and dud's regret is 0 - (uniform mean of rock's row - 0.5) = 0.5 in either seat.
    A = np.zeros((4, 4))
    A[:3, :3] = RPS
    A[3, :] = np.append(RPS[0], 0.0) - 0.5
    A[:, 3] = -A[3, :]
    A[3, 3] = 0.0
    names = ["rock", "paper", "scissors", "dud"]
    report = meta_game.analyse(A, -A, names)
    json.dumps(report)
    for seat in ("p1", "p2"):
        assert report["nash"][seat][3] == 0.0
        assert report["support"][seat] == names[:3]
        assert report["regret"][seat]["dud"] == pytest.approx(0.5, abs=1e-9)
        assert all(abs(report["regret"][seat][n]) < 1e-9 for n in names[:3])
    assert len(report["leave_one_out"]) == 4


def test_analyse_general_sum_prisoners_dilemma():
    report = meta_game.analyse(PD, PD.T, ["C", "D"])
    json.dumps(report)
    assert report["nash"] == {"p1": [0.0, 1.0], "p2": [0.0, 1.0], "values": {"p1": 1.0, "p2": 1.0}}
    assert report["support"] == {"p1": ["D"], "p2": ["D"]}
    # C against D earns 0 instead of 1
    assert report["regret"] == {"p1": {"C": 1.0, "D": 0.0}, "p2": {"C": 1.0, "D": 0.0}}
    assert report["welfare"] == 2.0
    assert report["alpharank"]["top_profiles"][0][:2] == ["D", "D"]
    # alone, C meets C: welfare 6 = 2 + 4
    rows = {row["removed"]: row for row in report["leave_one_out"]}
    assert rows["D"]["welfare"] == 6.0 and rows["D"]["welfare_change"] == 4.0
    assert rows["C"]["welfare_change"] == 0.0


def test_analyse_a_single_policy():
    report = meta_game.analyse(np.array([[0.3]]), np.array([[0.6]]), ["only"])
    json.dumps(report)
    assert report["nash"]["p1"] == [1.0] and report["welfare"] == pytest.approx(0.9)
    assert report["leave_one_out"] == []
    assert report["alpharank"]["top_profiles"] == [["only", "only", 1.0]]


def test_analyse_two_populations_of_different_policies():
    # matching pennies between two populations of different sizes: seat 1 holds heads, tails
    # and a dominated "half" policy (worth 0.5 less than heads whatever seat 2 does); the
    # equilibrium is (½, ½, 0) against (½, ½), value 0 (von Neumann 1928)
    heads_tails = np.array([[1.0, -1.0], [-1.0, 1.0]])
    p1 = np.vstack([heads_tails, heads_tails[0] - 0.5])
    out = meta_game.analyse(p1, -p1, ["h", "t", "half"], column_names=["H", "T"])
    assert out["column_policies"] == ["H", "T"]
    assert out["nash"]["p1"] == pytest.approx([0.5, 0.5, 0.0], abs=1e-9)
    assert out["nash"]["p2"] == pytest.approx([0.5, 0.5], abs=1e-9)
    assert out["regret"]["p1"]["half"] == pytest.approx(0.5, abs=1e-9)
    assert set(out["regret"]["p2"]) == {"H", "T"}
    assert out["support"] == {"p1": ["h", "t"], "p2": ["H", "T"]}
    rows = {(r["seat"], r["removed"]): r for r in out["leave_one_out"]}
    assert set(rows) == {("p1", "h"), ("p1", "t"), ("p1", "half"), ("p2", "H"), ("p2", "T")}
    # without tails, seat 1's best is heads and half; seat 2 answers with tails: value -1 vs 1
    assert rows[("p1", "t")]["values"]["p2"] == pytest.approx(1.0, abs=1e-9)
    short = meta_game.analyse(
        p1, -p1, ["h", "t", "half"], column_names=["H", "T"], leave_one_out=False
    )
    assert short["leave_one_out"] == [] and short["nash"] == out["nash"]
    json.dumps(out)
