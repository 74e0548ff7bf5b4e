"""Envs a user brings: each mistake is one line naming the agent, the space and the value (or
the factory and the keyword), and no env makes an evaluation run forever."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from gymnasium import spaces
from omegaconf import OmegaConf
from pettingzoo import AECEnv, ParallelEnv

from dgsolve import games
from dgsolve.errors import ConfigError, EnvFactoryError
from dgsolve.eval import returns
from dgsolve.eval.returns import (
    DEFAULT_MAX_EPISODE_STEPS,
    evaluate_returns,
    first_game_returns,
    max_episode_steps,
)
from dgsolve.games.pettingzoo import PettingZooGame


class Fine(ParallelEnv):
    """Two agents observing Box(4,), paying 1 each step; every subclass breaks one thing."""

    metadata = {"name": "fine_v0"}
    possible_agents = ["a", "b"]
    horizon = 3

    def __init__(self, size: int = 4):
        self.size = size

    def observation_space(self, agent):
        return spaces.Box(0, 1, (4,))

    def action_space(self, agent):
        return spaces.Discrete(2)

    def observe(self):
        return {a: np.zeros(self.size, np.float32) for a in self.agents}

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return self.observe(), {a: {} for a in self.agents}

    def flags(self):
        """(terminations, truncations): everyone is truncated after ``horizon`` steps."""
        return {a: False for a in self.agents}, {a: self.t >= self.horizon for a in self.agents}

    def rewards(self):
        return {a: 1.0 for a in self.agents}

    def step(self, actions):
        self.t += 1
        obs, rew = self.observe(), self.rewards()
        term, trunc = self.flags()
        infos = {a: {} for a in self.agents}
        self.agents = [a for a in self.agents if not (term[a] or trunc[a])]
        return obs, rew, term, trunc, infos


class Lingering(Fine):
    """Flags every agent terminated at its first step but leaves them all in ``env.agents``."""

    def flags(self):
        return {a: True for a in self.agents}, {a: False for a in self.agents}

    def step(self, actions):
        self.t += 1
        term, trunc = self.flags()
        return self.observe(), self.rewards(), term, trunc, {a: {} for a in self.agents}


class LingeringTruncated(Lingering):
    def flags(self):
        return {a: False for a in self.agents}, {a: True for a in self.agents}


class Endless(Fine):
    """Never ends an episode: no flag, nobody leaves."""

    def flags(self):
        return {a: False for a in self.agents}, {a: False for a in self.agents}


class ShortObs(Fine):
    def __init__(self):
        super().__init__(size=3)


class WordObs(Fine):
    def observe(self):
        return {a: "hello" for a in self.agents}


class OldReset(Fine):
    """PettingZoo < 1.23: reset returns the observations alone."""

    def reset(self, seed=None, options=None):
        return super().reset(seed)[0]


class OldStep(Fine):
    """PettingZoo < 1.22: step returns (obs, rewards, dones, infos)."""

    def step(self, actions):
        obs, rew, term, _, infos = super().step(actions)
        return obs, rew, term, infos


class NoRewards(Fine):
    def rewards(self):
        return {}


class WordReward(Fine):
    def rewards(self):
        return {"a": 1.0, "b": "one"}


class NanReward(Fine):
    def rewards(self):
        return {"a": float("nan"), "b": 1.0}


class StrangerReward(Fine):
    def rewards(self):
        return {**super().rewards(), "zz": 1.0}


class StrangerFlag(Fine):
    def flags(self):
        term, trunc = super().flags()
        return {**term, "zz": False}, trunc


def steps(game: PettingZooGame, n: int):
    """Reset ``game`` and play action 0 everywhere ``n`` times; the last TimeStep."""
    ts = game.reset(seed=0)
    for _ in range(n):
        ts = game.step({a: torch.zeros(game.num_envs, dtype=torch.long) for a in game.agents})
    return ts


def refusal(env_cls) -> str:
    """The one-line message an adapter over ``env_cls`` refuses it with by its first step."""
    with pytest.raises(EnvFactoryError) as err:
        steps(PettingZooGame(env_cls, num_envs=2, label="env.factory 'mine:env'"), 1)
    message = str(err.value)
    assert "\n" not in message and message.startswith("env.factory 'mine:env': ")
    return message


def zeros(ts):
    """Action 0 for every agent in every copy."""
    return {a: torch.zeros(len(o), dtype=torch.long) for a, o in ts.obs.items()}


# ---------------------------------------------------------------------- episodes that never end
@pytest.mark.parametrize("env_cls", [Lingering, LingeringTruncated])
def test_agents_flagged_done_but_left_in_env_agents_end_the_copy(env_cls):
    game = PettingZooGame(env_cls, num_envs=2)
    ts = steps(game, 1)
    assert ts.done.all()
    assert bool(ts.terminated.all()) is (env_cls is Lingering)
    assert ts.acting["a"].all()  # the copies reset: everyone plays again
    assert evaluate_returns(game, zeros, 3, seed=0) == {"a": 1.0, "b": 1.0}


def test_evaluating_an_endless_env_stops_at_the_default_bound_in_one_line(monkeypatch):
    game = PettingZooGame(Endless, num_envs=2, label="env.factory 'mine:env'")
    assert max_episode_steps(game)[0] == DEFAULT_MAX_EPISODE_STEPS == 10_000
    monkeypatch.setattr(returns, "DEFAULT_MAX_EPISODE_STEPS", 50)  # the same, sooner
    with pytest.raises(ConfigError) as err:
        evaluate_returns(game, zeros, 2, seed=0)
    assert str(err.value) == (
        "env.factory 'mine:env': an evaluated episode did not end within 50 steps (dgsolve's "
        "default where a game states no episode length: set env.max_cycles for longer episodes); "
        "a game must end every episode (a PettingZoo env by removing its finished agents from "
        "env.agents)"
    )
    assert game._cycles.max() == 50  # it stopped at the bound, not later


def test_first_game_returns_of_an_endless_env_is_one_line():
    game = PettingZooGame(Endless, num_envs=2, label="env.factory 'mine:env'")
    with pytest.raises(ConfigError, match=r"did not end within 40 steps \(max_steps=40\)") as err:
        first_game_returns(game, zeros, 3, seed=0, max_steps=40)
    assert "\n" not in str(err.value)


def test_the_bound_comes_from_the_game_where_it_says():
    game = PettingZooGame(Endless, num_envs=2, max_cycles=7)
    assert max_episode_steps(game) == (7, "its max_cycles")
    # the cap ends the episodes, so the evaluation ends too
    assert evaluate_returns(game, zeros, 4, seed=0) == {"a": 7.0, "b": 7.0}
    assert first_game_returns(game, zeros, 3, seed=0)["a"].tolist() == [7.0] * 3


def test_well_behaved_env_evaluates_as_before():
    game = PettingZooGame(Fine, num_envs=2)
    assert evaluate_returns(game, zeros, 3, seed=0) == {"a": 3.0, "b": 3.0}
    assert first_game_returns(game, zeros, 3, seed=0)["b"].tolist() == [3.0] * 3


# ---------------------------------------------------------------------- first reset and step
def test_observation_of_the_wrong_shape_names_agent_space_and_value():
    message = refusal(ShortObs)
    assert "agent 'a'" in message and "reset()" in message
    assert "shape (3,)" in message and "array([0., 0., 0.]" in message
    assert "Box(0.0, 1.0, (4,), float32)" in message


def test_a_word_for_an_observation_names_agent_space_and_value():
    message = refusal(WordObs)
    assert "agent 'a'" in message and "'hello' is not numeric" in message
    assert "Box(0.0, 1.0, (4,), float32)" in message


class Dial(Fine):
    """Observes a Discrete(3, start=1) dial reading 3, then 4 (out of range)."""

    def observation_space(self, agent):
        return spaces.Discrete(3, start=1)

    def observe(self):
        return {a: 3 + min(getattr(self, "t", 0), 1) for a in self.agents}


def test_discrete_observations_count_from_the_space_start_and_are_checked():
    game = PettingZooGame(Dial, num_envs=1, label="env.factory 'mine:env'")
    assert game.reset(seed=0).obs["a"].tolist() == [[0.0, 0.0, 1.0]]  # 3 is the third value
    with pytest.raises(
        EnvFactoryError, match=r"agent 'a': the observation from step\(\) 4 is not "
    ):
        steps(game, 1)


def test_old_reset_api_is_named():
    message = refusal(OldReset)
    assert "returned only the observations" in message and "before 1.23" in message
    assert "PettingZoo >= 1.24" in message and "(observations, infos)" in message


def test_old_step_api_is_named():
    message = refusal(OldStep)
    assert "4 values (observations, rewards, dones, infos)" in message
    assert "before 1.22" in message and "PettingZoo >= 1.24" in message
    assert "(observations, rewards, terminations, truncations, infos)" in message


def test_missing_rewards_are_refused_not_taken_as_zero():
    message = refusal(NoRewards)
    assert "agent 'a' is missing from the rewards of step() ({})" in message


@pytest.mark.parametrize(
    "env_cls,needle",
    [
        (WordReward, "agent 'b': the reward from step() 'one' is not a number"),
        (NanReward, "agent 'a': the reward from step() nan is not finite"),
    ],
)
def test_rewards_that_are_not_finite_numbers_are_named(env_cls, needle):
    assert needle in refusal(env_cls)


@pytest.mark.parametrize(
    "env_cls,what", [(StrangerReward, "rewards"), (StrangerFlag, "terminations")]
)
def test_unknown_agents_are_named(env_cls, what):
    message = refusal(env_cls)
    assert f"step() gave {what} for unknown agent 'zz'" in message and "['a', 'b']" in message


def test_checks_run_once_per_copy_not_every_step():
    game = PettingZooGame(Fine, num_envs=2)
    game.reset(seed=0)
    assert game._unchecked == {0, 1}
    steps(game, 1)
    assert game._unchecked == set()


class QuietAEC(AECEnv):
    """Two agents taking turns; the reward of the first step is missing for 'b'."""

    metadata = {"name": "quiet_aec_v0"}
    possible_agents = ["a", "b"]

    def observation_space(self, agent):
        return spaces.Box(0, 1, (2,))

    def action_space(self, agent):
        return spaces.Discrete(2)

    def observe(self, agent):
        return np.zeros(2, np.float32)

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.agent_selection = "a"
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = dict(self.rewards)
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {} for a in self.agents}

    def step(self, action):
        self.rewards = {"a": 1.0}
        self.agent_selection = "b" if self.agent_selection == "a" else "a"


def test_aec_env_rewards_are_checked_too():
    with pytest.raises(EnvFactoryError, match="agent 'b' is missing from the rewards of step"):
        steps(PettingZooGame(QuietAEC, num_envs=1), 1)


# ---------------------------------------------------------------------- factory keywords
def pettingzoo_cfg(factory: str, **kwargs):
    return OmegaConf.create(
        {
            "name": "pettingzoo",
            "family": "pettingzoo",
            "factory": factory,
            "kwargs": kwargs,
            "num_envs": 1,
            "max_cycles": None,
            "wrap_aec": False,
            "leader": None,
            "render": False,
        }
    )


def test_unknown_keyword_of_a_factory_names_it_and_what_it_takes():
    with pytest.raises(EnvFactoryError) as err:
        games.make(pettingzoo_cfg(f"{__name__}:Fine", sise=5))
    assert str(err.value) == (
        f"env.factory '{__name__}:Fine' takes no keyword argument 'sise' (env.kwargs.sise); it "
        "takes: size"
    )
    assert games.make(pettingzoo_cfg(f"{__name__}:Fine", size=4)).spec("a").obs_dim == 4


def test_unknown_keyword_of_a_pettingzoo_factory_taking_any_is_named_when_first_called():
    # PettingZoo's parallel_env(**kwargs) shows no signature to check before it is called
    with pytest.raises(EnvFactoryError) as err:
        games.make(pettingzoo_cfg("pettingzoo.classic.rps_v2:parallel_env", foo=1))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "env.factory 'pettingzoo.classic.rps_v2:parallel_env': the factory takes no keyword "
        "argument 'foo' ("
    )


def takes_anything(**kwargs):
    return Fine(**kwargs)


def test_unknown_keyword_behind_a_catch_all_factory_is_named_at_the_first_build():
    make = functools.partial(takes_anything, colour="red")
    with pytest.raises(EnvFactoryError) as err:
        PettingZooGame(make, num_envs=1, label="env.factory 'mine:env'")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("env.factory 'mine:env': the factory takes no keyword argument")
    assert "'colour'" in message


def test_unknown_keyword_on_the_mpe2_backend_is_one_line_like_the_torch_one():
    cfg = OmegaConf.create(
        {
            "name": "simple_spread",
            "family": "mpe",
            "factory": "mpe2.simple_spread_v3:parallel_env",
            "backend": "mpe2",
            "num_envs": 1,
            "leader": None,
            "render": False,
            "max_cycles": 25,
            "N": 3,
            "foo": 1,
        }
    )
    with pytest.raises(ConfigError) as err:
        games.make(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "env=simple_spread: simple_spread_v3 on the mpe2 backend has no argument 'foo'; it takes:"
    )
    assert "local_ratio" in message
    cfg.backend = "torch"
    with pytest.raises(ConfigError, match="has no argument 'foo'"):
        games.make(cfg)
