"""Exact NashConv of dgsolve policies on OpenSpiel games, checked against OpenSpiel itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.distributions import Categorical

pyspiel = pytest.importorskip("pyspiel")

from open_spiel.python import policy as os_policy  # noqa: E402
from open_spiel.python.algorithms import exploitability  # noqa: E402

from dgsolve.eval import openspiel_eq as oq  # noqa: E402
from dgsolve.eval.equilibrium import equilibrium_report, verdict_line  # noqa: E402
from dgsolve.games.openspiel import OpenSpielConfig, OpenSpielGame  # noqa: E402
from dgsolve.hierarchy import Hierarchy  # noqa: E402
from dgsolve.nets import ActorCritic  # noqa: E402
from dgsolve.policy import ExactPolicy, JointPolicy, NetPolicy  # noqa: E402
from tests.conftest import compose_config  # noqa: E402


class Uniform(ExactPolicy):
    """Uniform over the legal actions."""

    def distribution(self, obs, legal=None):
        return Categorical(probs=legal.double(), validate_args=False)

    def state(self):
        return {}


class FirstLegal(ExactPolicy):
    """Always the lowest legal action id (Kuhn and Leduc: pass/check, or fold when facing a bet
    in Kuhn), a policy with an obvious hole."""

    def distribution(self, obs, legal=None):
        first = legal.to(torch.int8).argmax(-1)
        probs = torch.nn.functional.one_hot(first, legal.shape[-1]).double()
        return Categorical(probs=probs, validate_args=False)

    def state(self):
        return {}


def game_of(load_string: str) -> OpenSpielGame:
    return OpenSpielGame(OpenSpielConfig(game=load_string, num_envs=1))


def joint_of(load_string: str, make_policy, sequence=None) -> JointPolicy:
    game = game_of(load_string)
    hierarchy = Hierarchy.from_sequence(sequence or [list(game.agents)], game.agents)
    specs = {a: game.spec(a) for a in game.agents}
    return JointPolicy({a: make_policy(a, specs[a]) for a in game.agents}, hierarchy, specs)


def cfr_plus_joint(load_string: str, iterations: int) -> tuple[JointPolicy, float]:
    """OpenSpiel's own (C++) CFR+ average policy as dgsolve policies, and OpenSpiel's NashConv
    of it."""
    game = pyspiel.load_game(load_string)
    solver = pyspiel.CFRPlusSolver(game)
    for _ in range(iterations):
        solver.evaluate_and_update_policy()
    info = oq.information_states(load_string)
    table = {}
    for key, pairs in solver.tabular_average_policy().policy_table().items():
        row = [0.0] * info.num_actions
        for action, prob in pairs:
            row[action] = prob
        table[key] = row
    players = {f"player_{p}": p for p in range(info.num_players)}
    joint = joint_of(
        load_string,
        lambda a, spec: oq.player_policy(load_string, table, players[a]),
    )
    return joint, pyspiel.nash_conv(game, solver.average_policy())


def tabular_from_json(path) -> tuple:
    """What anyone can do with policy_table.json and OpenSpiel alone."""
    data = json.loads(path.read_text())
    game = pyspiel.load_game(data["game"])
    tabular = os_policy.TabularPolicy(game)
    for key, row in data["policy"].items():
        tabular.policy_for_key(key)[:] = row
    return game, tabular, data


# --------------------------------------------------------------------------- the tree
@pytest.mark.parametrize("load_string,count", [("kuhn_poker", 12), ("leduc_poker", 936)])
def test_information_states_are_openspiels(load_string, count):
    info = oq.information_states(load_string)
    tabular = os_policy.TabularPolicy(pyspiel.load_game(load_string))
    assert len(info) == count == len(tabular.state_lookup)
    assert set(info.keys) == set(tabular.state_lookup)
    for n, key in enumerate(info.keys):
        row = tabular.state_lookup[key]
        assert info.legal[n].tolist() == tabular.legal_actions_mask[row].astype(bool).tolist()
        assert np.array_equal(info.tensor[n], tabular.state_in[row].astype(np.float32))
    assert info.tensor.dtype == np.float32 and not info.tensor.flags.writeable
    assert oq.information_states(pyspiel.load_game(load_string)).keys == info.keys


# --------------------------------------------------------------------------- known values
def test_uniform_policy_on_kuhn_has_openspiels_nash_conv():
    # 11/12 (exploitability 11/24 = 0.458333): the NashConv of the uniform policy in Kuhn poker
    # that OpenSpiel's exploitability_test.py checks, from the chapter it cites
    # (doi:10.1007/978-3-319-75931-9_5); computed here independently by OpenSpiel's Python
    # best responses on its own UniformRandomPolicy.
    game = pyspiel.load_game("kuhn_poker")
    reference = exploitability.nash_conv(game, os_policy.UniformRandomPolicy(game))
    table = oq.policy_table("kuhn_poker", joint_of("kuhn_poker", lambda a, s: Uniform()))
    out = oq.nash_conv_of_table("kuhn_poker", table)
    assert out["nash_conv"] == pytest.approx(reference, abs=1e-12)
    assert out["nash_conv"] == pytest.approx(11 / 12, abs=1e-12)
    assert out["exploitability"] == pytest.approx(11 / 24, abs=1e-12)
    assert out["exploitability"] == pytest.approx(
        exploitability.exploitability(game, os_policy.UniformRandomPolicy(game)), abs=1e-12
    )
    assert out["num_info_states"] == 12
    assert sum(out["deviation_gain"].values()) == pytest.approx(out["nash_conv"], abs=1e-15)


def test_uniform_policy_on_leduc_and_three_player_kuhn():
    # 4.747222...: Leduc's uniform NashConv in OpenSpiel's exploitability_test.py
    table = oq.policy_table("leduc_poker", joint_of("leduc_poker", lambda a, s: Uniform()))
    assert oq.nash_conv_of_table("leduc_poker", table)["nash_conv"] == pytest.approx(
        4.747222222222222, abs=1e-9
    )
    three = "kuhn_poker(players=3)"
    game = pyspiel.load_game(three)
    out = oq.nash_conv_of_table(
        three, oq.policy_table(three, joint_of(three, lambda a, s: Uniform()))
    )
    assert "exploitability" not in out  # defined for two players only
    reference = exploitability.nash_conv(game, os_policy.UniformRandomPolicy(game))
    assert out["nash_conv"] == pytest.approx(reference, abs=1e-12)


def test_an_obvious_hole_has_a_large_nash_conv():
    # Always the first action (pass, and fold to a bet): NashConv 2 in OpenSpiel's
    # exploitability_test.py (FirstActionPolicy); the opponent's best response bets every hand.
    table = oq.policy_table("kuhn_poker", joint_of("kuhn_poker", lambda a, s: FirstLegal()))
    out = oq.nash_conv_of_table("kuhn_poker", table)
    game = pyspiel.load_game("kuhn_poker")
    assert out["nash_conv"] == pytest.approx(2.0, abs=1e-12)
    assert out["nash_conv"] == pytest.approx(
        exploitability.nash_conv(game, os_policy.FirstActionPolicy(game)), abs=1e-12
    )


def test_cfr_plus_average_policy_through_the_tensor_path():
    joint, reference = cfr_plus_joint("kuhn_poker", 1000)
    out = oq.nash_conv_of_table("kuhn_poker", oq.policy_table("kuhn_poker", joint))
    assert out["nash_conv"] < 1e-3
    assert out["nash_conv"] == pytest.approx(reference, abs=1e-12)
    # 1/18 is the Nash value of Kuhn poker for the second player (Kuhn, 1950)
    assert out["values"]["player_0"] == pytest.approx(-1 / 18, abs=1e-3)


# --------------------------------------------------------------------------- the table
def test_policy_table_json_reproduces_the_figure_with_openspiel_alone(tmp_path):
    torch.manual_seed(0)
    joint = joint_of("leduc_poker", lambda a, spec: NetPolicy(ActorCritic(30, spec, (16,)), spec))
    table = oq.policy_table("leduc_poker", joint)
    ours = oq.nash_conv_of_table("leduc_poker", table)
    path = tmp_path / "policy_table.json"
    oq.write_policy_table(path, "leduc_poker", table)
    game, tabular, data = tabular_from_json(path)
    assert data["game"] == "leduc_poker" and data["policy"] == table
    assert exploitability.nash_conv(game, tabular) == pytest.approx(ours["nash_conv"], abs=1e-9)
    assert oq.nash_conv_of_table(data["game"], data["policy"]) == ours
    assert ours["nash_conv"] > 0.5  # a random network is far from equilibrium


def test_illegal_actions_get_exactly_zero():
    info = oq.information_states("leduc_poker")
    assert (~info.legal).any()  # Leduc has states with illegal actions (no third raise)

    class PrefersIllegal(ExactPolicy):
        """Most mass on illegal actions; a masked sample never picks them."""

        def distribution(self, obs, legal=None):
            probs = torch.where(legal, 1.0, 100.0).double()
            return Categorical(probs=probs, validate_args=False)

        def state(self):
            return {}

    table = oq.policy_table("leduc_poker", joint_of("leduc_poker", lambda a, s: PrefersIllegal()))
    rows = np.asarray([table[k] for k in info.keys])
    assert (rows[~info.legal] == 0).all()
    assert np.allclose(rows.sum(1), 1, atol=1e-12)
    uniform = info.legal / info.legal.sum(1, keepdims=True)
    assert np.allclose(rows, uniform, atol=1e-12)


def test_a_table_that_does_not_fit_is_refused():
    table = oq.policy_table("kuhn_poker", joint_of("kuhn_poker", lambda a, s: Uniform()))
    key = next(iter(table))
    with pytest.raises(ValueError, match="missing"):
        oq.nash_conv_of_table("kuhn_poker", {k: v for k, v in table.items() if k != key})
    with pytest.raises(ValueError, match="sum to 1"):
        oq.nash_conv_of_table("kuhn_poker", {**table, key: [0.7, 0.7]})
    with pytest.raises(ValueError, match="2 finite probabilities"):
        oq.nash_conv_of_table("kuhn_poker", {**table, key: [1.0]})


def test_a_policy_undefined_somewhere_is_an_error_not_a_number():
    class Nowhere(ExactPolicy):
        def distribution(self, obs, legal=None):
            return Categorical(probs=(~legal).double(), validate_args=False)

        def state(self):
            return {}

    with pytest.raises(ValueError, match="no finite probability"):
        oq.policy_table("leduc_poker", joint_of("leduc_poker", lambda a, s: Nowhere()))


def test_table_policy_plays_uniformly_where_it_has_no_row():
    info = oq.information_states("kuhn_poker")
    table = {k: [0.0, 1.0] for k in info.keys}
    policy = oq.player_policy("kuhn_poker", table, 0)
    obs = torch.from_numpy(np.stack([info.tensor[info.of_player(0)[0]], np.full(11, 7.0)]))
    probs = policy.distribution(obs.float(), torch.ones(2, 2, dtype=torch.bool)).probs
    assert probs.tolist() == [[0.0, 1.0], [0.5, 0.5]]
    assert policy.state()["policy"] == {k: [0.0, 1.0] for k in policy.keys}


# --------------------------------------------------------------------------- the eq section
def test_eq_report_gives_a_verdict_from_nash_conv():
    cfg = compose_config(["env=openspiel", "algo=cfr", "hardware=cpu"])
    joint, _ = cfr_plus_joint("kuhn_poker", 1000)
    eq = equilibrium_report(cfg, joint, joint.hierarchy)
    assert eq["game"] == "kuhn_poker" and eq["num_info_states"] == 12
    assert eq["exploitability"] == pytest.approx(eq["nash_conv"] / 2)
    v = eq["verdict"]
    assert v["equilibrium"] and v["kind"] == "nash" and v["tolerance"] == 0.05
    assert v["worst_gap"] == eq["nash_conv"] == v["gaps"]["nash_conv"]
    assert set(v["gaps"]) == {"player_0", "player_1", "nash_conv"}
    line = verdict_line(eq, joint.hierarchy)
    assert line.startswith("ε-Nash equilibrium: player_0 gap ") and "NashConv " in line

    uniform = joint_of("kuhn_poker", lambda a, s: Uniform())
    eq = equilibrium_report(cfg, uniform, uniform.hierarchy)
    assert not eq["verdict"]["equilibrium"]
    assert eq["verdict"]["worst_gap"] == pytest.approx(11 / 12)
    assert verdict_line(eq, uniform.hierarchy).startswith("not an ε-Nash equilibrium: worst gap")

    strict = compose_config(["env=openspiel", "task.eq_tolerance=0", "hardware=cpu"])
    assert not equilibrium_report(strict, joint, joint.hierarchy)["verdict"]["equilibrium"]


def test_eq_report_refuses_tiers_and_trees_too_large(monkeypatch):
    cfg = compose_config(["env=openspiel", "hardware=cpu"])
    tiers = joint_of("kuhn_poker", lambda a, s: Uniform(), [["player_0"], ["player_1"]])
    eq = equilibrium_report(cfg, tiers, tiers.hierarchy)
    assert "verdict" not in eq and "hierarchy=simultaneous" in eq["reference_error"]
    assert verdict_line(eq, tiers.hierarchy).startswith("no equilibrium verdict: exact NashConv")

    monkeypatch.setattr(oq, "MAX_HISTORIES", 100)
    big = compose_config(["env=openspiel", "env.game='leduc_poker(suit_isomorphism=true)'"])
    joint = joint_of("leduc_poker(suit_isomorphism=true)", lambda a, s: Uniform())
    eq = equilibrium_report(big, joint, joint.hierarchy)
    assert "more than 100 histories" in eq["reference_error"] and "verdict" not in eq
