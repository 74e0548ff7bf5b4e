"""Hostile inputs through the ``dgsolve`` and ``dgsolve-results`` commands, as a user meets them.

Each case runs one command in a subprocess, in a fresh temporary directory of its own, bounded by
a timeout (a timeout is a failed "no hang" check), and is judged on what issue 25 promises:

- the **exit status**: 2 for a user mistake (one line ``dgsolve: error: ...`` on stderr), 1 for
  a fault, 3 for divergence, 0 where a damaged-looking input is in fact fine (the controls);
- **one line** on stderr for a refusal;
- the **marker absent**: a code-execution case plants a ``touch <marker>`` payload (a pickle, a
  factory such as ``os:system``) or a module whose import touches it; the marker must not exist
  afterwards;
- **nothing lost**: the run directory a refused command was pointed at keeps its checkpoint,
  policy, summary and history byte for byte (sha256 before and after);
- no **directory** left by a run refused at the door, and the case's own check of its outputs
  (an exported CSV, the index rows of a sweep, the status a killed run lists with).

The cases share one tiny trained matrix run and one tiny PettingZoo run (a user env written into
the temporary directory and put on ``PYTHONPATH``), each case working on its own copy. Every
process records runs in a throwaway index (``DGSOLVE_INDEX``), never the user's.

    python benchmarks/reliability_cases.py              # the cases, then one table
    python benchmarks/reliability_cases.py --full       # and their variations (EXTENDED)
    python benchmarks/reliability_cases.py --json       # one JSON line per case instead
    python benchmarks/reliability_cases.py -k yaml -j 2 # the cases whose class or name match

The tests (``tests/test_reliability.py``, ``tests/test_trust.py``, ``tests/test_validation.py``)
assert on these behaviours one by one; this script shows them all at once, for the record.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

#: a matrix PPO run of about a second
TINY = [
    "env=matrix",
    "algo=nash_ppo",
    "hardware=cpu",
    "task.progress=false",
    "env.num_envs=2",
    "algo.num_steps=16",
    "algo.total_timesteps=64",
    "algo.num_minibatches=1",
    "algo.num_epochs=1",
    "task.eval_episodes=2",
]
#: runs whose index row is not the point of the case
QUIET = ["logger.index=false"]
#: the same on a user's PettingZoo env (add env.factory=userenvs:<class>)
PZ = [
    "env=pettingzoo",
    "algo=nash_ppo",
    "hardware=cpu",
    "task.progress=false",
    "env.num_envs=2",
    "algo.num_steps=8",
    "algo.total_timesteps=32",
    "algo.num_minibatches=1",
    "algo.num_epochs=1",
    "task.eval_episodes=2",
    *QUIET,
]
#: learned exploitability of a run directory target in a few seconds (add task.target=...)
EXPLOIT = [
    "task=exploit",
    "algo=ppo",
    "hardware=cpu",
    "task.progress=false",
    "env.num_envs=2",
    "algo.num_steps=16",
    "algo.num_minibatches=1",
    "task.br_timesteps=64",
    "task.eval_games=4",
    *QUIET,
]
#: the files a refused command must leave as they were in the run directory it was pointed at
KEPT = ("checkpoints/last.pt", "policy.pt", "summary.json", "history.json")
#: the environment variable under which ``userenvs`` touches a marker when it is imported
IMPORT_MARKER = "RELIABILITY_IMPORT_MARKER"
CASE_TIMEOUT_S = 120.0
#: cases run only with --full: variations of a case the default run has (a few minutes less)
EXTENDED = {
    # bad values
    "env.num_envs=-3",
    "algo.num_minibatches=0",
    "algo.follower_updates_per_leader=0",
    "task.checkpoint_every=0",
    "algo.lr=-1",
    "algo.lr=1e6",
    "algo.gamma=0",
    "algo.hidden_sizes=[0]",
    "task.eval_episodes=0",
    "env.num_envs=2.5",
    "env.rounds=0",
    "algo.leader_warmup=1",
    "hardware.threads=-1",
    "env=simple_spread env.N=0",
    # hostile YAML
    "empty file",
    "a scalar",
    "250k-item flat list",
    "symlink to /dev/urandom",
    "dangling symlink",
    "resolver ${hydra:...}",
    "resolver ${oc.create:...}",
    # old/edited run dirs
    "hand-edited env.game and env.rounds",
    "hand-edited algo.hidden_sizes",
    "env.num_envs: 0 by hand",
    "resume= +env.foo=1",
    "resume= of a regular file",
    "unknown solver",
    # damaged files
    "last.pt empty",
    "last.pt a directory",
    "last.pt without solver state",
    "last.pt history damaged",
    "policy.pt random bytes",
    "policy.pt a FIFO",
    # user envs
    "userenvs:ObjectObs",
    "userenvs:InfReward",
    "userenvs:TextReward",
    "userenvs:InfosNotDict",
    "userenvs:NoAgents",
    "userenvs:MultiDiscreteActions",
    "userenvs:not_callable",
    "userenvs:Missing",
    "userenvs",
    "userenvs:star_kwargs env.kwargs.foo=1",
    "env=simple_spread +env.foo=1 (torch backend)",
    # memory
    "env=simple_tag env.num_adversaries=3000",
    "algo.total_timesteps=1e30",
    "task.eval_episodes=10^12 (int)",
    "env=openspiel algo=deep_cfr algo.memory_size=1e11",
    # results index
    "export escapes a cell starting +",
    "export escapes a cell starting @",
    "reindex: good runs and a 9 MiB summary.json",
    "--since garbage",
    "best --metric nope",
    # sweeps
    "joblib: one budget below an iteration",
    "basic: one job algo=nope",
    # paths/misc
    "task=exploit task.target=<a regular file>",
    "task=crossplay with a missing policy dir",
    "+experiment=nope",
}

#: user PettingZoo envs, one defect each (``env.factory=userenvs:<name>``)
USER_ENVS = '''
"""PettingZoo envs with one defect each, for benchmarks/reliability_cases.py."""
import os
import pathlib

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

if os.environ.get("RELIABILITY_IMPORT_MARKER"):  # proves whether dgsolve imported this module
    pathlib.Path(os.environ["RELIABILITY_IMPORT_MARKER"]).touch()


class Good(ParallelEnv):
    """Two agents, Box(2) observations, Discrete(2) actions, four steps an episode."""

    metadata = {"name": "good_v0", "render_modes": []}
    length = 4

    def __init__(self, render_mode=None):
        self.possible_agents = ["a", "b"]
        self.agents = []
        self.t = 0

    def observation_space(self, agent):
        return spaces.Box(-1.0, 1.0, (2,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(2)

    def observe(self, agent):
        return np.full(2, min(self.t, 4) / 4, np.float32)

    def reward(self, agent, actions):
        return float(actions[agent])

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return {a: self.observe(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        over = self.t >= self.length
        obs = {a: self.observe(a) for a in self.agents}
        rewards = {a: self.reward(a, actions) for a in actions}
        terms = {a: over for a in self.agents}
        truncs = {a: False for a in self.agents}
        infos = {a: {} for a in self.agents}
        if over:
            self.agents = []
        return obs, rewards, terms, truncs, infos


class WrongShape(Good):
    def observe(self, agent):
        return np.zeros(5, np.float32)


class StringObs(Good):
    def observe(self, agent):
        return "north"


class ObjectObs(Good):
    def observe(self, agent):
        return np.array([None, 1], dtype=object)


class NanObs(Good):
    def observe(self, agent):
        return np.full(2, np.nan, np.float32)


class DiscreteOutOfRange(Good):
    def observation_space(self, agent):
        return spaces.Discrete(3)

    def observe(self, agent):
        return 7


class OldReset(Good):
    def reset(self, seed=None, options=None):
        return super().reset(seed, options)[0]


class FourValueStep(Good):
    def step(self, actions):
        obs, rewards, terms, truncs, infos = super().step(actions)
        return obs, rewards, {a: terms[a] or truncs[a] for a in terms}, infos


class EmptyRewards(Good):
    def step(self, actions):
        obs, rewards, *rest = super().step(actions)
        return (obs, {}, *rest)


class MissingReward(Good):
    def step(self, actions):
        obs, rewards, *rest = super().step(actions)
        rewards.pop("b")
        return (obs, rewards, *rest)


class StrangerReward(Good):
    def step(self, actions):
        obs, rewards, *rest = super().step(actions)
        return (obs, {**rewards, "ghost": 1.0}, *rest)


class NanReward(Good):
    def reward(self, agent, actions):
        return float("nan")


class InfReward(Good):
    def reward(self, agent, actions):
        return float("-inf")


class TextReward(Good):
    def reward(self, agent, actions):
        return "1"


class InfosNotDict(Good):
    def step(self, actions):
        *head, infos = super().step(actions)
        return (*head, None)


class StrangerAfterReset(Good):
    def reset(self, seed=None, options=None):
        out = super().reset(seed, options)
        self.agents.append("c")
        return out


class NoAgents(Good):
    def __init__(self, render_mode=None):
        super().__init__()
        self.possible_agents = []


class MultiDiscreteActions(Good):
    def action_space(self, agent):
        return spaces.MultiDiscrete([2, 2])


class KeepsFinishedAgents(Good):
    """Flags everyone terminated at the end but leaves them in env.agents (API misuse)."""

    def step(self, actions):
        agents = list(self.agents)
        out = super().step(actions)
        self.agents = agents
        if self.t >= self.length:
            out[2].update({a: True for a in agents})
        return out


class NeverEnds(Good):
    length = 10**12


class RaisesInStep(Good):
    def step(self, actions):
        raise RuntimeError("the simulator crashed")


def star_kwargs(**kwargs):
    """A factory taking **kwargs that refuses the ones it does not know, as many do."""
    for key in kwargs:
        raise TypeError(f"Good.__init__() got an unexpected keyword argument '{key}'")
    return Good()


def not_an_env():
    return 42


not_callable = 42
'''

#: holds the lock of the run directory given as argv[1] until killed, as a live run does
HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(os.path.join(sys.argv[1], ".dgsolve.lock"), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
time.sleep(600)
"""


# --------------------------------------------------------------------------- cases
#: what a case's own check found: the problem (None: none) and a note for the table
Verdict = tuple[str | None, str]


@dataclass
class Case:
    """One hostile input: a command and what must (not) come of it.

    ``args``: the command's arguments after ``dgsolve`` (or after ``dgsolve-results`` where
    ``tool`` is ``"results"``); ``{c}`` stands for the case's directory and ``{m}`` for its
    marker file. ``setup(case_dir)`` prepares the directory and may return a clean-up function.
    """

    cls: str
    name: str
    args: list[str]
    expect: int | tuple[int, ...] = 2
    tool: str = "dgsolve"
    setup: Callable[[Path], Callable[[], None] | None] | None = None
    #: stderr lines expected; None: not checked (tracebacks, sweeps); by default one for a
    #: refusal and unchecked for a completed command
    lines: int | None | str = "default"
    must: str | None = None  # regex the output (stderr, then stdout) must match
    must_not: str | None = None  # regex it must not match
    marker: bool = False  # a code-execution case: {m} must not exist afterwards
    keep: str | None = None  # the run directory (relative) whose KEPT files must not change
    absent: tuple[str, ...] = ()  # paths (relative) that must not exist afterwards
    check: Callable[[Path, dict], Verdict] | None = None  # a further check of the outputs
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lines == "default":
            self.lines = None if self.expect == 0 else 1


def with_(base: Iterable[str], *overrides: str) -> list[str]:
    """``base`` with ``overrides`` in place of its entries for the same keys, then the rest."""
    keys = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    return [b for b in base if b.lstrip("+~").split("=", 1)[0] not in keys] + list(overrides)


def run_args(*overrides: str) -> list[str]:
    """A fresh tiny matrix run into ``{c}/out`` (no index row)."""
    return with_([*TINY, *QUIET, "hydra.run.dir={c}/out"], *overrides)


def resume_args(*extra: str, where: str = "run") -> list[str]:
    return [f"resume={{c}}/{where}", *QUIET, *extra]


#: the shared runs, filled in by :func:`build_fixtures`
FIXTURES: dict[str, Path] = {}


# -- setups ------------------------------------------------------------------
def chain(*steps: Callable[[Path], object]) -> Callable[[Path], Callable[[], None] | None]:
    def setup(c: Path):
        cleanups = [s(c) for s in steps]
        cleanups = [f for f in cleanups if callable(f)]
        return (lambda: [f() for f in cleanups]) if cleanups else None

    return setup


def copy(source: str = "trained", to: str = "run") -> Callable[[Path], None]:
    def setup(c: Path) -> None:
        shutil.copytree(FIXTURES[source], c / to, symlinks=True)

    return setup


def edit_config(edit: Callable[[dict, Path], None], where: str = "run") -> Callable:
    """Change ``<where>/run_config.yaml`` by hand, as a user (or a hostile party) would."""

    def setup(c: Path) -> None:
        path = c / where / "run_config.yaml"
        cfg = yaml.safe_load(path.read_text())
        edit(cfg, c)
        path.write_text(yaml.safe_dump(cfg))

    return setup


def write(rel: str, data: str | bytes | Callable[[Path], str | bytes]) -> Callable:
    def setup(c: Path) -> None:
        path = c / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()
        value = data(c) if callable(data) else data
        if isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(value)

    return setup


def replace_with(rel: str, kind: str, target: str = "") -> Callable:
    """Put a FIFO, a directory or a symbolic link where ``rel`` was."""

    def setup(c: Path) -> None:
        path = c / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()
        else:
            os.symlink(target.replace("{c}", str(c)), path)

    return setup


def remove(rel: str) -> Callable:
    def setup(c: Path) -> None:
        path = c / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return setup


def hostile_factory(factory: str = "os:system") -> Callable:
    """A matrix run directory turned into a PettingZoo run whose factory runs a shell command."""

    def edit(cfg: dict, c: Path) -> None:
        cfg["env"] = {
            "name": "pettingzoo",
            "family": "pettingzoo",
            "factory": factory,
            "kwargs": {"command": f"touch {c / 'pwned'}"},
            "num_envs": 2,
        }

    return edit_config(edit)


class _Planted:
    """Pickles as a call of ``os.system(command)``: what a planted checkpoint runs on load."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def planted_pickle(rel: str) -> Callable:
    def setup(c: Path) -> None:
        import torch

        state = {
            "version": 2,
            "solver": _Planted(f"touch {c / 'pwned'}"),
            "history": {},
            "wall_time_s": 0.0,
        }
        torch.save(state, c / rel)

    return setup


def torch_edit(rel: str, edit: Callable[[object], object]) -> Callable:
    """Load ``rel`` (a torch file), change it with ``edit`` and save it back."""

    def setup(c: Path) -> None:
        import torch

        state = torch.load(c / rel, weights_only=True)
        torch.save(edit(state), c / rel)

    return setup


def _tensors(tree) -> Iterable:
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _tensors(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from _tensors(value)
    elif hasattr(tree, "dtype") and hasattr(tree, "shape"):
        yield tree


def misshapen(state: dict) -> dict:
    """The first weight matrix of the solver state replaced by one of another shape."""
    import torch

    def walk(tree):
        if isinstance(tree, dict):
            for key, value in tree.items():
                if hasattr(value, "dim") and value.dim() == 2:
                    tree[key] = torch.zeros(value.shape[0] + 3, value.shape[1] + 5)
                    return True
                if walk(value):
                    return True
        elif isinstance(tree, list):
            return any(walk(v) for v in tree)
        return False

    walk(state["solver"] if "solver" in state else state)
    return state


def poisoned(state):
    """Every floating tensor filled with NaN (weights a diverged or tampered run would hold)."""
    for tensor in _tensors(state):
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    return state


def damage(rel: str, how: str) -> Callable:
    def setup(c: Path) -> None:
        path = c / rel
        data = path.read_bytes()
        path.write_bytes({"truncated": data[: len(data) // 2], "random": os.urandom(4096)}[how])

    return setup


def hold_lock(rel: str) -> Callable:
    """A live process holding the lock of run directory ``rel`` for the case's duration."""

    def setup(c: Path) -> Callable[[], None]:
        (c / rel).mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(c / rel)], stdout=subprocess.PIPE, text=True
        )
        proc.stdout.readline()

        def stop() -> None:
            proc.kill()
            proc.wait()

        return stop

    return setup


def results_cli(c: Path, *args: str) -> None:
    """Run ``dgsolve-results`` as part of a case's setup (it must succeed)."""
    subprocess.run(
        [sys.executable, "-m", "dgsolve.results.cli", *args],
        cwd=c,
        env=case_env(c),
        capture_output=True,
        check=True,
        timeout=CASE_TIMEOUT_S,
    )


def formula_run(start: str) -> Callable:
    """A run whose summary names its env, and whose overrides begin, with ``start`` (a formula
    to a spreadsheet), indexed."""

    def setup(c: Path) -> None:
        copy(to="runs/evil")(c)
        run = c / "runs" / "evil"
        summary = json.loads((run / "summary.json").read_text())
        summary["env"] = f'{start}HYPERLINK("http://x","y")'
        (run / "summary.json").write_text(json.dumps(summary))
        (run / ".hydra").mkdir(exist_ok=True)
        (run / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"{start}cmd|' /C calc'!A0", "seed=0"])
        )
        results_cli(c, "reindex", str(c / "runs"))

    return setup


def csv_escaped(c: Path, _result: dict) -> Verdict:
    """Every string cell of the export that a spreadsheet would read as a formula is escaped."""
    with open(c / "out.csv", newline="") as f:
        rows = list(csv.reader(f, quoting=csv.QUOTE_NONNUMERIC))
    cells = [v for row in rows for v in row if isinstance(v, str)]
    bare = [v for v in cells if v.startswith(("=", "+", "-", "@", "\t", "\r"))]
    escaped = [v for v in cells if v.startswith("'")]
    note = f"{len(escaped)} cells escaped, e.g. {escaped[0][:24]!r}" if escaped else ""
    if bare:
        return f"unescaped cell {bare[0][:20]!r}", note
    if not escaped:
        return "the hostile cells are missing from the export", note
    return None, note


BOMB = "\n".join(
    ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    + ["env: *a11", "algo: *a11", "task: *a11"]
)
MERGE_BOMB = "\n".join(
    ["m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}"]
    + [f"m{i}: &m{i} {{x: [*m{i - 1}, *m{i - 1}, *m{i - 1}, *m{i - 1}]}}" for i in range(1, 14)]
    + ["env: {<<: *m13}", "algo: {}", "task: {}"]
)
DOUBLING = "x0: [1, 2]\n" + "".join(
    f"x{i}: ['${{x{i - 1}}}', '${{x{i - 1}}}']\n" for i in range(1, 40)
)


#: the hostile run directory of each reindex case, as the table names it
REINDEX_KINDS = {
    "bomb": "a billion-laughs config",
    "binary config": "a binary config",
    "overrides bomb": "a billion-laughs overrides.yaml",
    "fifo summary": "a FIFO summary.json",
    "deep json": "a deeply nested summary.json",
    "huge summary": "a 9 MiB summary.json",
    "fifo lock": "a FIFO lock",
    "link loop": "a symlink loop",
}


def bomb_among_good(kind: str) -> Callable:
    """Two good run directories and one hostile one under ``{c}/runs``."""

    def setup(c: Path) -> None:
        copy(to="runs/good1")(c)
        copy(to="runs/good2")(c)
        copy(to="runs/bad")(c)
        bad = c / "runs" / "bad"
        if kind == "bomb":
            (bad / "run_config.yaml").write_text(BOMB)
        elif kind == "binary config":
            (bad / "run_config.yaml").write_bytes(bytes(range(256)))
        elif kind == "fifo summary":
            (bad / "summary.json").unlink()
            os.mkfifo(bad / "summary.json")
        elif kind == "overrides bomb":
            (bad / ".hydra").mkdir(exist_ok=True)
            (bad / ".hydra" / "overrides.yaml").write_text(BOMB)
        elif kind == "deep json":
            (bad / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
        elif kind == "huge summary":
            (bad / "summary.json").write_text('{"x": "' + "y" * (9 << 20) + '"}')
        elif kind == "link loop":
            os.symlink(c / "runs", bad / "loop")
        elif kind == "fifo lock":
            (bad / "summary.json").unlink()  # no final status: the lock is probed
            (bad / ".dgsolve.lock").unlink()
            os.mkfifo(bad / ".dgsolve.lock")

    return setup


def indexed(expect_rows: int) -> Callable[[Path, dict], Verdict]:
    def check(c: Path, result: dict) -> Verdict:
        found = re.search(r'"indexed": (\d+)', result["stdout"])
        count = found.group(1) if found else "?"
        skipped = result["stderr"].count("skipped ")
        note = f"{count} runs indexed, {skipped} skipped"
        if found is None or int(count) != expect_rows:
            return f"indexed {count} runs, not {expect_rows}", note
        return None, note

    return check


def status_listed(status: str) -> Callable[[Path, dict], Verdict]:
    def check(c: Path, result: dict) -> Verdict:
        found = re.findall(r'"status": "(\w+)"', result["stdout"])
        note = f"listed as {', '.join(found) or 'nothing'}"
        return (None if found == [status] else f"not [{status}]"), note

    return check


def killed_run(c: Path) -> None:
    """A run SIGKILLed while training, after it recorded itself as running in the index."""
    args = with_(TINY, "algo.total_timesteps=100000000", "task.checkpoint_every=1000000")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgsolve.cli", *args, f"hydra.run.dir={c / 'killed'}"],
        cwd=c,
        env=case_env(c),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if index_statuses(c) == ["running"]:
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def live_run(c: Path) -> Callable[[], None]:
    """A run directory whose lock a live process holds, indexed as running."""
    copy(to="live")(c)
    (c / "live" / "summary.json").unlink()
    stop = hold_lock("live")(c)
    code = "import sys; from dgsolve.results.index import record_run; "
    code += "record_run(sys.argv[1], fallback='running')"
    subprocess.run(
        [sys.executable, "-c", code, str(c / "live")], env=case_env(c), check=True, timeout=60
    )
    return stop


def index_statuses(c: Path) -> list[str]:
    """The statuses of the rows of the case's index ([] where it has none yet)."""
    path = c / "index.sqlite"
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return [r[0] for r in conn.execute("SELECT status FROM runs")]
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def sweep_left_only_started_jobs(c: Path, result: dict) -> Verdict:
    """An Optuna sweep of four trials, some refused: each refused trial left no directory and
    no index row, each started one left both, and the study went on to its fourth trial."""
    sweep = c / "sw"
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[:1].isdigit())
    records = [json.loads(p.read_text()) for p in (sweep / "failed_jobs").glob("*.json")]
    refused = [r for r in records if r.get("dir") is None]
    rows = index_statuses(c)
    note = f"{len(jobs)} trials ran, {len(refused)} refused, {len(rows)} index rows"
    if not refused:
        return "no trial was refused (choose another sampler seed)", note
    if len(jobs) + len(refused) != 4:
        return f"{len(jobs)} job dirs + {len(refused)} refused trials, not 4", note
    if any(not (j / "summary.json").is_file() for j in jobs):
        return "a job directory without a summary.json (a refused trial's?)", note
    if len(rows) != len(jobs):
        return f"{len(rows)} index rows for {len(jobs)} started jobs", note
    return None, note


def sweep_went_on(c: Path, result: dict) -> Verdict:
    """Job #0 failed; job #1 still ran to its summary, and the last line names job #0."""
    if not (c / "sw" / "1" / "summary.json").is_file():
        return "job #1 did not run after job #0 failed", ""
    if "#0" not in result["last"]:
        return "the last line does not name job #0", ""
    return None, "job #1 completed; " + result["last"].split(": ", 2)[-1]


def lq_args(*extra: str) -> list[str]:
    return ["env=lq", "algo=exact", "hardware=cpu", "task.progress=false", *QUIET, *extra]


# -- the cases -----------------------------------------------------------------
def bad_value_cases() -> list[Case]:
    values = [
        ("env.num_envs=0", "env.num_envs"),
        ("env.num_envs=-3", "env.num_envs"),
        ("algo.num_steps=0", "algo.num_steps"),
        ("algo.num_minibatches=0", "algo.num_minibatches"),
        ("algo.follower_updates_per_leader=0", "follower_updates_per_leader"),
        ("task.checkpoint_every=0", "checkpoint_every"),
        ("algo.lr=-1", "algo.lr"),
        ("algo.lr=nan", "algo.lr"),
        ("algo.lr=inf", "algo.lr"),
        ("algo.lr=1e6", "algo.lr"),
        ("algo.lr=true", "algo.lr"),
        ("seed=-1", "seed"),
        ("seed=4294967296", "seed"),
        ("algo.gamma=1.5", "algo.gamma"),
        ("algo.gamma=0", "algo.gamma"),
        ("algo.hidden_sizes=[0]", "hidden_sizes"),
        ("algo.hidden_sizes=[64,-5]", "hidden_sizes"),
        ("task.eval_episodes=0", "eval_episodes"),
        ("env.num_envs=abc", "num_envs"),
        ("env.num_envs=2.5", "num_envs"),
        ("env.rounds=0", "env.rounds"),
        ("env.game=nope", "nope"),
        ("env.payoffs=[[[1,2]],[[3]]]", "payoffs"),
        ("algo.leader_warmup=1", "leader_warmup"),
        ("hardware.threads=-1", "threads"),
        ("algo.lrr=0.1", "did you mean 'algo.lr'"),
        ("algo=nope", "options are"),
        ("hardware=cuda", "cuda"),
    ]
    cases = [
        Case("bad values", v, run_args(v), must=re.escape(m), absent=("out",)) for v, m in values
    ]
    cases += [
        Case(
            "bad values",
            "env=simple_spread env.N=0",
            run_args("env=simple_spread", "env.N=0"),
            must="env.N",
            absent=("out",),
        ),
        Case(
            "bad values",
            "env=bargain env.rounds=1000",
            run_args("env=bargain", "env.rounds=1000"),
            must="env.rounds",
            absent=("out",),
        ),
        Case(
            "bad values",
            "env=lq env.discount=1",
            lq_args("env.discount=1", "hydra.run.dir={c}/out"),
            must="env.discount",
            absent=("out",),
        ),
    ]
    return cases


def code_cases() -> list[Case]:
    """A run directory that names code or carries a payload; the marker must stay absent."""
    code = dict(marker=True, keep="run")
    marked = {IMPORT_MARKER: "{m}"}
    return [
        Case(
            "code execution",
            "resume=: env.factory=os:system",
            resume_args("algo.total_timesteps=128"),
            setup=chain(copy(), hostile_factory()),
            must="env.factory",
            **code,
        ),
        Case(
            "code execution",
            "exploit target: env.factory=os:system",
            [*EXPLOIT, "task.target={c}/run", "hydra.run.dir={c}/out"],
            setup=chain(copy(), hostile_factory()),
            must="env.factory",
            **code,
        ),
        Case(
            "code execution",
            "search target: env.factory=os:system",
            ["task=search", "task.target={c}/run", "hardware=cpu", "task.progress=false", *QUIET],
            setup=chain(copy(), hostile_factory()),
            must="env.factory",
            **code,
        ),
        Case(
            "code execution",
            "crossplay policy: env.factory=os:system",
            ["task=crossplay", "env=bargain", "task.policies=[greedy,{c}/run]", "task.games=4"]
            + ["hardware=cpu", *QUIET],
            setup=chain(copy(), hostile_factory()),
            **code,
        ),
        Case(
            "code execution",
            "resume=: factory module with import side effect",
            resume_args("algo.total_timesteps=128"),
            setup=chain(copy(), hostile_factory("userenvs:Good")),
            must="userenvs:Good",
            env=marked,
            **code,
        ),
        Case(
            "code execution",
            "exploit: user factory not confirmed",
            [*EXPLOIT, "task.target={c}/run", "hydra.run.dir={c}/out"],
            setup=copy("pz"),
            must="env.factory",
            env=marked,
            **code,
        ),
        Case(
            "code execution",
            "resume=: user factory not confirmed",
            resume_args("algo.total_timesteps=64"),
            setup=copy("pz"),
            must="env.factory",
            env=marked,
            **code,
        ),
        Case(
            "code execution",
            "resume=: another factory than the run's",
            resume_args("env.factory=pettingzoo.classic.rps_v2:parallel_env"),
            setup=copy("pz"),
            must="userenvs:Good",
            env=marked,
            **code,
        ),
        Case(
            "code execution",
            "resume=: planted pickle in last.pt",
            resume_args("algo.total_timesteps=128"),
            setup=chain(copy(), planted_pickle("run/checkpoints/last.pt")),
            must="last.pt",
            **code,
        ),
        Case(
            "code execution",
            "exploit target: planted pickle in policy.pt",
            [*EXPLOIT, "task.target={c}/run", "hydra.run.dir={c}/out"],
            setup=chain(copy(), planted_pickle("run/policy.pt")),
            must="policy.pt",
            **code,
        ),
        Case(
            "code execution",
            "run_config.yaml: !!python/object/apply tag",
            resume_args(),
            setup=chain(
                copy(),
                write(
                    "run/run_config.yaml",
                    lambda c: f"env: !!python/object/apply:os.system ['touch {c / 'pwned'}']\n",
                ),
            ),
            **code,
        ),
        Case(
            "code execution",
            ".hydra/config.yaml (no run_config.yaml): os:system",
            resume_args("algo.total_timesteps=128"),
            setup=chain(copy(), hostile_factory(), move_to_hydra_config),
            must="env.factory",
            **code,
        ),
        Case(
            "code execution",
            "run_config.yaml: algo._target_=os.system",
            resume_args("algo.total_timesteps=128"),
            setup=chain(
                copy(),
                edit_config(
                    lambda cfg, c: cfg["algo"].update(
                        _target_="os.system", _args_=[f"touch {c / 'pwned'}"]
                    )
                ),
            ),
            expect=(0, 2),
            lines=None,
            **code,
        ),
        Case(
            "code execution",
            "run_config.yaml: hydra.callbacks _target_",
            resume_args(),
            setup=chain(
                copy(),
                edit_config(
                    lambda cfg, c: cfg.update(
                        hydra={
                            "callbacks": {
                                "x": {"_target_": "os.system", "command": f"touch {c / 'pwned'}"}
                            }
                        }
                    )
                ),
            ),
            expect=(0, 2),
            lines=None,
            **code,
        ),
        Case(
            "code execution",
            "results plot: history.npz holding a pickle",
            ["plot", "--metric", "returns", "--out", "{c}/p.png", "{c}/run"],
            tool="results",
            setup=chain(copy(), planted_npz, lambda c: results_cli(c, "reindex", str(c / "run"))),
            expect=(0, 2),
            lines=None,
            **code,
        ),
    ]


def move_to_hydra_config(c: Path) -> None:
    """An older run directory: its config only in Hydra's ``.hydra/config.yaml``."""
    (c / "run" / ".hydra").mkdir(exist_ok=True)
    (c / "run" / "run_config.yaml").replace(c / "run" / ".hydra" / "config.yaml")


def planted_npz(c: Path) -> None:
    """``history.npz`` holding an object array: ``np.load(allow_pickle=True)`` would run it."""
    import numpy as np

    payload = np.array([_Planted(f"touch {c / 'pwned'}")], dtype=object)
    np.savez(c / "run" / "history.npz", returns=payload)


def yaml_cases() -> list[Case]:
    """``run_config.yaml`` replaced by hostile YAML; ``resume=`` must refuse it at once."""

    def case(name: str, text: str | bytes, must: str | None = None) -> Case:
        return Case(
            "hostile YAML",
            name,
            resume_args("algo.total_timesteps=128"),
            setup=chain(copy(), write("run/run_config.yaml", text)),
            must=must,
            keep="run",
        )

    def special(name: str, kind: str, target: str = "", must: str | None = None) -> Case:
        return Case(
            "hostile YAML",
            name,
            resume_args("algo.total_timesteps=128"),
            setup=chain(copy(), replace_with("run/run_config.yaml", kind, target)),
            must=must,
            keep="run",
        )

    resolvers = ["oc.env:HOME", "oc.decode:'[1]'", "now:%H", "hydra:job.name", "oc.create:'{}'"]
    return [
        case("billion laughs (aliases)", BOMB, "alias"),
        case("merge-key bomb (<<: aliases)", MERGE_BOMB),
        case("alias that contains itself", "a: &a [*a]\nenv: *a\n", "contains itself"),
        case("interpolation doubling", DOUBLING + "env: ${x39}\n", "interpolation"),
        case("interpolation cycle", "env: ${algo}\nalgo: ${task}\ntask: ${env}\n", "cycle"),
        case("2 MiB file", "a: '" + "x" * (2 << 20) + "'\n", "larger than"),
        case("250k-item flat list", "x:\n" + "- 1\n" * 250_000, "more than"),
        case("deep nesting", "env: " + "[" * 20_000 + "]" * 20_000 + "\n"),
        case("invalid UTF-8 / binary", os.urandom(2048)),
        case("empty file", ""),
        case("a list, not a mapping", "- env\n- algo\n", "not a"),
        case("a scalar", "42\n", "not a"),
        *[
            Case(
                "hostile YAML",
                f"resolver ${{{r.split(':')[0]}:...}}",
                resume_args("algo.total_timesteps=128"),
                setup=chain(
                    copy(),
                    edit_config(lambda cfg, c, r=r: cfg["task"].update(objective=f"${{{r}}}")),
                ),
                must=re.escape(r.split(":")[0]),
                must_not="/root|/home",
                keep="run",
            )
            for r in resolvers
        ],
        special("FIFO run_config.yaml", "fifo", must="not a regular file"),
        special("symlink to /dev/zero", "link", "/dev/zero", must="not a regular file"),
        special("symlink to /dev/urandom", "link", "/dev/urandom", must="not a regular file"),
        special("a directory", "dir"),
        Case(
            "hostile YAML",
            "symlink to /proc/self/environ",
            resume_args("algo.total_timesteps=128"),
            setup=chain(copy(), replace_with("run/run_config.yaml", "link", "/proc/self/environ")),
            must_not="hunter2",
            keep="run",
            env={"RELIABILITY_SECRET": "hunter2-do-not-print"},
        ),
        special("dangling symlink", "link", "{c}/nowhere.yaml"),
    ]


def edited_cases() -> list[Case]:
    """Old and hand-edited run directories."""

    def drop_new_keys(cfg: dict, c: Path) -> None:
        for key in ("hidden_sizes", "anneal_lr", "follower_restarts", "commitment_noise"):
            cfg["algo"].pop(key, None)
        cfg.pop("logger", None)
        cfg["task"].pop("eq_tolerance", None)

    def without_config(state: dict) -> dict:
        state.pop("config", None)
        return state

    def edited(name: str, edit, must: str, *extra: str) -> Case:
        return Case(
            "old/edited run dirs",
            name,
            resume_args("algo.total_timesteps=128", *extra),
            setup=chain(copy(), edit_config(edit)),
            must=must,
            keep="run",
        )

    return [
        Case(
            "old/edited run dirs",
            "old dir without newer keys: resume (control)",
            resume_args("algo.total_timesteps=128"),
            setup=chain(copy(), edit_config(drop_new_keys)),
            expect=0,
        ),
        Case(
            "old/edited run dirs",
            "only .hydra/config.yaml: resume (control)",
            resume_args("algo.total_timesteps=128"),
            setup=chain(copy(), move_to_hydra_config),
            expect=0,
        ),
        Case(
            "old/edited run dirs",
            "checkpoint without stored config (control)",
            resume_args("algo.total_timesteps=128"),
            setup=chain(copy(), torch_edit("run/checkpoints/last.pt", without_config)),
            expect=0,
        ),
        Case(
            "old/edited run dirs",
            "resume= of a complete run changes nothing",
            resume_args(),
            setup=copy(),
            expect=0,
            must="nothing was changed",
            keep="run",
        ),
        Case(
            "old/edited run dirs",
            "user factory confirmed: resume (control)",
            resume_args("env.factory=userenvs:Good", "algo.total_timesteps=64"),
            setup=copy("pz"),
            expect=0,
        ),
        edited(
            "hand-edited env.game",
            lambda cfg, c: cfg["env"].update(game="stag_hunt"),
            r"env\.game",
        ),
        edited(
            "hand-edited env.game and env.rounds",
            lambda cfg, c: cfg["env"].update(game="stag_hunt", rounds=2),
            r"env\.game.*env\.rounds",
        ),
        edited("hand-edited algo.lr", lambda cfg, c: cfg["algo"].update(lr=0.5), r"algo\.lr"),
        edited("hand-edited seed", lambda cfg, c: cfg.update(seed=7), "seed"),
        edited(
            "hand-edited algo.hidden_sizes",
            lambda cfg, c: cfg["algo"].update(hidden_sizes=[8]),
            "hidden_sizes",
        ),
        edited("algo.lr of the wrong type", lambda cfg, c: cfg["algo"].update(lr="fast"), "lr"),
        edited("unknown key algo.bogus", lambda cfg, c: cfg["algo"].update(bogus=1), "bogus"),
        edited("unknown solver", lambda cfg, c: cfg["algo"].update(solver="nope"), "nope"),
        edited("env not a mapping", lambda cfg, c: cfg.update(env=[1, 2]), "env"),
        edited("env.num_envs: 0 by hand", lambda cfg, c: cfg["env"].update(num_envs=0), "num_envs"),
        Case(
            "old/edited run dirs",
            "resume= env.game=x",
            resume_args("env.game=stag_hunt"),
            setup=copy(),
            must="keeps its own config",
            must_not="did you mean 'env.name'",
            keep="run",
        ),
        Case(
            "old/edited run dirs",
            "resume= +env.foo=1",
            resume_args("+env.foo=1"),
            setup=copy(),
            must="resume",
            keep="run",
        ),
        Case(
            "old/edited run dirs",
            "resume= algo.lr=0.1",
            resume_args("algo.lr=0.1"),
            setup=copy(),
            must="resume",
            keep="run",
        ),
        Case(
            "old/edited run dirs",
            "resume= algo.total_timesteps below the run's",
            resume_args("algo.total_timesteps=32"),
            setup=copy(),
            must="total_timesteps",
            keep="run",
        ),
        Case(
            "old/edited run dirs",
            "resume= of an empty directory",
            resume_args(),
            setup=lambda c: (c / "run").mkdir(),
        ),
        Case("old/edited run dirs", "resume= of a missing path", resume_args(where="nowhere")),
        Case(
            "old/edited run dirs",
            "resume= of a regular file",
            resume_args(where="file"),
            setup=write("file", "x"),
        ),
    ]


def damaged_cases() -> list[Case]:
    """Damaged checkpoints and policies."""
    ckpt, policy = "run/checkpoints/last.pt", "run/policy.pt"

    def resumed(name: str, *steps, must: str | None = "last.pt") -> Case:
        return Case(
            "damaged files",
            name,
            resume_args("algo.total_timesteps=128"),
            setup=chain(copy(), *steps),
            must=must,
            keep="run",
        )

    def targeted(name: str, *steps, expect=2, must: str | None = "policy") -> Case:
        return Case(
            "damaged files",
            name,
            [*EXPLOIT, "task.target={c}/run", "hydra.run.dir={c}/out"],
            setup=chain(copy(), *steps),
            expect=expect,
            must=must,
            keep="run",
        )

    def version_1(state: dict) -> dict:
        return {**state, "version": 1}

    def config_not_mapping(state: dict) -> dict:
        return {**state, "config": "prisoners_dilemma"}

    def no_solver(state: dict) -> dict:
        return {"history": state["history"]}

    def bad_history(state: dict) -> dict:
        return {**state, "history": {"rows": "nonsense"}}

    def pz_checkpoint(c: Path) -> None:
        shutil.copy(FIXTURES["pz"] / "checkpoints" / "last.pt", c / ckpt)

    return [
        resumed("last.pt truncated", damage(ckpt, "truncated")),
        resumed("last.pt random bytes", damage(ckpt, "random")),
        resumed("last.pt empty", write(ckpt, b"")),
        resumed("last.pt a directory", replace_with(ckpt, "dir")),
        resumed("last.pt a FIFO", replace_with(ckpt, "fifo")),
        resumed("last.pt symlink to /dev/zero", replace_with(ckpt, "link", "/dev/zero")),
        resumed("last.pt missing", remove(ckpt)),
        resumed("last.pt without solver state", torch_edit(ckpt, no_solver)),
        resumed("last.pt version 1", torch_edit(ckpt, version_1), must="version"),
        resumed("last.pt of another game", pz_checkpoint),
        resumed("last.pt with misshapen weights", torch_edit(ckpt, misshapen)),
        resumed("last.pt stored config not a mapping", torch_edit(ckpt, config_not_mapping)),
        resumed("last.pt history damaged", torch_edit(ckpt, bad_history)),
        targeted("policy.pt truncated", damage(policy, "truncated")),
        targeted("policy.pt random bytes", damage(policy, "random")),
        targeted("policy.pt missing", remove(policy)),
        targeted("policy.pt a FIFO", replace_with(policy, "fifo")),
        targeted("policy.pt with misshapen weights", torch_edit(policy, misshapen)),
        targeted("policy.pt NaN weights", torch_edit(policy, poisoned), expect=(2, 3), must=None),
    ]


def user_env_cases() -> list[Case]:
    """User PettingZoo envs, each with one defect, checked where they first speak."""

    def env_case(
        factory: str, must: str | None, *extra: str, expect=2, lines: int | None | str = "default"
    ) -> Case:
        return Case(
            "user envs",
            f"{factory} {' '.join(extra)}".strip(),
            [*PZ, f"env.factory={factory}", "hydra.run.dir={c}/out", *extra],
            expect=expect,
            must=must,
            lines=lines,
        )

    u = "userenvs:"
    return [
        env_case(u + "WrongShape", "shape"),
        env_case(u + "StringObs", "north"),
        env_case(u + "ObjectObs", "numeric|number"),
        env_case(u + "DiscreteOutOfRange", "7"),
        env_case(u + "NanObs", None, expect=(2, 3)),
        env_case(u + "OldReset", "only the observations"),
        env_case(u + "FourValueStep", "4 values"),
        env_case(u + "EmptyRewards", "missing"),
        env_case(u + "MissingReward", "'b'"),
        env_case(u + "StrangerReward", "ghost"),
        env_case(u + "NanReward", "not finite"),
        env_case(u + "InfReward", "not finite"),
        env_case(u + "TextReward", "not a number"),
        env_case(u + "InfosNotDict", "infos"),
        env_case(u + "StrangerAfterReset", "'c'"),
        env_case(u + "NoAgents", "possible_agents"),
        env_case(u + "MultiDiscreteActions", "action space"),
        env_case(u + "Good", "foo", "env.kwargs.foo=1"),
        env_case(u + "star_kwargs", "foo", "env.kwargs.foo=1"),
        env_case("pettingzoo.classic.rps_v2:parallel_env", "foo", "env.kwargs.foo=1"),
        env_case(u + "not_an_env", "not a PettingZoo"),
        env_case(u + "not_callable", "callable"),
        env_case(u + "Missing", "callable"),
        env_case("no_such_module:env", "cannot import"),
        env_case("userenvs", "package.module:callable"),
        env_case(u + "KeepsFinishedAgents", None, expect=0),
        env_case(u + "NeverEnds", "did not end within", expect=(1, 2)),
        env_case(u + "RaisesInStep", "simulator crashed", expect=1, lines=None),
        Case(
            "user envs",
            "env=simple_spread env.backend=mpe2 +env.foo=1",
            run_args("env=simple_spread", "env.backend=mpe2", "+env.foo=1"),
            must="foo",
        ),
        Case(
            "user envs",
            "env=simple_spread +env.foo=1 (torch backend)",
            run_args("env=simple_spread", "+env.foo=1"),
            must="foo",
        ),
    ]


def memory_cases() -> list[Case]:
    """Runs that cannot fit, refused at the door: exit 2, one line, no directory."""

    def mem(name: str, args: list[str], must: str = "more than this machine") -> Case:
        return Case("memory", name, args, must=must, absent=("out",))

    quick = ["hardware=cpu", "task.progress=false", *QUIET, "hydra.run.dir={c}/out"]
    return [
        mem("algo.hidden_sizes=[100000,100000]", run_args("algo.hidden_sizes=[100000,100000]")),
        mem("env=matrix env.num_envs=1e8", run_args("env.num_envs=100000000")),
        mem("env=bargain env.num_envs=1e8", run_args("env=bargain", "env.num_envs=100000000")),
        mem(
            "env=simple_spread env.N=1000 (its own num_envs)",
            ["env=simple_spread", "env.N=1000", "algo=nash_ppo", *quick],
        ),
        mem(
            "env=simple_tag env.num_adversaries=3000",
            run_args("env=simple_tag", "env.num_adversaries=3000"),
        ),
        mem(
            "algo.num_steps=1e9 (rollout buffer)",
            run_args("algo.num_steps=1000000000", "algo.total_timesteps=2000000000"),
        ),
        mem(
            "env=bargain env.quantities=[1e5]*3",
            run_args("env=bargain", "env.quantities=[100000,100000,100000]"),
            must="quantities|more than",
        ),
        mem(
            "algo.total_timesteps beyond int64",
            run_args("algo.total_timesteps=9223372036854775808"),
            must="total_timesteps",
        ),
        mem(
            "algo.total_timesteps=1e30",
            run_args("algo.total_timesteps=1000000000000000000000000000000"),
            must="total_timesteps",
        ),
        mem("task.eval_episodes=1e12", run_args("task.eval_episodes=1e12"), "eval_episodes"),
        mem(
            "task.eval_episodes=10^12 (int)",
            run_args("task.eval_episodes=1000000000000"),
            "eval_episodes",
        ),
        mem("env.num_envs=10^12", run_args("env.num_envs=1000000000000"), "num_envs"),
        mem(
            "env=openspiel algo=nfsp algo.replay_size=1e11",
            ["env=openspiel", "algo=nfsp", "algo.replay_size=100000000000", *quick],
            "replay_size",
        ),
        mem(
            "env=openspiel algo=deep_cfr algo.memory_size=1e11",
            ["env=openspiel", "algo=deep_cfr", "algo.memory_size=100000000000", *quick],
            "memory_size",
        ),
        mem(
            "env=matrix algo=psro algo.max_policies=1e9",
            ["env=matrix", "algo=psro", "algo.max_policies=1000000000", *quick],
            "max_policies",
        ),
    ]


def results_cases() -> list[Case]:
    def export(start: str, label: str) -> Case:
        return Case(
            "results index",
            f"export escapes a cell starting {label}",
            ["export", "{c}/out.csv"],
            tool="results",
            setup=formula_run(start),
            expect=0,
            check=csv_escaped,
        )

    def reindex_among_good(kind: str, runs: int = 2, warnings: int = 1) -> Case:
        """Reindex two good runs and a hostile one: ``runs`` indexed, ``warnings`` lines (one
        per skipped directory)."""
        return Case(
            "results index",
            f"reindex: good runs and {REINDEX_KINDS[kind]}",
            ["reindex", "--json", "{c}/runs"],
            tool="results",
            setup=bomb_among_good(kind),
            expect=0,
            lines=warnings,
            check=indexed(runs),
        )

    return [
        *[
            export(s, n)
            for s, n in [("=", "="), ("+", "+"), ("-", "-"), ("@", "@"), ("\t", "tab")]
            + [("\r", "CR")]
        ],
        Case(
            "results index", "reindex /no/such/path", ["reindex", "/no/such/path"], tool="results"
        ),
        Case(
            "results index",
            "reindex a regular file",
            ["reindex", "{c}/file"],
            tool="results",
            setup=write("file", "x"),
        ),
        *[
            reindex_among_good(k)
            for k in ("bomb", "binary config", "overrides bomb", "fifo summary", "deep json")
            + ("huge summary",)
        ],
        reindex_among_good("fifo lock", runs=3, warnings=0),
        reindex_among_good("link loop", runs=3, warnings=0),
        Case(
            "results index",
            "a SIGKILLed run lists as interrupted",
            ["list", "--json"],
            tool="results",
            setup=killed_run,
            expect=0,
            check=status_listed("interrupted"),
        ),
        Case(
            "results index",
            "a live run lists as running (control)",
            ["list", "--json"],
            tool="results",
            setup=live_run,
            expect=0,
            check=status_listed("running"),
        ),
        Case(
            "results index",
            "an index file of garbage",
            ["list", "--index", "{c}/garbage.db"],
            tool="results",
            setup=write("garbage.db", b"SQLite format 3\x00" + os.urandom(4096)),
            expect=(1, 2),
        ),
        Case(
            "results index",
            "an index path that is a directory",
            ["list", "--index", "{c}"],
            tool="results",
            expect=(1, 2),
        ),
        Case(
            "results index",
            "plot: history.json a FIFO",
            ["plot", "--metric", "returns", "--out", "{c}/p.png", "{c}/run"],
            tool="results",
            setup=chain(
                copy(),
                lambda c: results_cli(c, "reindex", str(c / "run")),
                replace_with("run/history.json", "fifo"),
            ),
        ),
        Case(
            "results index", "--since garbage", ["list", "--since", "yesterday-ish"], tool="results"
        ),
        Case(
            "results index",
            "best --metric nope",
            ["best", "--metric", "nope"],
            tool="results",
            setup=chain(copy(), lambda c: results_cli(c, "reindex", str(c / "run"))),
            must="nope",
        ),
    ]


def sweep_cases() -> list[Case]:
    """Sweeps (``-m``) with a bad job: refused whole, or run past it."""
    sweep = [*TINY, *QUIET, "hydra.sweep.dir={c}/sw", "hydra.sweep.subdir=${hydra.job.num}"]
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]

    def refused(name: str, *args: str) -> Case:
        return Case("sweeps", name, ["-m", *with_(sweep, *args)], must="sweep job", absent=("sw",))

    def goes_on(name: str, first: str, expect: int, *extra: str) -> Case:
        args = with_(
            [*PZ, "hydra.sweep.dir={c}/sw", "hydra.sweep.subdir=${hydra.job.num}"],
            f"env.factory=userenvs:{first},userenvs:Good",
            *extra,
        )
        return Case("sweeps", name, ["-m", *args], expect=expect, lines=None, check=sweep_went_on)

    optuna = [
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.seed=0",
        "algo.total_timesteps=choice(8,64)",
    ]
    return [
        refused("basic: one job env.num_envs=0", "env.num_envs=2,0"),
        refused("basic: one budget below an iteration", "algo.total_timesteps=64,8"),
        refused("basic: one job algo=nope", "algo=nash_ppo,nope"),
        refused("basic: one job out of memory", "env.num_envs=2,100000000"),
        refused("basic: one job env.game=nope", "env.game=prisoners_dilemma,nope"),
        refused("joblib: one job env.num_envs=0", "env.num_envs=2,0", *joblib),
        refused("joblib: one budget below an iteration", "algo.total_timesteps=64,8", *joblib),
        Case(
            "sweeps",
            "basic: a job's directory already holds a run",
            ["-m", *with_(sweep, "seed=0,1")],
            setup=copy(to="sw/0"),
            must="already holds a run",
            keep="sw/0",
        ),
        Case(
            "sweeps",
            "optuna: refused trials leave no dir or row",
            ["-m", *with_([*TINY, "hydra.sweep.dir={c}/sw"], *optuna)],
            lines=None,
            check=sweep_left_only_started_jobs,
        ),
        Case(
            "sweeps",
            "optuna, hydra.sweep.subdir=${hydra.job.num}",
            ["-m", *with_(sweep, "logger.index=true", *optuna)],
            lines=None,
            check=sweep_left_only_started_jobs,
        ),
        goes_on("basic: job #0 raises in step, #1 runs", "RaisesInStep", 1),
        goes_on("basic: job #0 obs of wrong shape, #1 runs", "WrongShape", 2),
        goes_on("joblib: job #0 raises in step, #1 runs", "RaisesInStep", 1, *joblib),
    ]


def misc_cases() -> list[Case]:
    long_name = "x" * 300
    return [
        Case(
            "paths/misc",
            "hydra.run.dir under a regular file",
            run_args("hydra.run.dir={c}/file/run"),
            setup=write("file", "x"),
            must="not a directory",
        ),
        Case("paths/misc", "hydra.run.dir=/proc/dgsolve-run", run_args("hydra.run.dir=/proc/x")),
        Case(
            "paths/misc",
            "hydra.run.dir a dangling symlink",
            run_args("hydra.run.dir={c}/link"),
            setup=replace_with("link", "link", "{c}/missing"),
            must="symbolic link",
        ),
        Case(
            "paths/misc",
            "hydra.run.dir below a dangling symlink",
            run_args("hydra.run.dir={c}/link/run"),
            setup=replace_with("link", "link", "{c}/missing"),
            must="symbolic link",
        ),
        Case(
            "paths/misc",
            "hydra.run.dir a 300-character name",
            run_args(f"hydra.run.dir={{c}}/{long_name}"),
        ),
        Case(
            "paths/misc",
            "a second run into a finished run's dir",
            run_args("hydra.run.dir={c}/run"),
            setup=copy(),
            must="already holds a run",
            keep="run",
        ),
        Case(
            "paths/misc",
            "a run into a dir a live run holds",
            run_args("hydra.run.dir={c}/busy"),
            setup=hold_lock("busy"),
            must="in use",
        ),
        Case(
            "paths/misc",
            "resume= of a dir a live run holds",
            resume_args("algo.total_timesteps=128"),
            setup=chain(copy(), hold_lock("run")),
            must="in use",
            keep="run",
        ),
        Case(
            "paths/misc",
            "LQ with unstable dynamics",
            lq_args("env.A=[[3.0,0],[0,3.0]]", "hydra.run.dir={c}/out"),
            expect=(2, 3),  # a game that cannot be solved (2), or divergence (3): either way said
            must="diverged",
            must_not="convex",
        ),
        Case(
            "paths/misc",
            "task=exploit without a target",
            [*EXPLOIT, "hydra.run.dir={c}/out"],
            must="task.target",
        ),
        Case(
            "paths/misc",
            "task=exploit task.target=/no/such/dir",
            [*EXPLOIT, "task.target=/no/such/dir", "hydra.run.dir={c}/out"],
        ),
        Case(
            "paths/misc",
            "task=exploit task.target=<a regular file>",
            [*EXPLOIT, "task.target={c}/file", "hydra.run.dir={c}/out"],
            setup=write("file", "x"),
        ),
        Case(
            "paths/misc",
            "task=crossplay with a missing policy dir",
            ["task=crossplay", "env=bargain", "task.policies=[greedy,/no/such]", "task.games=4"]
            + ["hardware=cpu", *QUIET, "hydra.run.dir={c}/out"],
        ),
        Case("paths/misc", "+experiment=nope", run_args("+experiment=nope"), must="nope"),
    ]


def all_cases() -> list[Case]:
    return [
        *bad_value_cases(),
        *code_cases(),
        *yaml_cases(),
        *edited_cases(),
        *damaged_cases(),
        *user_env_cases(),
        *memory_cases(),
        *results_cases(),
        *sweep_cases(),
        *misc_cases(),
    ]


# --------------------------------------------------------------------------- running
ROOT: Path = Path()


def case_env(c: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "SDL_VIDEODRIVER": "dummy",
        "DGSOLVE_INDEX": str(c / "index.sqlite"),
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "envs"), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
    }
    env.pop(IMPORT_MARKER, None)
    for key, value in (extra or {}).items():
        env[key] = subst(value, c)
    return env


def subst(text: str, c: Path) -> str:
    return text.replace("{c}", str(c)).replace("{m}", str(c / "pwned"))


def command(tool: str) -> list[str]:
    module = "dgsolve.results.cli" if tool == "results" else "dgsolve.cli"
    return [sys.executable, "-m", module]


def execute(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> dict:
    """Run ``argv``; its status, output and time. A timeout kills the whole process group."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        timed_out = True
    return {
        "rc": None if timed_out else proc.returncode,
        "timed_out": timed_out,
        "seconds": time.perf_counter() - started,
        "stdout": out,
        "stderr": err,
    }


def digest(run_dir: Path) -> dict[str, str | None]:
    """sha256 of each of ``KEPT`` in ``run_dir`` (None: missing or not a regular file)."""
    out: dict[str, str | None] = {}
    for name in KEPT:
        path = run_dir / name
        try:
            regular = stat.S_ISREG(os.lstat(path).st_mode)
        except OSError:
            regular = False
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if regular else None
    return out


def run_case(case: Case, num: int) -> dict:
    """Set up, run and judge one case; the row of the table."""
    c = ROOT / "cases" / f"{num:03d}"
    c.mkdir(parents=True)
    cleanup = None
    row = {"class": case.cls, "case": case.name, "expect": case.expect}
    try:
        cleanup = case.setup(c) if case.setup else None
        before = digest(c / case.keep) if case.keep else None
        argv = command(case.tool) + [subst(a, c) for a in case.args]
        result = execute(argv, c, case_env(c, case.env), CASE_TIMEOUT_S)
    except Exception as err:  # a setup that failed: the case says so, the others go on
        problem = f"setup failed: {type(err).__name__}: {err}"
        row.update(rc=None, lines=0, marker_absent=None, lost=None, seconds=0.0, last="")
        return {**row, "problems": [problem], "verdict": "BAD"}
    finally:
        if cleanup is not None:
            cleanup()
    (c / "stdout.txt").write_text(result["stdout"])  # for --keep
    (c / "stderr.txt").write_text(result["stderr"])
    stderr = [ln for ln in result["stderr"].splitlines() if ln.strip()]
    stdout = [ln for ln in result["stdout"].splitlines() if ln.strip()]
    last = (stderr or stdout or [""])[-1].strip()
    result["last"] = last
    shown = last.replace(str(c), "<case>").replace(str(ROOT), "<tmp>")
    row.update(
        rc=result["rc"],
        lines=len(stderr),
        marker_absent=(not (c / "pwned").exists()) if case.marker else None,
        lost=(digest(c / case.keep) != before) if case.keep else None,
        seconds=round(result["seconds"], 1),
        last=re.sub(r"^dgsolve(-results)?: (error: )?", "", shown),
    )
    row["problems"] = judge(case, c, result, row)
    row["verdict"] = "ok" if not row["problems"] else "BAD"
    return row


def judge(case: Case, c: Path, result: dict, row: dict) -> list[str]:
    """What went against the case's expectations (empty: ok)."""
    problems = []
    expected = case.expect if isinstance(case.expect, tuple) else (case.expect,)
    if result["timed_out"]:
        problems.append(f"hung past {CASE_TIMEOUT_S:.0f} s")
    elif result["rc"] not in expected:
        problems.append(f"exit {result['rc']}")
    if case.lines is not None and row["lines"] != case.lines:
        problems.append(f"{row['lines']} stderr lines")
    refused = result["rc"] not in (0, None) and case.lines == 1
    if refused and not re.match(r"dgsolve(-results)?: error: ", result["last"]):
        problems.append("not a 'dgsolve: error:' line")
    if row["marker_absent"] is False:
        problems.append("PAYLOAD RAN")
    if row["lost"]:
        problems.append("run files changed")
    for rel in case.absent:
        if os.path.lexists(c / rel):
            problems.append(f"left {rel}/")
    text = result["stderr"] + result["stdout"]
    if case.must and not re.search(case.must, text):
        problems.append(f"no /{case.must}/")
    if case.must_not and re.search(case.must_not, text):
        problems.append(f"said /{case.must_not}/")
    if case.check is not None and not result["timed_out"]:
        try:
            problem, row["note"] = case.check(c, result)
        except Exception as err:
            problem = f"check failed: {type(err).__name__}: {err}"
        if problem:
            problems.append(problem)
    return problems


def build_fixtures() -> None:
    """The shared runs: a tiny matrix run and a tiny run on the user's PettingZoo env."""
    (ROOT / "envs").mkdir()
    (ROOT / "envs" / "userenvs.py").write_text(USER_ENVS.lstrip())
    fixtures = ROOT / "fixtures"
    fixtures.mkdir()
    jobs = {
        "trained": [*TINY, *QUIET],
        "pz": [*PZ, "env.factory=userenvs:Good"],
    }

    def train(name: str) -> dict:
        argv = command("dgsolve") + [*jobs[name], f"hydra.run.dir={fixtures / name}"]
        return execute(argv, fixtures, case_env(fixtures), 300)

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(jobs, pool.map(train, jobs), strict=True))
    for name, result in results.items():
        if result["rc"] != 0:
            sys.exit(f"the {name} fixture failed:\n{result['stdout'][-2000:]}{result['stderr']}")
        FIXTURES[name] = fixtures / name


# --------------------------------------------------------------------------- the table
def _cell(value, width: int) -> str:
    text = "-" if value is None else str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _yes(value) -> str | None:
    return None if value is None else ("yes" if value else "NO")


def print_table(rows: list[dict]) -> None:
    columns = [
        ("class", 19),
        ("case", 46),
        ("exit", 4),
        ("want", 5),
        ("lines", 5),
        ("no payload", 10),
        ("lost", 4),
        ("s", 5),
        ("verdict", 60),
    ]
    print(" ".join(f"{name:<{width}}" for name, width in columns))
    print(" ".join("-" * width for _, width in columns))
    for r in rows:
        want = (
            r["expect"] if not isinstance(r["expect"], tuple) else "/".join(map(str, r["expect"]))
        )
        verdict = "ok" if r["verdict"] == "ok" else f"BAD({'; '.join(r['problems'])})"
        values = [
            r["class"],
            r["case"],
            "hang" if r["rc"] is None else r["rc"],
            want,
            r["lines"],
            _yes(r["marker_absent"]),
            None if r["lost"] is None else ("YES" if r["lost"] else "no"),
            f"{r['seconds']:.1f}",
            f"{verdict}: {(r['verdict'] == 'ok' and r.get('note')) or r.get('last', '')}",
        ]
        print(" ".join(f"{_cell(v, w):<{w}}" for v, (_, w) in zip(values, columns, strict=True)))


def print_counts(rows: list[dict], elapsed: float, out=sys.stdout) -> None:
    classes = list(dict.fromkeys(r["class"] for r in rows))
    print(f"\n{'class':<19} {'cases':>5} {'ok':>4} {'BAD':>4}", file=out)
    for name in classes:
        mine = [r for r in rows if r["class"] == name]
        bad = sum(r["verdict"] != "ok" for r in mine)
        print(f"{name:<19} {len(mine):>5} {len(mine) - bad:>4} {bad:>4}", file=out)
    bad = sum(r["verdict"] != "ok" for r in rows)
    print(f"{'all':<19} {len(rows):>5} {len(rows) - bad:>4} {bad:>4}", file=out)
    print(f"\n{len(rows)} cases in {elapsed:.0f} s (fixtures included)", file=out)


def main() -> None:
    global ROOT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON line per case, no table")
    parser.add_argument("-k", help="only the cases whose class or name contain this")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="cases run at once")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--full", action="store_true", help="also the cases in EXTENDED")
    args = parser.parse_args()
    cases = all_cases()
    unknown = EXTENDED - {x.name for x in cases}
    assert not unknown, f"EXTENDED names no case: {sorted(unknown)}"
    if not args.full:
        cases = [x for x in cases if x.name not in EXTENDED]
    if args.k:
        cases = [x for x in cases if args.k.lower() in f"{x.cls} {x.name}".lower()]
    started = time.perf_counter()
    ROOT = Path(tempfile.mkdtemp(prefix="dgsolve-reliability-"))
    lock = threading.Lock()
    try:
        build_fixtures()

        def one(item: tuple[int, Case]) -> dict:
            row = run_case(item[1], item[0])
            if args.json:
                shown = {k: v for k, v in row.items() if k != "expect"}
                with lock:
                    print(json.dumps({**shown, "expect": row["expect"]}), flush=True)
            return row

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            rows = list(pool.map(one, enumerate(cases)))
    finally:
        if args.keep:
            print(f"kept {ROOT}", file=sys.stderr)
        else:
            shutil.rmtree(ROOT, ignore_errors=True)
    if not args.json:
        print_table(rows)
    print_counts(rows, time.perf_counter() - started, sys.stderr if args.json else sys.stdout)


if __name__ == "__main__":
    main()
