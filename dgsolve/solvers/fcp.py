"""Fictitious Co-Play (``algo=fcp``): an agent trained with a pool of self-play partners and their
past checkpoints, measured with partners it never met.

Fictitious Co-Play (Strouse, McKee, Botvinick, Hughes & Everett, "Collaborating with Humans
without Human Data", NeurIPS 2021) trains an agent to play well with new partners, without data
of them, in three stages:

1. **The pool.** ``algo.population_size`` self-play runs, each its own seed: independent PPO with
   one network per seat and every seat learning (:mod:`dgsolve.solvers.ppo`, as ``algo=nash_ppo``
   trains) for ``algo.partner_steps`` environment steps. Each keeps its networks at the start,
   every ``algo.snapshot_interval`` PPO iterations and at the end (``null``: at the end only).
   Runs with different seeds settle on different conventions; the past checkpoints add partners
   of every skill, as the paper's initial, middle and final checkpoints do.
2. **The FCP agents.** Per seat a fresh PPO learner, trained for ``algo.fcp_steps`` steps with
   the other seats frozen (:class:`~dgsolve.games.frozen.FixedOpponents`) and played by a
   :class:`~dgsolve.policy.MixturePolicy` over every pool member's policy for that seat, one
   member drawn per game copy and episode (with more than two players each other seat draws its
   own member, so a team may mix runs). ``algo.prioritized=false`` draws members uniformly;
   ``true`` draws them by the rank of the FCP agent's mean return with each, the poorest first:
   weight ∝ rank^(-1/β) with β = ``algo.priority_temperature``, the rank rule of Prioritized
   Level Replay (Jiang, Grefenstette & Rocktäschel, ICML 2021) applied to partners as AlphaStar's
   prioritized fictitious self-play applies win rates (Vinyals et al., Nature 2019). A member's
   return is the mean of its episodes in the latest PPO iteration that drew it, members not met
   yet rank poorest, and the weights are recomputed after every iteration. Ranks make the rule
   free of the game's payoff scale and never drop a member; note that it leans toward the
   partners nobody does well with, the random initial checkpoints among them.
3. **Evaluation.** ``algo.heldout_partners`` more self-play runs, with seeds disjoint from the
   pool's and never seen in training. For each seat and held-out partner, the FCP agent takes
   that seat and the partner's policies the others; so does the *self-play agent*, pool run 0's
   final policy for that seat. With ``fcp_steps = partner_steps`` (the default) both had the same
   budget per agent: a seat's network gets its own decisions of as many environment steps.
   ``algo.eval_games`` games a pair, sampled actions, on the same deals for every pair (common
   random numbers, :func:`~dgsolve.eval.returns.first_game_returns`).

``summary.json`` gains ``fcp``: the FCP agent's and the self-play agent's welfare (the sum of
every seat's return) with the held-out partners, per seat with each agent's returns and per
partner; their paired difference with its standard error; the mean over every pool run's final
policy as the self-play agent; the pool's and the held-out runs' own self-play welfare; and, when
prioritized, the final draw weights. What plays afterwards (``policies()``, ``policy.pt``,
``task=exploit``, ``task=crossplay``) are the FCP agents, one per seat.

:meth:`FCPSolver.step` is one PPO iteration of the learner in training: the pool's runs, then the
held-out runs, then the FCP agents seat by seat; the last one also evaluates. ``global_step``
counts the environment steps of all of them. Learner ``k`` of that order has seed
``SEED_STRIDE * seed + k``. A checkpoint holds the checkpoints kept so far, the learner in
training (with its games in progress, the frozen partners' draws among them, where the game saves
its state), the generator of the draws and the priorities, so a resumed run goes on exactly.
Tiers are refused: FCP's partners play the game in one tier.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dgsolve.errors import ConfigError, RunDirError
from dgsolve.games.base import Game, TimeStep, saves_state
from dgsolve.games.frozen import FixedOpponents
from dgsolve.hierarchy import Hierarchy
from dgsolve.policy import JointPolicy, MixturePolicy, UniformPolicy

#: learner ``k`` (pool runs, held-out runs, FCP agents, in that order) has seed ``SEED_STRIDE *
#: seed + k``: no two learners of runs with different seeds share one
SEED_STRIDE = 10_000
#: the deals of the evaluation are ``first_game_returns``' batches from ``EVAL_SEED + seed``
EVAL_SEED = 30_000


class FCPSolver:
    """``algo=fcp`` (see the module docstring)."""

    def __init__(self, cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
        if not hierarchy.is_simultaneous:
            raise ConfigError("algo=fcp plays the game in one tier; use hierarchy=simultaneous")
        if len(game.agents) < 2:
            raise ConfigError(f"algo=fcp needs two players or more; {game.agents} has one")
        self.cfg, self.game, self.hierarchy, self.device = cfg, game, hierarchy, device
        self.seed = int(seed)
        self.agents = tuple(game.agents)
        self.specs = {a: game.spec(a) for a in self.agents}
        self.population_size = int(cfg.population_size)
        self.heldout_partners = int(cfg.heldout_partners)
        interval = cfg.snapshot_interval
        self.snapshot_interval = None if interval is None else int(interval)
        self.prioritized = bool(cfg.prioritized)
        self.temperature = float(cfg.priority_temperature)
        self.eval_games = int(cfg.eval_games)
        self.plan: list[tuple[str, Any]] = [("partner", k) for k in range(self.population_size)]
        self.plan += [("heldout", h) for h in range(self.heldout_partners)]
        self.plan += [("fcp", a) for a in self.agents]
        if len(self.plan) > SEED_STRIDE:
            raise ConfigError(
                f"algo.population_size + algo.heldout_partners + players is {len(self.plan)}; "
                f"algo=fcp seeds at most {SEED_STRIDE} learners a run"
            )
        from dgsolve.solvers.ppo import response_learner

        self._partner_cfg, partner_iters = response_learner(cfg, "partner_steps", game.num_envs)
        self._fcp_cfg, fcp_iters = response_learner(cfg, "fcp_steps", game.num_envs)
        self.num_iterations = sum(fcp_iters if k == "fcp" else partner_iters for k, _ in self.plan)
        batch = int(cfg.ppo.num_steps) * game.num_envs  # every budget is whole iterations
        self.steps_per_agent = {"self_play": partner_iters * batch, "fcp": fcp_iters * batch}
        # the PPO iterations after which a pool run's networks are kept (0: before training)
        kept = {partner_iters}
        if self.snapshot_interval is not None:
            kept |= set(range(0, partner_iters, self.snapshot_interval))
        self.snapshot_iterations = sorted(kept)
        self.pool_size = self.population_size * len(self.snapshot_iterations)

        self.iteration = 0
        self.stage = 0  # index into ``plan`` of the learner in training (or the next one)
        self.finished_steps = 0  # environment steps of the learners that have finished
        self.learner = None  # the PPOSolver in training
        self.view: _PoolView | None = None  # its game, in the FCP stage
        self.snapshots: list[list[dict]] = [[] for _ in range(self.population_size)]
        self.heldout: list[dict] = []
        self.fcp_states: dict[str, dict] = {}
        others = {a: [b for b in self.agents if b != a] for a in self.agents}
        self.scores = {a: {b: np.full(self.pool_size, np.nan) for b in others[a]} for a in others}
        self.weights = {
            a: {b: np.full(self.pool_size, 1 / self.pool_size) for b in others[a]} for a in others
        }
        self.evaluation: dict | None = None
        self._generator = torch.Generator(device=device).manual_seed(self.seed)
        self._pool: list[dict] | None = None
        self._fcp_policies: dict[str, Any] = {}

    # ------------------------------------------------------------------ public API
    @property
    def done(self) -> bool:
        return self.stage >= len(self.plan)

    @property
    def global_step(self) -> int:
        return self.finished_steps + (self.learner.global_step if self.learner else 0)

    def step(self) -> dict:
        """One PPO iteration of the learner in training; the last one also evaluates."""
        kind, key = self.plan[self.stage]
        if self.learner is None:
            self.learner = self._new_learner(kind, key)
            if kind == "partner" and 0 in self.snapshot_iterations:
                self.snapshots[key].append(_clone(self.learner.policy_state()))
        learner = self.learner
        before = self.global_step
        out = learner.step()
        self.iteration += 1
        name = f"{kind}_{key}" if kind != "fcp" else "fcp"
        losses = {f"{name}/{k}": v for k, v in out["losses"].items()}
        if kind == "fcp":
            # ALGO LOGIC: the agent's return with each member it met, and the draw weights
            episodes = [(before + s, r) for s, r in self._credit_partners(key)]
            losses[f"fcp_pool/{key}"] = self._pool_metrics(key)
        else:
            episodes = [(self.finished_steps + s, r) for s, r in out["episodes"]]
        if kind == "partner" and learner.iteration in self.snapshot_iterations:
            self.snapshots[key].append(_clone(learner.policy_state()))
        if learner.done:
            self._finish(kind, key)
        return {"episodes": episodes, "losses": losses}

    def policies(self) -> dict:
        """The FCP agent of each seat (uniform play for a seat whose agent has not started)."""
        out = {}
        for a in self.agents:
            if a in self.fcp_states:
                if a not in self._fcp_policies:
                    self._fcp_policies[a] = self._fcp_policy(a, self.fcp_states[a])
                out[a] = self._fcp_policies[a]
            elif self.learner is not None and self.plan[self.stage] == ("fcp", a):
                out[a] = self.learner.policies()[a]
            else:
                out[a] = UniformPolicy(self.specs[a])
        return out

    def joint_policy(self) -> JointPolicy:
        return JointPolicy(self.policies(), self.hierarchy, self.specs)

    def summary(self) -> dict[str, Any]:
        """``fcp``: the settings, the pool, and once trained the evaluation with the held-out
        partners (see the module docstring)."""
        out: dict[str, Any] = {
            "population_size": self.population_size,
            "snapshot_interval": self.snapshot_interval,
            "checkpoints_per_partner": len(self.snapshot_iterations),
            "pool_size": self.pool_size,
            "prioritized": self.prioritized,
            "heldout_partners": self.heldout_partners,
            "steps_per_agent": dict(self.steps_per_agent),
            "eval_games": self.eval_games,
        }
        if self.prioritized:
            out["priorities"] = {
                a: {b: w.tolist() for b, w in by.items()} for a, by in self.weights.items()
            }
        if self.evaluation is not None:
            out.update(self.evaluation)
        return {"fcp": out}

    def state_dict(self) -> dict:
        return {
            "agents": list(self.agents),
            "iteration": self.iteration,
            "stage": self.stage,
            "finished_steps": self.finished_steps,
            "learner": None if self.learner is None else self.learner.state_dict(),
            "snapshots": [list(s) for s in self.snapshots],
            "heldout": list(self.heldout),
            "fcp": dict(self.fcp_states),
            "scores": _tensors(self.scores),
            "weights": _tensors(self.weights),
            "generator": self._generator.get_state(),
            "evaluation": self.evaluation,
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["agents"]) != list(self.agents):
            raise ValueError(f"the state's agents {state['agents']} are not {list(self.agents)}")
        self.iteration = int(state["iteration"])
        self.stage = int(state["stage"])
        self.finished_steps = int(state["finished_steps"])
        self.snapshots = [list(s) for s in state["snapshots"]]
        self.heldout = list(state["heldout"])
        self.fcp_states = dict(state["fcp"])
        self.scores = _arrays(state["scores"])
        self.weights = _arrays(state["weights"])
        self._generator.set_state(state["generator"])
        self.evaluation = state["evaluation"]
        self._pool, self._fcp_policies = None, {}
        self.learner, self.view = None, None
        if state["learner"] is not None:
            self.learner = self._new_learner(*self.plan[self.stage])
            self.learner.load_state_dict(state["learner"])

    def policy_state(self) -> dict:
        """What ``policy.pt`` holds: each seat's FCP agent (its PPO learner's networks), or
        ``None`` for a seat whose agent has not started."""
        agents = dict(self.fcp_states)
        if self.learner is not None and self.plan[self.stage][0] == "fcp":
            agents[self.plan[self.stage][1]] = self.learner.policy_state()
        return {
            "solver": "fcp",
            "agents": list(self.agents),
            "fcp": {a: agents.get(a) for a in self.agents},
        }

    def load_policy_state(self, state: dict) -> None:
        """Rebuild the FCP agents a ``policy.pt`` written by :meth:`policy_state` holds."""
        if state.get("solver") != "fcp":
            raise RunDirError(
                "policy.pt was not written by algo=fcp; rebuild the run's policies with the algo "
                "it was trained with"
            )
        if list(state["agents"]) != list(self.agents):
            raise RunDirError(f"policy.pt's agents {state['agents']} are not {list(self.agents)}")
        self.fcp_states = {a: s for a, s in state["fcp"].items() if s is not None}
        self._fcp_policies = {}

    # ------------------------------------------------------------------ learners
    def _new_learner(self, kind: str, key):
        """The PPO learner of ``plan`` entry (kind, key), seeded by its place in the plan."""
        from dgsolve.solvers.ppo import PPOSolver

        seed = SEED_STRIDE * self.seed + self.stage
        if kind != "fcp":
            return PPOSolver(self._partner_cfg, self.game, self.hierarchy, self.device, seed)
        self.view = self._pool_view(key)
        return PPOSolver(self._fcp_cfg, self.view, Hierarchy(((key,),)), self.device, seed)

    def _finish(self, kind: str, key) -> None:
        """Keep what the finished learner leaves (the pool's checkpoints are kept as they come),
        move to the next one, and evaluate after the last."""
        if kind == "heldout":
            self.heldout.append(_clone(self.learner.policy_state()))
        elif kind == "fcp":
            self.fcp_states[key] = _clone(self.learner.policy_state())
        self.finished_steps += self.learner.global_step
        self.learner, self.view = None, None
        self.stage += 1
        if self.done:
            self.evaluation = self._evaluate()

    def _pool_view(self, learner: str) -> _PoolView:
        """``learner``'s game: every other seat a mixture over the pool's members, drawn with
        the current weights."""
        pool = self._pool_policies()
        mixtures = {
            b: MixturePolicy([m[b] for m in pool], w, self._generator)
            for b, w in self.weights[learner].items()
        }
        policies = {**mixtures, learner: UniformPolicy(self.specs[learner])}  # not played
        target = JointPolicy(policies, self.hierarchy, self.specs)
        return _PoolView(self.game, target, learner, mixtures)

    def _pool_policies(self) -> list[dict]:
        """Every pool member's policies (agent -> policy), run by run, checkpoint by
        checkpoint."""
        if self._pool is None:
            self._pool = [self._self_play(s) for states in self.snapshots for s in states]
        return self._pool

    def _self_play(self, state: dict) -> dict:
        """The policies of a self-play run's checkpoint ``state``."""
        from dgsolve.solvers.ppo import PPOSolver

        with _own_rng(self.device):
            solver = PPOSolver(self._partner_cfg, self.game, self.hierarchy, self.device, 0)
            solver.load_policy_state(state)
        return solver.policies()

    def _fcp_policy(self, agent: str, state: dict):
        """The FCP agent of ``agent``'s seat from its learner's ``policy_state``."""
        from dgsolve.solvers.ppo import PPOSolver

        others = {a: UniformPolicy(s) for a, s in self.specs.items()}
        view = FixedOpponents(self.game, JointPolicy(others, self.hierarchy, self.specs), agent)
        with _own_rng(self.device):
            solver = PPOSolver(self._fcp_cfg, view, Hierarchy(((agent,),)), self.device, 0)
            solver.load_policy_state(state)
        return solver.policies()[agent]

    # ------------------------------------------------------------------ priorities
    def _credit_partners(self, learner: str) -> list:
        """Score each pool member by the learner's mean return in this iteration's episodes
        with it, reweight the draws where prioritized, and return the episodes (every seat's
        return: the learner's game view only reports its own)."""
        view = self.view
        for b, (sums, counts) in view.take_credit().items():
            met = counts > 0
            self.scores[learner][b][met] = sums[met] / counts[met]
            if self.prioritized:
                self.weights[learner][b] = rank_weights(self.scores[learner][b], self.temperature)
                view.mixtures[b].weights = torch.as_tensor(self.weights[learner][b])
        return view.take_episodes()

    def _pool_metrics(self, learner: str) -> dict[str, float]:
        """The FCP agent's return with its partners (mean and lowest over the members met) and
        the largest draw weight, for TensorBoard."""
        out: dict[str, float] = {}
        for b, scores in self.scores[learner].items():
            tag = "" if len(self.scores[learner]) == 1 else f"/{b}"
            met = scores[~np.isnan(scores)]
            if len(met):
                out[f"partner_return_mean{tag}"] = float(met.mean())
                out[f"partner_return_min{tag}"] = float(met.min())
            out[f"weight_max{tag}"] = float(self.weights[learner][b].max())
        return out

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self) -> dict[str, Any]:
        """The FCP agents and the self-play agents with the held-out partners, and each run's
        own self-play, on common deals."""
        pool = [self._self_play(states[-1]) for states in self.snapshots]
        heldout = [self._self_play(s) for s in self.heldout]
        fcp = self.policies()

        def with_heldout(agent_of) -> dict[str, list[dict[str, torch.Tensor]]]:
            return {
                a: [self._play({**partner, a: agent_of(a)}) for partner in heldout]
                for a in self.agents
            }

        fcp_games = with_heldout(lambda a: fcp[a])
        sp_games = with_heldout(lambda a: pool[0][a])
        pool_games = [sp_games] + [with_heldout(lambda a, p=p: p[a]) for p in pool[1:]]
        gain = torch.cat(
            [
                _welfare(f) - _welfare(s)
                for a in self.agents
                for f, s in zip(fcp_games[a], sp_games[a], strict=True)
            ]
        )
        pool_welfare = [_mean(_welfare(self._play(p))) for p in pool]
        heldout_welfare = [_mean(_welfare(self._play(p))) for p in heldout]
        return {
            "fcp": _pair_report(fcp_games),
            "self_play": _pair_report(sp_games),
            "welfare_gain": {
                "mean": _mean(gain),
                "se": float(gain.std() / math.sqrt(len(gain))) if len(gain) > 1 else 0.0,
            },
            "self_play_pool_welfare": float(
                np.mean([_pair_report(g)["welfare"] for g in pool_games])
            ),
            "pool_self_play_welfare": float(np.mean(pool_welfare)),
            "pool_self_play_welfare_by_partner": pool_welfare,
            "heldout_self_play_welfare": float(np.mean(heldout_welfare)),
            "heldout_self_play_welfare_by_partner": heldout_welfare,
        }

    def _play(self, policies: dict) -> dict[str, torch.Tensor]:
        """Every seat's return in ``eval_games`` games of ``policies``, on the evaluation's
        deals and with the same sampling seed for every pair."""
        from dgsolve.eval.returns import first_game_returns

        joint = JointPolicy(policies, self.hierarchy, self.specs)
        seed = EVAL_SEED + self.seed
        with _own_rng(self.device):
            torch.manual_seed(seed)
            return first_game_returns(self.game, joint.act, self.eval_games, seed)


class _PoolView(FixedOpponents):
    """:class:`FixedOpponents` whose frozen seats are pool mixtures: it credits each finished
    episode to the members that played it, keeps every seat's returns (the learner's TimeStep
    has only its own), and saves its games in progress where the game saves its state."""

    def __init__(self, game: Game, target: JointPolicy, learner: str, mixtures: dict):
        super().__init__(game, target, learner)
        self.mixtures: dict[str, MixturePolicy] = mixtures
        self.can_save_state = saves_state(game)
        self.steps = 0  # environment steps since the episodes were last taken
        dev, B = game.device, game.num_envs
        self.running = {a: torch.zeros(B, device=dev) for a in game.agents}
        self._episodes: list[tuple[int, dict[str, float]]] = []
        self._credit = {
            b: (torch.zeros(len(m.members), device=dev), torch.zeros(len(m.members), device=dev))
            for b, m in mixtures.items()
        }

    def reset(self, seed: int | None = None) -> TimeStep:
        for r in self.running.values():
            r.zero_()
        return super().reset(seed)

    def step(self, actions: dict[str, torch.Tensor]) -> TimeStep:
        playing = {b: m.assignment for b, m in self.mixtures.items()}  # redrawn at episode ends
        out = super().step(actions)
        self.steps += self.num_envs
        after = self._ts
        for a, r in self.running.items():
            r += after.reward[a]
        done = after.done
        if bool(done.any()):
            own = self.running[self.learner][done]
            for b, (sums, counts) in self._credit.items():
                sums.index_add_(0, playing[b][done], own)
                counts.index_add_(0, playing[b][done], torch.ones_like(own))
            agents = self.game.agents
            rows = torch.stack([self.running[a][done] for a in agents], 1).tolist()
            self._episodes += [(self.steps, dict(zip(agents, r, strict=True))) for r in rows]
            for r in self.running.values():
                r[done] = 0.0
        return out

    def take_credit(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per frozen seat, the sum and count of the learner's returns with each member since
        the last call."""
        out = {}
        for b, (sums, counts) in self._credit.items():
            out[b] = (sums.double().cpu().numpy().copy(), counts.double().cpu().numpy().copy())
            sums.zero_()
            counts.zero_()
        return out

    def take_episodes(self) -> list[tuple[int, dict[str, float]]]:
        """The episodes finished since the last call: (steps since the last call, every
        seat's return)."""
        out, self._episodes, self.steps = self._episodes, [], 0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "game": self.game.state_dict(),
            "timestep": self._ts.state_dict(),
            "decided": {a: x.clone() for a, x in self._decided.items()},
            "assignment": {b: m.assignment.clone() for b, m in self.mixtures.items()},
            "running": {a: r.clone() for a, r in self.running.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.game.load_state_dict(state["game"])
        self._ts = TimeStep.from_state(state["timestep"], self.device)
        self._decided = {a: x.to(self.device) for a, x in state["decided"].items()}
        for b, m in self.mixtures.items():
            m.assignment = state["assignment"][b].to(self.device)
        self.running = {a: r.to(self.device, copy=True) for a, r in state["running"].items()}


def rank_weights(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Draw weights ∝ rank^(-1/temperature), rank 1 the lowest score (Prioritized Level
    Replay's rank prioritisation); unscored (NaN) entries rank lowest, ties share their mean
    rank."""
    x = np.where(np.isnan(scores), -np.inf, scores)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    h = ranks ** (-1.0 / temperature)
    return h / h.sum()


def _pair_report(games: dict[str, list[dict[str, torch.Tensor]]]) -> dict[str, Any]:
    """Welfare over seats and partners, and per seat: welfare, every seat's mean return and
    the welfare with each partner."""
    seats = {}
    for a, per_partner in games.items():
        seats[a] = {
            "welfare": float(np.mean([_mean(_welfare(g)) for g in per_partner])),
            "returns": {b: float(np.mean([_mean(g[b]) for g in per_partner])) for b in games},
            "welfare_by_partner": [_mean(_welfare(g)) for g in per_partner],
        }
    return {"welfare": float(np.mean([s["welfare"] for s in seats.values()])), "seats": seats}


def _welfare(returns: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(returns.values())).double().sum(0)


def _mean(x: torch.Tensor) -> float:
    return float(x.double().mean())


def _own_rng(device: torch.device):
    """torch's generators as they were once the block ends: rebuilding and evaluating
    policies leaves training's random stream alone."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def _clone(tree):
    """A copy of nested dicts and lists whose tensors no longer share storage with training."""
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_clone(v) for v in tree]
    return tree.detach().clone() if isinstance(tree, torch.Tensor) else tree


def _tensors(tree: dict) -> dict:
    return {a: {b: torch.from_numpy(x.copy()) for b, x in by.items()} for a, by in tree.items()}


def _arrays(tree: dict) -> dict:
    return {
        a: {b: x.to("cpu", torch.float64).numpy().copy() for b, x in by.items()}
        for a, by in tree.items()
    }
