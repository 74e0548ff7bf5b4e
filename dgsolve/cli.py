"""The ``dgsolve`` command: compose the config with Hydra, then ``run(cfg)``.

User mistakes print one line and exit with status 2, without a traceback: a
:class:`~dgsolve.errors.DGSolveError` from the run (which sets its own status: 3 for a diverged
run, 1 for a fault such as a full disk or a failed evaluation), and a config Hydra cannot compose
(an unknown option such as ``algo=nope`` lists the known ones; an unknown key names the closest
one). A signal before the run has started (while Python imports or Hydra composes) ends the
command with one line and status 130 (SIGINT) or 143 (SIGTERM); from the run's first step on,
:class:`dgsolve.run.SignalGuard` handles it.

In a sweep (``-m``) a job that fails, by a user mistake or a fault, does not end the sweep: it
prints its one line naming the job and the next job runs; the sweep then ends with one line
naming every failed job and a non-zero status (:mod:`dgsolve.launchers`). A single run's fault
keeps Python's traceback (status 1).

``dgsolve --help`` renders ``hydra.help`` (``conf/config.yaml``) here rather than in Hydra, which
lists the config groups by deep-copying its whole config repository some ninety times (seconds);
here the groups are the folders of ``conf/``. With ``--config-dir`` or ``--config-path`` Hydra
renders it, to list the added groups too.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import signal
import string
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    ConfigCompositionException,
    MissingConfigException,
    OverrideParseException,
    SearchPathException,
)
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from dgsolve.config import config_dir, register_configs
from dgsolve.errors import ConfigError, DGSolveError, Interrupted

#: what Hydra raises for a config it cannot compose: the user's to fix, so one line and status 2
COMPOSITION_ERRORS = (ConfigCompositionException, OverrideParseException, SearchPathException)


register_configs()


def _interrupted_early(signum, _frame) -> None:
    raise Interrupted(signum)


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """One run (one job of a sweep); returns ``task.objective`` for sweepers such as Optuna."""
    from dgsolve.launchers import SweepJob, apply_job_threads
    from dgsolve.results.objective import objective_path, objective_value
    from dgsolve.run import run

    hydra_cfg = HydraConfig.get()
    job = SweepJob.current(hydra_cfg)  # None: a single run
    try:  # run() checks the job at its door (door_check) before it locks or records anything
        apply_job_threads(cfg, hydra_cfg)  # a parallel sweep's job: its share of the cores
        summary = run(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))
        value = objective_value(cfg, summary)
    except DGSolveError as err:
        if job is not None:
            return job.failed(err)
        print(f"dgsolve: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except Interrupted as stop:  # before the run installed its own guard: nothing was written
        print("dgsolve: interrupted before the run started; nothing was trained", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except Exception as err:
        if job is None:
            raise  # a single run's fault: Python's traceback, status 1
        return job.failed(err)
    if job is not None and not job.basic and value is not None and math.isnan(value):
        # Optuna (before 3.0) stops the study on a NaN; a failed trial lets it go on
        path = objective_path(cfg)
        missing = ConfigError(f"task.objective={path} is not a number in its summary.json")
        return job.failed(missing)
    return value


def entry() -> None:
    """The console script: signals are handled from the first second (see the module doc)."""
    signal.signal(signal.SIGTERM, _interrupted_early)
    signal.signal(signal.SIGINT, _interrupted_early)
    try:
        _compose_and_run()
    except Interrupted as stop:  # while Hydra composed the config
        print("dgsolve: interrupted before the run started; nothing was trained", file=sys.stderr)
        sys.exit(128 + stop.signum)


def _compose_and_run() -> None:
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    args = parser.parse_args()
    # Hydra prints what it cannot compose over many lines and exits 1; told to re-raise (its
    # HYDRA_FULL_ERROR), it lets the error reach this function, which prints one line. A fault
    # then ends with Python's full traceback (status 1); whoever set HYDRA_FULL_ERROR=1 asked for
    # tracebacks, composition errors included.
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        if args.help and args.config_path is None and args.config_dir is None:
            print(app_help(parser, args.overrides, args.config_name, resolve=args.resolve))
        else:
            with _mode_from_the_command_line(args):
                main()
    except COMPOSITION_ERRORS as err:
        if full_error == "1":
            raise
        line = _refused_on_resume(err, args.overrides) or composition_error(err)
        print(f"dgsolve: error: {line}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # a sweeper that stopped (Optuna: no trial completed)
        from dgsolve.launchers import end_sweep

        outcome = None if full_error == "1" else end_sweep()
        if outcome is None:
            raise
        text = str(err).strip().splitlines()
        stopped = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
        print(f"dgsolve: error: the sweeper stopped ({stopped}); {outcome[0]}", file=sys.stderr)
        sys.exit(outcome[1])
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error


@contextlib.contextmanager
def _mode_from_the_command_line(args):
    """Spare Hydra one of its two compositions of a plain run's config.

    Before running, Hydra composes the whole config once only to read ``hydra.mode`` (a config
    may turn a plain command into a multirun), then composes it again for the run. No dgsolve
    config sets ``hydra.mode``; unless the command line names it, asks for ``-m`` or adds an
    experiment file (which could set it), the mode is a plain run and the first composition is
    skipped: Hydra's ``get_mode`` answers "not set", as it would have."""
    from hydra._internal.hydra import Hydra

    decides = [o for o in args.overrides if "hydra.mode" in o or "experiment" in o]
    if args.multirun or decides:
        yield
        return
    original = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: None
    try:
        yield
    finally:
        Hydra.get_mode = original


# --------------------------------------------------------------------------- one-line errors
def composition_error(err: Exception) -> str:
    """One line for a config Hydra could not compose: what was wrong and what would be right."""
    message = str(err)
    origin = ""
    if message.startswith("In '") and "': " in message:  # the config file that named the option
        where, _, message = message.partition("': ")
        if where != "In 'config":
            origin = f" (named in {where[4:]}.yaml)"
    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        return (
            f"unknown {group} option '{option}'{origin}{_did_you_mean(option, err.options)}; "
            f"the options are: {', '.join(err.options)}"
        )
    cause = err.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        return _unknown_key(message, cause)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    merging = "Error merging override "
    if lines and lines[0].startswith(merging):  # a value the schema refuses
        lines[0] = lines[0][len(merging) :] + ":"
    if isinstance(cause, OmegaConfBaseException):
        lines.append(str(cause).splitlines()[0])  # its other lines repeat the key and type
    text = lines[0] if lines else type(err).__name__
    for line in lines[1:]:  # "a.\nb" -> "a; b", but "a:\nb" -> "a: b"
        text = f"{text} {line}" if text.endswith(":") else f"{text.rstrip('.')}; {line}"
    return text + origin


def _refused_on_resume(err: Exception, overrides: list[str]) -> str | None:
    """With ``resume=`` on the command line, the line for an unknown key or option that is not
    one a resume may change: the command line composed the default config, not the resumed
    run's, so "unknown" would mislead. None where ``resume=`` is absent or the key is safe."""
    given = {o.lstrip("+~").split("=", 1)[0]: o for o in overrides}
    if given.get("resume", "resume=null").split("=", 1)[1] in ("", "null"):
        return None
    cause, key = err.__cause__, None
    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        key = err.missing_cfg_file.rpartition("/")[0]
    elif isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        key = str(cause.full_key)
    from dgsolve.run import SAFE_ON_RESUME

    if key is None or key in SAFE_ON_RESUME or key.startswith("hydra"):
        return None
    return (
        f"'{given.get(key, key)}' cannot be given with resume={_did_you_mean(key, SAFE_ON_RESUME)}"
        f": a resumed run keeps its own config, and only these options may be given: "
        f"{', '.join(SAFE_ON_RESUME)}"
    )


def _unknown_key(message: str, cause: OmegaConfBaseException) -> str:
    full_key = str(cause.full_key)
    parent, _, key = full_key.rpartition(".")
    node = cause.parent_node
    known = [str(k) for k in node.keys() if k != "hydra"] if isinstance(node, DictConfig) else []
    line = f"unknown option '{full_key}'"
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        line += f" (did you mean '{f'{parent}.' if parent else ''}{close[0]}'?)"
    elif known:
        line += f"; the options of {parent or 'the config'} are: {', '.join(known)}"
    if isinstance(node, DictConfig) and OmegaConf.get_type(node) is dict:  # no schema behind it
        append = [hint for hint in message.splitlines() if "use +" in hint]
        if append:
            line += f"; to add a key, use {append[0].split('use ', 1)[1]}"
    return line


def _did_you_mean(option: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(option, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# --------------------------------------------------------------------------- --help
def config_groups(root: str | None = None) -> dict[str, list[str]]:
    """Every config group under ``conf/`` (``algo``, ``env``, ...) with its options."""
    base = Path(root or config_dir())
    groups: dict[str, list[str]] = {}
    for path in sorted(base.rglob("*.yaml")):
        if path.parent != base:
            groups.setdefault(path.parent.relative_to(base).as_posix(), []).append(path.stem)
    return groups


class _OnDemand(Mapping):
    """The values of a help template, each computed only if the template names it."""

    def __init__(self, **values: Callable[[], str]) -> None:
        self._values = values

    def __getitem__(self, key: str) -> str:
        return self._values[key]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def app_help(
    parser: argparse.ArgumentParser,
    overrides: list[str],
    config_name: str | None = None,
    resolve: bool = False,
) -> str:
    """``dgsolve --help``: the ``hydra.help`` template of the config composed with
    ``overrides``, with Hydra's placeholders (``$APP_CONFIG_GROUPS``, ``$CONFIG``,
    ``$FLAGS_HELP``, ``$HYDRA_CONFIG_GROUPS``) filled in as Hydra's own help fills them."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.hydra import Hydra
    from hydra.core.global_hydra import GlobalHydra

    def job_config() -> str:
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        return OmegaConf.to_yaml(job, resolve=resolve)

    def app_groups() -> str:
        return "\n".join(f"{g}: {', '.join(opts)}" for g, opts in config_groups().items())

    def hydra_groups() -> str:
        hydra_app = GlobalHydra.instance().hydra
        return hydra_app.format_config_groups(lambda g: g == "hydra" or g.startswith("hydra/"))

    with initialize_config_dir(config_dir(), version_base="1.3", job_name="dgsolve"):
        cfg = compose(config_name or "config", overrides=overrides, return_hydra_config=True)
        values = _OnDemand(
            FLAGS_HELP=lambda: Hydra.format_args_help(parser),
            APP_CONFIG_GROUPS=app_groups,
            HYDRA_CONFIG_GROUPS=hydra_groups,
            CONFIG=job_config,
        )
        return string.Template(cfg.hydra.help.template).substitute(values)


if __name__ == "__main__":
    entry()
