"""The durable event queue: SQLite in WAL mode with a monotonically increasing `seq` (docs/events.md).

Durability: `synchronous=FULL`, so once `append()` returns the events survive a process crash *and* a power
cut (NORMAL would only survive the former in WAL mode; events are rare, so an fsync per commit is cheap).
`seq` is an `INTEGER PRIMARY KEY AUTOINCREMENT`: SQLite never hands out a number twice, even after every row
was pruned, so a consumer's "last seq I processed" stays meaningful forever.

Consumers (JSONL log, forwarders, `events tail`) read from a seq and commit their progress as a named cursor in
the same database (at-least-once delivery). Retention is by age and by count; it wins over cursors (an edge box
must never fill its disk because a forwarder's broker is gone for good), and a warning names every consumer
that loses events it has not read.

Threads: each thread gets its own SQLite connection (WAL lets readers run beside the single writer); writes
take the database's write lock with `BEGIN IMMEDIATE` and wait up to `busy_timeout_s` for it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_mtl.errors import InputError
from edge_mtl.events.schema import encode_event
from edge_mtl.types import Event

log = logging.getLogger(__name__)

#: PRAGMA application_id of an edge-mtl event queue ("EMTQ"): tells our databases from any other SQLite file.
APPLICATION_ID = 0x454D5451
#: PRAGMA user_version: the table layout below.
SCHEMA_VERSION = 1

_DDL = (
    "CREATE TABLE events ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " stored_at REAL NOT NULL,"  # wall-clock time of the append (retention by age)
    " body TEXT NOT NULL)",  # the encoded event (schema edge_mtl.event/v1), including its seq
    "CREATE INDEX events_stored_at ON events(stored_at)",
    "CREATE TABLE cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated_at REAL NOT NULL)",
)


class EventQueue:
    """Durable, ordered event store shared by one appender and any number of readers (threads or processes).

    `create=False` opens an existing queue only, and raises InputError if `path` is missing or is not an
    edge-mtl event queue. Files are created owner-only (0600); SQLite gives the -wal/-shm files the same mode.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._busy_ms = int(busy_timeout_s * 1000)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder, not an event queue")
        if not create:
            if not self.path.is_file():
                raise InputError(f"{self.path}: no such event queue")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as e:
                raise InputError(f"{self.path}: cannot create event queue: {e.strerror}") from None
            os.close(fd)
        self._setup(create)

    # -- connections -----------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """A new connection in autocommit mode (transactions are explicit BEGIN IMMEDIATE ... COMMIT)."""
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise InputError(f"{self.path}: cannot open event queue: {e}") from None
        conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        if self._closed:
            raise ValueError(f"{self.path}: event queue is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            with self._lock:
                self._conns.append(conn)
            self._local.conn = conn
        return conn

    def _setup(self, create: bool) -> None:
        """Check that the file is our queue (or an empty file we may initialise) and create the tables."""
        conn = self._connect()
        try:
            try:
                # IMMEDIATE serialises two processes creating the same queue; a reader only needs a snapshot
                conn.execute("BEGIN IMMEDIATE" if create else "BEGIN")
                app = conn.execute("PRAGMA application_id").fetchone()[0]
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if app == APPLICATION_ID:
                    if version > SCHEMA_VERSION:
                        raise InputError(
                            f"{self.path}: event queue layout v{version} is newer than this edge-mtl "
                            f"(v{SCHEMA_VERSION})"
                        )
                elif app != 0 or tables:
                    raise InputError(f"{self.path}: not an edge-mtl event queue")
                elif not create:
                    raise InputError(f"{self.path}: not an edge-mtl event queue (empty file)")
                else:
                    for stmt in _DDL:
                        conn.execute(stmt)
                    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    log.info("created event queue %s", self.path)
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as e:
                if "not a database" in str(e):
                    raise InputError(f"{self.path}: not an edge-mtl event queue ({e})") from None
                raise InputError(f"{self.path}: cannot use the event queue: {e}") from None
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise InputError(f"{self.path}: cannot switch the event queue to WAL mode (got {mode})")
        finally:
            conn.close()
        self._conn()

    def close(self) -> None:
        """Close every thread's connection. Call it when no other thread is using the queue any more."""
        with self._lock:
            conns, self._conns = self._conns, []
            self._closed = True
        for c in conns:
            c.close()

    def __enter__(self) -> EventQueue:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------------------

    @staticmethod
    def _last_seq(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        top = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
        return max(int(row[0]) if row else 0, int(top or 0))

    def append(self, events: Sequence[Event]) -> list[int]:
        """Store `events` in one transaction, durably; assigns and returns their seqs (ascending, contiguous).

        Each event is validated against the schema first: a bad event fails the whole batch with ValueError and
        nothing is stored (the events' `seq` is restored).
        """
        batch = list(events)
        for ev in batch:
            if not isinstance(ev, Event):
                raise ValueError(f"append: expected Event objects, got {type(ev).__name__}")
        if not batch:
            return []
        conn = self._conn()
        old = [ev.seq for ev in batch]
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            base = self._last_seq(conn)
            rows = []
            for i, ev in enumerate(batch):
                ev.seq = base + 1 + i
                rows.append((ev.seq, now, encode_event(ev)))
            conn.executemany("INSERT INTO events (seq, stored_at, body) VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            for ev, s in zip(batch, old, strict=True):
                ev.seq = s
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return [base + 1 + i for i in range(len(batch))]

    # -- reading ---------------------------------------------------------------------------------------------

    def read_raw(self, from_seq: int = 1, limit: int = 1000) -> list[tuple[int, str]]:
        """(seq, encoded event) for events with seq >= from_seq, ascending, at most `limit` of them."""
        if isinstance(from_seq, bool) or not isinstance(from_seq, int):
            raise ValueError(f"read: from_seq must be an integer, got {from_seq!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"read: limit must be a positive integer, got {limit!r}")
        rows = (
            self._conn()
            .execute("SELECT seq, body FROM events WHERE seq >= ? ORDER BY seq LIMIT ?", (max(from_seq, 0), limit))
            .fetchall()
        )
        return [(int(s), str(b)) for s, b in rows]

    def read(self, from_seq: int = 1, limit: int = 1000) -> list[dict[str, Any]]:
        """Events (as schema dicts) with seq >= from_seq, ascending, at most `limit` of them."""
        return [json.loads(body) for _, body in self.read_raw(from_seq, limit)]

    def last_seq(self) -> int:
        """The highest seq ever assigned (0 for a new queue); unchanged by pruning."""
        return self._last_seq(self._conn())

    def first_seq(self) -> int:
        """The lowest seq still stored; `last_seq() + 1` when the queue is empty (nothing stored below it)."""
        conn = self._conn()
        conn.execute("BEGIN")  # both reads from one snapshot
        try:
            low = conn.execute("SELECT min(seq) FROM events").fetchone()[0]
            return int(low) if low is not None else self._last_seq(conn) + 1
        finally:
            conn.execute("COMMIT")

    def count(self) -> int:
        """Events stored now."""
        return int(self._conn().execute("SELECT count(*) FROM events").fetchone()[0])

    # -- consumer cursors ------------------------------------------------------------------------------------

    @staticmethod
    def _check_name(name: str) -> None:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValueError(f"cursor name must be a non-empty string of at most 200 characters, got {name!r}")

    def get_cursor(self, name: str) -> int:
        """The last seq consumer `name` committed as processed (0: nothing yet)."""
        self._check_name(name)
        row = self._conn().execute("SELECT seq FROM cursors WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def set_cursor(self, name: str, seq: int) -> None:
        """Commit that consumer `name` has processed every event up to and including `seq` (durable)."""
        self._check_name(name)
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError(f"set_cursor: seq must be a non-negative integer, got {seq!r}")
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            last = self._last_seq(conn)
            if seq > last:
                raise ValueError(f"set_cursor: seq {seq} is beyond the last event {last} of {self.path}")
            conn.execute(
                "INSERT INTO cursors (name, seq, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
                (name, seq, time.time()),
            )
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def cursors(self) -> dict[str, int]:
        """Every registered consumer and its committed seq."""
        return {str(n): int(s) for n, s in self._conn().execute("SELECT name, seq FROM cursors ORDER BY name")}

    def delete_cursor(self, name: str) -> bool:
        """Forget a consumer (e.g. a forwarder removed from the config); True if it existed."""
        self._check_name(name)
        conn = self._conn()
        cur = conn.execute("DELETE FROM cursors WHERE name = ?", (name,))
        return cur.rowcount > 0

    # -- retention -------------------------------------------------------------------------------------------

    def prune(self, max_age_s: float | None, max_events: int | None) -> int:
        """Delete events stored more than `max_age_s` ago and all but the newest `max_events`; returns how many.

        Retention wins over cursors: a consumer that has not read the deleted events loses them, and a warning
        says which consumer lost how many. `seq` numbers are never reused afterwards.
        """
        if max_age_s is not None and (not math.isfinite(max_age_s) or max_age_s < 0):
            raise ValueError(f"prune: max_age_s must be a non-negative number, got {max_age_s!r}")
        if max_events is not None and (
            isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 0
        ):
            raise ValueError(f"prune: max_events must be a non-negative integer, got {max_events!r}")
        if max_age_s is None and max_events is None:
            return 0
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cutoff = time.time() - max_age_s if max_age_s is not None else -math.inf
            upto = 0
            if max_events is not None:
                row = conn.execute(
                    "SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?", (max_events,)
                ).fetchone()
                upto = int(row[0]) if row else 0
            where = "(stored_at < ? OR seq <= ?)"
            for name, cseq in conn.execute("SELECT name, seq FROM cursors").fetchall():
                lost = conn.execute(f"SELECT count(*) FROM events WHERE seq > ? AND {where}", (cseq, cutoff, upto))
                n_lost = int(lost.fetchone()[0])
                if n_lost:
                    log.warning(
                        "retention deletes %d event(s) consumer %r has not read yet (its cursor is at seq %d)",
                        n_lost,
                        name,
                        cseq,
                    )
            deleted = conn.execute(f"DELETE FROM events WHERE {where}", (cutoff, upto)).rowcount
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        if deleted:
            log.info("pruned %d event(s) from %s", deleted, self.path)
        return int(deleted)
