"""``algo=exact``: the exact equilibria of matrix and LQ games, played through ``run()``.

Every expected value is derived by hand in the comments (payoffs from shared/MATRIX_GAMES.md,
the games of Gerstgrasser & Parkes, "Oracles & Followers", ICML 2023).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dgsolve.cli import config_dir
from dgsolve.errors import CapabilityError
from dgsolve.eval.equilibrium import equilibrium_report
from dgsolve.eval.returns import evaluate_returns
from dgsolve.games.matrix import CANONICAL_GAMES, MatrixConfig, MatrixGame
from dgsolve.hierarchy import Hierarchy
from dgsolve.run import load_policies, run
from dgsolve.solvers.exact import ExactSolver
from tests.conftest import compose_config

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
def test_exact_plays_the_stackelberg_solution(make_cfg, tmp_path, game):
    summary = run(make_cfg([*EXACT, f"env.game={game}", "hierarchy=leader_follower"]), tmp_path)
    row, column = STACKELBERG[game]
    assert summary["returns"] == {"row": row, "column": column}
    assert summary["exact"]["stackelberg"]["payoffs"] == {"row": row, "column": column}
    assert summary["eq"]["stackelberg_gap"] == 0.0
    assert summary["eq"]["nash_gap"] == 0.0
    assert summary["env_steps"] == 0 and summary["iterations"] == 1


@pytest.mark.parametrize("game", sorted(CANONICAL_GAMES))
def test_exact_plays_the_first_nash_equilibrium(game):
    env = MatrixConfig(game=game, num_envs=2)
    game_ = MatrixGame(env)
    hierarchy = Hierarchy((game_.agents,))
    solver = ExactSolver(SimpleNamespace(name="exact"), game_, hierarchy, torch.device("cpu"), 0)
    while not solver.done:
        solver.step()
    joint = solver.joint_policy()
    row, column = FIRST_NASH[game]
    assert evaluate_returns(game_, joint.act, 2, seed=0) == {"row": row, "column": column}
    assert solver.summary()["exact"]["nash"][0]["payoffs"] == {"row": row, "column": column}
    cfg = OmegaConf.create({"seed": 0, "env": {**vars(env), "name": "matrix"}})
    eq = equilibrium_report(cfg, joint, hierarchy, torch.device("cpu"))
    assert eq["nash_gap"] == 0.0 and "stackelberg_gap" not in eq


def test_exact_section_shape_and_artifacts(make_cfg, tmp_path):
    cfg = make_cfg([*EXACT, "env.game=chicken", "hierarchy=leader_follower"])
    summary = run(cfg, tmp_path)
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
    for name in ("policy.pt", "summary.json"):
        assert (tmp_path / name).is_file(), name
    # nothing is learned: no empty history, checkpoint, curves or plots
    for name in ("history.json", "history.npz", "checkpoints", "plots", "tb"):
        assert not (tmp_path / name).exists(), name
    policy = torch.load(tmp_path / "policy.pt", weights_only=True)
    assert policy["solver"] == "exact" and policy["tiers"] == [["row"], ["column"]]
    # the leader commits to D at every state; the follower's table per (state, leader action)
    assert policy["policies"]["row"]["probs"][-1] == [0.0, 1.0]
    assert policy["policies"]["column"]["probs"][-1] == [[0.0, 1.0], [1.0, 0.0]]
    # the run directory alone rebuilds policies that play the same solution (Hydra's CLI writes
    # .hydra/config.yaml; run() called from Python does not)
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    joint, _ = load_policies(tmp_path, num_envs=4)
    game = MatrixGame(MatrixConfig(game="chicken", num_envs=4))
    assert evaluate_returns(game, joint.act, 4, seed=0) == {"row": 4.0, "column": 2.0}


def test_repeated_game_commitment_is_played_in_queries_mode(make_cfg, tmp_path):
    # The leader-optimal memory-1 commitment of the 10-round prisoner's dilemma with offset -2.5
    # (checked against the game in tests/eval/test_exact_matrix.py) opens with (D, C), worth
    # 4 - 2.5 = 1.5 and 1 - 2.5 = -1.5, then stays at (C, C), 0.5 each: (6, 3).
    setting = ["env.rounds=10", "env.reward_offset=-2.5", "hierarchy=leader_follower"]
    cfg = make_cfg([*EXACT, *setting, "hierarchy.follower_observes=queries"])
    summary = run(cfg, tmp_path)
    stack = summary["exact"]["stackelberg"]
    assert stack["path"] == [[1, 0]] + [[0, 0]] * 9
    assert summary["returns"] == {"row": 6.0, "column": 3.0}
    eq = summary["eq"]
    assert eq["values"] == eq["returns"] == {"row": 6.0, "column": 3.0}
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


def test_lq_nash_gains_per_step_and_a_resume_that_changes_nothing(make_cfg, tmp_path):
    cfg = make_cfg([*EXACT, "env=lq", "env.horizon=4", "env.discount=null"])
    summary = run(cfg, tmp_path)
    gains = summary["exact"]["nash"][0]["gains"]
    assert len(gains["p1"]) == 4 and len(gains["p1"][0]) == 1 and len(gains["p1"][0][0]) == 2
    assert summary["eq"]["reference"]["equilibrium"] == "feedback_nash"
    assert max(summary["eq"]["gain_error"].values()) < 1e-6
    assert not (tmp_path / "checkpoints").exists()  # nothing learned, nothing to checkpoint
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("[!.]*") if p.is_file()}
    again = run(compose_config([f"resume={tmp_path}", "hardware=cpu"]), tmp_path)
    assert again == summary  # a resume of the finished run says so and changes nothing
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("[!.]*") if p.is_file()} == before


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))
)
def test_every_experiment_composes(name):
    from dgsolve.games import FAMILIES

    cfg = compose_config([f"+experiment={name}"])
    assert cfg.env.family in FAMILIES
    if name.endswith("_repeated") or name == "oracles_followers":
        # the setting of "Oracles & Followers": 10 rounds, offset -2.5, query answers
        assert (cfg.env.rounds, cfg.env.reward_offset) == (10, -2.5)
        assert cfg.hierarchy.follower_observes.value == "queries"
        assert cfg.algo.name == "stackelberg_ppo"
        assert cfg.env.game == name.removesuffix("_repeated").replace(
            "oracles_followers", "prisoners_dilemma"
        )
    assert compose_config([f"+experiment={name}", "algo=nash_ppo"]).algo.name == "nash_ppo"


def test_exact_needs_a_game_with_a_reference():
    game = SimpleNamespace(agents=("a", "b"), leader=None)
    hierarchy = Hierarchy((("a", "b"),))
    with pytest.raises(CapabilityError, match="env=matrix or env=lq"):
        ExactSolver(SimpleNamespace(name="exact"), game, hierarchy, torch.device("cpu"), 0)
