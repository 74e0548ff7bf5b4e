"""Divergence messages say where the NaN came from: the game (which agent, reward or
observation, which env step) or the learner (which learner, which update, which part of the
loss), and never claim a checkpoint, which only the run knows about."""

from __future__ import annotations

import pytest
import torch

from dgsolve import games, solvers
from dgsolve.errors import ConfigError, TrainingDiverged
from dgsolve.games.matrix import MatrixConfig, MatrixGame
from dgsolve.hierarchy import Hierarchy
from tests.conftest import TINY


class PoisonedMatrixGame(MatrixGame):
    """A matrix game whose ``field`` (``reward`` or ``obs``) for ``agent`` turns NaN in copy 1
    from its ``after``-th step on (a real game refuses non-finite payoffs)."""

    def __init__(self, cfg, field: str, agent: str, after: int):
        super().__init__(cfg)
        self.field, self.agent, self.after, self.steps = field, agent, after, 0

    def step(self, actions):
        ts = super().step(actions)
        self.steps += 1
        if self.steps >= self.after:
            values = getattr(ts, self.field)
            values[self.agent] = values[self.agent].clone()
            values[self.agent][1] = float("nan")
        return ts


def solver_for(cfg, game):
    hierarchy = Hierarchy.for_game(cfg.hierarchy, game)
    return solvers.make(cfg.algo, game, hierarchy, torch.device("cpu"), cfg.seed)


def matrix_cfg(make_cfg, *overrides: str):
    # 2 copies of a 3-round game, 4 steps per iteration
    return make_cfg(
        [*TINY, "env=matrix", "env.rounds=3", "algo=nash_ppo", "algo.num_steps=4", *overrides]
    )


def diverge(solver) -> TrainingDiverged:
    with pytest.raises(TrainingDiverged) as info:
        for _ in range(solver.num_iterations):
            solver.step()
    assert "checkpoint" not in str(info.value)  # the run says which checkpoint exists
    return info.value


def test_matrix_games_refuse_non_finite_payoffs():
    cfg = MatrixConfig(payoffs=[[[1.0, float("nan")], [0.0, 0.0]]])
    with pytest.raises(ConfigError, match="finite"):
        cfg.validate()


@pytest.mark.parametrize(("field", "kind"), [("reward", "reward"), ("obs", "observation")])
def test_a_nan_from_the_game_names_the_game_the_agent_and_the_env_step(make_cfg, field, kind):
    cfg = matrix_cfg(make_cfg)
    solver = solver_for(cfg, PoisonedMatrixGame(cfg.env, field, "column", after=6))
    err = diverge(solver)
    msg = str(err)
    assert err.source == "game"
    # the 6th step of 2 copies is env step 12, in the second 4-step iteration
    assert f"non-finite {kind} for agent 'column' (in 1 of 2 copies)" in msg
    assert "at env step 12 (iteration 2)" in msg
    assert "comes from the game (env=matrix" in msg and "not the learner" in msg
    assert "algo.lr" not in msg
    assert solver.iteration == 2


def test_an_unstable_lq_game_is_blamed_on_the_game(make_cfg):
    # x' = 1e10 x: the state cost overflows float32 at the third step of every copy
    cfg = make_cfg([*TINY, "env=lq", "algo=nash_ppo", "env.A=[[1e10,0],[0,1e10]]"])
    err = diverge(solver_for(cfg, games.make(cfg.env)))
    msg = str(err)
    assert err.source == "game"
    assert "non-finite reward for agents 'p1' and 'p2' (in 2 of 2 copies)" in msg
    assert "at env step 6 (iteration 1)" in msg and "observation" not in msg
    assert "env=lq" in msg


def test_nan_actions_are_blamed_on_the_learner_not_the_game(make_cfg):
    cfg = make_cfg([*TINY, "env=lq", "algo=nash_ppo"])
    solver = solver_for(cfg, games.make(cfg.env))
    with torch.no_grad():
        solver.learner_of["p2"].net.log_std.fill_(float("nan"))  # NaN actions, a NaN next state
    err = diverge(solver)
    msg = str(err)
    assert err.source == "learner"
    assert "the learner 'p2' sent non-finite actions for agent 'p2' (in 2 of 2 copies)" in msg
    assert "the learner diverged, not the game" in msg and "algo.lr" in msg


def test_a_nan_in_the_learner_names_the_learner_the_update_and_the_loss(make_cfg):
    cfg = matrix_cfg(make_cfg)
    solver = solver_for(cfg, games.make(cfg.env))
    solver.step()
    with torch.no_grad():
        solver.learner_of["column"].net.critic_head.weight.fill_(float("nan"))
    err = diverge(solver)
    msg = str(err)
    assert err.source == "learner"
    assert "for learner 'column' at update 2 (agents column; env step 16)" in msg
    assert "value loss (nan)" in msg and "the game's rewards and observations were finite" in msg
    assert "algo.lr (now 0.01)" in msg and "algo.max_grad_norm (now 0.5)" in msg


def test_an_absurd_learning_rate_diverges_in_the_learner(make_cfg):
    cfg = matrix_cfg(make_cfg, "algo.lr=1e30", "algo.anneal_lr=false", "algo.hidden_sizes=[8]")
    err = diverge(solver_for(cfg, games.make(cfg.env)))
    msg = str(err)
    assert err.source == "learner"
    assert "for learner 'row' at update 1" in msg and "algo.lr (now 1e+30)" in msg


def test_non_finite_gradients_stop_before_the_parameters_change(make_cfg, monkeypatch):
    cfg = matrix_cfg(make_cfg)
    solver = solver_for(cfg, games.make(cfg.env))
    net = solver.learner_of["row"].net
    before = [p.detach().clone() for p in net.parameters()]
    backward = torch.Tensor.backward

    def poisoned_backward(loss, *args, **kwargs):
        backward(loss, *args, **kwargs)
        net.actor_head.weight.grad.fill_(float("inf"))

    monkeypatch.setattr(torch.Tensor, "backward", poisoned_backward)
    err = diverge(solver)
    assert err.source == "learner"
    assert "non-finite gradient of the actor_head for learner 'row' at update 1" in str(err)
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))
