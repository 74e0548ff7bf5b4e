"""Tabular CFR+ on OpenSpiel games (``algo=cfr``): the exact reference for small games.

Counterfactual regret minimisation (Zinkevich, Johanson, Bowling & Piccione, "Regret
Minimization in Games with Incomplete Information", NIPS 2007) walks the whole game tree each
iteration and, at every information state ``I`` of player ``i``, accumulates the counterfactual
regret of each action ``a``::

    R_t(I, a) = R_{t-1}(I, a) + π_{-i}(I) · (v_i(I, a) − v_i(I))

and plays regret matching, ``σ_{t+1}(I, a) ∝ max(R_t(I, a), 0)``. The *average* policy
converges to a Nash equilibrium in two-player zero-sum games (elsewhere to a coarse correlated
equilibrium at best; its NashConv says how far it is). This is OpenSpiel's CFR+
(``open_spiel.python.algorithms.cfr.CFRPlusSolver``; Tammelin, "Solving Large Imperfect
Information Games Using CFR+", 2014): regret matching+ (``R_t = max(R_{t-1} + r_t, 0)``),
alternating updates (player 0's regrets, then player 1's against the updated policy, ...) and
linear averaging (iteration ``t`` weighs ``t`` in the average policy).

One ``step()`` runs ``algo.iterations_per_step`` CFR+ iterations and logs the average policy's
NashConv (:mod:`dgsolve.eval.openspiel_eq`); ``global_step`` counts CFR+ iterations, the
x-axis of its curves (CFR takes no environment steps). The policies play the average policy,
looked up by the information-state tensor the game observes, so evaluation, the ``eq`` section
and ``policy.pt`` treat it like any other policy.

OpenSpiel's Python solver is used, not its C++ ``pyspiel.CFRPlusSolver`` (10-40x faster):
the C++ solver's pickled state comes back as a plain CFR solver (regrets go negative, uniform
averaging) and would not continue a CFR+ run, while the Python solver's regrets and cumulative
policies are plain arrays that a checkpoint holds as tensors, so a resumed run continues
exactly.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np
import torch
from open_spiel.python.algorithms import cfr

from dgsolve.errors import RunDirError
from dgsolve.eval.openspiel_eq import agent_name, information_states
from dgsolve.games.base import Game
from dgsolve.games.openspiel import require_tree_game
from dgsolve.hierarchy import Hierarchy
from dgsolve.solvers.tabular import TablePlay


class _ResumableCFRPlus(cfr.CFRPlusSolver):
    """OpenSpiel's CFR+ with its state as arrays: ``[N, num_actions]`` cumulative regrets,
    cumulative (linearly weighted) policies and the current policy, rows in the order of
    ``info_states`` (the rows of OpenSpiel's ``TabularPolicy``)."""

    @property
    def info_states(self) -> list[str]:
        lookup = self._current_policy.state_lookup
        return sorted(lookup, key=lookup.__getitem__)

    def state_arrays(self) -> dict[str, Any]:
        current = self._current_policy.action_probability_array
        regret, cumulative = np.zeros(current.shape), np.zeros(current.shape)
        for node in self._info_state_nodes.values():
            row = node.index_in_tabular_policy
            for action, value in node.cumulative_regret.items():
                regret[row, action] = value
            for action, value in node.cumulative_policy.items():
                cumulative[row, action] = value
        return {
            "iteration": self._iteration,
            "info_states": self.info_states,
            "cumulative_regret": torch.from_numpy(regret),
            "cumulative_policy": torch.from_numpy(cumulative),
            "current_policy": torch.from_numpy(current.copy()),
        }

    def load_state_arrays(self, state: dict[str, Any]) -> None:
        if list(state["info_states"]) != self.info_states:
            raise RunDirError(
                "the CFR state is of another game: its information states differ from this "
                "game's; a checkpoint only resumes the run that wrote it"
            )
        regret, cumulative, current = (
            state[k].to("cpu", torch.float64).numpy()
            for k in ("cumulative_regret", "cumulative_policy", "current_policy")
        )
        if not regret.shape == cumulative.shape == current.shape == self._shape():
            raise RunDirError(f"the CFR state has shape {tuple(regret.shape)}, not {self._shape()}")
        # Every update writes all legal actions of a state in legal order, and a state never
        # reached keeps all zeros, which every later update treats as it treats no entries: so
        # the restored dicts sum in the same order and the run continues bit for bit.
        for node in self._info_state_nodes.values():
            row, legal = node.index_in_tabular_policy, node.legal_actions
            node.cumulative_regret = collections.defaultdict(
                float, {a: float(regret[row, a]) for a in legal}
            )
            node.cumulative_policy = collections.defaultdict(
                float, {a: float(cumulative[row, a]) for a in legal}
            )
        self._current_policy.action_probability_array[...] = current
        self._iteration = int(state["iteration"])

    def _shape(self) -> tuple[int, int]:
        return tuple(self._current_policy.action_probability_array.shape)


class CFRSolver(TablePlay):
    """``algo=cfr``: CFR+ iterations in steps of ``cfg.iterations_per_step``, ``cfg.iterations``
    in all; the policies play the average policy. ``seed`` is unused: CFR+ is deterministic."""

    solver_name = "cfr"
    step_unit = "CFR+ iterations"  # what global_step counts (the x-axis of plots/losses.png)

    def __init__(self, cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
        require_tree_game(game, hierarchy, "cfr", "solves OpenSpiel games by walking their tree")
        self.cfg, self.game, self.hierarchy, self.device = cfg, game, hierarchy, device
        self.load_string = str(game.load_string)
        self.specs = {a: game.spec(a) for a in game.agents}
        self.total_iterations = int(cfg.iterations)
        self.iterations_per_step = int(cfg.iterations_per_step)
        self.num_iterations = math.ceil(self.total_iterations / self.iterations_per_step)
        self.iteration = 0
        self.global_step = 0  # CFR+ iterations
        self._info = information_states(self.load_string)
        self._solver = _ResumableCFRPlus(game.os_game)
        self._forget()

    # ------------------------------------------------------------------ public API
    @property
    def done(self) -> bool:
        return self.iteration >= self.num_iterations

    def step(self) -> dict:
        """``iterations_per_step`` CFR+ iterations (fewer in the last step); the average
        policy's NashConv as the step's metric."""
        # ALGO LOGIC: regret matching+ on every information state, one player at a time
        todo = min(self.iterations_per_step, self.total_iterations - self.global_step)
        for _ in range(todo):
            self._solver.evaluate_and_update_policy()
        self.global_step += todo
        self.iteration += 1
        self._forget()
        return {"episodes": [], "losses": {"cfr": {"nash_conv": self.report()["nash_conv"]}}}

    def _compute_table(self) -> dict[str, list[float]]:
        average = self._solver.average_policy()
        probs, lookup = average.action_probability_array, average.state_lookup
        return {key: probs[lookup[key]].tolist() for key in self._info.keys}

    def summary(self) -> dict[str, Any]:
        """``{"cfr": {"iterations", "game_value" (player 0's value of the average policy),
        "values", "nash_conv"}}``, plus ``exploitability`` in two-player zero-sum games."""
        report = self.report()
        out = {
            "iterations": self.global_step,
            "game_value": report["values"][agent_name(0)],
            "values": report["values"],
            "nash_conv": report["nash_conv"],
        }
        if "exploitability" in report:
            out["exploitability"] = report["exploitability"]
        return {"cfr": out}

    def state_dict(self) -> dict:
        return {
            "iteration": self.iteration,
            "global_step": self.global_step,
            "cfr": self._solver.state_arrays(),
        }

    def load_state_dict(self, state: dict) -> None:
        self._solver.load_state_arrays(state["cfr"])
        self.iteration = int(state["iteration"])
        self.global_step = int(state["global_step"])
        self._forget()

    def policy_state(self) -> dict:
        """What ``policy.pt`` holds: the average policy as plain lists, keyed by information
        state string (the table ``policy_table.json`` holds too)."""
        return self._table_state(iterations=self.global_step)

    def load_policy_state(self, state: dict) -> None:
        """Play the average policy a ``policy.pt`` written by :meth:`policy_state` holds."""
        self._play_table_state(state)
