"""The results index: one SQLite table of every run, written by many jobs at once.

Where: ``$DGSOLVE_INDEX``, else ``$XDG_DATA_HOME/dgsolve/index.sqlite`` (``~/.local/share/...``),
so ``dgsolve-results`` finds a user's runs from any directory. The database is in WAL mode
(readers never block the writer) and every write is one ``BEGIN IMMEDIATE`` transaction with a
long busy timeout, so the jobs of a parallel sweep (joblib, submitit, Ray) queue for the write
lock instead of losing rows. WAL needs a local file system: on NFS point ``DGSOLVE_INDEX`` at a
local disk. The run directories are the source of truth; :meth:`ResultsIndex.reindex` rebuilds
the index from them.

A row says ``running`` from a run's start until it records how it ended; a process that dies
without a word (SIGKILL, a lost node) never does, so whenever the index is read a ``running`` row
whose run directory's lock no process holds reads ``interrupted`` (and is stored so).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dgsolve import lock
from dgsolve.errors import DGSolveError, RunDirError
from dgsolve.results.record import KILLED, RUNNING, is_run_dir, read_run

SCHEMA_VERSION = 1
COLUMNS = (
    "run_dir",
    "name",
    "task",
    "env",
    "algo",
    "hierarchy",
    "seed",
    "overrides",
    "label",
    "config_key",
    "status",
    "started_at",
    "wall_time_s",
    "env_steps",
    "summary",
    "config",
    "indexed_at",
)
JSON_COLUMNS = ("overrides", "summary", "config")
_CREATE = """
CREATE TABLE IF NOT EXISTS runs (
    run_dir TEXT PRIMARY KEY, name TEXT, task TEXT, env TEXT, algo TEXT, hierarchy TEXT,
    seed INTEGER, overrides TEXT, label TEXT, config_key TEXT, status TEXT, started_at REAL,
    wall_time_s REAL, env_steps REAL, summary TEXT, config TEXT, indexed_at REAL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_algo_env ON runs (algo, env);
"""
BUSY_TIMEOUT_S = 120.0
#: how long a read waits to store the rows it found interrupted (skipped if the lock is busy)
MARK_TIMEOUT_S = 1.0


def index_path() -> Path:
    """``$DGSOLVE_INDEX``, else the per-user data directory's ``dgsolve/index.sqlite``."""
    if os.environ.get("DGSOLVE_INDEX"):
        return Path(os.environ["DGSOLVE_INDEX"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return Path(base) / "dgsolve" / "index.sqlite"


def _is_busy(err: sqlite3.OperationalError) -> bool:
    """SQLite's "database is locked" / "database is busy": another connection holds the lock."""
    text = str(err).lower()
    return "locked" in text or "busy" in text


class ResultsIndexError(DGSolveError):
    """The index file cannot be opened or written (one line for the user, exit 1)."""

    exit_code = 1


class ResultsIndex:
    """The ``runs`` table of one index file."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path).expanduser() if path else index_path()

    def _connect(self) -> sqlite3.Connection:
        """An open connection in WAL mode with the table in place.

        Switching a new file to WAL needs a lock that SQLite does not wait for (its busy
        handler is not called there), so jobs that open a fresh index at the same moment can
        get "database is locked" at once; the set-up is then retried until the busy timeout.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.01
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            except (OSError, sqlite3.Error) as err:
                raise ResultsIndexError(
                    f"cannot open the results index {self.path}: {err}"
                ) from None
            try:
                self._set_up(conn)
                break
            except sqlite3.OperationalError as err:
                conn.close()
                if not _is_busy(err) or time.monotonic() + delay > deadline:
                    raise ResultsIndexError(
                        f"cannot open the results index {self.path}: {err}"
                    ) from None
                time.sleep(delay)
                delay = min(0.5, delay * 2)
            except sqlite3.Error as err:
                conn.close()
                raise ResultsIndexError(
                    f"cannot open the results index {self.path}: {err}"
                ) from None
        conn.row_factory = sqlite3.Row
        return conn

    @staticmethod
    def _set_up(conn: sqlite3.Connection) -> None:
        """WAL mode, and the table and its indexes where the file has not got them yet."""
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _CREATE.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ writes
    def upsert(self, records: Iterable[dict], remove: Iterable[str] = ()) -> int:
        """Insert or replace ``records`` and delete the rows of ``remove``, in one transaction."""
        rows = [_row(r) for r in records]
        gone = list(remove)
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})",
                rows,
            )
            conn.executemany("DELETE FROM runs WHERE run_dir = ?", [(g,) for g in gone])
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise ResultsIndexError(f"cannot write the results index {self.path}: {err}") from None
        finally:
            conn.close()
        return len(rows)

    def reindex(self, roots: Iterable[Path | str] = ()) -> dict[str, Any]:
        """Re-read every indexed run directory and every run under ``roots``; rows whose
        directory no longer holds a run are dropped, and so are directories whose files are
        hostile or damaged (:func:`~dgsolve.results.record.read_run` refuses them). Returns
        the counts (``indexed``, ``new``, ``removed``) and ``skipped``: ``{"run_dir",
        "reason"}`` for each directory refused."""
        known = [r["run_dir"] for r in self.runs()]
        found: dict[str, dict] = {}
        skipped: dict[str, str] = {}

        def read(run_dir: Path | str) -> dict | None:
            try:
                return read_run(run_dir)
            except RunDirError as err:
                skipped[str(run_dir)] = str(err)
                return None

        for root in roots:
            for run_dir in find_run_dirs(Path(root)):
                rec = read(run_dir)
                if rec is not None:
                    found[rec["run_dir"]] = rec
        gone = []
        for run_dir in known:
            if run_dir in found:
                continue
            rec = read(run_dir) if run_dir not in skipped and Path(run_dir).is_dir() else None
            if rec is None:
                gone.append(run_dir)
            else:
                found[run_dir] = rec
        self.upsert(found.values(), remove=gone)
        return {
            "indexed": len(found),
            "removed": len([g for g in gone if g not in skipped]),
            "new": len(set(found) - set(known)),
            "skipped": [{"run_dir": d, "reason": skipped[d]} for d in sorted(skipped)],
        }

    # ------------------------------------------------------------------ reads
    def runs(
        self,
        algo: str | None = None,
        env: str | None = None,
        task: str | None = None,
        status: str | None = None,
        since: float | None = None,
    ) -> list[dict]:
        """Rows matching every filter given, oldest first; a ``running`` row whose run no
        process holds any more reads ``interrupted`` (the ``status`` filter sees that word)."""
        where, args = [], []
        for column, value in (("algo", algo), ("env", env), ("task", task)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if status:  # a stored `running` may read `interrupted`: decided below
            where.append("status IN (?, ?)")
            args += [status, RUNNING]
        if since is not None:
            where.append("started_at >= ?")
            args.append(since)
        sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "")
        if not self.path.exists():
            return []
        conn = self._connect()
        try:
            rows = conn.execute(sql + " ORDER BY started_at, run_dir", args).fetchall()
            out = [_record(r) for r in rows]
            dead = [r for r in out if r["status"] == RUNNING and not lock.is_held(r["run_dir"])]
            if dead:
                _store_killed(conn, dead)
                for r in dead:
                    r["status"] = KILLED
        except sqlite3.Error as err:
            raise ResultsIndexError(f"cannot read the results index {self.path}: {err}") from None
        finally:
            conn.close()
        return [r for r in out if not status or r["status"] == status]


def _store_killed(conn: sqlite3.Connection, rows: list[dict]) -> None:
    """Store ``rows`` (read as ``running``, their lock free) as ``interrupted``, where the index
    can be written within :data:`MARK_TIMEOUT_S`; a row rewritten since it was read (a
    ``resume=`` has started) is left as it is. Readers show the right word either way."""
    conn.execute(f"PRAGMA busy_timeout = {int(MARK_TIMEOUT_S * 1000)}")
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "UPDATE runs SET status = ? WHERE run_dir = ? AND status = ? AND indexed_at = ?",
            [(KILLED, r["run_dir"], RUNNING, r["indexed_at"]) for r in rows],
        )
        conn.execute("COMMIT")
    except sqlite3.Error:  # busy, or an index this user may only read
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def find_run_dirs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (``root`` itself included). Symbolic links to
    directories are not followed (a link loop cannot make the walk endless), and directories
    that cannot be listed are passed over."""
    root = root.expanduser().resolve()
    if not root.is_dir():
        return []
    out = []
    for dirpath, dirnames, _files in os.walk(root, followlinks=False):
        path = Path(dirpath)
        dirnames[:] = [d for d in dirnames if d not in (".hydra", "tb", "checkpoints", "wandb")]
        if is_run_dir(path):
            out.append(path)
    return sorted(out)


def record_run(
    run_dir: Path | str, fallback: str | None = None, overrides: list[str] | None = None
) -> None:
    """Record ``run_dir`` in the index (``fallback``: its status where its summary does not say
    how it ended); a failure is one warning line, never a failed run."""
    try:
        rec = read_run(run_dir, fallback, overrides)
        if rec is not None:
            ResultsIndex().upsert([rec])
    except Exception as err:  # the run's own files are what matters; the index can be rebuilt
        print(
            f"dgsolve: warning: the run was not recorded in the results index ({err}); "
            "`dgsolve-results reindex <dir>` adds it later",
            file=sys.stderr,
        )


def _row(record: dict) -> tuple:
    values = {**record, "indexed_at": time.time()}
    return tuple(
        json.dumps(values.get(c), default=str) if c in JSON_COLUMNS else values.get(c)
        for c in COLUMNS
    )


def _record(row: sqlite3.Row) -> dict:
    out = dict(row)
    for column in JSON_COLUMNS:
        try:
            out[column] = json.loads(out[column]) if out[column] else None
        except ValueError:
            out[column] = None
    return out
