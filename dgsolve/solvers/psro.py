"""Policy-Space Response Oracles (``algo=psro``): populations, their empirical game, best responses.

PSRO (Lanctot, Zambaldi, Gruslys, Lazaridou, Tuyls, Pérolat, Silver & Graepel, "A Unified
Game-Theoretic Approach to Multiagent Reinforcement Learning", NeurIPS 2017) keeps a population of
policies per player and repeats:

1. the *empirical game*: every player's expected payoff for every profile of population members;
2. the *meta-strategy* ``σ``: a solution of that game by the meta-solver ``algo.meta_solver``
   (:mod:`dgsolve.eval.meta_game`: ``nash``, ``replicator``, ``fictitious_play``, ``uniform``,
   ``alpharank``);
3. a *best response* per player to the others playing their mixtures ``σ_{-i}``, added to its
   population.

With the ``nash`` meta-solver and exact responses this is the double oracle method (McMahan,
Gordon & Blum, "Planning in the Presence of Cost Functions Controlled by an Adversary", ICML
2003). The first populations hold the uniform policy, as OpenSpiel's ``psro_v2`` starts, and all
players respond to the same ``σ`` (OpenSpiel's simultaneous variant). What plays at the end, and
what ``eq`` measures, is each player's mixture ``σ_i`` over its population; ``global_step``
counts PSRO iterations with the exact oracle (no game is stepped) and environment steps of the
best responses with the PPO oracle.

Two oracles (``algo.oracle``):

* ``exact`` (:class:`ExactPSRO`, OpenSpiel games): tabular populations; OpenSpiel's
  ``TabularBestResponse`` against the behaviour policy equivalent to each opponent's mixture
  (Kuhn's theorem, :func:`~dgsolve.eval.sequence_form.mixture_table`), so the oracle makes no
  error and what is left is the meta-solver's. A player whose response is already a member adds
  nothing; when no player adds anything the run has converged and stops.
* ``ppo`` (:class:`PPOPSRO`, any two-or-more-player game without tiers: OpenSpiel, bargaining,
  PettingZoo): each response is a fresh PPO learner (:mod:`dgsolve.solvers.ppo`) trained for
  ``algo.br_steps`` environment steps on the game with every other player frozen
  (:class:`~dgsolve.games.frozen.FixedOpponents`) and playing its mixture, one member drawn per
  game copy and episode (:class:`~dgsolve.policy.MixturePolicy`); the learner's settings are
  ``algo.ppo`` (by default the env's tuned PPO settings). Its error is the learner's: a response
  short of a best response.

The empirical game is exact on OpenSpiel games (their sequence form,
:mod:`dgsolve.eval.sequence_form`: all profiles as matrix products, each PPO member read as its
table over the game's information states) unless ``algo.sims_per_entry`` asks for simulation,
and simulated elsewhere: ``sims_per_entry`` games per new profile, on the same seeds for every
profile (common random numbers). On OpenSpiel games the mixture is played as its exact behaviour
policy, which ``policy_table.json`` holds. ``summary.json`` gains ``psro`` (population sizes,
meta-strategy, the empirical game's values and, on OpenSpiel games, the mixture's NashConv) and,
for two players, ``meta`` (the final empirical game analysed as cross-play analyses its tables).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dgsolve.errors import ConfigError, RunDirError
from dgsolve.eval import meta_game
from dgsolve.games.base import Game
from dgsolve.hierarchy import Hierarchy
from dgsolve.policy import JointPolicy, MixturePolicy, UniformPolicy

#: populations up to this size get the leave-one-out table in ``meta`` (one equilibrium each)
MAX_LEAVE_ONE_OUT = 30


class PSROLoop:
    """What both oracles share: the iteration, the empirical game and ``σ``, the summary.

    A subclass sets ``agents``, ``meta_solver``, ``max_policies``, ``num_iterations``, keeps
    one population per player (``sizes()``), and implements ``_respond(player)`` (a new member,
    or ``None`` where the response is one already), ``_add(player, member)``,
    ``_empirical_game() -> payoffs`` (every profile, one array per player) and
    ``_step_metrics()``.
    """

    def _init_loop(self, cfg, agents: tuple[str, ...]) -> None:
        self.agents = tuple(agents)
        self.meta_solver = str(cfg.meta_solver)
        self.max_policies = int(cfg.max_policies)
        self.num_iterations = int(cfg.iterations)
        self.iteration = 0
        self.converged = False
        self.payoffs: list[np.ndarray] = []
        self.sigma: list[np.ndarray] = []
        self.meta_values: list[float] = []
        profiles = self.max_policies ** len(self.agents)
        if self.meta_solver == "alpharank" and profiles > meta_game.MAX_SPARSE_CHAIN:
            most = int(meta_game.MAX_SPARSE_CHAIN ** (1 / len(self.agents)))
            raise ConfigError(
                f"algo.meta_solver=alpharank solves up to {meta_game.MAX_SPARSE_CHAIN:,} joint "
                f"profiles, and algo.max_policies={self.max_policies} allows {profiles:,}; set "
                f"algo.max_policies={most} or lower"
            )

    @property
    def done(self) -> bool:
        return self.converged or self.full or self.iteration >= self.num_iterations

    @property
    def full(self) -> bool:
        """Whether every population holds ``max_policies`` policies."""
        return all(k >= self.max_policies for k in self.sizes())

    def step(self) -> dict:
        """One PSRO iteration: responses to ``σ``, then the empirical game and ``σ`` anew."""
        # ALGO LOGIC: each player's best response to the others' meta-strategy mixtures
        responses = {}
        for player, size in enumerate(self.sizes()):
            if size < self.max_policies:
                responses[player] = self._respond(player)
        for player, member in responses.items():
            if member is not None:
                self._add(player, member)
        added = sum(m is not None for m in responses.values())
        self.converged = bool(responses) and added == 0
        self.iteration += 1
        self._solve_empirical_game()
        metrics = self._step_metrics()
        metrics["losses"]["psro"].update(
            meta_welfare=float(sum(self.meta_values)), population=float(sum(self.sizes()))
        )
        return metrics

    def _solve_empirical_game(self) -> None:
        self.payoffs = self._empirical_game()
        self.sigma = meta_game.solve(self.meta_solver, self.payoffs, **self._meta_options())
        self.meta_values = meta_game.expected_payoffs(self.payoffs, self.sigma)
        self._forget()

    def _meta_options(self) -> dict[str, Any]:
        """Options of the meta-solver (none: each solver's defaults)."""
        return {}

    def psro_summary(self) -> dict[str, Any]:
        """``psro`` (iterations, converged, full, meta_solver, population, meta_strategy,
        meta_values, meta_welfare) and, for two players, ``meta``: the final empirical game
        analysed (:func:`~dgsolve.eval.meta_game.analyse`; members named by
        :meth:`member_names`; leave-one-out up to :data:`MAX_LEAVE_ONE_OUT` members)."""
        out: dict[str, Any] = {
            "psro": {
                "iterations": self.iteration,
                "converged": self.converged,
                "full": self.full,
                "meta_solver": self.meta_solver,
                "population": dict(zip(self.agents, self.sizes(), strict=True)),
                "meta_strategy": {
                    a: s.tolist() for a, s in zip(self.agents, self.sigma, strict=True)
                },
                "meta_values": dict(zip(self.agents, self.meta_values, strict=True)),
                "meta_welfare": float(sum(self.meta_values)),
            }
        }
        if len(self.agents) == 2:
            names = [self.member_names(p) for p in range(2)]
            out["meta"] = meta_game.analyse(
                *self.payoffs,
                names[0],
                column_names=names[1],
                leave_one_out=max(self.sizes()) <= MAX_LEAVE_ONE_OUT,
            )
        return out

    def _fill_new_profiles(self, estimate) -> list[np.ndarray]:
        """The empirical game grown to the populations' sizes: the profiles already in
        ``payoffs`` kept, each new one from ``estimate(profile) -> [payoff per player]``."""
        shape = tuple(self.sizes())
        grown = [np.zeros(shape) for _ in self.agents]
        known = tuple(self.payoffs[0].shape) if self.payoffs else (0,) * len(shape)
        old = tuple(slice(0, k) for k in known)
        for table, previous in zip(grown, self.payoffs, strict=False):
            table[old] = previous
        new = np.ones(shape, bool)
        new[old] = False
        for profile in zip(*np.nonzero(new), strict=True):
            for table, value in zip(grown, estimate(tuple(int(k) for k in profile)), strict=True):
                table[profile] = value
        return grown

    def member_names(self, player: int) -> list[str]:
        """``<agent>:<k>``, the k-th member of ``agent``'s population (0: the uniform policy)."""
        return [f"{self.agents[player]}:{k}" for k in range(self.sizes()[player])]

    def _loop_state(self) -> dict:
        return {
            "iteration": self.iteration,
            "converged": self.converged,
            "payoffs": [torch.from_numpy(u.copy()) for u in self.payoffs],
        }

    def _load_loop_state(self, state: dict) -> None:
        self.iteration = int(state["iteration"])
        self.converged = bool(state["converged"])
        self.payoffs = [u.to("cpu", torch.float64).numpy() for u in state["payoffs"]]


# --------------------------------------------------------------------------- the PPO oracle
class PPOPSRO(PSROLoop):
    """``algo=psro algo.oracle=ppo``: PPO best responses of ``cfg.br_steps`` environment steps
    against the other players' mixtures (see the module docstring)."""

    def __init__(self, cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
        if not hierarchy.is_simultaneous:
            raise ConfigError("algo=psro plays the game in one tier; use hierarchy=simultaneous")
        if len(game.agents) < 2:
            raise ConfigError(f"algo=psro needs two players or more; {game.agents} has one")
        self.cfg, self.game, self.hierarchy, self.device = cfg, game, hierarchy, device
        self.seed = int(seed)
        self.specs = {a: game.spec(a) for a in game.agents}
        self._init_loop(cfg, game.agents)
        self.global_step = 0  # environment steps of the best responses
        self.sims_per_entry = None if cfg.sims_per_entry is None else int(cfg.sims_per_entry)
        self.exact = _exact_tables(game) if self.sims_per_entry is None else None
        if self.sims_per_entry is None and self.exact is None:
            raise ConfigError(
                "algo.sims_per_entry=null asks for the exact empirical game, which only "
                "OpenSpiel games small enough have; set algo.sims_per_entry (games per entry)"
            )
        from dgsolve.solvers.ppo import response_learner

        self._br_cfg, _ = response_learner(cfg, "br_steps", game.num_envs)
        self._generator = torch.Generator(device=device).manual_seed(self.seed)
        self.members: list[list] = [[self._uniform(a)] for a in self.agents]
        self.member_states: list[list[dict]] = [[{"kind": "uniform"}] for _ in self.agents]
        self._tables: list[list[np.ndarray]] = [[] for _ in self.agents]
        self.br_returns: dict[str, float] = {}
        self._forget()
        self._solve_empirical_game()

    # ------------------------------------------------------------------ the loop's parts
    def sizes(self) -> list[int]:
        return [len(m) for m in self.members]

    def _respond(self, player: int):
        from dgsolve.games.frozen import FixedOpponents
        from dgsolve.solvers.ppo import PPOSolver

        agent = self.agents[player]
        view = FixedOpponents(self.game, self._mixtures(), agent)
        seed = self.seed + 1 + 1000 * self.iteration + player
        solver = PPOSolver(self._br_cfg, view, Hierarchy(((agent,),)), self.device, seed)
        self._prepare_response(solver, player)
        returns = []
        while not solver.done:
            metrics = solver.step()
            returns += [r[agent] for _, r in metrics["episodes"]]
        self.global_step += solver.global_step
        tail = returns[-max(1, len(returns) // 10) :]
        self.br_returns[agent] = float(np.mean(tail)) if tail else float("nan")
        return solver.policies()[agent], {"kind": "ppo", "state": solver.policy_state()}

    def _prepare_response(self, solver, player: int) -> None:
        """A hook before a response's learner trains (none here; Ex²PSRO's starts it from its
        exploration policy and anchors it there)."""

    def _add(self, player: int, member) -> None:
        policy, state = member
        self.members[player].append(policy)
        self.member_states[player].append(state)

    def _empirical_game(self) -> list[np.ndarray]:
        if self.exact is not None:
            return self.exact.payoffs(self._member_tables())
        return self._simulated_game()

    def _step_metrics(self) -> dict:
        out: dict[str, float] = {"br_steps": float(self.global_step)}
        out.update({f"br_return/{a}": r for a, r in self.br_returns.items()})
        if self.exact is not None:
            out["nash_conv"] = self.report()["nash_conv"]
        return {"episodes": [], "losses": {"psro": out}}

    # ------------------------------------------------------------------ public API
    def policies(self) -> dict:
        """Each player's mixture: its exact behaviour policy on OpenSpiel games, else a
        :class:`~dgsolve.policy.MixturePolicy` drawing a member per game copy and episode."""
        if self._policies is None:
            if self.exact is not None:
                self._policies = self.exact.policies(self._member_tables(), self.sigma)
            else:
                self._policies = self._mixtures().policies
        return dict(self._policies)

    def joint_policy(self) -> JointPolicy:
        return JointPolicy(self.policies(), self.hierarchy, self.specs)

    def report(self) -> dict[str, Any]:
        """The mixture's exact NashConv report (OpenSpiel games only)."""
        if self._report is None:
            self._report = self.exact.report(self._member_tables(), self.sigma)
        return self._report

    def summary(self) -> dict[str, Any]:
        out = self.psro_summary()
        out["psro"]["oracle"] = "ppo"
        out["psro"]["br_steps"] = int(self.cfg.br_steps)
        out["psro"]["br_return"] = dict(self.br_returns)
        if self.exact is not None:
            report = self.report()
            out["psro"]["nash_conv"] = report["nash_conv"]
            if "exploitability" in report:
                out["psro"]["exploitability"] = report["exploitability"]
        return out

    def state_dict(self) -> dict:
        return {
            **self._loop_state(),
            **self.policy_state(),
            "global_step": self.global_step,
            "generator": self._generator.get_state(),
            "br_returns": dict(self.br_returns),
        }

    def load_state_dict(self, state: dict) -> None:
        self.load_policy_state(state)
        self._load_loop_state(state)
        self.global_step = int(state["global_step"])
        self._generator.set_state(state["generator"])
        self.br_returns = {str(a): float(r) for a, r in state["br_returns"].items()}
        self._solve_empirical_game()

    def policy_state(self) -> dict:
        """What ``policy.pt`` holds: every member (the uniform policy, or a PPO learner's
        networks) and the meta-strategy."""
        return {
            "solver": "psro",
            "oracle": "ppo",
            "agents": list(self.agents),
            "members": [list(states) for states in self.member_states],
            "meta_strategy": [torch.from_numpy(s.copy()) for s in self.sigma],
        }

    def load_policy_state(self, state: dict) -> None:
        """Rebuild the members and the mixture a ``policy.pt`` written by
        :meth:`policy_state` holds."""
        if state.get("solver") != "psro" or state.get("oracle") != "ppo":
            raise RunDirError(
                "policy.pt was not written by algo=psro algo.oracle=ppo; rebuild the run's "
                "policies with the algo it was trained with"
            )
        if list(state["agents"]) != list(self.agents):
            raise RunDirError(f"policy.pt's agents {state['agents']} are not {list(self.agents)}")
        self.members = [
            [self._member(a, s) for s in states]
            for a, states in zip(self.agents, state["members"], strict=True)
        ]
        self.member_states = [list(states) for states in state["members"]]
        self._tables = [[] for _ in self.agents]
        self.sigma = [s.to("cpu", torch.float64).numpy() for s in state["meta_strategy"]]
        self._forget()

    # ------------------------------------------------------------------ internals
    def _uniform(self, agent: str) -> UniformPolicy:
        return UniformPolicy(self.specs[agent], self._generator)

    def _member(self, agent: str, state: dict):
        """A member from what :meth:`policy_state` keeps of it."""
        if state["kind"] == "uniform":
            return self._uniform(agent)
        from dgsolve.games.frozen import FixedOpponents
        from dgsolve.solvers.ppo import PPOSolver

        others = JointPolicy({a: self._uniform(a) for a in self.agents}, self.hierarchy, self.specs)
        view = FixedOpponents(self.game, others, agent)
        solver = PPOSolver(self._br_cfg, view, Hierarchy(((agent,),)), self.device, self.seed)
        solver.load_policy_state(state["state"])
        return solver.policies()[agent]

    def _mixtures(self) -> JointPolicy:
        """Every player's meta-strategy mixture, a member drawn per game copy and episode."""
        policies = {
            a: MixturePolicy(members, sigma, self._generator)
            for a, members, sigma in zip(self.agents, self.members, self.sigma, strict=True)
        }
        return JointPolicy(policies, self.hierarchy, self.specs)

    def _member_tables(self) -> list[np.ndarray]:
        """Each player's members as tables ``[K, n_p, num_actions]`` (OpenSpiel games)."""
        for player, members in enumerate(self.members):
            for member in members[len(self._tables[player]) :]:
                self._tables[player].append(self.exact.member_table(player, member, self.specs))
        return [np.stack(t) for t in self._tables]

    def _simulated_game(self) -> list[np.ndarray]:
        """Mean returns of ``sims_per_entry`` games for each profile not played yet."""
        from dgsolve.eval.returns import first_game_returns

        def estimate(profile: tuple[int, ...]) -> list[float]:
            chosen = {a: self.members[p][profile[p]] for p, a in enumerate(self.agents)}

            def act(ts):
                return {a: pol.act(ts.obs[a], ts.legal[a]) for a, pol in chosen.items()}

            returns = first_game_returns(self.game, act, self.sims_per_entry, self.seed + 7)
            return [float(returns[a].double().mean()) for a in self.agents]

        return self._fill_new_profiles(estimate)

    def _forget(self) -> None:
        self._report: dict | None = None
        self._policies: dict | None = None


def _exact_tables(game):
    """The exact empirical game's machinery on an OpenSpiel game whose tree is small enough,
    else ``None``."""
    from dgsolve.errors import CapabilityError
    from dgsolve.games.openspiel import OpenSpielGame  # imports pyspiel only to build a game

    if not isinstance(game, OpenSpielGame):
        return None
    from dgsolve.solvers.psro_exact import TabularMembers

    try:
        return TabularMembers(str(game.load_string))
    except CapabilityError:
        return None
