"""algo=cfr: OpenSpiel's CFR+ reaches Kuhn poker's equilibrium, and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

pyspiel = pytest.importorskip("pyspiel")

from open_spiel.python import policy as os_policy  # noqa: E402
from open_spiel.python.algorithms import expected_game_score, exploitability  # noqa: E402

from dgsolve import games, solvers  # noqa: E402
from dgsolve.errors import CapabilityError, ConfigError, RunDirError  # noqa: E402
from dgsolve.eval.openspiel_eq import nash_conv_of_table, policy_table  # noqa: E402
from dgsolve.hierarchy import Hierarchy  # noqa: E402
from dgsolve.run import run  # noqa: E402
from dgsolve.rundir import load_policies  # noqa: E402
from tests.conftest import compose_config, through_torch  # noqa: E402

#: Kuhn poker's game value for the first player (Kuhn, "A simplified two-person poker", 1950;
#: e.g. Hoehn et al., "Effective short-term opponent exploitation in simplified poker", AAAI 2005)
KUHN_VALUE = -1 / 18


def make_solver(*overrides: str):
    cfg = compose_config(["env=openspiel", "algo=cfr", "hardware=cpu", *overrides])
    game = games.make(cfg.env, "cpu")
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    return solvers.make(cfg.algo, game, hierarchy, torch.device("cpu"), cfg.seed)


def assert_tables_close(a: dict, b: dict, tol: float = 1e-12) -> None:
    assert a.keys() == b.keys()
    assert max(abs(x - y) for k in a for x, y in zip(a[k], b[k], strict=True)) <= tol


def test_cfr_plus_reaches_kuhn_value_and_nash():
    # measured: NashConv 1.7e-3 after 150 iterations, 5.9e-4 after 200, 3.5e-4 after 500
    solver = make_solver("algo.iterations=400", "algo.iterations_per_step=100")
    nash_convs = []
    while not solver.done:
        nash_convs.append(solver.step()["losses"]["cfr"]["nash_conv"])
    assert solver.iteration == solver.num_iterations == 4 and solver.global_step == 400
    summary = solver.summary()["cfr"]
    assert summary["iterations"] == 400
    assert summary["game_value"] == pytest.approx(KUHN_VALUE, abs=1e-3)
    assert summary["nash_conv"] < 1e-3 and summary["nash_conv"] == nash_convs[-1]
    assert summary["exploitability"] == pytest.approx(summary["nash_conv"] / 2)
    assert nash_convs[0] > nash_convs[-1]

    # the same figures from OpenSpiel's own functions on the same average policy
    average = solver._solver.average_policy()
    game = pyspiel.load_game("kuhn_poker")
    value = expected_game_score.policy_value(game.new_initial_state(), [average] * 2)[0]
    assert summary["game_value"] == pytest.approx(value, abs=1e-12)
    assert summary["nash_conv"] == pytest.approx(exploitability.nash_conv(game, average), abs=1e-12)

    # and through the policies that play it, as the eq section reads them
    table = policy_table("kuhn_poker", solver.joint_policy())
    assert nash_conv_of_table("kuhn_poker", table)["nash_conv"] == pytest.approx(
        summary["nash_conv"], abs=1e-12
    )


def test_the_last_step_runs_what_is_left():
    solver = make_solver("algo.iterations=25", "algo.iterations_per_step=10")
    assert solver.num_iterations == 3
    while not solver.done:
        solver.step()
    assert solver.global_step == 25 and solver.summary()["cfr"]["iterations"] == 25


@pytest.mark.parametrize("game,steps,per_step", [("kuhn_poker", 4, 10), ("leduc_poker", 2, 1)])
def test_resumed_iterations_equal_uninterrupted_ones(game, steps, per_step):
    budget = [f"env.game={game}", f"algo.iterations={steps * per_step}"]
    budget.append(f"algo.iterations_per_step={per_step}")
    straight = make_solver(*budget)
    metrics = [straight.step() for _ in range(steps)]

    first = make_solver(*budget)
    for _ in range(steps // 2):
        first.step()
    state = through_torch(first.state_dict())
    resumed = make_solver(*budget)
    resumed.load_state_dict(state)
    metrics_resumed = [resumed.step() for _ in range(steps - steps // 2)]

    assert metrics_resumed == metrics[steps // 2 :]
    assert resumed.done and resumed.global_step == straight.global_step
    a, b = straight.state_dict(), resumed.state_dict()
    assert a["cfr"]["iteration"] == b["cfr"]["iteration"] == steps * per_step
    assert a["cfr"]["info_states"] == b["cfr"]["info_states"]
    for key in ("cumulative_regret", "cumulative_policy", "current_policy"):
        assert torch.equal(a["cfr"][key], b["cfr"][key]), key
    assert straight.table() == resumed.table()


def test_policy_state_loads_weights_only_and_plays_the_same():
    solver = make_solver("algo.iterations=50")
    solver.step()
    state = through_torch(solver.policy_state())
    assert state["solver"] == "cfr" and state["game"] == "kuhn_poker"
    assert state["iterations"] == 50 and len(state["policy"]) == 12
    fresh = make_solver("algo.iterations=50")
    fresh.load_policy_state(state)
    assert_tables_close(policy_table("kuhn_poker", fresh.joint_policy()), solver.table())

    leduc = make_solver("env.game=leduc_poker")
    with pytest.raises(RunDirError, match="not written by algo=cfr on leduc_poker"):
        leduc.load_policy_state(state)
    with pytest.raises(RunDirError, match="another game"):
        leduc.load_state_dict(through_torch(solver.state_dict()))


def test_refuses_games_that_are_not_openspiel_games():
    cfg = compose_config(["env=matrix", "algo=cfr", "hardware=cpu"])
    game = games.make(cfg.env, "cpu")
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    with pytest.raises(CapabilityError) as err:
        solvers.make(cfg.algo, game, hierarchy, torch.device("cpu"), 0)
    assert "\n" not in str(err.value) and "env=openspiel" in str(err.value)


def test_refuses_tiers():
    with pytest.raises(ConfigError, match="hierarchy=simultaneous"):
        make_solver("hierarchy=leader_follower")


def test_a_run_on_kuhn_records_its_equilibrium(tmp_path):
    cfg = compose_config(
        ["env=openspiel", "algo=cfr", "algo.iterations=200", "task.progress=false"]
        + ["hardware=cpu", "task.eval_episodes=20", "task.render=false"]
    )
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed", summary.get("missing")
    eq = summary["eq"]
    assert eq["nash_conv"] < 0.01 and eq["verdict"]["equilibrium"]
    assert summary["cfr"]["game_value"] == pytest.approx(KUHN_VALUE, abs=1e-3)
    assert summary["cfr"]["nash_conv"] == pytest.approx(eq["nash_conv"], abs=1e-12)

    # policy_table.json, checked with OpenSpiel alone
    data = json.loads((tmp_path / "policy_table.json").read_text())
    game = pyspiel.load_game(data["game"])
    tabular = os_policy.TabularPolicy(game)
    for key, row in data["policy"].items():
        tabular.policy_for_key(key)[:] = row
    assert exploitability.nash_conv(game, tabular) == pytest.approx(eq["nash_conv"], abs=1e-12)

    # policy.pt rebuilds the policies that play it
    joint, _ = load_policies(tmp_path)
    assert_tables_close(policy_table("kuhn_poker", joint), data["policy"])
