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


class CapabilityError(DGSolveError):
    """A solver needs something the game does not provide."""


class TrainingDiverged(DGSolveError):
    """A loss became non-finite; the last good checkpoint is kept."""

    exit_code = 3


class Interrupted(Exception):
    """Raised inside the training loop when SIGINT or SIGTERM arrives (not a user error)."""
