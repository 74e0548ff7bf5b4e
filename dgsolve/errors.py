"""Errors a user can act on.

A :class:`DGSolveError` carries a one-line message that says what was wrong and what would be
right. The CLI prints it without a traceback and exits with ``exit_code``.
"""

from __future__ import annotations


class DGSolveError(Exception):
    """A mistake in the user's input: printed as one line, exit status 2."""

    exit_code = 2


class ConfigError(DGSolveError):
    """A config value that composes but cannot be used (bad matrix, unknown agent, ...)."""


class HierarchyError(ConfigError):
    """An ``action_sequence`` that does not match the game's agents."""


class EnvFactoryError(ConfigError):
    """An ``env.factory`` that cannot be imported or does not build a PettingZoo env."""


class RunDirError(DGSolveError):
    """A run directory (``resume=...``, cross-play policy) that is missing or incomplete."""


class OutputError(DGSolveError):
    """A run directory that cannot be written (read-only, not a directory, no such device)."""


class DiskWriteError(DGSolveError):
    """An artifact that could not be written mid-run (a full disk, a vanished directory); the
    last complete checkpoint stays valid. Exit status 1: a fault, not a user mistake."""

    exit_code = 1


class IncompleteRun(DGSolveError):
    """Training finished but a later stage (evaluation, plots, rendering) failed; the run's
    ``summary.json`` lists what is missing and ``resume=`` redoes it. Exit status 1."""

    exit_code = 1


class OutOfMemory(DGSolveError):
    """An allocation that failed mid-run (the machine's or the GPU's memory, past the estimate
    :mod:`dgsolve.memory` checks before the run); the message names the options whose sizes
    drive the run's memory, and the last complete checkpoint stays valid. Exit status 1: a
    fault, not a user mistake."""

    exit_code = 1


class CapabilityError(DGSolveError):
    """A solver needs something the game does not provide."""


class TrainingDiverged(DGSolveError):
    """A non-finite value in training (from the game or from the learner); the run appends which
    checkpoint exists. ``source`` is ``"game"`` or ``"learner"`` where the solver knows."""

    exit_code = 3


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (not a user error). A BaseException, like KeyboardInterrupt, so
    that no ``except Exception`` in evaluation code swallows it."""

    def __init__(self, signum: int = 0):
        super().__init__(signum)
        self.signum = signum
