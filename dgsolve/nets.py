"""Policy and value networks: MLP torsos, a masked categorical head and a Gaussian head.

Initialisation follows the PPO implementation details of Huang et al., "The 37 Implementation
Details of Proximal Policy Optimization" (ICLR blog track, 2022): orthogonal weights, gain
sqrt(2) in the torso, 0.01 on the policy head and 1 on the value head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Categorical, Normal

from dgsolve.games.base import AgentSpec


def layer_init(layer: nn.Linear, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(in_dim: int, hidden_sizes: Sequence[int]) -> tuple[nn.Sequential, int]:
    """A tanh MLP torso; returns the module and its output width."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden_sizes:
        layers += [layer_init(nn.Linear(width, h)), nn.Tanh()]
        width = h
    return nn.Sequential(*layers), width


class TokenTransformer(nn.Module):
    """A transformer torso over an observation cut into tokens (Vaswani et al., 2017).

    ``slices`` are ``(start, end)`` column ranges; each becomes one token through its own
    linear embedding, plus a learned position embedding; columns after the last slice (an agent
    id, a leader's action) form one more token. The output is the mean of the encoded tokens.
    """

    def __init__(
        self,
        obs_dim: int,
        slices: Sequence[tuple[int, int]],
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
    ):
        super().__init__()
        slices = [tuple(s) for s in slices]
        if slices[-1][1] < obs_dim:
            slices.append((slices[-1][1], obs_dim))
        self.slices = slices
        self.embed = nn.ModuleList(nn.Linear(end - start, d_model) for start, end in slices)
        self.position = nn.Parameter(torch.zeros(len(slices), d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.out_dim = d_model

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        tokens = torch.stack(
            [emb(obs[..., a:b]) for emb, (a, b) in zip(self.embed, self.slices, strict=True)],
            dim=-2,
        )
        return self.encoder(tokens + self.position).mean(dim=-2)


def relu_mlp(
    in_dim: int, hidden_sizes: Sequence[int], out_dim: int, layer_norm: bool = False
) -> nn.Sequential:
    """A ReLU MLP with PyTorch's default initialisation and a linear output layer: the network
    of value-based and regret-based learners (NFSP's DQN and average policy, Deep CFR).
    ``layer_norm``: a LayerNorm (Ba et al. 2016) of the last hidden layer before the output."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden_sizes:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    if layer_norm:
        layers.append(nn.LayerNorm(width))
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def masked_logits(logits: torch.Tensor, legal: torch.Tensor | None) -> torch.Tensor:
    """Illegal actions get the most negative finite logit, so they are never sampled."""
    if legal is None:
        return logits
    return torch.where(legal, logits, torch.finfo(logits.dtype).min)


class ActionNet(nn.Module):
    """A :func:`relu_mlp` from an observation to one output per action (Q-values, policy logits
    or, for Deep CFR, advantages), with the ``distribution`` / ``sample`` / ``greedy`` surface
    a :class:`~dgsolve.policy.NetPolicy` plays: the softmax of its masked outputs."""

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden_sizes: Sequence[int],
        layer_norm: bool = False,
    ):
        super().__init__()
        self.body = relu_mlp(obs_dim, hidden_sizes, num_actions, layer_norm)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(obs)

    def distribution(self, obs: torch.Tensor, legal: torch.Tensor | None = None) -> Categorical:
        return Categorical(logits=masked_logits(self(obs), legal), validate_args=False)

    def sample(
        self, obs: torch.Tensor, legal: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.distribution(obs, legal)
        action = dist.sample()
        return action, dist.log_prob(action)

    def greedy(self, obs: torch.Tensor, legal: torch.Tensor | None = None) -> torch.Tensor:
        return masked_logits(self(obs), legal).argmax(-1)


class ActorCritic(nn.Module):
    """Separate actor and critic torsos (as in CleanRL's ppo.py) with one action head.

    The actor's torso is an MLP, nothing (``linear_actor``), or a :class:`TokenTransformer`
    over ``token_slices`` of the observation.

    The critic may see a wider input than the actor (a centralised critic); ``critic_dim``
    defaults to the actor's input width. ``linear_actor`` drops the actor's torso, so the action
    logits or the Gaussian mean are affine in the observation: the form of the equilibrium
    policies of linear-quadratic games (Basar & Olsder, ch. 6).
    """

    def __init__(
        self,
        obs_dim: int,
        spec: AgentSpec,
        hidden_sizes: Sequence[int] = (64, 64),
        critic_dim: int | None = None,
        linear_actor: bool = False,
        token_slices: Sequence[tuple[int, int]] | None = None,
    ):
        super().__init__()
        self._init_args = dict(
            obs_dim=obs_dim,
            spec=spec,
            hidden_sizes=hidden_sizes,
            critic_dim=critic_dim,
            linear_actor=linear_actor,
            token_slices=token_slices,
        )
        self.discrete = spec.discrete
        self.obs_dim = obs_dim
        self.critic_dim = critic_dim or obs_dim
        if token_slices:
            self.actor_torso = TokenTransformer(obs_dim, token_slices)
            width = self.actor_torso.out_dim
        else:
            self.actor_torso, width = mlp(obs_dim, () if linear_actor else hidden_sizes)
        self.critic_torso, cwidth = mlp(critic_dim or obs_dim, hidden_sizes)
        self.critic_head = layer_init(nn.Linear(cwidth, 1), gain=1.0)
        if self.discrete:
            self.actor_head = layer_init(nn.Linear(width, spec.num_actions), gain=0.01)
        else:
            self.actor_head = layer_init(nn.Linear(width, spec.action_dim), gain=0.01)
            self.log_std = nn.Parameter(torch.zeros(spec.action_dim))

    def reinitialise(self, critic: bool = True) -> None:
        """Fresh weights, drawn as at construction (from torch's default generator), in place:
        the parameters stay the same tensors, so optimisers and policies keep pointing at them.
        ``critic=False`` keeps the critic (a centralised critic other networks share)."""
        fresh = type(self)(**self._init_args).state_dict()
        keep = () if critic else ("critic_torso.", "critic_head.")
        with torch.no_grad():
            for name, tensor in self.state_dict().items():
                if not name.startswith(keep):
                    tensor.copy_(fresh[name])

    def value(self, critic_obs: torch.Tensor) -> torch.Tensor:
        return self.critic_head(self.critic_torso(critic_obs)).squeeze(-1)

    def actor_out(self, obs: torch.Tensor) -> torch.Tensor:
        """The actor head's raw output: logits (discrete) or the Gaussian mean (continuous)."""
        return self.actor_head(self.actor_torso(obs))

    def distribution(self, obs: torch.Tensor, legal: torch.Tensor | None = None):
        out = self.actor_out(obs)
        if self.discrete:
            return Categorical(logits=masked_logits(out, legal), validate_args=False)
        return Normal(out, self.log_std.exp().expand_as(out), validate_args=False)

    def sample(
        self,
        obs: torch.Tensor,
        legal: torch.Tensor | None = None,
        offset: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw actions and their log-probabilities (the rollout's hot path, so no
        ``torch.distributions`` objects: they cost more than the tiny network here).
        ``offset`` is added to the head's output first (a drawn commitment's perturbation)."""
        out = self.actor_out(obs)
        if offset is not None:
            out = out + offset
        if self.discrete:
            logp_all = torch.log_softmax(masked_logits(out, legal), dim=-1)
            action = torch.multinomial(logp_all.exp(), 1)
            return action.squeeze(-1), logp_all.gather(-1, action).squeeze(-1)
        std = self.log_std.exp()
        noise = torch.randn_like(out)
        logp = -0.5 * noise.pow(2) - self.log_std - 0.5 * math.log(2 * math.pi)
        return out + std * noise, logp.sum(-1)

    def greedy(self, obs: torch.Tensor, legal: torch.Tensor | None = None) -> torch.Tensor:
        out = self.actor_out(obs)
        return masked_logits(out, legal).argmax(-1) if self.discrete else out

    def log_prob_entropy(
        self, obs: torch.Tensor, action: torch.Tensor, legal: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.distribution(obs, legal)
        if self.discrete:
            return dist.log_prob(action.long()), dist.entropy()
        return dist.log_prob(action).sum(-1), dist.entropy().sum(-1)

    def actor_parameters(self) -> list[nn.Parameter]:
        groups = self.param_groups()
        return groups["actor_torso"] + groups["actor_head"]

    def critic_parameters(self) -> list[nn.Parameter]:
        groups = self.param_groups()
        return groups["critic_torso"] + groups["critic_head"]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by part, for logging gradient norms of torsos and heads."""
        heads = list(self.actor_head.parameters())
        if not self.discrete:
            heads.append(self.log_std)
        return {
            "actor_torso": list(self.actor_torso.parameters()),
            "actor_head": heads,
            "critic_torso": list(self.critic_torso.parameters()),
            "critic_head": list(self.critic_head.parameters()),
        }
