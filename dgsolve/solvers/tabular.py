"""What solvers whose result is a table over an OpenSpiel game's information states share.

CFR+ (:mod:`dgsolve.solvers.cfr`) and PSRO with the exact oracle (:mod:`dgsolve.solvers.psro`)
both end with a table ``{information state string: [probability of each action id]}``: the
average policy, or the behaviour policy of the final meta-strategy mixture. :class:`TablePlay`
turns that table into the run's playable policies, its exact NashConv report and the
``policy.pt`` it writes and reads back. A solver using it sets ``load_string``, ``_info``,
``device``, ``hierarchy`` and ``specs``, implements ``_compute_table()``, and calls
``_forget()`` whenever the table changes.
"""

from __future__ import annotations

from typing import Any

from dgsolve.errors import RunDirError
from dgsolve.eval.openspiel_eq import agent_name, nash_conv_of_table, player_policy
from dgsolve.policy import InfoStateTablePolicy, JointPolicy


class TablePlay:
    #: ``algo.solver`` of the subclass, written into and checked in ``policy.pt``
    solver_name: str = ""

    def _compute_table(self) -> dict[str, list[float]]:
        raise NotImplementedError

    def table(self) -> dict[str, list[float]]:
        """The policy that plays, as ``{information state: [probability of each action id]}``."""
        if self._table is None:
            self._table = self._compute_table()
        return self._table

    def report(self) -> dict[str, Any]:
        """:func:`~dgsolve.eval.openspiel_eq.nash_conv_of_table` of :meth:`table`."""
        if self._report is None:
            self._report = nash_conv_of_table(self.load_string, self.table())
        return self._report

    def policies(self) -> dict[str, InfoStateTablePolicy]:
        if self._policies is None:
            table, ls = self.table(), self.load_string
            self._policies = {
                agent_name(p): player_policy(ls, table, p, self.device)
                for p in range(self._info.num_players)
            }
        return dict(self._policies)

    def joint_policy(self) -> JointPolicy:
        return JointPolicy(self.policies(), self.hierarchy, self.specs)

    def _table_state(self, **extra) -> dict:
        """``policy.pt``'s content: the solver, the game, ``extra`` and the table as lists."""
        return {
            "solver": self.solver_name,
            "game": self.load_string,
            **extra,
            "policy": self.table(),
        }

    def _play_table_state(self, state: dict) -> None:
        """Play the table a ``policy.pt`` written by :meth:`_table_state` holds."""
        if state.get("solver") != self.solver_name or state.get("game") != self.load_string:
            raise RunDirError(
                f"policy.pt was not written by algo={self.solver_name} on {self.load_string}; "
                "rebuild the run's policies with the algo and game it was trained with"
            )
        table = {str(k): [float(p) for p in row] for k, row in state["policy"].items()}
        missing = [k for k in self._info.keys if k not in table]
        if missing:
            raise RunDirError(
                f"policy.pt has no row for {len(missing)} information states of "
                f"{self.load_string} (e.g. {missing[0]!r})"
            )
        self._forget()
        self._table = table

    def _forget(self) -> None:
        """Drop what was derived from the table (it changed)."""
        self._table: dict[str, list[float]] | None = None
        self._report: dict[str, Any] | None = None
        self._policies: dict[str, InfoStateTablePolicy] | None = None
