"""One agent's view of a game whose other agents play frozen policies.

:class:`FixedOpponents` is a :class:`~dgsolve.games.base.Game` with a single agent, the
``learner``: its :meth:`~FixedOpponents.step` takes the learner's action, fills in every other
agent's from the frozen target (sampled, not greedy: the target is the stochastic policy it
plays), steps the underlying batched game and returns the learner's part of the TimeStep. Any
single-agent learner (PPO) trained on it learns a best response to the target, which is what
``task=exploit`` measures.

Turn-based games need nothing special: the learner's ``acting`` mask says where its action
counts, and the frozen agents answer at every step (the game ignores those who wait).

Targets trained in tiers (``hierarchy=leader_follower``, ``follower_observes=action``) keep
their information structure: agents of the learner's tier and of earlier tiers decide before
the learner acts (when the TimeStep is produced), later tiers after, seeing the learner's action;
a learner with predecessors observes their actions appended to its observation, as the agent it
replaces did. Targets whose followers observe their leaders' *policies*
(``follower_observes=queries``) are refused: a follower there reacts to the policy a leader
commits to, which a learner of one agent does not expose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch

from dgsolve.errors import ConfigError
from dgsolve.games.base import AgentSpec, Game, TimeStep, all_true
from dgsolve.policy import JointPolicy


def check_target(target: JointPolicy) -> None:
    """Refuse, in one line, a target whose agents cannot be frozen one by one."""
    if target.hierarchy.observes_queries:
        raise ConfigError(
            "the target's followers observe their leaders' policies (hierarchy."
            "follower_observes=queries), which a best response of one agent cannot expose; "
            "task=exploit takes targets with follower_observes=action or simultaneous ones"
        )


class FixedOpponents(Game):
    """``game`` as ``learner`` sees it when everyone else plays ``target`` (a JointPolicy over
    all of ``game``'s agents; its policy for ``learner`` is not used)."""

    def __init__(self, game: Game, target: JointPolicy, learner: str):
        if learner not in game.agents:
            raise ConfigError(
                f"unknown agent '{learner}'; agents of this game: {list(game.agents)}"
            )
        check_target(target)
        hierarchy = target.hierarchy
        self.game, self.target, self.learner = game, target, learner
        self.agents = (learner,)
        self.num_envs, self.device = game.num_envs, game.device
        self.discount, self.episode_steps = game.discount, game.episode_steps
        self.cfg = getattr(game, "cfg", None)  # names the game in the learner's messages
        self.specs = {a: game.spec(a) for a in game.agents}
        tier = hierarchy.tier_of(learner)
        self._with_learner = hierarchy.tiers[: tier + 1]  # decide without seeing the learner
        self._after_learner = hierarchy.tiers[tier + 1 :]  # see the learner's action
        self._sees = bool(hierarchy.predecessors(learner))
        self._spec = replace(
            self.specs[learner], obs_dim=hierarchy.augmented_obs_dim(learner, self.specs)
        )
        # the game's tokens cover its own observation, not the actions appended to it
        self.token_slices = None if self._sees else game.token_slices
        self._ts: TimeStep | None = None
        self._decided: dict[str, torch.Tensor] = {}

    def spec(self, agent: str) -> AgentSpec:
        if agent != self.learner:
            raise KeyError(f"unknown agent '{agent}'; this view has only '{self.learner}'")
        return self._spec

    def reset(self, seed: int | None = None) -> TimeStep:
        ts = self.game.reset(seed=seed)
        self._new_episodes(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self._view(ts)

    def step(self, actions: dict[str, torch.Tensor]) -> TimeStep:
        if self._ts is None:
            raise RuntimeError("FixedOpponents.step before reset")
        ts = self._ts
        joint = {**self._decided, self.learner: actions[self.learner]}
        joint.update(self._frozen(self._after_learner, ts.obs, ts.legal, ts.acting, joint))
        after = self.game.step(joint)
        self._new_episodes(after.done)
        return self._view(after)

    def close(self) -> None:
        self.game.close()

    # ------------------------------------------------------------------ internals
    def _new_episodes(self, started: torch.Tensor) -> None:
        """Tell frozen mixed strategies (:class:`~dgsolve.policy.MixturePolicy`) where new
        episodes start, so that each draws its member per episode."""
        for agent, policy in self.target.policies.items():
            if agent != self.learner and hasattr(policy, "new_episodes"):
                policy.new_episodes(started)

    @torch.no_grad()
    def _frozen(self, tiers, obs, legal, acting, seen: dict) -> dict[str, torch.Tensor]:
        """The frozen agents' sampled actions in ``tiers``, tier by tier; each sees what
        ``seen`` and the tiers before it chose (the learner's action among them, if taken)."""
        seen = dict(seen)
        out: dict[str, torch.Tensor] = {}
        for tier in tiers:
            chosen = {}
            for agent in tier:
                if agent == self.learner:
                    continue
                x = self.target.context(agent, obs[agent], seen, acting)
                mask = legal[agent] if self.specs[agent].discrete else None
                chosen[agent] = self.target.policies[agent].act(x, mask, False)
            seen.update(chosen)
            out.update(chosen)
        return out

    def _augment(self, obs, decided: dict, acting) -> torch.Tensor:
        learner = self.learner
        if not self._sees:
            return obs[learner]
        return self.target.hierarchy.augment(learner, obs[learner], decided, self.specs, acting)

    def _view(self, ts: TimeStep) -> TimeStep:
        """Decide the frozen agents that act before (or with) the learner, and return the
        learner's part of ``ts`` with what it sees of them."""
        self._ts = ts
        self._decided = self._frozen(self._with_learner, ts.obs, ts.legal, ts.acting, {})
        learner = self.learner
        own_end = None
        if ts.agent_terminated is not None:
            own_end = {learner: ts.agent_terminated[learner]}
        return TimeStep(
            obs={learner: self._augment(ts.obs, self._decided, ts.acting)},
            reward={learner: ts.reward[learner]},
            terminated=ts.terminated,
            truncated=ts.truncated,
            legal={learner: ts.legal[learner]},
            acting={learner: ts.acting[learner]},
            final_obs=_LazyFinal(learner, lambda: self._final_obs(ts)),
            agent_terminated=own_end,
        )

    def _final_obs(self, ts: TimeStep) -> torch.Tensor:
        """The learner's final observations; with predecessors, what they would have done
        there (no mask survives the reset: all legal), as a truncated game bootstraps from it."""
        if not self._sees:
            return ts.final_obs[self.learner]
        legal = {
            a: all_true(self.num_envs, s.num_actions, self.device)
            for a, s in self.specs.items()
            if s.discrete
        }
        before = self._frozen(self._with_learner, ts.final_obs, legal, ts.acting, {})
        return self._augment(ts.final_obs, before, ts.acting)


class _LazyFinal(Mapping):
    """``{learner: final observations}``, built on first access: most steps never read it, and
    the game's own ``final_obs`` may be lazy too (the bargaining game's is)."""

    def __init__(self, learner: str, build):
        self._learner, self._build, self._value = learner, build, None

    def __getitem__(self, agent: str) -> torch.Tensor:
        if agent != self._learner:
            raise KeyError(agent)
        if self._value is None:
            self._value = self._build()
        return self._value

    def __iter__(self):
        return iter((self._learner,))

    def __len__(self) -> int:
        return 1
