"""PettingZoo envs behind the batched Game interface: shapes, masks, turns, resets, and how
each agent's episode ended."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from gymnasium import spaces
from mpe2 import simple_adversary_v3, simple_speaker_listener_v4, simple_world_comm_v3
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.classic import rps_v2, tictactoe_v3

from dgsolve.errors import EnvFactoryError
from dgsolve.games.pettingzoo import PettingZooGame, import_factory


def random_actions(game, ts, gen):
    out = {}
    for a in game.agents:
        spec = game.spec(a)
        if spec.discrete:
            out[a] = torch.multinomial(ts.legal[a].float(), 1, generator=gen).squeeze(1)
        else:
            out[a] = torch.rand(game.num_envs, spec.action_dim, generator=gen)
    return out


def test_heterogeneous_spaces_and_truncation_bootstrap_obs():
    game = PettingZooGame(
        functools.partial(simple_world_comm_v3.parallel_env, max_cycles=5), num_envs=3
    )
    assert game.spec("leadadversary_0").num_actions == 20
    assert game.spec("agent_0").num_actions == 5
    assert game.spec("leadadversary_0").obs_dim == 34 and game.spec("agent_0").obs_dim == 28
    gen = torch.Generator().manual_seed(0)
    ts = game.reset(seed=0)
    for t in range(5):
        before = {a: o.clone() for a, o in ts.obs.items()}
        ts = game.step(random_actions(game, ts, gen))
        assert ts.obs["agent_0"].shape == (3, 28)
        if t < 4:
            assert not ts.done.any()
    # mpe2 truncates at max_cycles: every copy ends, resets, and keeps its last observation
    assert ts.truncated.all() and not ts.terminated.any()
    assert not torch.equal(ts.final_obs["agent_0"], ts.obs["agent_0"])
    assert not torch.equal(ts.final_obs["agent_0"], before["agent_0"])


def test_continuous_actions_are_boxes():
    game = PettingZooGame(
        functools.partial(simple_speaker_listener_v4.parallel_env, continuous_actions=True), 2
    )
    spec = game.spec("listener_0")
    assert not spec.discrete and spec.action_dim == 5 and spec.low == (0.0,) * 5
    ts = game.reset(seed=1)
    ts = game.step(random_actions(game, ts, torch.Generator().manual_seed(1)))
    assert ts.reward["listener_0"].shape == (2,)


def test_same_seed_same_trajectory():
    def roll():
        game = PettingZooGame(simple_adversary_v3.parallel_env, 2)
        gen = torch.Generator().manual_seed(3)
        ts = game.reset(seed=3)
        rewards = []
        for _ in range(30):
            ts = game.step(random_actions(game, ts, gen))
            rewards.append(ts.reward["adversary_0"].clone())
        return torch.stack(rewards)

    assert torch.equal(roll(), roll())


def test_aec_turn_based_env_with_action_masks():
    game = PettingZooGame(tictactoe_v3.env, num_envs=4)
    gen = torch.Generator().manual_seed(0)
    ts = game.reset(seed=0)
    assert ts.acting["player_1"].all() and not ts.acting["player_2"].any()
    finished = 0
    for _ in range(40):
        movers = ts.acting["player_1"].long() + ts.acting["player_2"].long()
        assert (movers == 1).all()  # exactly one player decides in each copy
        for a in game.agents:  # the mover's mask rules out occupied squares
            assert ts.legal[a].any(dim=1).all()
        ts = game.step(random_actions(game, ts, gen))
        total = ts.reward["player_1"] + ts.reward["player_2"]
        assert torch.all(total == 0)  # zero-sum, paid once at the end
        finished += int(ts.terminated.sum())
        assert torch.all(ts.reward["player_1"][~ts.done] == 0)
    assert finished >= 4


def test_parallel_env_with_discrete_observations():
    game = PettingZooGame(rps_v2.parallel_env, num_envs=2, max_cycles=3)
    assert game.spec("player_0").obs_dim == 4  # Discrete(4) observation, one-hot
    ts = game.reset(seed=0)
    assert ts.obs["player_0"].sum(dim=1).tolist() == [1.0, 1.0]
    for _ in range(3):
        ts = game.step({a: torch.tensor([0, 1]) for a in game.agents})
    assert ts.truncated.all()


@pytest.mark.parametrize(
    "path,needle",
    [
        ("nocolon", "must look like"),
        ("no_such_pkg.mod:env", "cannot import module"),
        ("pettingzoo.classic.rps_v2:nothing", "no callable 'nothing'"),
    ],
)
def test_bad_factories_are_one_line_errors(path, needle):
    with pytest.raises(EnvFactoryError, match=needle) as err:
        import_factory(path)
    assert "\n" not in str(err.value)


def test_factory_must_build_a_pettingzoo_env():
    with pytest.raises(EnvFactoryError, match="not a PettingZoo"):
        PettingZooGame(dict, 1)


def test_agents_must_be_known_at_reset():
    def lazy():
        env = rps_v2.parallel_env()
        env.possible_agents = []
        return env

    with pytest.raises(EnvFactoryError, match="known at reset"):
        PettingZooGame(lazy, 1)


class EarlyExit(ParallelEnv):
    """Agent 'a' terminates after 2 steps, 'b' after 4; each step pays 1 to every live agent."""

    metadata = {"name": "early_exit_v0"}
    possible_agents = ["a", "b"]
    lifetime = {"a": 2, "b": 4}

    def observation_space(self, agent):
        return spaces.Box(0, 10, (1,))

    def action_space(self, agent):
        return spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return {a: [0.0] for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        obs = {a: [float(self.t)] for a in self.agents}
        rew = {a: 1.0 for a in self.agents}
        term = {a: self.t >= self.lifetime[a] for a in self.agents}
        trunc = {a: False for a in self.agents}
        self.agents = [a for a in self.agents if not term[a]]
        return obs, rew, term, trunc, {a: {} for a in obs}


def test_agents_that_finish_early_stop_acting_until_reset():
    game = PettingZooGame(EarlyExit, num_envs=2)
    ts = game.reset(seed=0)
    acting, rewards, done = [], [], []
    for _ in range(5):
        ts = game.step({a: torch.zeros(2, dtype=torch.long) for a in game.agents})
        acting.append((bool(ts.acting["a"][0]), bool(ts.acting["b"][0])))
        rewards.append((float(ts.reward["a"][0]), float(ts.reward["b"][0])))
        done.append(bool(ts.terminated[0]))
    assert acting == [(True, True), (False, True), (False, True), (True, True), (True, True)]
    assert rewards == [(1, 1), (1, 1), (0, 1), (0, 1), (1, 1)]  # a's last reward paid once
    assert done == [False, False, False, True, False]


def flags(ts, agent=None):
    """Copy 0's (terminated, truncated), or ``agent``'s own termination flag there."""
    if agent is not None:
        return bool(ts.agent_terminated[agent][0])
    return bool(ts.terminated[0]), bool(ts.truncated[0])


def test_everyone_terminating_ends_the_copy_terminated():
    game = PettingZooGame(EarlyExit, num_envs=1)
    ts = game.reset(seed=0)
    assert not any(flags(ts, a) for a in game.agents)
    for _ in range(4):
        ts = game.step({a: torch.zeros(1, dtype=torch.long) for a in game.agents})
    assert flags(ts) == (True, False)
    assert flags(ts, "a") and flags(ts, "b")


def test_max_cycles_cap_truncates_but_remembers_who_terminated():
    game = PettingZooGame(EarlyExit, num_envs=1, max_cycles=3)
    ts = game.reset(seed=0)
    for _ in range(3):
        ts = game.step({a: torch.zeros(1, dtype=torch.long) for a in game.agents})
    # 'a' terminated at step 2; 'b' was still playing when dgsolve cut the copy at step 3
    assert flags(ts) == (False, True)
    assert flags(ts, "a") and not flags(ts, "b")


class QuitThenTimeout(ParallelEnv):
    """Agent 'a' terminates when it plays 1; after 3 steps the env truncates whoever is left.

    Observations count steps and each step pays 1 to every live agent.
    """

    metadata = {"name": "quit_then_timeout_v0"}
    possible_agents = ["a", "b"]
    horizon = 3

    def observation_space(self, agent):
        return spaces.Box(0, 10, (1,))

    def action_space(self, agent):
        return spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return {a: [0.0] for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        obs = {a: [float(self.t)] for a in self.agents}
        rew = {a: 1.0 for a in self.agents}
        term = {a: a == "a" and actions[a] == 1 for a in self.agents}
        trunc = {a: self.t >= self.horizon and not term[a] for a in self.agents}
        self.agents = [a for a in self.agents if not (term[a] or trunc[a])]
        return obs, rew, term, trunc, {a: {} for a in obs}


def test_parallel_agent_that_terminated_early_is_not_bootstrapped_when_the_env_truncates():
    game = PettingZooGame(QuitThenTimeout, num_envs=2)
    ts = game.reset(seed=0)
    zeros = torch.zeros(2, dtype=torch.long)
    # Episode 1: in copy 0 'a' quits at step 1; in copy 1 it plays on. Episode 2: nobody quits.
    plan = [{"a": torch.tensor([1, 0]), "b": zeros}] + [{"a": zeros, "b": zeros}] * 5
    seen = []
    for t, actions in enumerate(plan, start=1):
        ts = game.step(actions)
        seen.append(
            (
                ts.terminated.tolist(),
                ts.truncated.tolist(),
                ts.agent_terminated["a"].tolist(),
                ts.agent_terminated["b"].tolist(),
            )
        )
        if t == 1:
            assert ts.acting["a"].tolist() == [False, True]
        if t == 3:  # both copies truncated; 'b' bootstraps from its last observation
            assert ts.final_obs["b"].flatten().tolist() == [3.0, 3.0]
            assert ts.obs["b"].flatten().tolist() == [0.0, 0.0]
    nothing = ([False, False], [False, False], [False, False], [False, False])
    assert seen[0] == seen[1] == seen[3] == seen[4] == nothing
    assert seen[2] == ([False, False], [True, True], [True, False], [False, False])
    # the reset cleared copy 0's flag: in episode 2 'a' was truncated like 'b'
    assert seen[5] == ([False, False], [True, True], [False, False], [False, False])


class TakeTurns(AECEnv):
    """Agents 'a' and 'b' move in turn, each move paying 1 to the mover; 'a' terminates when it
    plays 1, and after 3 moves the env truncates whoever is left.

    Observations count moves; ``render`` gives a blank frame.
    """

    metadata = {"name": "take_turns_v0", "render_modes": ["rgb_array"]}
    possible_agents = ["a", "b"]
    horizon = 3

    def __init__(self, render_mode=None):
        super().__init__()
        self.render_mode = render_mode

    def observation_space(self, agent):
        return spaces.Box(0, 10, (1,))

    def action_space(self, agent):
        return spaces.Discrete(2)

    def observe(self, agent):
        return np.array([self.t], np.float32)

    def render(self):
        return np.zeros((2, 2, 3), np.uint8)

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = dict(self.rewards)
        self.terminations = {a: False for a in self.agents}
        self.truncations = dict(self.terminations)
        self.infos = {a: {} for a in self.agents}
        self.agent_selection = "a"

    def step(self, action):
        mover = self.agent_selection
        if self.terminations[mover] or self.truncations[mover]:
            self._was_dead_step(action)
            return
        self.t += 1
        self._clear_rewards()
        self.rewards[mover] = 1.0
        self.terminations[mover] = mover == "a" and action == 1
        if self.t >= self.horizon:
            self.truncations = {a: not self.terminations[a] for a in self.agents}
        others = [a for a in self.agents if a != mover]
        self.agent_selection = others[0] if others else mover
        self._deads_step_first()


def test_aec_env_that_truncates_reports_truncated_with_its_last_observation():
    game = PettingZooGame(TakeTurns, num_envs=1)
    ts = game.reset(seed=0)
    for t in range(1, 4):
        ts = game.step({a: torch.zeros(1, dtype=torch.long) for a in game.agents})
        assert flags(ts) == ((False, True) if t == 3 else (False, False))
        assert not flags(ts, "a") and not flags(ts, "b")
    assert float(ts.reward["a"][0]) == 1.0  # a made the third move
    assert ts.final_obs["a"].item() == 3.0 and ts.final_obs["b"].item() == 3.0
    assert ts.obs["a"].item() == 0.0 and ts.acting["a"].item()  # the next game has begun


def test_aec_agent_that_terminated_early_is_not_bootstrapped_when_the_env_truncates():
    game = PettingZooGame(TakeTurns, num_envs=1)
    ts = game.reset(seed=0)
    seen, rewards = [], []
    for t in range(1, 5):
        ts = game.step({a: torch.tensor([int(t == 1)]) for a in game.agents})
        seen.append((flags(ts), flags(ts, "a"), flags(ts, "b"), ts.acting["b"].item()))
        rewards.append((ts.reward["a"].item(), ts.reward["b"].item()))
    nothing = (False, False)
    # move 1: a quits, then b moves alone; move 3: b is truncated; move 4 begins a fresh game
    assert seen == [
        (nothing, False, False, True),
        (nothing, False, False, True),
        ((False, True), True, False, False),
        (nothing, False, False, True),
    ]
    assert rewards == [(1, 0), (0, 1), (0, 1), (1, 0)]


class KeepsTheDead(TakeTurns):
    """TakeTurns whose finished agents never leave: a step with None does nothing."""

    def _was_dead_step(self, action):
        pass


def test_aec_env_that_keeps_finished_agents_in_env_agents_ends_the_copy():
    game = PettingZooGame(KeepsTheDead, num_envs=1)
    ts = game.reset(seed=0)
    for t in range(1, 4):
        ts = game.step({a: torch.zeros(1, dtype=torch.long) for a in game.agents})
        assert flags(ts) == ((False, True) if t == 3 else (False, False))
    assert ts.final_obs["b"].item() == 3.0
    assert ts.obs["a"].item() == 0.0 and ts.acting["a"].item()  # the next game has begun


def test_rendering_leaves_the_batched_copies_flags_alone():
    game = PettingZooGame(TakeTurns, num_envs=1, can_render=True)
    ts = game.reset(seed=0)
    ts = game.step({a: torch.ones(1, dtype=torch.long) for a in game.agents})  # a quits

    def policy(ts):
        return {a: torch.zeros(1, dtype=torch.long) for a in game.agents}

    # in the rendered game nobody quits, and that must not rub off on the batched copy
    frames = game.render_episode(policy, max_steps=10, seed=0)
    assert len(frames) == 4  # the start and each of the three moves
    for _ in range(2):
        ts = game.step(policy(ts))
    assert flags(ts) == (False, True) and flags(ts, "a")
