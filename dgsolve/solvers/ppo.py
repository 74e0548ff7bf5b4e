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
3. per learner, ``num_epochs`` passes of ``num_minibatches`` equal-sized minibatches of the
   clipped surrogate, with optional value clipping, an entropy bonus and global gradient clipping.

With one tier this is independent PPO toward a dynamic Nash equilibrium (de Witt et al., "Is
Independent Learning All You Need in the StarCraft Multi-Agent Challenge?", 2020). With tiers,
a leader *anticipates* its followers only if its own learning signal contains their reaction to
what it commits to; a faster follower alone does not do it (the leader's partial gradient at the
follower's best response vanishes at Nash points: Fiez, Chasnov & Ratliff, "Implicit Learning
Dynamics in Stackelberg Games", ICML 2020). What a later tier sees decides how:

* ``follower_observes=action``: followers react to the realised leader action inside the step,
  so the leader's return already contains the reply to each action it takes: sequential-move,
  per-step pure commitment. That needs followers that reply well to *every* leader action, on
  the path or not, so with probability ``leader_probe_rate`` per step and copy a leader's action
  is replaced by a uniformly random one (a probe). Followers learn from probes like from any
  step; the leader does not learn from its probed steps, and its advantage estimates stop
  there and bootstrap from the critic's value of the probed state (a trace cut at the
  off-policy step, as in Retrace: Munos et al., "Safe and Efficient Off-Policy Reinforcement
  Learning", NeurIPS 2016).
* ``follower_observes=queries``: followers see the leader's policy; the leader learns its
  commitment from sampled commitments (:mod:`dgsolve.solvers.commitment`): one decision per
  episode and copy, credited with the episode's return.

Tier k still updates once every ``follower_updates_per_leader ** (L-1-k)`` iterations, so
followers stay close to their replies to the current leader. Advantages are estimated per
decision with the discount applied per environment step (a semi-Markov GAE: a decision ``Δ``
steps before the next one discounts that one's value by ``gamma ** Δ``). ``gamma`` is the
game's own discount unless ``algo.gamma`` is set.

``follower_restarts`` (k > 0) cuts the budget into k + 1 equal rounds and starts every round
after the first with one fresh follower (the last tier's learners in turn): new weights drawn as
at construction, an empty optimiser state and a learning-rate decay over that round; its
teammates keep their policies and go on learning. The leaders keep learning in rounds 1..k
(after ``leader_warmup`` of each round) and are frozen in the last one, where the fresh follower
learns its best response to the final leaders and its teammates. Followers that best-respond are
the follower half of a Stackelberg equilibrium by definition (von Stackelberg 1934; Basar &
Olsder ch. 3), and co-trained followers can stay far from it when the best reply lies outside
the basin they grew up in: in simple_adversary, good agents that learned to rush to the goal
beside a weak adversary do not learn to lure it away once it tracks them, while one learner
started afresh beside its rushing teammate does (``task=exploit`` measures the gap). Starting
one follower at a time is a Gauss-Seidel best-response step: a team started afresh together must
first learn again what the kept teammate already does. A fresh best response per round is the
oracle step of PSRO (Lanctot et al., NeurIPS 2017); training a leader against followers near
their best response is the "GDmax" view of leader learning (Jin, Netrapalli & Jordan, "What is
Local Optimality in Nonconvex-Nonconcave Minimax Optimization?", ICML 2020). A shared
centralised critic is kept across restarts (the leaders use it too).

``centralised_critic`` turns this into MAPPO (Yu et al., "The Surprising Effectiveness of PPO in
Cooperative Multi-Agent Games", NeurIPS 2022): separate actors, one critic shared by every agent
that sees all agents' observations (and the agent's id) during training; acting needs only the
actors.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
from torch import nn

from dgsolve.errors import CapabilityError, ConfigError, TrainingDiverged
from dgsolve.games.base import AgentSpec, Game, TimeStep, saves_state
from dgsolve.hierarchy import Hierarchy
from dgsolve.nets import ActorCritic, masked_logits
from dgsolve.policy import JointPolicy, NetPolicy
from dgsolve.solvers.commitment import Commitments, PureCommitments, noise_schedule

#: the learner's discount where neither ``algo.gamma`` nor the game sets one.
DEFAULT_GAMMA = 0.99


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
        # queries mode: a follower's critic (training only) also sees its leaders' realised
        # actions, a baseline free of the leaders' sampling noise that does not depend on the
        # follower's own action (Foerster et al., "Counterfactual Multi-Agent Policy
        # Gradients", AAAI 2018); the actor still sees only the leaders' policies
        self.critic_sees_actions = {
            a: hierarchy.observes_queries
            and not self.centralised
            and bool(hierarchy.predecessors(a))
            for a in game.agents
        }
        for agents in group_agents(hierarchy, self.specs, cfg.share_policy):
            first = agents[0]
            in_dim = hierarchy.augmented_obs_dim(first, self.specs)
            in_dim += len(agents) if len(agents) > 1 else 0
            own_critic = None
            if self.critic_sees_actions[first]:
                preds = hierarchy.predecessors(first)
                own_critic = in_dim + sum(self.specs[p].action_size for p in preds)
            net = ActorCritic(
                in_dim,
                self.specs[first],
                list(cfg.hidden_sizes),
                critic_dim=critic_dim if self.centralised else own_critic,
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
        self.gamma = resolve_gamma(cfg, game)
        self.batch_steps = cfg.num_steps * game.num_envs
        self.num_iterations = iterations_in_budget(
            cfg.total_timesteps, cfg.num_steps, game.num_envs
        )
        # follower restarts cut the budget into rounds; the leaders learn in all but the last
        # (run configs written before the option get its default from the schema: rundir)
        self.restarts = 0 if hierarchy.is_simultaneous else int(cfg.follower_restarts)
        self.round_bounds = self._rounds(self.restarts)
        if self.restarts and not self._leaders_ever_learn():
            needed = self._iterations_for_restarts() * self.batch_steps
            print(
                f"dgsolve: warning: algo.follower_restarts={self.restarts} leaves the leaders no "
                f"update in a budget of {self.num_iterations} iteration(s); training without "
                f"restarts (they need algo.total_timesteps of at least {needed})",
                file=sys.stderr,
            )
            self.restarts = 0
            self.round_bounds = self._rounds(0)
        self.warmup_iterations = self._leader_warmup(0)
        self._check_leaders_learn()
        # leaders: agents that a later tier follows
        self.leaders = tuple(a for tier in hierarchy.tiers[:-1] for a in tier)
        # action mode probes per step; queries mode probes whole commitments (commitment.py)
        self.probe_rate = 0.0 if hierarchy.observes_queries else float(cfg.leader_probe_rate)
        self.commitments = None  # mixed commitments (queries mode)
        self.tables = None  # pure commitments: drawn tables (queries mode)
        if hierarchy.observes_queries and self.leaders:
            kind = PureCommitments if hierarchy.pure_commitments else Commitments
            drawn = kind(hierarchy, self.specs, game.num_envs, device)
            if hierarchy.pure_commitments:
                self.tables = drawn
            else:
                self.commitments = drawn
        if hierarchy.observes_queries:
            self._check_whole_episodes()
        self.sigma = float(cfg.commitment_noise)
        self.iteration = 0
        self.global_step = 0
        self.ts: TimeStep | None = None
        self.episode_start = torch.ones(game.num_envs, dtype=torch.bool, device=device)
        self.episode_return = {a: torch.zeros(game.num_envs, device=device) for a in game.agents}
        #: learner name -> a KL penalty toward a frozen reference policy (:class:`KLAnchor`;
        #: Ex²PSRO's regularised best responses), added to that learner's loss
        self.anchors: dict[str, KLAnchor] = {}

    def _leader_warmup(self, round_index: int) -> int:
        """Iterations at the start of a round before the leaders learn."""
        if self.hierarchy.is_simultaneous:
            return 0
        start, end = self.round_bounds[round_index]
        return int(self.cfg.leader_warmup * (end - start))

    def _round_of(self, iteration: int) -> int:
        """The round that 1-based ``iteration`` belongs to."""
        return next(r for r, (s, e) in enumerate(self.round_bounds) if s < iteration <= e)

    def _leaders_learn(self, iteration: int) -> bool:
        """Whether the leaders' updates are on at 1-based ``iteration``: after their warm-up in
        each round, and never in the last round of a run with follower restarts (there the
        fresh followers learn their best response to the final leaders)."""
        r = self._round_of(iteration)
        if len(self.round_bounds) > 1 and r == len(self.round_bounds) - 1:
            return False
        return iteration > self.round_bounds[r][0] + self._leader_warmup(r)

    def _rounds(self, restarts: int) -> list[tuple[int, int]]:
        """``restarts + 1`` equal rounds of the budget, as ``(start, end]`` iterations."""
        n, rounds = self.num_iterations, restarts + 1
        return [(n * r // rounds, n * (r + 1) // rounds) for r in range(rounds)]

    def _period(self) -> int:
        """Iterations between two updates of the first tier."""
        return self.cfg.follower_updates_per_leader ** (len(self.hierarchy.tiers) - 1)

    def _leaders_ever_learn(self) -> bool:
        """Whether the first tier updates at least once (rounds after the warm-up, but the
        last round of a run with restarts)."""
        if self.hierarchy.is_simultaneous:
            return True
        bounds = self.round_bounds
        period = self._period()
        for r, (start, end) in enumerate(bounds[: max(1, len(bounds) - 1)]):
            if period * ((start + self._leader_warmup(r)) // period + 1) <= end:
                return True
        return False

    def _iterations_for_restarts(self) -> int:
        """The fewest iterations in which the first round leaves the leaders an update."""
        period, rounds = self._period(), self.restarts + 1
        length = 1
        while period * (int(self.cfg.leader_warmup * length) // period + 1) > length:
            length += 1
        return length * rounds

    def _check_leaders_learn(self) -> None:
        """A budget in which the first tier would never update is refused."""
        if self._leaders_ever_learn():
            return
        cfg, period = self.cfg, self._period()
        first = period * (self._leader_warmup(0) // period + 1)
        raise ConfigError(
            f"the first tier {list(self.hierarchy.tiers[0])} first updates at iteration {first} "
            f"(algo.follower_updates_per_leader={cfg.follower_updates_per_leader}, "
            f"algo.leader_warmup={cfg.leader_warmup}) but the budget is {self.num_iterations} "
            f"iteration(s), so it would never learn; use algo.total_timesteps of at least "
            f"{first * self.batch_steps}"
        )

    def _check_whole_episodes(self) -> None:
        """A commitment is credited with its episode's return, so in a game whose episodes have
        a fixed length every rollout must hold whole episodes."""
        length = self.game.episode_steps
        if length is not None and self.cfg.num_steps % length != 0:
            raise ConfigError(
                f"hierarchy.follower_observes=queries credits each commitment with its whole "
                f"episode, but algo.num_steps={self.cfg.num_steps} is not a multiple of the "
                f"game's episode length {length}; use algo.num_steps={length} (or a multiple)"
            )

    def _separate_critic(self, agent: str) -> bool:
        """Whether ``agent``'s critic reads more than its actor (MAPPO, or leaders' actions)."""
        return self.centralised or self.critic_sees_actions[agent]

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
            self.episode_start.fill_(True)
            self._check_game(self.ts, f"at reset (iteration {self.iteration + 1})")
        self.iteration += 1
        cfg = self.cfg
        r = self._round_of(self.iteration)
        if r > 0 and self.iteration == self.round_bounds[r][0] + 1:
            self._restart_followers()
        # learning rates decay to 0 over the budget; a renewed follower's over its round
        for opt, (first, last) in self._optimizers_and_spans(r):
            frac = 1.0 - (self.iteration - 1 - first) / (last - first)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * frac if cfg.anneal_lr else cfg.lr
        # leaders start learning after the warm-up; the commitment spread shrinks from then on
        warmup = self.warmup_iterations
        progress = (self.iteration - 1 - warmup) / max(1, self.num_iterations - 1 - warmup)
        self.sigma = noise_schedule(cfg.commitment_noise, cfg.commitment_noise_final, progress)

        # ROLLOUT: tiers act in order, the game receives one joint action per step
        batch, episodes = self._rollout()
        # ADVANTAGES: per agent, over its own decisions
        for agent in self.game.agents:
            gae(batch[agent], self.gamma, cfg.gae_lambda)
        # UPDATES: the last tier every iteration, earlier tiers on a slower timescale
        metrics: dict = {"episodes": episodes, "losses": {}}
        num_tiers = len(self.hierarchy.tiers)
        for learner in self.learners:
            period = cfg.follower_updates_per_leader ** (num_tiers - 1 - learner.tier)
            leads = learner.tier < num_tiers - 1
            if leads and not self._leaders_learn(self.iteration):
                continue
            if self.iteration % period == 0:
                metrics["losses"][learner.name] = self._update(learner, batch)
        return metrics

    def _optimizers_and_spans(self, r: int):
        """Each optimiser with the iterations its learning-rate decay spans: the whole budget,
        or for the follower renewed at the start of round ``r``, that round."""
        whole = (0, self.num_iterations)
        renewed = self._renewed_follower(r) if r > 0 else None
        out = [
            (lr.optimizer, self.round_bounds[r] if lr is renewed else whole) for lr in self.learners
        ]
        if self.critic_optimizer is not None:
            out.append((self.critic_optimizer, whole))
        return out

    def _renewed_follower(self, round_index: int) -> Learner:
        """The follower learner that round ``round_index`` (>= 1) starts afresh: the last
        tier's learners in turn."""
        last = len(self.hierarchy.tiers) - 1
        followers = [lr for lr in self.learners if lr.tier == last]
        return followers[(round_index - 1) % len(followers)]

    def _restart_followers(self) -> None:
        """A new round starts one follower afresh (the last tier's learners in turn): new
        weights and an empty optimiser state, so it learns its reply to the current leaders and
        to its teammates from scratch, not from the reply it grew up with beside them. The
        teammates keep theirs (a Gauss-Seidel best-response step: a team that starts afresh
        together must first learn again what the kept teammate already does). A shared
        (centralised) critic is kept: the leaders use it too."""
        learner = self._renewed_follower(self._round_of(self.iteration))
        learner.net.reinitialise(critic=not self.centralised)
        learner.optimizer.state.clear()

    def summary(self) -> dict:
        """The learner settings summary.json records: the discount actually used and, with
        follower restarts, the environment step where each round began and whom it renewed."""
        learner: dict = {"gamma": self.gamma}
        if len(self.round_bounds) > 1:
            learner["follower_rounds"] = [
                {"from_step": start * self.batch_steps, "renewed": self._renewed_follower(r).name}
                for r, (start, _) in enumerate(self.round_bounds)
                if r > 0
            ]
        return {"learner": learner}

    def state_dict(self) -> dict:
        """Everything a resumed run needs, as tensors and plain values (``torch.load`` with
        ``weights_only=True`` reads it): networks, optimisers, counters, torch's generators
        and, where the game saves its state (:func:`~dgsolve.games.base.saves_state`), the
        games in progress under ``"game"``; ``"game": None`` means a resumed run restarts them.
        """
        critic = {}
        if self.critic_optimizer is not None:
            critic = {"critic_optimizer": self.critic_optimizer.state_dict()}
        cuda = self.device.type == "cuda"
        return {
            **critic,
            "nets": {lr.name: lr.net.state_dict() for lr in self.learners},
            "optimizers": {lr.name: lr.optimizer.state_dict() for lr in self.learners},
            "iteration": self.iteration,
            "global_step": self.global_step,
            "sigma": self.sigma,
            "torch_rng": torch.get_rng_state(),
            # rollouts and updates draw on the solver's device, from its default generator
            "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
            "game": self._games_in_progress(),
        }

    def _games_in_progress(self) -> dict | None:
        """The interrupted games: the game's own state, the TimeStep the next step acts on,
        where episodes start, their returns so far and the leaders' draws for them."""
        if self.ts is None or not saves_state(self.game):
            return None
        drawn = self._draws()
        return {
            "state": self.game.state_dict(),
            "timestep": self.ts.state_dict(),
            "episode_start": self.episode_start.clone(),
            "episode_return": {a: r.clone() for a, r in self.episode_return.items()},
            "commitments": None if drawn is None else drawn.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict`: exactly where it saved the games in progress,
        else with games that restart at the next :meth:`step`."""
        for lr in self.learners:
            lr.net.load_state_dict(state["nets"][lr.name])
            lr.optimizer.load_state_dict(state["optimizers"][lr.name])
        if self.critic_optimizer is not None:
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.iteration = int(state["iteration"])
        self.global_step = int(state["global_step"])
        self.sigma = float(state.get("sigma", self.sigma))
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        games = state.get("game")
        if games is None:
            self.ts = None
            return
        if not saves_state(self.game):
            raise ValueError(
                f"the state holds games in progress but {type(self.game).__name__} cannot load them"
            )
        self.game.load_state_dict(games["state"])
        self.ts = TimeStep.from_state(games["timestep"], self.game.device)
        self.episode_start = games["episode_start"].to(self.device, copy=True)
        self.episode_return = {
            a: r.to(self.device, copy=True) for a, r in games["episode_return"].items()
        }
        drawn = self._draws()
        if drawn is not None:
            drawn.load_state_dict(games["commitments"])

    def _draws(self) -> Commitments | PureCommitments | None:
        """The leaders' drawn commitments (queries mode), mixed or pure; else None."""
        return self.commitments if self.commitments is not None else self.tables

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
    def _sample_joint(self, ts: TimeStep, obs=None, explore: bool = True):
        """Sample every agent's action tier by tier at ``ts`` (or at ``obs``, e.g. final
        observations). Returns per agent ``(actor input, raw action, logp, value, mask, critic
        input, probed)`` and the actions the game receives. With ``explore``, leaders probe
        (action mode) or play their drawn commitments (queries mode)."""
        obs = ts.obs if obs is None else obs
        critic_in = self._critic_inputs(obs) if self.centralised else {}
        committed = explore and self.commitments is not None
        if committed:
            answers = self.commitments.answers(self.policy_of, self.commitments.noise)
        elif explore and self.tables is not None:
            answers = self.tables.answers()
        else:
            answers = self.joint.query_answers()
        env_actions: dict[str, torch.Tensor] = {}
        out = {}
        for tier in self.hierarchy.tiers:
            tier_actions = {}
            for agent in tier:
                seen = self.joint.context(agent, obs[agent], answers or env_actions, ts.acting)
                x = self.policy_of[agent].prepare(seen)
                net = self.learner_of[agent].net
                mask = ts.legal[agent] if self.specs[agent].discrete else None
                offset = None
                if committed and agent in self.leaders:
                    offset = self.commitments.offset(agent, obs[agent])
                raw, logp = net.sample(x, mask, offset)
                probed = None
                if explore and self.tables is not None and agent in self.leaders:
                    raw, probed = self.tables.action(agent, obs[agent]), self.tables.probing[agent]
                elif committed and agent in self.leaders:
                    probed = self.commitments.probing[agent]
                elif explore and self.probe_rate > 0 and agent in self.leaders:
                    # ALGO LOGIC: probes, so followers learn replies to every leader action
                    probed = torch.rand(raw.shape[0], device=raw.device) < self.probe_rate
                    probed &= ts.acting[agent]
                    raw = torch.where(_expand_like(probed, raw), self._uniform(agent, mask), raw)
                cx = critic_in.get(agent, x)
                if self.critic_sees_actions[agent]:
                    shown = self.hierarchy.augment(
                        agent, cx, env_actions, self.specs, ts.acting, as_actions=True
                    )
                    cx = shown
                out[agent] = (x, raw, logp, net.value(cx), mask, cx, probed, offset)
                tier_actions[agent] = self.policy_of[agent].to_env(raw)
            env_actions.update(tier_actions)
        return out, env_actions

    def _uniform(self, agent: str, mask: torch.Tensor | None) -> torch.Tensor:
        """A uniformly random legal action (discrete) or point of the action box, per copy."""
        spec, B = self.specs[agent], self.game.num_envs
        if spec.discrete:
            weights = mask.float() if mask is not None else torch.ones(B, spec.num_actions)
            return torch.multinomial(weights.to(self.device), 1).squeeze(-1)
        low = torch.tensor(spec.low, device=self.device)
        high = torch.tensor(spec.high, device=self.device)
        return low + (high - low) * torch.rand(B, spec.action_dim, device=self.device)

    @torch.no_grad()
    def _values_of(self, ts: TimeStep, obs) -> dict[str, torch.Tensor]:
        out, _ = self._sample_joint(ts, obs, explore=False)
        return {a: v[3] for a, v in out.items()}

    def _new_buffers(self) -> dict:
        T, B, dev = self.cfg.num_steps, self.game.num_envs, self.device
        batch = {}
        for a in self.game.agents:
            spec = self.specs[a]
            in_dim = self.learner_of[a].net.obs_dim
            critic_dim = self.learner_of[a].net.critic_dim
            batch[a] = {
                "obs": torch.zeros(T, B, in_dim, device=dev),
                "critic_obs": torch.zeros(T, B, critic_dim, device=dev)
                if self._separate_critic(a)
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
                "cut": torch.zeros(T, B, dtype=torch.bool, device=dev),
                "legal": torch.ones(T, B, spec.num_actions, dtype=torch.bool, device=dev)
                if spec.discrete
                else None,
            }
        if self.tables is not None:
            # a leader's decision is its drawn table, at the start of each episode
            for a in self.tables.leaders:
                inputs = self.tables.queries[a]
                D = self.learner_of[a].net.obs_dim
                shape = (T, B, len(inputs))
                batch[a]["commit_inputs"] = torch.zeros(*shape, D, device=dev)
                batch[a]["commit_table"] = torch.zeros(shape, dtype=torch.long, device=dev)
        if self.commitments is not None:
            # what a committing leader's update needs to recompute its followers' reaction
            for a in self.game.agents:
                if a in self.leaders:
                    batch[a]["offset"] = torch.zeros(T, B, self.specs[a].num_actions, device=dev)
                    batch[a]["noise"] = torch.zeros(T, *self.commitments.noise[a].shape, device=dev)
                if self.hierarchy.predecessors(a):
                    batch[a]["own_obs"] = torch.zeros(T, B, self.specs[a].obs_dim, device=dev)
        return batch

    @torch.no_grad()
    def _rollout(self):
        B = self.game.num_envs
        batch = self._new_buffers()
        episodes: list[tuple[int, dict[str, float]]] = []
        ts = self.ts
        for t in range(self.cfg.num_steps):
            if self.commitments is not None:
                # ALGO LOGIC: a fresh commitment per copy where an episode starts
                cfg = self.cfg
                self.commitments.redraw(
                    self.episode_start, self.sigma, cfg.leader_probe_rate, cfg.commitment_noise
                )
            if self.tables is not None:
                self.tables.redraw(self.episode_start, self.policy_of, self.cfg.leader_probe_rate)
            sampled, env_actions = self._sample_joint(ts)
            for a, (x, raw, logp, value, mask, cx, probed, offset) in sampled.items():
                buf = batch[a]
                if buf["critic_obs"] is not None:
                    buf["critic_obs"][t] = cx
                buf["obs"][t], buf["actions"][t], buf["logprobs"][t] = x, raw, logp
                buf["values"][t], buf["acting"][t] = value, ts.acting[a]
                if probed is not None:
                    buf["cut"][t] = probed
                if mask is not None:
                    buf["legal"][t] = mask
                if offset is not None:
                    buf["offset"][t], buf["noise"][t] = offset, self.commitments.noise[a]
                if "own_obs" in buf:
                    buf["own_obs"][t] = ts.obs[a]
                if "commit_table" in buf:
                    buf["acting"][t] = self.episode_start
                    buf["commit_inputs"][t] = self.tables.inputs[a]
                    buf["commit_table"][t] = self.tables.table[a]
                    buf["logprobs"][t] = self.tables.logp[a]
            ts = self.game.step(env_actions)
            self.global_step += B
            when = f"at env step {self.global_step:,} (iteration {self.iteration})"
            self._check_game(ts, when, env_actions)
            done = ts.done
            for a in self.game.agents:
                batch[a]["rewards"][t] = ts.reward[a]
                batch[a]["dones"][t] = done
                self.episode_return[a] += ts.reward[a]
            if ts.truncated.any():
                self._check_final_obs(ts)
                final_values = self._values_of(ts, ts.final_obs)
                for a in self.game.agents:
                    # an agent whose own episode ended by termination is not bootstrapped
                    bootstrap = ts.truncated & ~ts.terminated_for(a)
                    batch[a]["bootstrap"][t] = torch.where(bootstrap, final_values[a], 0.0)
            if done.any():
                # one host transfer for every finished copy's returns (no per-copy indexing)
                names = list(self.episode_return)
                ended = torch.stack([self.episode_return[a][done] for a in names], 1).tolist()
                episodes += [
                    (self.global_step, dict(zip(names, row, strict=True))) for row in ended
                ]
                for r in self.episode_return.values():
                    r[done] = 0.0
            self.episode_start = done.clone()
        self.ts = ts
        last_values = self._values_of(ts, ts.obs)
        for a in self.game.agents:
            batch[a]["last_value"] = last_values[a]
        return batch, episodes

    def _check_game(self, ts: TimeStep, when: str, actions: dict | None = None) -> None:
        """Raise :class:`TrainingDiverged` if the game returned a non-finite reward or
        observation (one host synchronisation per call): ``source="game"``, unless the
        ``actions`` it was sent were non-finite themselves (``source="learner"``)."""
        parts = [("reward", a, ts.reward[a]) for a in self.game.agents]
        parts += [("observation", a, ts.obs[a]) for a in self.game.agents]
        finite = torch.stack([torch.isfinite(x).all() for _, _, x in parts])
        if bool(finite.all()):
            return
        bad = [p for p, ok in zip(parts, finite.tolist(), strict=True) if not ok]
        wild = {
            a: x
            for a, x in (actions or {}).items()
            if x.is_floating_point() and not bool(torch.isfinite(x).all())
        }
        if wild:
            raise self._actions_diverged(wild, bad, when)
        raise self._game_diverged(bad, when)

    def _check_final_obs(self, ts: TimeStep) -> None:
        """The final observations that truncated games bootstrap from must be finite too."""
        parts = [("final observation", a, ts.final_obs[a][ts.truncated]) for a in self.game.agents]
        bad = [p for p in parts if not bool(torch.isfinite(p[2]).all())]
        if bad:
            when = f"at env step {self.global_step:,} (iteration {self.iteration})"
            raise self._game_diverged(bad, when)

    def _game_diverged(self, bad: list, when: str) -> TrainingDiverged:
        """The error for non-finite game outputs ``bad``: ``(kind, agent, tensor)`` triples."""
        err = TrainingDiverged(
            f"the game returned a non-finite {self._describe_bad(bad)} {when}: the NaN or inf "
            f"comes from the game ({describe_game(self.game)}), not the learner; check the env's "
            "parameters"
        )
        err.source = "game"
        return err

    def _actions_diverged(self, wild: dict, bad: list, when: str) -> TrainingDiverged:
        """The error for game outputs ``bad`` that non-finite actions ``wild`` caused."""
        learners = _join(list(dict.fromkeys(f"'{self.learner_of[a].name}'" for a in wild)))
        actions = self._describe_bad([("actions", a, x) for a, x in wild.items()])
        err = TrainingDiverged(
            f"the learner {learners} sent non-finite {actions} {when}, and the game returned a "
            f"non-finite {self._describe_bad(bad)} from them: the learner diverged, not the "
            f"game; {self._learner_advice()}"
        )
        err.source = "learner"
        return err

    def _describe_bad(self, bad: list) -> str:
        """``reward for agents 'a' and 'b' (in 3 of 8 copies)``, per kind of ``bad`` values."""
        by_kind: dict[str, list] = {}
        for kind, agent, x in bad:
            by_kind.setdefault(kind, []).append((agent, x))
        parts = []
        for kind, entries in by_kind.items():
            hit = torch.stack([_rows_hit(x) for _, x in entries]).any(dim=0)
            names = _join([f"'{a}'" for a, _ in entries])
            agents = "agent" if len(entries) == 1 else "agents"
            copies = f"in {int(hit.sum())} of {self.game.num_envs} copies"
            parts.append(f"{kind} for {agents} {names} ({copies})")
        return _join(parts)

    # ------------------------------------------------------------------ update
    def _update(self, learner: Learner, batch: dict) -> dict[str, float]:
        cfg = self.cfg
        keys = ("obs", "actions", "logprobs", "values", "advantages", "returns")
        keys += ("critic_obs",) if self._separate_critic(learner.agents[0]) else ()
        committing = self.commitments is not None and learner.agents[0] in self.leaders
        keys += ("offset",) if committing else ()
        if "commit_table" in batch[learner.agents[0]]:
            keys += ("commit_inputs", "commit_table")
        flat = {k: [] for k in (*keys, "legal")}
        coupled: list[dict[str, torch.Tensor]] = []
        for a in learner.agents:
            buf = batch[a]
            sel = (buf["acting"] & ~buf["cut"]).reshape(-1)
            for k in keys:
                flat[k].append(buf[k].reshape(-1, *buf[k].shape[2:])[sel])
            if buf["legal"] is not None:
                flat["legal"].append(buf["legal"].reshape(-1, buf["legal"].shape[-1])[sel])
            if committing:
                coupled.append(self._reaction_data(a, batch, sel))
        b = {k: torch.cat(v) for k, v in flat.items() if v}
        if committing:
            b["reaction"] = {k: _cat_tree([c[k] for c in coupled]) for k in coupled[0]}
            b["logprobs"] = b["logprobs"] + b["reaction"]["old_logp"]
        n = b["obs"].shape[0]
        sums: dict[str, float] = {}
        count = 0
        if n == 0:
            return {}
        parts = learner.net.param_groups()
        for _epoch in range(cfg.num_epochs):
            perm = torch.randperm(n, device=self.device)
            for mb_inds in minibatches(perm, cfg.num_minibatches):
                stats = self._minibatch_loss(learner, b, mb_inds, parts)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
            if cfg.target_kl is not None and stats["approx_kl"] > cfg.target_kl:
                break
        anchor = self.anchors.get(learner.name)
        if anchor is not None and "anchor_kl" in sums:
            anchor.adapt(sums["anchor_kl"] / count)
            sums["anchor_coef"] = anchor.coef * count
        finite = torch.stack([torch.isfinite(p).all() for p in learner.net.parameters()])
        if not bool(finite.all()):
            raise self._learner_diverged(learner, "parameters after the update")
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
        anchored = None  # the actor's distribution, kept for an anchor's divergence
        mb_obs = b["obs"][mb_inds]
        mb_legal = b["legal"][mb_inds] if "legal" in b else None
        if "commit_table" in b:
            # a pure-committing leader's action is the table it drew for the episode
            newlogp, entropy = PureCommitments.log_prob_entropy(
                net, b["commit_inputs"][mb_inds], b["commit_table"][mb_inds]
            )
        elif "reaction" in b:
            # ALGO LOGIC: the joint probability of the leader's and its followers' actions
            # under the drawn commitment, the followers reacting to the new answers
            logits = masked_logits(net.actor_out(mb_obs) + b["offset"][mb_inds], mb_legal)
            own = torch.log_softmax(logits, dim=-1)
            newlogp = own.gather(-1, b["actions"][mb_inds, None]).squeeze(-1)
            newlogp = newlogp + self._reaction_logp(_index_tree(b["reaction"], mb_inds))
            entropy = torch.zeros_like(newlogp)  # the draws explore; no bonus toward mixing
        elif learner.name in self.anchors and net.discrete:
            # one actor pass for the surrogate and the anchor's divergence
            anchored = net.distribution(mb_obs, mb_legal)
            newlogp = anchored.log_prob(b["actions"][mb_inds].long())
            entropy = anchored.entropy()
        else:
            newlogp, entropy = net.log_prob_entropy(mb_obs, b["actions"][mb_inds], mb_legal)
        newvalue = net.value(b["critic_obs"][mb_inds] if "critic_obs" in b else mb_obs)
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
        anchor = self.anchors.get(learner.name)
        if anchor is not None:
            anchor_kl = anchor.divergence(net, mb_obs, mb_legal, anchored)
            loss = loss + anchor.coef * anchor_kl

        if not torch.isfinite(loss):
            terms = {"policy loss": pg_loss, "value loss": v_loss, "entropy": entropy_loss}
            bad = [f"{name} ({x.item():.3g})" for name, x in terms.items() if not torch.isfinite(x)]
            raise self._learner_diverged(learner, _join(bad) or f"loss ({loss.item():.3g})")
        optimizers = [learner.optimizer]
        if self.critic_optimizer is not None:
            optimizers.append(self.critic_optimizer)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norms = {f"grad_norm/{part}": _grad_norm(ps) for part, ps in parts.items()}
        bad = [part for part in parts if not math.isfinite(grad_norms[f"grad_norm/{part}"])]
        if bad:
            # stopped before the step: the networks in memory are still finite
            raise self._learner_diverged(learner, f"gradient of the {_join(bad)}")
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
            **({"anchor_kl": float(anchor_kl.detach())} if anchor is not None else {}),
        }

    def _learner_diverged(self, learner: Learner, what: str) -> TrainingDiverged:
        """The error for a non-finite ``what`` in ``learner``'s update (``source="learner"``);
        the game's outputs were checked finite during the rollout."""
        err = TrainingDiverged(
            f"non-finite {what} for learner '{learner.name}' at update {self.iteration} "
            f"(agents {', '.join(learner.agents)}; env step {self.global_step:,}): the learner "
            f"diverged, the game's rewards and observations were finite; {self._learner_advice()}"
        )
        err.source = "learner"
        return err

    def _learner_advice(self) -> str:
        cfg = self.cfg
        return (
            f"try a lower algo.lr (now {cfg.lr:g}) or algo.max_grad_norm (now "
            f"{cfg.max_grad_norm:g})"
        )

    # ------------------------------------------------------------------ reaction (queries)
    def _reaction_data(self, leader: str, batch: dict, sel: torch.Tensor) -> dict:
        """What recomputing the followers' reaction to ``leader``'s commitment needs, at the
        leader's selected decisions: every leader's drawn noise, and each later agent's own
        observation, action, mask, whether it acted, and its log-probability then."""
        later = [a for t in self.hierarchy.tiers[self.hierarchy.tier_of(leader) + 1 :] for a in t]

        def pick(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(-1, *x.shape[2:])[sel]

        old = torch.zeros(int(sel.sum()), device=self.device)
        agents = {}
        for f in later:
            buf = batch[f]
            acting = pick(buf["acting"])
            old = old + torch.where(acting, pick(buf["logprobs"]), 0.0)
            agents[f] = {
                "obs": pick(buf["own_obs"]),
                "actions": pick(buf["actions"]),
                "legal": pick(buf["legal"]) if buf["legal"] is not None else None,
                "acting": acting,
            }
        noise = {a: pick(batch[a]["noise"]) for a in self.leaders}
        return {"noise": noise, "agents": agents, "old_logp": old}

    def _reaction_logp(self, data: dict) -> torch.Tensor:
        """Sum of the later agents' log-probabilities of their actions, reacting to answers
        recomputed from the leaders' current networks (differentiable in them)."""
        answers = self.commitments.answers(self.policy_of, data["noise"])
        total = torch.zeros((), device=self.device)
        for f, d in data["agents"].items():
            x = self.policy_of[f].prepare(self.joint.context(f, d["obs"], answers))
            logp, _ = self.learner_of[f].net.log_prob_entropy(x, d["actions"], d["legal"])
            total = total + torch.where(d["acting"], logp, 0.0)
        return total


def iterations_in_budget(total_timesteps: int, num_steps: int, num_envs: int) -> int:
    """PPO iterations in ``total_timesteps`` environment steps; a budget below one iteration
    (``env.num_envs × algo.num_steps``) is refused in one line. It reads the config alone, so
    :func:`dgsolve.solvers.check_budget` refuses the run before its directory exists."""
    batch = int(num_steps) * int(num_envs)
    if total_timesteps < batch:
        raise ConfigError(
            f"algo.total_timesteps={total_timesteps} is less than one iteration "
            f"(env.num_envs x algo.num_steps = {batch}); use at least {batch}"
        )
    return math.ceil(total_timesteps / batch)


def response_learner(algo_cfg, key: str, num_envs: int):
    """The PPO learner a population method trains (PSRO's responses, FCP's runs and agents):
    ``algo_cfg.ppo``'s settings on PPO's schema, one network per agent, ``algo_cfg.<key>``
    environment steps. Returns ``(config, iterations)``; a budget below one PPO iteration of
    the game's batch is refused in one line naming ``algo.<key>``."""
    from omegaconf import OmegaConf

    from dgsolve.config import PPOConfig

    fields = OmegaConf.to_container(algo_cfg.ppo, resolve=True) if algo_cfg.get("ppo") else {}
    steps = int(algo_cfg[key])
    fields.update(name=f"{algo_cfg.name}_{key}", solver="ppo", total_timesteps=steps)
    fields["share_policy"] = False
    cfg = PPOConfig(**fields)
    batch = num_envs * int(cfg.num_steps)
    if steps < batch:
        raise ConfigError(
            f"algo.{key}={steps} is less than one PPO iteration ({num_envs} game copies x "
            f"algo.ppo.num_steps={cfg.num_steps} = {batch} steps); use at least {batch} or "
            "lower env.num_envs"
        )
    return cfg, math.ceil(steps / batch)


class KLAnchor:
    """A penalty ``coef · KL(π_θ ‖ π_ref)`` toward a frozen reference network, averaged over a
    minibatch's observations (discrete actions: the exact divergence over the legal actions).

    Maximising ``E[R] − β KL(π ‖ π_ref)`` keeps a learner near ``π_ref`` where the return does
    not say otherwise (its optimum is ``π ∝ π_ref · exp(Q / β)``). With ``target`` set, ``β``
    adapts after every update by PPO's adaptive-penalty rule (Schulman et al., "Proximal Policy
    Optimization Algorithms", 2017, §4): halved when the mean divergence is below ``target /
    1.5``, doubled above ``1.5 · target``, kept within ``[1e-4, 1e4]``.
    """

    def __init__(self, reference: ActorCritic, coef: float, target: float | None = None):
        self.reference = reference
        for p in reference.parameters():
            p.requires_grad_(False)
        self.coef = float(coef)
        self.target = None if target is None else float(target)

    def divergence(
        self, net: ActorCritic, obs: torch.Tensor, legal: torch.Tensor | None, own=None
    ) -> torch.Tensor:
        """The mean ``KL(π_θ(·|x) ‖ π_ref(·|x))`` over ``obs``, differentiable in ``net``
        (``own``: ``net``'s distribution at ``obs`` where the caller has it already)."""
        with torch.no_grad():
            ref = self.reference.distribution(obs, legal)
        if own is None:
            own = net.distribution(obs, legal)
        if net.discrete:
            own_log = torch.log_softmax(own.logits, -1)
            ref_log = torch.log_softmax(ref.logits, -1)
            gap = own_log - ref_log
            if legal is not None:  # illegal actions have no probability under either
                gap = torch.where(legal, gap, 0.0)
            return (own_log.exp() * gap).sum(-1).mean()
        return torch.distributions.kl_divergence(own, ref).sum(-1).mean()

    def adapt(self, mean_kl: float) -> None:
        if self.target is None or not math.isfinite(mean_kl):
            return
        if mean_kl < self.target / 1.5:
            self.coef = max(1e-4, self.coef / 2)
        elif mean_kl > self.target * 1.5:
            self.coef = min(1e4, self.coef * 2)


def _cat_tree(trees: list):
    """Concatenate matching nested dicts of tensors (``None`` leaves stay ``None``)."""
    first = trees[0]
    if isinstance(first, dict):
        return {k: _cat_tree([t[k] for t in trees]) for k in first}
    return None if first is None else torch.cat(trees)


def _index_tree(tree, inds: torch.Tensor):
    if isinstance(tree, dict):
        return {k: _index_tree(v, inds) for k, v in tree.items()}
    return None if tree is None else tree[inds]


def _join(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, [", ".join(items[:-1]), *items[-1:]]))


def _rows_hit(x: torch.Tensor) -> torch.Tensor:
    """``[rows]`` bool: which rows (copies) of ``x`` hold a non-finite entry."""
    return (~torch.isfinite(x)).reshape(x.shape[0], -1).any(dim=1)


def describe_game(game: Game) -> str:
    """How a message names a game: ``env=<family>`` where its config says, and its class."""
    family = getattr(getattr(game, "cfg", None), "family", None)
    name = type(game).__name__
    return f"env={family}, {name}" if family else name


def _grad_norm(params: list[nn.Parameter]) -> float:
    norms = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def resolve_gamma(cfg, game: Game) -> float:
    """``algo.gamma`` if set, else the game's own discount, else :data:`DEFAULT_GAMMA`."""
    if getattr(cfg, "gamma", None) is not None:
        return float(cfg.gamma)
    return float(game.discount) if game.discount is not None else DEFAULT_GAMMA


def minibatches(perm: torch.Tensor, num_minibatches: int) -> tuple[torch.Tensor, ...]:
    """``perm`` cut into ``num_minibatches`` parts whose sizes differ by at most one: no small
    tail step (fewer parts when there are fewer samples than minibatches)."""
    return torch.tensor_split(perm, min(num_minibatches, len(perm)))


def gae(buf: dict, gamma: float, lam: float) -> None:
    """GAE(gamma, lambda) over one agent's decisions, in place (``advantages``, ``returns``).

    Rewards that arrive while the agent waits are credited, discounted per environment step, to
    its last decision; a decision ``Δ`` steps before the next one discounts that one's value and
    advantage by ``gamma ** Δ`` (the semi-Markov form of GAE; with a decision every step it is
    Schulman et al.'s). At a done step the next value is ``bootstrap`` (0 for a terminated game,
    the critic's value of the final observation for a truncated one). A ``cut`` step (a probed
    leader action) is no decision: earlier decisions bootstrap from its value and stop there.
    """
    T = buf["rewards"].shape[0]
    adv = torch.zeros_like(buf["rewards"])
    next_value = buf["last_value"].clone()
    next_adv = torch.zeros_like(next_value)
    pending = torch.zeros_like(next_value)  # discounted rewards from t + 1 to the next decision
    discount = torch.ones_like(next_value)  # gamma ** (steps from t + 1 to the next decision)
    cut = buf.get("cut")
    for t in reversed(range(T)):
        done = buf["dones"][t]
        next_value = torch.where(done, buf["bootstrap"][t], next_value)
        next_adv = torch.where(done, 0.0, next_adv)
        pending = buf["rewards"][t] + gamma * torch.where(done, 0.0, pending)
        discount = gamma * torch.where(done, 1.0, discount)
        boundary = buf["acting"][t]
        acting = boundary if cut is None else boundary & ~cut[t]
        if cut is not None:
            boundary = boundary | cut[t]
        a_t = pending + discount * next_value - buf["values"][t] + lam * discount * next_adv
        adv[t] = torch.where(acting, a_t, 0.0)
        next_value = torch.where(boundary, buf["values"][t], next_value)
        next_adv = torch.where(acting, a_t, torch.where(boundary, 0.0, next_adv))
        pending = torch.where(boundary, 0.0, pending)
        discount = torch.where(boundary, 1.0, discount)
    buf["advantages"] = adv
    buf["returns"] = adv + buf["values"]


def _expand_like(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape(*mask.shape, *([1] * (like.dim() - mask.dim())))
