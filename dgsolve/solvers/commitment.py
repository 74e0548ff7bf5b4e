"""Drawn commitments: how a leader learns what to commit to when followers see its policy.

With ``hierarchy.follower_observes=queries`` a follower conditions on its leader's *policy* (the
leader's action probabilities at the game's query observations), not on a sampled action. The
leader's return then depends on its parameters twice: through the actions it takes and through
the follower's reaction to the policy it shows. An ordinary policy gradient sees only the first
path, so its fixed points are Nash equilibria (Fiez, Chasnov & Ratliff, "Implicit Learning
Dynamics in Stackelberg Games", ICML 2020). Two changes make the leader anticipate:

1. **Followers trained against a spread of leader policies** (Gerstgrasser & Parkes, "Oracles &
   Followers: Stackelberg Equilibria in Deep Multi-Agent Reinforcement Learning", ICML 2023).
   At the start of every episode, in every game copy, each leader draws a commitment around its
   current policy: logits ``f_theta(o) + sigma * eps_c(o)``, ``eps_c`` standard normal at each
   query observation (and its minimum-norm linear extension elsewhere, which for one-hot states
   such as a matrix game's is the value at that state). Followers see the drawn commitment's
   answers; the leader plays it for the whole episode. In a fraction of copies the draw is a
   *probe* with the wide initial spread: followers learn from probes how to answer commitments
   far from the leader's, and the leader does not learn from them.
2. **A leader gradient through the followers' reaction.** The joint action of a step, the
   leader's ``a`` and its followers' ``b``, has probability
   ``pi_L(a | o; f_theta + sigma eps_c) * prod_F pi_F(b_F | o_F, answers(f_theta + sigma eps_c))``;
   both factors depend on theta, the second through the followers' input. The leader's PPO
   ratio is that joint probability under the new parameters over the old one (followers'
   networks held fixed during the leader's update), credited with the leader's advantage: the
   score-function (likelihood-ratio) gradient of the leader's return including its followers'
   reaction, with the draws ``eps_c`` as reparametrised exploration noise (Williams 1992;
   Kingma & Welling 2014). In expectation over the draws this is the gradient of the leader's
   return smoothed over commitments ``sigma`` apart, so it sees a better commitment on the
   other side of a follower's indifference point before the leader gets there.

With ``hierarchy.commitment=pure`` (the default in repeated games, whose reference commitments
are deterministic memory-1 tables) the construction is Gerstgrasser & Parkes's own: at the start
of every episode each leader draws one action per query observation from its policy; followers
see that table (one-hot answers) and the leader plays it, and the leader's decision for the
episode is the table, with log-probability the sum over query observations, credited with the
episode's return. Probes draw uniform tables. :class:`PureCommitments` implements it.

This variant was chosen over crediting only whole drawn commitments with their episode's return
(parameter-exploring policy gradients, Sehnke et al. 2010), which we tried first: that estimator
scales with ``1 / sigma`` and, at the small spread needed to sit close to the follower's
indifference point, was too noisy to move the leader there. ``sigma`` shrinks geometrically over
training (``algo.commitment_noise`` to ``algo.commitment_noise_final``): a wide view of the
commitment landscape first, then a spread small enough that the learned commitment can approach
the point where the follower's best reply changes. Evaluation uses the undisturbed policy.
"""

from __future__ import annotations

import math

import torch

from dgsolve.errors import CapabilityError
from dgsolve.games.base import AgentSpec
from dgsolve.hierarchy import Hierarchy


def noise_schedule(start: float, final: float, progress: float) -> float:
    """Geometric interpolation from ``start`` (progress 0) to ``final`` (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    if start <= 0 or final <= 0:
        return max(start if progress == 0 else final, 0.0)
    return start * (final / start) ** progress


def query_inputs(
    hierarchy: Hierarchy, agent: str, answers: dict[str, torch.Tensor], policy, n: int
) -> torch.Tensor:
    """``agent``'s network inputs ``[n, Q, D]`` at its query observations, given the answers
    ``[n, K]`` of the leaders it sees."""
    q = hierarchy.queries[agent]
    parts = [q.expand(n, -1, -1)]
    for p in hierarchy.predecessors(agent):
        parts.append(answers[p][:, None, :].expand(-1, len(q), -1))
    return policy.prepare(torch.cat(parts, dim=-1))


class _LeaderDraws:
    """What both kinds of commitment share: the leaders (agents some later tier follows), their
    query observations, and per copy whether the current draw is a probe.

    A copy keeps its draw until its next episode starts; :meth:`state_dict` saves the draws
    (the per-leader tensors named in ``STATE``) with the solver's checkpoint. They come from
    torch's default generators, which the solver saves.
    """

    #: the attributes, each a dict of per-leader tensors, that :meth:`state_dict` saves.
    STATE: tuple[str, ...] = ("probing",)

    def __init__(
        self,
        hierarchy: Hierarchy,
        specs: dict[str, AgentSpec],
        num_envs: int,
        device: torch.device,
    ):
        self.hierarchy = hierarchy
        self.device = torch.device(device)
        self.leaders = [a for tier in hierarchy.tiers[:-1] for a in tier]
        for a in self.leaders:
            if not specs[a].discrete:
                raise CapabilityError(
                    f"hierarchy.follower_observes=queries learns commitments of discrete-action "
                    f"leaders; '{a}' has continuous actions (use follower_observes=action)"
                )
        self.queries = {a: hierarchy.queries[a].to(device) for a in self.leaders}
        self.num_actions = {a: specs[a].num_actions for a in self.leaders}
        self.probing = {
            a: torch.zeros(num_envs, dtype=torch.bool, device=device) for a in self.leaders
        }

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """A copy of the current draws: ``{attribute: {leader: tensor}}`` for each of ``STATE``."""
        return {name: {a: x.clone() for a, x in getattr(self, name).items()} for name in self.STATE}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Return to the draws of a :meth:`state_dict`."""
        for name in self.STATE:
            setattr(self, name, {a: x.to(self.device, copy=True) for a, x in state[name].items()})


class Commitments(_LeaderDraws):
    """Mixed commitments: the logits drawn by every leader around its policy, per copy.

    ``policies[a]`` must offer ``prepare(obs)`` and ``net.actor_out(x)`` (the logits). Noise is
    drawn where :meth:`redraw` is told that an episode starts: with the current spread
    ``sigma`` or, in a fraction of copies (probes), with the wide ``probe_sigma``.
    """

    STATE = ("noise", "probing")

    def __init__(
        self,
        hierarchy: Hierarchy,
        specs: dict[str, AgentSpec],
        num_envs: int,
        device: torch.device,
    ):
        super().__init__(hierarchy, specs, num_envs, device)
        # obs @ extend -> weights on the query observations that reproduce them (pinv)
        self.extend = {a: torch.linalg.pinv(q) for a, q in self.queries.items()}
        #: per leader and copy: the drawn logit noise, already scaled, [B, Q, A]
        self.noise = {
            a: torch.zeros(num_envs, len(q), self.num_actions[a], device=device)
            for a, q in self.queries.items()
        }

    def redraw(
        self, starts: torch.Tensor, sigma: float, probe_rate: float, probe_sigma: float
    ) -> None:
        """New draws for the copies where an episode starts (``starts``, ``[B]`` bool). A probe's
        spread is log-uniform between ``sigma`` and ``probe_sigma``: dense near the leader's
        commitment, where the follower's reply must be accurate, and still wide."""
        if not starts.any():
            return
        low, high = math.log(max(sigma, 1e-6)), math.log(max(probe_sigma, sigma, 1e-6))
        for a, eps in self.noise.items():
            probe = (torch.rand(starts.shape, device=starts.device) < probe_rate) & starts
            self.probing[a] = torch.where(starts, probe, self.probing[a])
            spread = torch.exp(low + (high - low) * torch.rand(starts.shape, device=eps.device))
            scale = torch.where(probe, spread, sigma)[:, None, None]
            fresh = scale * torch.randn(eps.shape, device=eps.device)
            eps[starts] = fresh[starts]

    def answers(self, policies, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each leader's answers ``[N, Q * A]`` (what followers see) for commitments drawn with
        ``noise[leader] [N, Q, A]``, tier by tier; differentiable in the leaders' networks."""
        answers: dict[str, torch.Tensor] = {}
        for tier in self.hierarchy.tiers[:-1]:
            tier_answers = {}
            for a in tier:
                inputs = query_inputs(self.hierarchy, a, answers, policies[a], len(noise[a]))
                logits = policies[a].net.actor_out(inputs) + noise[a]
                tier_answers[a] = torch.softmax(logits, dim=-1).flatten(1)
            answers.update(tier_answers)
        return answers

    def offset(self, agent: str, obs: torch.Tensor) -> torch.Tensor:
        """The drawn perturbation of ``agent``'s logits at its own observations ``[B, obs_dim]``."""
        weights = obs @ self.extend[agent]  # [B, Q]: one-hot rows for one-hot states
        return torch.bmm(weights[:, None, :], self.noise[agent]).squeeze(1)


class PureCommitments(_LeaderDraws):
    """Deterministic commitments: per copy and episode, a table of one action per query
    observation drawn from each leader's policy (a uniform one in probe copies)."""

    STATE = ("table", "inputs", "logp", "probing")

    def __init__(
        self,
        hierarchy: Hierarchy,
        specs: dict[str, AgentSpec],
        num_envs: int,
        device: torch.device,
    ):
        super().__init__(hierarchy, specs, num_envs, device)
        self.table = {
            a: torch.zeros(num_envs, len(q), dtype=torch.long, device=device)
            for a, q in self.queries.items()
        }
        self.inputs: dict[str, torch.Tensor] = {}
        self.logp = {a: torch.zeros(num_envs, device=device) for a in self.leaders}

    @torch.no_grad()
    def redraw(self, starts: torch.Tensor, policies, probe_rate: float) -> None:
        """New tables for the copies where an episode starts (``starts``, ``[B]`` bool)."""
        answers: dict[str, torch.Tensor] = {}
        for tier in self.hierarchy.tiers[:-1]:
            for a in tier:
                inputs = query_inputs(self.hierarchy, a, answers, policies[a], len(starts))
                logits = policies[a].net.actor_out(inputs)
                probe = (torch.rand(starts.shape, device=starts.device) < probe_rate) & starts
                logits = torch.where(probe[:, None, None], torch.zeros_like(logits), logits)
                drawn = torch.distributions.Categorical(logits=logits).sample()
                logp = torch.log_softmax(policies[a].net.actor_out(inputs), dim=-1)
                self.table[a] = torch.where(starts[:, None], drawn, self.table[a])
                self.probing[a] = torch.where(starts, probe, self.probing[a])
                chosen = logp.gather(-1, self.table[a][..., None]).squeeze(-1).sum(-1)
                self.logp[a] = torch.where(starts, chosen, self.logp[a])
                keep = self.inputs.get(a, inputs)
                self.inputs[a] = torch.where(starts[:, None, None], inputs, keep)
            answers.update({a: self.answers_of(a) for a in tier})

    def answers_of(self, agent: str) -> torch.Tensor:
        """What followers see of ``agent``: its table, one-hot, ``[B, Q * A]``."""
        one_hot = torch.nn.functional.one_hot(self.table[agent], self.num_actions[agent])
        return one_hot.float().flatten(1)

    def answers(self) -> dict[str, torch.Tensor]:
        return {a: self.answers_of(a) for a in self.leaders}

    def action(self, agent: str, obs: torch.Tensor) -> torch.Tensor:
        """The table's action at each copy's observation (its closest query observation)."""
        index = (obs @ self.queries[agent].T).argmax(-1)
        return self.table[agent].gather(1, index[:, None]).squeeze(1)

    @staticmethod
    def log_prob_entropy(net, inputs: torch.Tensor, table: torch.Tensor):
        """Log-probability ``[N]`` of drawn tables ``[N, Q]`` under ``net`` at their query
        inputs ``[N, Q, D]``, and the summed entropy of the per-query distributions."""
        logp = torch.log_softmax(net.actor_out(inputs), dim=-1)
        chosen = logp.gather(-1, table[..., None]).squeeze(-1).sum(-1)
        entropy = -(logp.exp() * logp).sum(dim=(-2, -1))
        return chosen, entropy
