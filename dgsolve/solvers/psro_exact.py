"""PSRO's exact parts on OpenSpiel games: tabular populations, exact responses, exact payoffs.

:class:`ExactPSRO` is ``algo=psro algo.oracle=exact`` (the module docstring of
:mod:`dgsolve.solvers.psro` states the algorithm and both oracles); :class:`TabularMembers`
holds what both oracles use on OpenSpiel games: members as tables over the game's information
states, the exact empirical game of the sequence form, and each player's mixture as the one
behaviour policy that plays like it (with its exact NashConv).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyspiel
import torch

from dgsolve.errors import RunDirError
from dgsolve.eval.openspiel_eq import (
    agent_name,
    game_of,
    information_states,
    nash_conv_of_table,
    openspiel_policy,
    player_policy,
)
from dgsolve.eval.sequence_form import mixture_table, sequence_form
from dgsolve.games.base import Game
from dgsolve.games.openspiel import require_tree_game
from dgsolve.hierarchy import Hierarchy
from dgsolve.policy import JointPolicy, UniformPolicy
from dgsolve.solvers.psro import PSROLoop
from dgsolve.solvers.tabular import TablePlay


class TabularMembers:
    """Tables ``[K, n_p, num_actions]`` per player over the game ``load_string``'s information
    states (player ``p``'s rows in the order of ``info.of_player(p)``)."""

    def __init__(self, load_string: str):
        self.load_string = load_string
        self.info = information_states(load_string)
        self.sf = sequence_form(load_string)
        self.rows = [self.info.of_player(p) for p in range(self.info.num_players)]

    def uniform(self, player: int) -> np.ndarray:
        legal = self.info.legal[self.rows[player]].astype(np.float64)
        return legal / legal.sum(-1, keepdims=True)

    def member_table(self, player: int, policy, specs) -> np.ndarray:
        """``policy``'s table ``[n_p, num_actions]`` at ``player``'s information states (the
        uniform policy, or a policy with a ``net`` as :class:`~dgsolve.policy.NetPolicy`)."""
        if isinstance(policy, UniformPolicy):
            return self.uniform(player)
        agent = agent_name(player)
        rows = self.rows[player]
        one = JointPolicy({agent: policy}, Hierarchy(((agent,),)), {agent: specs[agent]})
        with torch.no_grad():
            obs = torch.from_numpy(self.info.tensor[rows]).to(policy_device(policy))
            legal = torch.from_numpy(self.info.legal[rows]).to(obs.device)
            probs = one.distribution(agent, obs, {}, legal).probs.double().cpu().numpy()
        probs = np.where(self.info.legal[rows], probs, 0.0)
        return probs / probs.sum(-1, keepdims=True)

    def payoffs(self, tables: list[np.ndarray]) -> list[np.ndarray]:
        """The exact empirical game of these populations."""
        return self.sf.payoffs([self.sf.realization(p, t) for p, t in enumerate(tables)])

    def mixture_rows(self, tables: list[np.ndarray], sigma) -> list[np.ndarray]:
        """Each player's mixture as one behaviour policy ``[n_p, num_actions]``."""
        return [mixture_table(self.sf, p, t, sigma[p]) for p, t in enumerate(tables)]

    def table_of(self, rows_by_player: list[np.ndarray]) -> dict[str, list[float]]:
        table = {}
        for rows, probs in zip(self.rows, rows_by_player, strict=True):
            for row, values in zip(rows, probs, strict=True):
                table[self.info.keys[row]] = values.tolist()
        return table

    def mixture(self, tables, sigma) -> dict[str, list[float]]:
        """The mixtures' behaviour policy as a policy table."""
        return self.table_of(self.mixture_rows(tables, sigma))

    def policies(self, tables, sigma, device="cpu") -> dict:
        table = self.mixture(tables, sigma)
        return {
            agent_name(p): player_policy(self.load_string, table, p, device)
            for p in range(self.info.num_players)
        }

    def report(self, tables, sigma) -> dict[str, Any]:
        return nash_conv_of_table(self.load_string, self.mixture(tables, sigma))

    def best_response(self, player: int, joint_rows: list[np.ndarray]) -> np.ndarray:
        """``player``'s exact best response (a deterministic table) to the others' rows."""
        table = self.table_of(joint_rows)
        oracle = pyspiel.TabularBestResponse(
            game_of(self.load_string), player, openspiel_policy(self.load_string, table)
        )
        actions = oracle.get_best_response_actions()
        rows = self.rows[player]
        response = np.zeros((len(rows), self.info.num_actions))
        for k, row in enumerate(rows):
            # a state the opponents never let the player reach has no best action: the first
            # legal one stands there (it changes no payoff)
            action = actions.get(self.info.keys[row])
            if action is None:
                action = int(np.flatnonzero(self.info.legal[row])[0])
            response[k, action] = 1.0
        return response


def policy_device(policy) -> torch.device:
    """Where a network policy's parameters live."""
    return next(policy.net.parameters()).device


class ExactPSRO(PSROLoop, TablePlay):
    """``algo=psro algo.oracle=exact``: ``cfg.iterations`` PSRO iterations at most, populations
    of at most ``cfg.max_policies`` tables per player."""

    solver_name = "psro"
    step_unit = "PSRO iterations"  # what global_step counts (the x-axis of plots/losses.png)

    def __init__(self, cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
        require_tree_game(game, hierarchy, "psro", "responds exactly on OpenSpiel games' trees")
        self.cfg, self.game, self.hierarchy, self.device = cfg, game, hierarchy, device
        self.load_string = str(game.load_string)
        self.specs = {a: game.spec(a) for a in game.agents}
        self._init_loop(cfg, game.agents)
        self.sims_per_entry = None if cfg.sims_per_entry is None else int(cfg.sims_per_entry)
        self.tabular = TabularMembers(self.load_string)
        self._info, self._sf = self.tabular.info, self.tabular.sf
        self._rng = np.random.default_rng(seed)
        n = self._info.num_players
        self.populations = [self.tabular.uniform(p)[None] for p in range(n)]
        self._forget()
        self._solve_empirical_game()  # an unknown or unfit meta-solver fails here, at once

    # ------------------------------------------------------------------ the loop's parts
    def sizes(self) -> list[int]:
        return [len(m) for m in self.populations]

    def _respond(self, player: int):
        if self._joint is None:
            self._joint = self.tabular.mixture_rows(self.populations, self.sigma)
        response = self.tabular.best_response(player, self._joint)
        if (self.populations[player] == response).all(axis=(1, 2)).any():
            return None
        return response

    def _add(self, player: int, member: np.ndarray) -> None:
        self.populations[player] = np.concatenate([self.populations[player], member[None]])

    @property
    def global_step(self) -> int:
        """PSRO iterations (no game is stepped)."""
        return self.iteration

    def _empirical_game(self) -> list[np.ndarray]:
        if self.sims_per_entry is None:
            return self.tabular.payoffs(self.populations)
        return self._estimated_game()

    def _step_metrics(self) -> dict:
        return {"episodes": [], "losses": {"psro": {"nash_conv": self.report()["nash_conv"]}}}

    # ------------------------------------------------------------------ public API
    def summary(self) -> dict[str, Any]:
        out = self.psro_summary()
        report = self.report()
        out["psro"].update(oracle="exact", nash_conv=report["nash_conv"])
        if "exploitability" in report:
            out["psro"]["exploitability"] = report["exploitability"]
        return out

    def state_dict(self) -> dict:
        return {
            **self._loop_state(),
            "info_states": list(self._info.keys),
            "populations": [torch.from_numpy(m.copy()) for m in self.populations],
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["info_states"]) != list(self._info.keys):
            raise RunDirError(
                "the PSRO state is of another game: its information states differ from this "
                "game's; a checkpoint only resumes the run that wrote it"
            )
        self.populations = [m.to("cpu", torch.float64).numpy() for m in state["populations"]]
        self._rng.bit_generator.state = state["rng"]
        self._load_loop_state(state)
        self._solve_empirical_game()

    def policy_state(self) -> dict:
        """What ``policy.pt`` holds: the mixture's behaviour policy, keyed by information state
        string (the table ``policy_table.json`` holds too), and the meta-strategy."""
        return self._table_state(
            oracle="exact",
            iterations=self.iteration,
            meta_strategy=[s.tolist() for s in self.sigma],
        )

    def load_policy_state(self, state: dict) -> None:
        """Play the mixture a ``policy.pt`` written by :meth:`policy_state` holds."""
        self._play_table_state(state)

    # ------------------------------------------------------------------ internals
    def _estimated_game(self) -> list[np.ndarray]:
        """Mean returns of ``sims_per_entry`` simulated games for each profile not played yet:
        terminal histories drawn from their exact probabilities under the profile."""
        plans = [self._sf.realization(p, m) for p, m in enumerate(self.populations)]

        def estimate(profile: tuple[int, ...]) -> list[float]:
            prob = self._sf.leaf_probabilities(plans, profile)
            draws = self._rng.choice(len(prob), size=self.sims_per_entry, p=prob / prob.sum())
            return self._sf.returns[draws].mean(0).tolist()

        return self._fill_new_profiles(estimate)

    def _compute_table(self) -> dict[str, list[float]]:
        return self.tabular.mixture(self.populations, self.sigma)

    def _forget(self) -> None:
        super()._forget()
        self._joint: list[np.ndarray] | None = None
