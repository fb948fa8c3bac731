"""The SQLite state: per run its checkpoint and watch entry, and the ids of emitted messages.

WAL mode, ``synchronous=NORMAL``: a commit survives a crash of the process (not necessarily a
power cut between checkpoints — the only cost of that is events sent again with their old ids).
Checkpoints are written only after every sink acknowledged the events before them, so a restart
resumes exactly where delivery ended.

Tables::

    meta(key PK, value)        -- schema_version; sent_requests: the last process's request window
    runs(run_id PK, checkpoint JSON, source, watched, added_at)
    seen(run_id, message_id, digest, PK(run_id, message_id))   -- emitted messages, no bodies
    outbox(run_id PK, checkpoint, seen, events)                -- handed to sinks, not yet acked
    forgotten(run_id PK, created_at, updated_at)               -- discovered runs retired long ago

The outbox closes the gap between "handed to the sinks" and "acknowledged": a poll's events and
the checkpoint they lead to are staged *before* publishing, and removed in the same transaction
that commits the checkpoint after the acknowledgement. After a crash in between, the daemon
publishes the staged events again (same ids) before polling that run, so what the sinks saw and
what the checkpoint says never drift apart, even when the run moved on while the daemon was down.

A file that is empty, truncated or not a database is moved aside (``.corrupt-<time>``) and the
rows that can still be read are carried into a fresh one; a run whose checkpoint cannot be read
starts afresh (its events come again, with the same ids). Never a crash loop.

Discovered runs that retired are forgotten ``polling.forget_after`` later (see watchlist.py):
their rows in ``runs``, ``seen`` and ``outbox`` go, and a small ``forgotten`` row (the run's
creation time and last ``updated_at``) stays only while discovery could list the run again, so
that it is not discovered twice; then that row goes too. A long-running daemon with discovery
on keeps rows for the runs of the discovery window, not for every run it ever saw.

All calls run in one worker thread (SQLite objects stay on it), so the event loop never blocks.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import orjson
import structlog

from duvo_monitor.differ import Checkpoint
from duvo_monitor.errors import StateError

log = structlog.get_logger("duvo_monitor.state")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    checkpoint BLOB,
    source TEXT NOT NULL DEFAULT 'config',
    watched INTEGER NOT NULL DEFAULT 1,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    run_id TEXT PRIMARY KEY,
    checkpoint BLOB NOT NULL,
    seen BLOB NOT NULL,
    events BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS forgotten (
    run_id TEXT PRIMARY KEY,
    created_at REAL,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS seen (
    run_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (run_id, message_id)
) WITHOUT ROWID;
"""
SCHEMA_VERSION = "1"
SENT_KEY = "sent_requests"  # the request window of the last process (Budget.history)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRun:
    run_id: str
    checkpoint: Checkpoint
    source: str
    watched: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Forgotten:
    """A run forgotten after it retired: enough to tell it from a new run when listed again."""

    run_id: str
    created_at: float | None
    updated_at: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit:
    checkpoint: Checkpoint
    seen: Sequence[tuple[str, str]] = ()


class StateStore:
    def __init__(self, path: Path, conn: sqlite3.Connection, limiter: anyio.CapacityLimiter):
        self.path = path
        self._conn = conn
        self._limiter = limiter
        self.recovered: list[str] = []

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path) -> StateStore:
        limiter = anyio.CapacityLimiter(1)
        target = Path(path)
        conn, notes = await anyio.to_thread.run_sync(_open_or_recover, target, limiter=limiter)
        store = cls(target, conn, limiter)
        store.recovered = notes
        for note in notes:
            log.warning("state file recovered", path=str(target), detail=note)
        return store

    async def _run(self, fn: object, *args: object) -> object:
        def call() -> object:
            try:
                return fn(self._conn, *args)  # type: ignore[operator]
            except sqlite3.Error as exc:
                raise StateError(f"state store at {self.path}: {exc}") from exc

        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    async def close(self) -> None:
        def close() -> None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(close, limiter=self._limiter)

    # -- reading -----------------------------------------------------------------------------

    async def load(self) -> list[StoredRun]:
        result = await self._run(_load)
        assert isinstance(result, list)
        return result

    async def known(self, run_id: str, message_ids: Sequence[str]) -> dict[str, str]:
        if not message_ids:
            return {}
        result = await self._run(_known, run_id, list(message_ids))
        assert isinstance(result, dict)
        return result

    async def sent_requests(self) -> list[tuple[float, int]]:
        """What the last process saved of its request window (``Budget.history``); nothing
        for a state file without it or with a value that does not read as one (a warning)."""
        text = await self._run(_meta, SENT_KEY)
        if text is None:
            return []
        try:
            value = orjson.loads(str(text))
            return [(float(at), int(count)) for at, count in value]
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            log.warning("saved request window unreadable; not counted", detail=str(exc))
            return []

    # -- writing -----------------------------------------------------------------------------

    async def save_sent_requests(self, history: Sequence[tuple[float, int]]) -> None:
        """Save the request window (``Budget.history``) for the next process."""
        await self._run(_set_meta, SENT_KEY, orjson.dumps(list(history)).decode())

    async def commit(self, commits: Sequence[Commit]) -> None:
        """Write checkpoints and emitted message ids, all in one transaction."""
        if commits:
            await self._run(_commit, list(commits))

    async def stage(self, commit: Commit, lines: Sequence[bytes]) -> None:
        """Remember events handed to the sinks and the checkpoint they lead to."""
        await self._run(_stage, commit, list(lines))

    async def staged(self) -> list[tuple[Commit, list[bytes]]]:
        """What was handed to the sinks but never acknowledged (after a crash)."""
        result = await self._run(_staged)
        assert isinstance(result, list)
        return result

    async def watch(self, run_ids: Iterable[str], *, source: str) -> None:
        await self._run(_watch, list(run_ids), source, True)

    async def unwatch(self, run_ids: Iterable[str]) -> None:
        await self._run(_watch, list(run_ids), "", False)

    async def forget(self, runs: Sequence[Forgotten]) -> None:
        """Drop every row of these runs, keeping only their ``forgotten`` entries."""
        if runs:
            await self._run(_forget, list(runs))

    async def forgotten(self) -> list[Forgotten]:
        result = await self._run(_forgotten)
        assert isinstance(result, list)
        return result

    async def unforget(self, run_ids: Iterable[str]) -> None:
        """Drop these runs' ``forgotten`` entries (past the discovery window, or watched again)."""
        ids = list(run_ids)
        if ids:
            await self._run(_unforget, ids)


def _meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.executescript(SCHEMA)
    conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
    )
    return conn


def _open_or_recover(path: Path) -> tuple[sqlite3.Connection, list[str]]:
    notes: list[str] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = _connect(path)
        ok = conn.execute("PRAGMA quick_check").fetchone()
        if ok and ok[0] == "ok":
            return conn, notes
        notes.append(f"integrity check failed: {ok[0] if ok else 'no answer'}")
        conn.close()
    except sqlite3.DatabaseError as exc:
        notes.append(f"not a usable database: {exc}")
    salvaged = _salvage(path)
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            src.replace(Path(str(aside) + suffix))
    notes.append(f"moved the damaged file to {aside.name}; kept {len(salvaged)} run(s)")
    conn = _connect(path)
    with conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT OR REPLACE INTO runs(run_id, checkpoint, source, watched, added_at) "
            "VALUES (?, ?, ?, ?, ?)",
            salvaged,
        )
        conn.execute("COMMIT")
    return conn, notes


def _salvage(path: Path) -> list[tuple[str, bytes | None, str, int, float]]:
    """Whatever rows of ``runs`` can still be read from a damaged file."""
    rows: list[tuple[str, bytes | None, str, int, float]] = []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return rows
    try:
        cursor = conn.execute("SELECT run_id, checkpoint, source, watched, added_at FROM runs")
        while True:
            try:
                row = cursor.fetchone()
            except sqlite3.Error:
                break
            if row is None:
                break
            rows.append(row)
    except sqlite3.Error:
        pass
    finally:
        conn.close()
    return rows


def _load(conn: sqlite3.Connection) -> list[StoredRun]:
    out: list[StoredRun] = []
    bad: list[str] = []
    for run_id, raw, source, watched in conn.execute(
        "SELECT run_id, checkpoint, source, watched FROM runs"
    ):
        checkpoint = Checkpoint(run_id=run_id)
        if raw is not None:
            try:
                checkpoint = Checkpoint.from_json(raw)
            except ValueError as exc:
                bad.append(run_id)
                log.warning(
                    "checkpoint unreadable; the run starts afresh", run_id=run_id, error=str(exc)
                )
        out.append(
            StoredRun(run_id=run_id, checkpoint=checkpoint, source=source, watched=bool(watched))
        )
    return out


def _known(conn: sqlite3.Connection, run_id: str, ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for message_id, digest in conn.execute(
            f"SELECT message_id, digest FROM seen WHERE run_id = ? AND message_id IN ({marks})",
            [run_id, *chunk],
        ):
            found[message_id] = digest
    return found


def _commit(conn: sqlite3.Connection, commits: list[Commit]) -> None:
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        for c in commits:
            cp = c.checkpoint
            conn.execute(
                "INSERT INTO runs(run_id, checkpoint, source, watched, added_at) "
                "VALUES (?, ?, 'config', 1, ?) "
                "ON CONFLICT(run_id) DO UPDATE SET checkpoint = excluded.checkpoint",
                (cp.run_id, cp.to_json(), now),
            )
            if c.seen:
                conn.executemany(
                    "INSERT OR REPLACE INTO seen(run_id, message_id, digest) VALUES (?, ?, ?)",
                    [(cp.run_id, mid, digest) for mid, digest in c.seen],
                )
            conn.execute("DELETE FROM outbox WHERE run_id = ?", (cp.run_id,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _stage(conn: sqlite3.Connection, commit: Commit, lines: list[bytes]) -> None:
    cp = commit.checkpoint
    conn.execute(
        "INSERT OR REPLACE INTO outbox(run_id, checkpoint, seen, events) VALUES (?, ?, ?, ?)",
        (cp.run_id, cp.to_json(), orjson.dumps(list(commit.seen)), b"".join(lines)),
    )


def _staged(conn: sqlite3.Connection) -> list[tuple[Commit, list[bytes]]]:
    out: list[tuple[Commit, list[bytes]]] = []
    for run_id, raw_cp, raw_seen, raw_events in conn.execute(
        "SELECT run_id, checkpoint, seen, events FROM outbox"
    ):
        try:
            checkpoint = Checkpoint.from_json(raw_cp)
            seen = [(str(m), str(d)) for m, d in orjson.loads(raw_seen)]
            lines = [line + b"\n" for line in bytes(raw_events).split(b"\n") if line.strip()]
        except (ValueError, TypeError) as exc:
            log.warning("staged events unreadable; dropped", run_id=run_id, error=str(exc))
            conn.execute("DELETE FROM outbox WHERE run_id = ?", (run_id,))
            continue
        out.append((Commit(checkpoint=checkpoint, seen=seen), lines))
    return out


def _watch(conn: sqlite3.Connection, run_ids: list[str], source: str, watched: bool) -> None:
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        for run_id in run_ids:
            if watched:
                conn.execute(
                    "INSERT INTO runs(run_id, checkpoint, source, watched, added_at) "
                    "VALUES (?, NULL, ?, 1, ?) "
                    "ON CONFLICT(run_id) DO UPDATE SET watched = 1, source = excluded.source",
                    (run_id, source, now),
                )
            else:
                conn.execute("UPDATE runs SET watched = 0 WHERE run_id = ?", (run_id,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _forget(conn: sqlite3.Connection, runs: list[Forgotten]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for run in runs:
            for table in ("runs", "seen", "outbox"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run.run_id,))
            conn.execute(
                "INSERT OR REPLACE INTO forgotten(run_id, created_at, updated_at) VALUES (?, ?, ?)",
                (run.run_id, run.created_at, run.updated_at),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _forgotten(conn: sqlite3.Connection) -> list[Forgotten]:
    return [
        Forgotten(run_id=run_id, created_at=created_at, updated_at=updated_at)
        for run_id, created_at, updated_at in conn.execute(
            "SELECT run_id, created_at, updated_at FROM forgotten"
        )
    ]


def _unforget(conn: sqlite3.Connection, run_ids: list[str]) -> None:
    conn.executemany("DELETE FROM forgotten WHERE run_id = ?", [(r,) for r in run_ids])
