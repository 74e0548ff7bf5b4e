"""Dynamic Nash and Stackelberg PPO: independent PPO learners, one per agent (or shared group),
acting in the tiers of a :class:`~dgsolve.hierarchy.Hierarchy`.

Each iteration reads like the paper's pseudocode (Schulman et al., "Proximal Policy Optimization
Algorithms", 2017):

1. roll out ``num_steps`` joint steps in ``num_envs`` copies; within a step, tier k samples its
   actions after seeing tiers < k (one-hot or raw vectors appended to its observation);
2. per agent, compute GAE(gamma, lambda) advantages over that agent's own decision steps
   (``acting``): rewards that arrive while it waits are credited to its last decision, and a
   truncated game bootstraps from the value of its final observation (Schulman et al.,
   "High-Dimensional Continuous Control Using Generalized Advantage Estimation", 2016);
3. per learner, ``num_epochs`` passes of ``num_minibatches`` minibatches of the clipped
   surrogate, with optional value clipping, an entropy bonus and global gradient clipping.

With one tier this is independent PPO toward a dynamic Nash equilibrium (de Witt et al., "Is
Independent Learning All You Need in the StarCraft Multi-Agent Challenge?", 2020). With tiers,
later tiers best-respond to the actions they observe and learn on a faster timescale: tier k
updates once every ``follower_updates_per_leader ** (L-1-k)`` iterations, so leaders learn
against followers that have (nearly) adapted — the two-timescale view of Stackelberg learning
(Gerstgrasser & Parkes, "Oracles & Followers", ICML 2023; Fiez et al., "Implicit Learning
Dynamics in Stackelberg Games", ICML 2020).

``centralised_critic`` turns this into MAPPO (Yu et al., "The Surprising Effectiveness of PPO in
Cooperative Multi-Agent Games", NeurIPS 2022): separate actors, one critic shared by every agent
that sees all agents' observations (and the agent's id) during training; acting needs only the
actors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dgsolve.errors import CapabilityError, TrainingDiverged
from dgsolve.games.base import AgentSpec, Game, TimeStep
from dgsolve.hierarchy import Hierarchy
from dgsolve.nets import ActorCritic
from dgsolve.policy import JointPolicy, NetPolicy


@dataclass
class Learner:
    """One network and its optimiser, serving the agents of one tier that share it."""

    name: str
    agents: tuple[str, ...]
    tier: int
    net: ActorCritic
    optimizer: torch.optim.Optimizer


def group_agents(
    hierarchy: Hierarchy, specs: dict[str, AgentSpec], share: bool
) -> list[tuple[str, ...]]:
    """Agents that share a network: same tier and identical spaces, when ``share`` is on."""
    groups: list[tuple[str, ...]] = []
    for tier in hierarchy.tiers:
        if not share:
            groups += [(a,) for a in tier]
            continue
        by_key: dict[tuple, list[str]] = {}
        for a in tier:
            key = (specs[a], hierarchy.augmented_obs_dim(a, specs))
            by_key.setdefault(key, []).append(a)
        groups += [tuple(g) for g in by_key.values()]
    return groups


class PPOSolver:
    """Tiered PPO; ``step()`` is one iteration (rollout, advantages, updates)."""

    def __init__(self, cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
        self.cfg, self.game, self.hierarchy, self.device = cfg, game, hierarchy, device
        self.seed = seed
        self.specs = {a: game.spec(a) for a in game.agents}
        self.learners: list[Learner] = []
        self.policy_of: dict[str, NetPolicy] = {}
        self.learner_of: dict[str, Learner] = {}
        torch.manual_seed(seed)
        # MAPPO: one critic for every agent, on all agents' observations and the agent's id
        self.centralised = bool(cfg.centralised_critic)
        critic_dim = sum(s.obs_dim for s in self.specs.values()) + len(game.agents)
        self.critic: ActorCritic | None = None
        linear = getattr(cfg.policy, "value", cfg.policy) == "linear"
        slices = getattr(game, "token_slices", None) if cfg.network == "transformer" else None
        if cfg.network == "transformer" and not slices:
            raise CapabilityError(
                f"algo.network=transformer needs a game that cuts its observation into tokens; "
                f"{type(game).__name__} does not (use algo.network=mlp)"
            )
        for agents in group_agents(hierarchy, self.specs, cfg.share_policy):
            first = agents[0]
            in_dim = hierarchy.augmented_obs_dim(first, self.specs)
            in_dim += len(agents) if len(agents) > 1 else 0
            net = ActorCritic(
                in_dim,
                self.specs[first],
                list(cfg.hidden_sizes),
                critic_dim=critic_dim if self.centralised else None,
                linear_actor=linear,
                token_slices=slices,
            ).to(device)
            if self.centralised:
                if self.critic is None:
                    self.critic = net
                net.critic_torso = self.critic.critic_torso
                net.critic_head = self.critic.critic_head
            params = net.actor_parameters() if self.centralised else net.parameters()
            opt = torch.optim.Adam(params, lr=cfg.lr, eps=1e-5, foreach=True)
            learner = Learner("+".join(agents), agents, hierarchy.tier_of(first), net, opt)
            self.learners.append(learner)
            for i, a in enumerate(agents):
                self.policy_of[a] = NetPolicy(net, self.specs[a], i, len(agents))
                self.learner_of[a] = learner
        self.critic_optimizer = (
            torch.optim.Adam(self.critic.critic_parameters(), lr=cfg.lr, eps=1e-5, foreach=True)
            if self.centralised
            else None
        )
        self.joint = JointPolicy(dict(self.policy_of), hierarchy, self.specs)
        self.batch_steps = cfg.num_steps * game.num_envs
        self.num_iterations = max(1, math.ceil(cfg.total_timesteps / self.batch_steps))
        self.iteration = 0
        self.global_step = 0
        self.ts: TimeStep | None = None
        self.episode_return = {a: torch.zeros(game.num_envs, device=device) for a in game.agents}

    # ------------------------------------------------------------------ public API
    @property
    def done(self) -> bool:
        return self.iteration >= self.num_iterations

    def policies(self) -> dict[str, NetPolicy]:
        return dict(self.policy_of)

    def joint_policy(self) -> JointPolicy:
        return self.joint

    def step(self) -> dict:
        """One PPO iteration. Returns scalar metrics and the episodes that finished."""
        if self.ts is None:
            self.ts = self.game.reset(seed=self.seed * 7919 + self.iteration)
        self.iteration += 1
        frac = 1.0 - (self.iteration - 1) / self.num_iterations
        lr = self.cfg.lr * frac if self.cfg.anneal_lr else self.cfg.lr
        for opt in self._optimizers():
            for group in opt.param_groups:
                group["lr"] = lr

        # ROLLOUT: tiers act in order, the game receives one joint action per step
        batch, episodes = self._rollout()
        # ADVANTAGES: per agent, over its own decision steps
        for agent in self.game.agents:
            self._gae(batch[agent])
        # UPDATES: the last tier every iteration, earlier tiers on a slower timescale
        metrics: dict = {"episodes": episodes, "losses": {}}
        num_tiers = len(self.hierarchy.tiers)
        for learner in self.learners:
            period = self.cfg.follower_updates_per_leader ** (num_tiers - 1 - learner.tier)
            if self.iteration % period == 0:
                metrics["losses"][learner.name] = self._update(learner, batch)
        return metrics

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        extra = [self.critic_optimizer] if self.critic_optimizer is not None else []
        return [lr.optimizer for lr in self.learners] + extra

    def state_dict(self) -> dict:
        critic = {}
        if self.critic_optimizer is not None:
            critic = {"critic_optimizer": self.critic_optimizer.state_dict()}
        return {
            **critic,
            "nets": {lr.name: lr.net.state_dict() for lr in self.learners},
            "optimizers": {lr.name: lr.optimizer.state_dict() for lr in self.learners},
            "iteration": self.iteration,
            "global_step": self.global_step,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for lr in self.learners:
            lr.net.load_state_dict(state["nets"][lr.name])
            lr.optimizer.load_state_dict(state["optimizers"][lr.name])
        if self.critic_optimizer is not None:
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.iteration = int(state["iteration"])
        self.global_step = int(state["global_step"])
        torch.set_rng_state(state["torch_rng"])
        self.ts = None

    def policy_state(self) -> dict:
        """What ``policy.pt`` holds: networks and the shapes needed to rebuild them."""
        return {
            "learners": [
                {
                    "name": lr.name,
                    "agents": list(lr.agents),
                    "tier": lr.tier,
                    "state_dict": lr.net.state_dict(),
                }
                for lr in self.learners
            ],
            "tiers": [list(t) for t in self.hierarchy.tiers],
            "hidden_sizes": list(self.cfg.hidden_sizes),
        }

    def load_policy_state(self, state: dict) -> None:
        """Load the networks of a ``policy.pt`` written by :meth:`policy_state`."""
        saved = {entry["name"]: entry["state_dict"] for entry in state["learners"]}
        for lr in self.learners:
            lr.net.load_state_dict(saved[lr.name])

    # ------------------------------------------------------------------ rollout
    def _critic_inputs(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Centralised critic: every agent's observation, then this agent's one-hot id."""
        joint = torch.cat([obs[a] for a in self.game.agents], dim=-1)
        n = len(self.game.agents)
        eye = torch.eye(n, device=joint.device).unsqueeze(1).expand(n, joint.shape[0], n)
        return {a: torch.cat([joint, eye[i]], dim=-1) for i, a in enumerate(self.game.agents)}

    @torch.no_grad()
    def _sample_joint(self, obs, legal):
        """Sample every agent's action tier by tier; returns (actor input, raw action, logp,
        value, mask, critic input) per agent, and the actions the game receives."""
        critic_in = self._critic_inputs(obs) if self.centralised else {}
        answers = self.joint.query_answers()
        env_actions: dict[str, torch.Tensor] = {}
        out = {}
        for tier in self.hierarchy.tiers:
            tier_actions = {}
            for agent in tier:
                seen = self.joint.context(agent, obs[agent], answers or env_actions)
                x = self.policy_of[agent].prepare(seen)
                net = self.learner_of[agent].net
                mask = legal[agent] if self.specs[agent].discrete else None
                raw, logp = net.sample(x, mask)
                cx = critic_in.get(agent, x)
                out[agent] = (x, raw, logp, net.value(cx), mask, cx)
                tier_actions[agent] = self.policy_of[agent].to_env(raw)
            env_actions.update(tier_actions)
        return out, env_actions

    @torch.no_grad()
    def _values_of(self, obs, legal) -> dict[str, torch.Tensor]:
        out, _ = self._sample_joint(obs, legal)
        return {a: v[3] for a, v in out.items()}

    @torch.no_grad()
    def _rollout(self):
        T, B, dev = self.cfg.num_steps, self.game.num_envs, self.device
        batch = {}
        for a in self.game.agents:
            spec = self.specs[a]
            in_dim = self.learner_of[a].net.obs_dim
            critic_dim = self.learner_of[a].net.critic_dim
            batch[a] = {
                "obs": torch.zeros(T, B, in_dim, device=dev),
                "critic_obs": torch.zeros(T, B, critic_dim, device=dev)
                if self.centralised
                else None,
                "actions": torch.zeros(
                    (T, B) if spec.discrete else (T, B, spec.action_dim),
                    dtype=torch.long if spec.discrete else torch.float32,
                    device=dev,
                ),
                "logprobs": torch.zeros(T, B, device=dev),
                "values": torch.zeros(T, B, device=dev),
                "rewards": torch.zeros(T, B, device=dev),
                "dones": torch.zeros(T, B, dtype=torch.bool, device=dev),
                "bootstrap": torch.zeros(T, B, device=dev),
                "acting": torch.zeros(T, B, dtype=torch.bool, device=dev),
                "legal": torch.ones(T, B, spec.num_actions, dtype=torch.bool, device=dev)
                if spec.discrete
                else None,
            }
        episodes: list[tuple[int, dict[str, float]]] = []
        ts = self.ts
        for t in range(T):
            sampled, env_actions = self._sample_joint(ts.obs, ts.legal)
            for a, (x, raw, logp, value, mask, cx) in sampled.items():
                buf = batch[a]
                if self.centralised:
                    buf["critic_obs"][t] = cx
                buf["obs"][t], buf["actions"][t], buf["logprobs"][t] = x, raw, logp
                buf["values"][t], buf["acting"][t] = value, ts.acting[a]
                if mask is not None:
                    buf["legal"][t] = mask
            ts = self.game.step(env_actions)
            self.global_step += B
            done = ts.done
            for a in self.game.agents:
                batch[a]["rewards"][t] = ts.reward[a]
                batch[a]["dones"][t] = done
                self.episode_return[a] += ts.reward[a]
            if ts.truncated.any():
                final_values = self._values_of(ts.final_obs, ts.legal)
                for a in self.game.agents:
                    batch[a]["bootstrap"][t] = torch.where(ts.truncated, final_values[a], 0.0)
            if done.any():
                for i in torch.nonzero(done).flatten().tolist():
                    episodes.append(
                        (self.global_step, {a: float(r[i]) for a, r in self.episode_return.items()})
                    )
                for r in self.episode_return.values():
                    r[done] = 0.0
        self.ts = ts
        last_values = self._values_of(ts.obs, ts.legal)
        for a in self.game.agents:
            batch[a]["last_value"] = last_values[a]
        return batch, episodes

    # ------------------------------------------------------------------ advantages
    def _gae(self, buf: dict) -> None:
        """GAE over one agent's decision steps; see the module docstring."""
        gamma, lam = self.cfg.gamma, self.cfg.gae_lambda
        T = buf["rewards"].shape[0]
        adv = torch.zeros_like(buf["rewards"])
        next_value = buf["last_value"].clone()
        next_adv = torch.zeros_like(next_value)
        pending = torch.zeros_like(next_value)
        for t in reversed(range(T)):
            done = buf["dones"][t]
            next_value = torch.where(done, buf["bootstrap"][t], next_value)
            next_adv = torch.where(done, 0.0, next_adv)
            pending = torch.where(done, 0.0, pending) + buf["rewards"][t]
            acting = buf["acting"][t]
            delta = pending + gamma * next_value - buf["values"][t]
            a_t = delta + gamma * lam * next_adv
            adv[t] = torch.where(acting, a_t, 0.0)
            next_value = torch.where(acting, buf["values"][t], next_value)
            next_adv = torch.where(acting, a_t, next_adv)
            pending = torch.where(acting, 0.0, pending)
        buf["advantages"] = adv
        buf["returns"] = adv + buf["values"]

    # ------------------------------------------------------------------ update
    def _update(self, learner: Learner, batch: dict) -> dict[str, float]:
        cfg = self.cfg
        keys = ("obs", "actions", "logprobs", "values", "advantages", "returns")
        keys += ("critic_obs",) if self.centralised else ()
        flat = {k: [] for k in (*keys, "legal")}
        for a in learner.agents:
            buf = batch[a]
            sel = buf["acting"].reshape(-1)
            for k in keys:
                flat[k].append(buf[k].reshape(-1, *buf[k].shape[2:])[sel])
            if buf["legal"] is not None:
                flat["legal"].append(buf["legal"].reshape(-1, buf["legal"].shape[-1])[sel])
        b = {k: torch.cat(v) for k, v in flat.items() if v}
        n = b["obs"].shape[0]
        sums: dict[str, float] = {}
        count = 0
        if n == 0:
            return {}
        mb_size = max(1, n // cfg.num_minibatches)
        parts = learner.net.param_groups()
        for _epoch in range(cfg.num_epochs):
            perm = torch.randperm(n, device=self.device)
            for start in range(0, n, mb_size):
                mb_inds = perm[start : start + mb_size]
                stats = self._minibatch_loss(learner, b, mb_inds, parts)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
            if cfg.target_kl is not None and stats["approx_kl"] > cfg.target_kl:
                break
        means = {k: v / count for k, v in sums.items()}
        y_pred, y_true = b["values"], b["returns"]
        var_y = torch.var(y_true) if n > 1 else torch.tensor(float("nan"))
        means["explained_variance"] = (
            float("nan") if not var_y > 0 else float(1 - torch.var(y_true - y_pred) / var_y)
        )
        return means

    def _minibatch_loss(self, learner: Learner, b: dict, mb_inds, parts) -> dict[str, float]:
        cfg = self.cfg
        net = learner.net
        mb_obs = b["obs"][mb_inds]
        mb_legal = b["legal"][mb_inds] if "legal" in b else None
        newlogp, entropy = net.log_prob_entropy(mb_obs, b["actions"][mb_inds], mb_legal)
        newvalue = net.value(b["critic_obs"][mb_inds] if self.centralised else mb_obs)
        logratio = newlogp - b["logprobs"][mb_inds]
        ratio = logratio.exp()
        with torch.no_grad():
            approx_kl = ((ratio - 1) - logratio).mean()
            clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()

        mb_adv = b["advantages"][mb_inds]
        if cfg.norm_adv and mb_adv.numel() > 1:
            mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)

        # ALGO LOGIC: clipped surrogate, (clipped) value loss, entropy bonus
        pg_loss = torch.max(
            -mb_adv * ratio, -mb_adv * torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)
        ).mean()
        mb_returns, mb_values = b["returns"][mb_inds], b["values"][mb_inds]
        if cfg.clip_vloss:
            v_clipped = mb_values + torch.clamp(newvalue - mb_values, -cfg.clip_coef, cfg.clip_coef)
            v_loss = 0.5 * torch.max((newvalue - mb_returns) ** 2, (v_clipped - mb_returns) ** 2)
            v_loss = v_loss.mean()
        else:
            v_loss = 0.5 * ((newvalue - mb_returns) ** 2).mean()
        entropy_loss = entropy.mean()
        loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss

        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"non-finite loss for '{learner.name}' at update {self.iteration} "
                f"(policy {pg_loss.item():.3g}, value {v_loss.item():.3g}); stopped, the last good "
                "checkpoint is kept — try a lower algo.lr or algo.max_grad_norm"
            )
        optimizers = [learner.optimizer]
        if self.critic_optimizer is not None:
            optimizers.append(self.critic_optimizer)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norms = {f"grad_norm/{part}": _grad_norm(ps) for part, ps in parts.items()}
        nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
        for opt in optimizers:
            opt.step()
        return {
            "policy_loss": pg_loss.item(),
            "value_loss": v_loss.item(),
            "entropy": entropy_loss.item(),
            "approx_kl": float(approx_kl),
            "clipfrac": float(clipfrac),
            **grad_norms,
        }


def _grad_norm(params: list[nn.Parameter]) -> float:
    norms = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
