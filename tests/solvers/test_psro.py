"""algo=psro with the exact oracle: Kuhn poker's equilibrium, exact mixtures, resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pyspiel = pytest.importorskip("pyspiel")

from open_spiel.python import policy as os_policy  # noqa: E402
from open_spiel.python.algorithms import exploitability  # noqa: E402

from dgsolve import games, solvers  # noqa: E402
from dgsolve.errors import CapabilityError, ConfigError, RunDirError  # noqa: E402
from dgsolve.eval.openspiel_eq import (  # noqa: E402
    nash_conv_of_table,
    openspiel_policy,
    policy_table,
)
from dgsolve.hierarchy import Hierarchy  # noqa: E402
from dgsolve.run import run  # noqa: E402
from dgsolve.rundir import load_policies  # noqa: E402
from tests.conftest import compose_config, through_torch  # noqa: E402

#: Kuhn poker's game value for the first player (Kuhn, "A simplified two-person poker", 1950)
KUHN_VALUE = -1 / 18


def make_solver(*overrides: str, seed: int = 0):
    cfg = compose_config(["env=openspiel", "algo=psro", "hardware=cpu", *overrides])
    game = games.make(cfg.env, "cpu")
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    return solvers.make(cfg.algo, game, hierarchy, torch.device("cpu"), seed)


def test_double_oracle_reaches_kuhn_equilibrium_and_stops():
    # measured: NashConv 0.83, 0.33, 0.18, 0.22, 0.14, then 0 at the 6th iteration; converged
    # (no new response) at the 8th
    solver = make_solver()
    curve = []
    while not solver.done:
        curve.append(solver.step()["losses"]["psro"]["nash_conv"])
    summary = solver.summary()["psro"]
    assert summary["converged"] and not summary["full"] and summary["iterations"] < 20
    assert summary["nash_conv"] < 1e-9 and curve[0] > 0.5
    assert summary["meta_values"]["player_0"] == pytest.approx(KUHN_VALUE, abs=1e-9)
    assert summary["meta_welfare"] == pytest.approx(0.0, abs=1e-12)
    for agent, probs in summary["meta_strategy"].items():
        assert len(probs) == summary["population"][agent] and sum(probs) == pytest.approx(1)
    # the mixture's behaviour policy is worth the empirical game's value in the real game
    report = nash_conv_of_table("kuhn_poker", solver.table())
    assert report["values"]["player_0"] == pytest.approx(KUHN_VALUE, abs=1e-9)
    assert report["nash_conv"] == pytest.approx(summary["nash_conv"], abs=1e-12)


def test_populations_hold_exact_best_responses_and_no_duplicates():
    solver = make_solver("algo.iterations=3")
    solver.step()
    before = solver.tabular.mixture(solver.populations, solver.sigma)
    sizes = [len(m) for m in solver.populations]
    solver.step()
    assert [len(m) for m in solver.populations] == [k + 1 for k in sizes]
    game, sf = pyspiel.load_game("kuhn_poker"), solver._sf
    for player, members in enumerate(solver.populations):
        assert len({m.tobytes() for m in members}) == len(members)
        # after the uniform policy, every member is deterministic
        assert ((members[1:] == 0) | (members[1:] == 1)).all()
        # the newest member reaches OpenSpiel's best-response value against the mixture the
        # others played when it was trained
        rows = [np.asarray([before[sf.info.keys[r]] for r in sf.info.of_player(q)]) for q in (0, 1)]
        rows[player] = members[-1]
        plans = [sf.realization(q, rows[q][None]) for q in (0, 1)]
        value = sf.payoffs(plans)[player][0, 0]
        oracle = pyspiel.TabularBestResponse(game, player, openspiel_policy("kuhn_poker", before))
        assert value == pytest.approx(oracle.value_from_state(game.new_initial_state()), abs=1e-12)


def test_a_population_cap_ends_the_run_and_says_so():
    solver = make_solver("algo.max_policies=3")
    while not solver.done:
        solver.step()
    assert solver.full and not solver.converged
    assert [len(m) for m in solver.populations] == [3, 3]
    assert solver.summary()["psro"]["full"]


@pytest.mark.parametrize("meta_solver", ["replicator", "fictitious_play", "uniform", "alpharank"])
def test_every_meta_solver_lowers_kuhn_nash_conv(meta_solver):
    solver = make_solver(
        f"algo.meta_solver={meta_solver}", "algo.iterations=8", "algo.max_policies=50"
    )
    curve = [solver.step()["losses"]["psro"]["nash_conv"] for _ in range(8)]
    # the uniform policy's NashConv on Kuhn poker is 0.917 (OpenSpiel's exploitability 0.458)
    assert min(curve) < 0.5 * 0.917, curve


def test_three_players_with_replicator_dynamics():
    solver = make_solver("env.game='kuhn_poker(players=3)'", "algo.meta_solver=replicator")
    first = solver.report()["nash_conv"]
    for _ in range(6):
        solver.step()
    assert all(2 < len(m) <= 7 for m in solver.populations)
    assert solver.report()["nash_conv"] < 0.5 * first


def test_alpharank_refuses_populations_it_cannot_solve():
    with pytest.raises(ConfigError, match="algo.max_policies=50 or lower"):
        make_solver("algo.meta_solver=alpharank")


def test_nash_meta_solver_is_refused_for_three_players():
    with pytest.raises(ConfigError, match="two players"):
        make_solver("env.game='kuhn_poker(players=3)'")


def test_unknown_meta_solver_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        make_solver("algo.meta_solver=prd")
    message = str(err.value)
    assert "\n" not in message and "'prd'" in message
    for name in ("nash", "replicator", "fictitious_play", "uniform", "alpharank"):
        assert name in message


def test_simulated_entries_estimate_the_exact_ones():
    exact = make_solver("algo.iterations=3")
    sampled = make_solver("algo.iterations=3", "algo.sims_per_entry=4000", seed=3)
    for solver in (exact, sampled):
        while not solver.done:
            solver.step()
    shape = sampled.payoffs[0].shape
    # payoffs are within ±3 chips in Kuhn poker: 4000 games give a standard error below 0.03
    approx = sampled._sf.payoffs(
        [sampled._sf.realization(p, m) for p, m in enumerate(sampled.populations)]
    )
    err = np.abs(sampled.payoffs[0] - approx[0])
    assert err.max() < 0.12 and err.mean() < 0.04 and shape == approx[0].shape


@pytest.mark.parametrize("sims", [None, 500])
def test_resumed_iterations_equal_uninterrupted_ones(sims):
    budget = ["algo.iterations=4", f"algo.sims_per_entry={'null' if sims is None else sims}"]
    straight = make_solver(*budget)
    metrics = [straight.step() for _ in range(4)]
    first = make_solver(*budget)
    for _ in range(2):
        first.step()
    resumed = make_solver(*budget)
    resumed.load_state_dict(through_torch(first.state_dict()))
    assert [resumed.step() for _ in range(2)] == metrics[2:]
    assert straight.table() == resumed.table()
    for a, b in zip(straight.populations, resumed.populations, strict=True):
        assert np.array_equal(a, b)


def test_policy_state_loads_weights_only_and_refuses_other_games():
    solver = make_solver("algo.iterations=2")
    solver.step()
    state = through_torch(solver.policy_state())
    assert state["solver"] == "psro" and len(state["policy"]) == 12
    fresh = make_solver()
    fresh.load_policy_state(state)
    assert fresh.table() == solver.table()
    leduc = make_solver("env.game=leduc_poker")
    with pytest.raises(RunDirError, match="not written by algo=psro on leduc_poker"):
        leduc.load_policy_state(state)
    with pytest.raises(RunDirError, match="another game"):
        leduc.load_state_dict(through_torch(solver.state_dict()))


def test_refuses_games_that_are_not_openspiel_games():
    cfg = compose_config(["env=matrix", "algo=psro", "algo.oracle=exact", "hardware=cpu"])
    game = games.make(cfg.env, "cpu")
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    with pytest.raises(CapabilityError, match="env=openspiel"):
        solvers.make(cfg.algo, game, hierarchy, torch.device("cpu"), 0)


def test_a_run_on_kuhn_writes_the_mixture_and_its_nash_conv(tmp_path):
    cfg = compose_config(
        ["env=openspiel", "algo=psro", "task.progress=false", "hardware=cpu"]
        + ["task.eval_episodes=20", "task.render=false"]
    )
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed", summary.get("missing")
    eq = summary["eq"]
    assert eq["nash_conv"] < 1e-9 and eq["verdict"]["equilibrium"]
    assert summary["psro"]["nash_conv"] == pytest.approx(eq["nash_conv"], abs=1e-12)
    assert summary["psro"]["converged"]

    # policy_table.json, checked with OpenSpiel alone
    data = json.loads((tmp_path / "policy_table.json").read_text())
    game = pyspiel.load_game(data["game"])
    tabular = os_policy.TabularPolicy(game)
    for key, row in data["policy"].items():
        tabular.policy_for_key(key)[:] = row
    assert exploitability.nash_conv(game, tabular) == pytest.approx(eq["nash_conv"], abs=1e-12)

    joint, _ = load_policies(tmp_path)
    table = policy_table("kuhn_poker", joint)
    assert (
        max(abs(a - b) for k in table for a, b in zip(table[k], data["policy"][k], strict=True))
        < 1e-12
    )
