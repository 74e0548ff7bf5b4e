"""``algo=exact``: the exact equilibria of matrix and LQ games, played through ``run()``.

Every expected value is derived by hand in the comments (payoffs from shared/MATRIX_GAMES.md,
the games of Gerstgrasser & Parkes, "Oracles & Followers", ICML 2023).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dgsolve.errors import CapabilityError
from dgsolve.games.matrix import CANONICAL_GAMES
from dgsolve.hierarchy import Hierarchy
from dgsolve.run import run
from dgsolve.solvers.exact import ExactSolver

EXACT = ["algo=exact", "env=matrix", "task.progress=false", "hardware=cpu", "task.eval_episodes=4"]

# Row = leader, action 0 = C, 1 = D; entries (row payoff, column payoff).
# Pure-commitment Stackelberg: the follower's best reply to each leader action, then the leader's
# best action. E.g. chicken: C -> D (4 > 3) gives the leader 2, D -> C (2 > 1) gives it 4: (D, C).
# prisoners_dilemma: the follower defects after C (4 > 3) and after D (2 > 1): (D, D) = (2, 2).
# deadlock, prisoners_delight: D is dominant for the follower (4 > 2, 3 > 1 / 4 > 1, 3 > 2) and
# the leader prefers (D, D) = 3 to (C, D) = 1 / 2. hero and battle: C -> D (leader 3),
# D -> C (leader 4). The other six: C -> C gives the leader its maximum 4.
STACKELBERG = {
    "prisoners_dilemma": (2, 2),
    "stag_hunt": (4, 4),
    "assurance": (4, 4),
    "coordination": (4, 4),
    "mixed_harmony": (4, 4),
    "harmony": (4, 4),
    "no_conflict": (4, 4),
    "deadlock": (3, 3),
    "prisoners_delight": (3, 3),
    "hero": (4, 3),
    "battle": (4, 3),
    "chicken": (4, 2),
}
# The first Nash equilibrium exact_reference lists (most weight on the row player's C first):
# dominant D for both in prisoners_dilemma, deadlock and prisoners_delight; (C, C) in the six
# games where C -> C is mutually best; (C, D) in hero, battle and chicken, whose pure equilibria
# are (C, D) and (D, C) (column's best reply to C is D, row's best reply to D is C).
FIRST_NASH = {
    "prisoners_dilemma": (2, 2),
    "stag_hunt": (4, 4),
    "assurance": (4, 4),
    "coordination": (4, 4),
    "mixed_harmony": (4, 4),
    "harmony": (4, 4),
    "no_conflict": (4, 4),
    "deadlock": (3, 3),
    "prisoners_delight": (3, 3),
    "hero": (3, 4),
    "battle": (3, 4),
    "chicken": (2, 4),
}


def test_hand_tables_cover_the_twelve_games():
    assert set(STACKELBERG) == set(FIRST_NASH) == set(CANONICAL_GAMES)


@pytest.mark.parametrize("game", sorted(CANONICAL_GAMES))
def test_exact_plays_the_stackelberg_and_nash_solutions(make_cfg, tmp_path, game):
    lead = run(make_cfg([*EXACT, f"env.game={game}", "hierarchy=leader_follower"]), tmp_path / "s")
    row, column = STACKELBERG[game]
    assert lead["returns"] == {"row": row, "column": column}
    assert lead["exact"]["stackelberg"]["payoffs"] == {"row": row, "column": column}
    assert lead["eq"]["stackelberg_gap"] == 0.0
    assert lead["eq"]["nash_gap"] == 0.0
    assert lead["env_steps"] == 0 and lead["iterations"] == 1

    nash = run(make_cfg([*EXACT, f"env.game={game}", "hierarchy=simultaneous"]), tmp_path / "n")
    row, column = FIRST_NASH[game]
    assert nash["returns"] == {"row": row, "column": column}
    assert nash["exact"]["nash"][0]["payoffs"] == {"row": row, "column": column}
    assert nash["eq"]["nash_gap"] == 0.0
    assert "stackelberg" not in nash["exact"] and "stackelberg_gap" not in nash["eq"]


def test_exact_section_shape_and_artifacts(make_cfg, tmp_path):
    summary = run(make_cfg([*EXACT, "env.game=chicken", "hierarchy=leader_follower"]), tmp_path)
    exact = summary["exact"]
    assert set(exact) == {"mode", "nash", "stackelberg", "stackelberg_mixed", "played"}
    assert exact["mode"] == "leader_follower" and exact["played"] == "stackelberg"
    # chicken: two pure equilibria and the half-half mixed one, where both get 2.5
    assert [e["payoffs"]["row"] for e in exact["nash"]] == [2.0, 2.5, 4.0]
    for entry in [*exact["nash"], exact["stackelberg"], exact["stackelberg_mixed"]]:
        assert set(entry) >= {"strategies", "payoffs"}
        assert set(entry["strategies"]) == {"row", "column"}
    # the follower best-responds to the observed action: C -> D, D -> C
    assert exact["stackelberg"]["response"]["column"] == [[0.0, 1.0], [1.0, 0.0]]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["exact"] == exact and on_disk["eq"]["stackelberg_gap"] == 0.0
    for name in ("history.json", "checkpoints/last.pt", "policy.pt", "summary.json"):
        assert (tmp_path / name).is_file(), name
    policy = torch.load(tmp_path / "policy.pt", weights_only=True)
    assert policy["solver"] == "exact" and policy["tiers"] == [["row"], ["column"]]
    # the leader commits to D at every state; the follower's table per (state, leader action)
    assert policy["policies"]["row"]["probs"][-1] == [0.0, 1.0]
    assert policy["policies"]["column"]["probs"][-1] == [[0.0, 1.0], [1.0, 0.0]]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_repeated_game_commitment_is_played_in_queries_mode(make_cfg, tmp_path):
    # The leader-optimal memory-1 commitment of the 10-round prisoner's dilemma with offset -2.5
    # (checked against the game in tests/eval/test_exact_matrix.py) opens with (D, C), worth
    # 4 - 2.5 = 1.5 and 1 - 2.5 = -1.5, then stays at (C, C), 0.5 each: (6, 3).
    cfg = make_cfg(
        [
            *EXACT,
            "+experiment=prisoners_dilemma_repeated",
            "algo=exact",
            "task.progress=false",
        ]
    )
    summary = run(cfg, tmp_path)
    stack = summary["exact"]["stackelberg"]
    assert stack["path"] == [[1, 0]] + [[0, 0]] * 9
    assert summary["returns"] == {"row": 6.0, "column": 3.0}
    eq = summary["eq"]
    assert eq["returns"]["greedy"] == eq["returns"]["sampled"] == {"row": 6.0, "column": 3.0}
    # The follower reads the committed table from its query answers and plays its best memory-1
    # reply to any commitment, so neither player gains from a memory-1 deviation.
    assert eq["stackelberg_gap"] == 0.0 and eq["deviation_gain"] == {"row": 0.0, "column": 0.0}


def test_lq_one_step_stackelberg_by_hand(make_cfg, tmp_path):
    # x' = x + u1 + u2, costs x^2 + u_i^2 plus x_1^2 at the end, x0 = 1, one step, no noise.
    # The follower answers u2 = -(x + u1) / 2; the leader minimises u1^2 + (x + u1)^2 / 4, so
    # u1 = -x / 5, u2 = -2x / 5, x_1 = 2/5: costs 1 + 1/25 + 4/25 = 1.2 and 1 + 4/25 + 4/25 = 1.32
    # (Basar & Olsder ch. 7; the same numbers as tests/eval/test_exact_lq.py).
    cfg = make_cfg([*EXACT, "env=lq", "hierarchy=leader_follower"])
    cfg.env.A = [[1.0]]
    cfg.env.B = {"p1": [[1.0]], "p2": [[1.0]]}
    cfg.env.Q = {"p1": [[1.0]], "p2": [[1.0]]}
    cfg.env.R = {"p1": {"p1": [[1.0]]}, "p2": {"p2": [[1.0]]}}
    cfg.env.x0_mean = [1.0]
    cfg.env.x0_std = 0.0
    cfg.env.noise_std = 0.0
    cfg.env.horizon = 1
    cfg.env.discount = None
    summary = run(cfg, tmp_path)
    assert summary["returns"] == pytest.approx({"p1": -1.2, "p2": -1.32}, rel=1e-6)
    stack = summary["exact"]["stackelberg"]
    np.testing.assert_allclose(stack["gains"]["p1"], [[[0.2]]])
    np.testing.assert_allclose(stack["gains"]["p2"], [[[0.4]]])
    np.testing.assert_allclose(stack["response"]["p2"], [[[0.5, 0.5]]])  # u2 = -(x + u1) / 2
    assert summary["exact"]["nash"][0]["costs"] == pytest.approx({"p1": 11 / 9, "p2": 11 / 9})
    eq = summary["eq"]
    assert eq["gain_error"]["p1"] < 1e-6 and eq["gain_error"]["p2"] < 1e-6
    assert abs(eq["cost_gap"]["p1"]) < 1e-6 and abs(eq["cost_gap"]["p2"]) < 1e-6


def test_lq_nash_gains_per_step_and_checkpoint_round_trip(make_cfg, tmp_path):
    cfg = make_cfg([*EXACT, "env=lq", "env.horizon=4", "env.discount=null"])
    summary = run(cfg, tmp_path)
    gains = summary["exact"]["nash"][0]["gains"]
    assert len(gains["p1"]) == 4 and len(gains["p1"][0]) == 1 and len(gains["p1"][0][0]) == 2
    assert summary["eq"]["reference"]["equilibrium"] == "feedback_nash"
    assert max(summary["eq"]["gain_error"].values()) < 1e-6
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert state["solver"] == {"iteration": 1, "global_step": 0}


def test_exact_needs_a_game_with_a_reference():
    game = SimpleNamespace(agents=("a", "b"), leader=None)
    hierarchy = Hierarchy((("a", "b"),))
    with pytest.raises(CapabilityError, match="env=matrix or env=lq"):
        ExactSolver(SimpleNamespace(name="exact"), game, hierarchy, torch.device("cpu"), 0)
