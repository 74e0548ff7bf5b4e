"""A trained joint policy as search sees it: per agent, action probabilities (the prior and the
opponent model) and a state value (the critic, for leaves).

The prior is the policy's own distribution at the agent's observation, masked to the legal
actions; the value is the PPO critic of that agent at the same input (``ActorCritic.value``,
the expected return from that decision on under the training profile). Policies without a
critic that reads the actor's input (MAPPO's centralised critic, NFSP/Deep CFR networks, tables,
``random``) have no value: search evaluates their leaves by rollouts (``task.leaf=rollout``).
"""

from __future__ import annotations

import numpy as np
import torch

from dgsolve.errors import CapabilityError, ConfigError
from dgsolve.policy import JointPolicy, NetPolicy, UniformPolicy


class PolicyModel:
    """Probabilities and values of each agent of ``joint`` (a one-tier JointPolicy)."""

    def __init__(self, joint: JointPolicy, agents: tuple[str, ...]):
        if not joint.hierarchy.is_simultaneous:
            raise ConfigError(
                "task=search plays policies trained in one tier (hierarchy=simultaneous); the "
                "target's followers see leaders' actions the game tree does not give them"
            )
        self.joint, self.agents = joint, agents

    @torch.no_grad()
    def probs(self, player: int, obs: torch.Tensor, legal: torch.Tensor) -> np.ndarray:
        """``[n, A]`` float64: the agent's action probabilities, zero off ``legal``, rows
        summing to 1 (uniform over the legal actions where the policy gives them no mass)."""
        agent = self.agents[player]
        policy = self.joint.policies[agent]
        if isinstance(policy, UniformPolicy):
            p = legal.double()
        elif hasattr(policy, "net"):
            p = self.joint.distribution(agent, obs, {}, legal).probs.double()
        else:  # a scripted policy: its own (deterministic) choice
            act = policy.act(obs, legal, True)
            p = torch.nn.functional.one_hot(act.long(), legal.shape[1]).double()
        p = torch.where(legal, p, 0.0).cpu().numpy()
        mass = p.sum(1, keepdims=True)
        uniform = legal.cpu().numpy() / legal.sum(1, keepdim=True).clamp(min=1).cpu().numpy()
        return np.where(mass > 0, p / np.where(mass > 0, mass, 1.0), uniform)

    def has_value(self, player: int) -> bool:
        policy = self.joint.policies[self.agents[player]]
        net = getattr(policy, "net", None)
        return (
            isinstance(policy, NetPolicy)
            and hasattr(net, "value")
            and getattr(net, "critic_dim", None) == getattr(net, "obs_dim", -1)
        )

    def check_value(self, player: int) -> None:
        if not self.has_value(player):
            agent = self.agents[player]
            kind = type(self.joint.policies[agent]).__name__
            raise CapabilityError(
                f"task.leaf=critic: {agent}'s policy ({kind}) has no critic on its own "
                "observation (PPO runs have one; MAPPO's is centralised); use task.leaf=rollout"
            )

    @torch.no_grad()
    def value(self, player: int, obs: torch.Tensor) -> np.ndarray:
        """``[n]`` float64: the agent's critic at its observations."""
        agent = self.agents[player]
        policy = self.joint.policies[agent]
        x = policy.prepare(self.joint.context(agent, obs, {}))
        return policy.net.value(x).double().cpu().numpy()


def sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One action per row of ``probs [n, A]`` (inverse transform of one uniform draw each)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(1), probs.shape[1] - 1)
