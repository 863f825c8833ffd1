"""Read-only access to the event queue and the gallery for the HTTP API.

Each API worker thread opens its own read-only SQLite connections (`mode=ro`): in WAL mode they read a snapshot
beside the daemon's writer and never take its write lock, and nothing here touches the pipeline's objects. So a
flood of API requests costs CPU, but can never make frame processing wait.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edge_mtl.types import EVENT_TYPES

MAX_LIMIT = 1000
_TS_PREFIX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}(:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,3})?)?)?)?Z?")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class QueryError(ValueError):
    """A bad query parameter (HTTP 400)."""


@dataclass
class EventFilter:
    """Which events a query or stream wants (every field optional; all given ones must match)."""

    cameras: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    identity: str | None = None  # a name; "" = unknown (identity null)
    since: str | None = None  # capture time (`ts`) >= since, ISO-8601 prefix
    until: str | None = None  # ts < until

    def sql(self) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if self.cameras:
            where.append(f"json_extract(body, '$.camera') IN ({','.join('?' * len(self.cameras))})")
            args += self.cameras
        if self.types:
            where.append(f"json_extract(body, '$.type') IN ({','.join('?' * len(self.types))})")
            args += self.types
        if self.identity == "":
            where.append("json_extract(body, '$.identity') IS NULL")
        elif self.identity is not None:
            where.append("json_extract(body, '$.identity.name') = ?")
            args.append(self.identity)
        if self.since:
            where.append("json_extract(body, '$.ts') >= ?")
            args.append(self.since)
        if self.until:
            where.append("json_extract(body, '$.ts') < ?")
            args.append(self.until)
        return " AND ".join(where), args

    def matches(self, ev: dict[str, Any]) -> bool:
        if self.cameras and ev.get("camera") not in self.cameras:
            return False
        if self.types and ev.get("type") not in self.types:
            return False
        ident = ev.get("identity")
        if self.identity == "" and ident is not None:
            return False
        if self.identity and (ident is None or ident.get("name") != self.identity):
            return False
        ts = str(ev.get("ts", ""))
        if self.since and ts < self.since:
            return False
        return not (self.until and ts >= self.until)

    @staticmethod
    def parse(q: Any) -> EventFilter:
        """From query parameters (a multidict: `camera` and `type` may repeat or hold comma-separated lists)."""
        def many(name: str) -> tuple[str, ...]:
            vals: list[str] = []
            for v in q.getall(name, []):
                vals += [x for x in str(v).split(",") if x]
            return tuple(vals)

        types = many("type")
        bad = [t for t in types if t not in EVENT_TYPES]
        if bad:
            raise QueryError(f"type: expected one of {list(EVENT_TYPES)}, got {bad[0][:40]!r}")
        since, until = q.get("since"), q.get("until")
        for name, v in (("since", since), ("until", until)):
            if v is not None and not _TS_PREFIX.fullmatch(v):
                raise QueryError(f"{name}: expected ISO-8601 UTC like 2026-11-22T18:00:00Z, got {v[:40]!r}")
        ident = q.get("identity")
        if q.get("unknown") in ("1", "true"):
            ident = ""
        return EventFilter(many("camera"), types, ident, since.rstrip("Z") if since else None,
                           until.rstrip("Z") if until else None)

    def query_string(self) -> str:
        parts = [f"camera={quote(c)}" for c in self.cameras] + [f"type={quote(t)}" for t in self.types]
        if self.identity == "":
            parts.append("unknown=1")
        elif self.identity is not None:
            parts.append(f"identity={quote(self.identity)}")
        parts += [f"since={quote(self.since)}"] if self.since else []
        parts += [f"until={quote(self.until)}"] if self.until else []
        return "&".join(parts)


def int_param(q: Any, name: str, default: int | None, lo: int = 0, hi: int = (1 << 63) - 1) -> int | None:
    v = q.get(name)
    if v is None or v == "":
        return default
    try:
        n = int(v)
    except ValueError:
        raise QueryError(f"{name}: expected an integer, got {str(v)[:40]!r}") from None
    if not lo <= n <= hi:
        raise QueryError(f"{name}: expected {lo}..{hi}, got {n}")
    return n


class ReadStore:
    """Per-thread read-only connections to the queue (and the gallery, when configured)."""

    def __init__(self, queue_db: Path, gallery_db: Path | None) -> None:
        self.queue_db = queue_db
        self.gallery_db = gallery_db
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []

    def _open(self, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False, timeout=5.0)
        with self._lock:
            self._conns.append(conn)
        return conn

    def _queue(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "queue", None)
        if conn is None:
            conn = self._local.queue = self._open(self.queue_db)
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            c.close()

    # -- events --------------------------------------------------------------------------------------------
    def last_seq(self) -> int:
        conn = self._queue()
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def events(self, f: EventFilter, after_seq: int | None = None, before_seq: int | None = None,
               limit: int = 100, descending: bool = False) -> list[dict[str, Any]]:
        where, args = f.sql()
        conds = [where] if where else []
        if after_seq is not None:
            conds.append("seq > ?")
            args.append(after_seq)
        if before_seq is not None:
            conds.append("seq < ?")
            args.append(before_seq)
        sql = "SELECT body FROM events" + (" WHERE " + " AND ".join(conds) if conds else "")
        sql += f" ORDER BY seq {'DESC' if descending else 'ASC'} LIMIT ?"
        rows = self._queue().execute(sql, (*args, limit)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def scan_after(self, after_seq: int, limit: int = 500) -> tuple[list[dict[str, Any]], int]:
        """Every event after `after_seq` (the stream filters in Python, so it can move past what it skips), and the
        last seq assigned, from one snapshot of the queue: when there are no rows but the last seq is higher, the
        events in between were deleted by retention."""
        conn = self._queue()
        conn.execute("BEGIN")
        try:
            rows = conn.execute("SELECT body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                (after_seq, limit)).fetchall()
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        finally:
            conn.execute("COMMIT")
        return [json.loads(r[0]) for r in rows], int(row[0]) if row else 0

    def event(self, ref: str) -> dict[str, Any] | None:
        """One event by seq (digits) or id (UUID)."""
        if ref.isdigit():
            row = self._queue().execute("SELECT body FROM events WHERE seq = ?", (int(ref),)).fetchone()
        elif _UUID.fullmatch(ref):
            row = self._queue().execute("SELECT body FROM events WHERE json_extract(body, '$.id') = ?",
                                        (ref,)).fetchone()
        else:
            raise QueryError(f"event: expected a seq number or an event id (UUID), got {ref[:40]!r}")
        return None if row is None else dict(json.loads(row[0]))

    # -- gallery ---------------------------------------------------------------------------------------------
    def gallery(self) -> list[dict[str, Any]] | None:
        """Enrolled names and how many enrolment embeddings each has (never the embeddings); None without one."""
        if self.gallery_db is None or not self.gallery_db.is_file():
            return None
        conn: sqlite3.Connection | None = getattr(self._local, "gallery", None)
        if conn is None:
            conn = self._local.gallery = self._open(self.gallery_db)
        rows = conn.execute(
            "SELECT p.name, COUNT(e.id), p.created FROM people p LEFT JOIN embeddings e ON e.person_id = p.id "
            "GROUP BY p.id ORDER BY p.name"
        ).fetchall()
        return [{"name": str(r[0]), "enrolments": int(r[1]), "created": round(float(r[2]), 3)} for r in rows]
