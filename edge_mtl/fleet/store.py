"""The central store: every box's events in PostgreSQL (psycopg 3), written idempotently on the event id.

Layout (schema `edge_mtl` unless configured otherwise):

* `events`: one row per event, `id` (the event's UUID) the primary key, so a redelivered event is a no-op
  (`INSERT ... ON CONFLICT (id) DO NOTHING`). The fields dashboards filter on are columns (capture time `ts`,
  `site`, `box`, `camera`, `type`, `identity`); the whole event is kept as `body` (jsonb) too. Indexes serve time
  ranges (`ts`), one camera of one box (`box, camera, ts`), a site (`site, ts`), a person (`identity, ts`) and an
  event type (`type, ts`).
* `boxes`: per box, the highest `seq` stored, the capture time of that event, when it arrived and how many
  events were stored: the high-water marks a dashboard shows, and where the collector's lag comes from.
* `gaps`: per named box, the ranges of `seq` never stored below its highest (a box's queue numbers its events
  without holes): found when a batch jumps past the box's last `seq` (from 1 for a box seen for the first time),
  narrowed or removed in the same transaction as the events that fill them (a resend, an import). The collector
  asks the box to resend each one (automatic backfill, docs/fleet.md) and marks it `given_up` when nothing comes
  (`reason` 'no answer') or when the box answers that it no longer holds those events ('not on the box').

Retention deletes events by capture time, in chunks, so a large delete never holds the writer up for long.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edge_mtl.errors import InputError, MissingExtraError

if TYPE_CHECKING:
    from edge_mtl.fleet.config import CollectorDatabase

log = logging.getLogger(__name__)

#: Advisory lock key: collectors starting together create the tables one at a time.
_DDL_LOCK = 0x454D544C

_DDL = (
    "CREATE SCHEMA IF NOT EXISTS {s}",
    "CREATE TABLE IF NOT EXISTS {s}.events ("
    " id uuid PRIMARY KEY,"
    " site text,"
    " box text NOT NULL,"
    " camera text NOT NULL,"
    " seq bigint NOT NULL,"
    " type text NOT NULL,"
    " ts timestamptz NOT NULL,"
    " track_id text NOT NULL,"
    " frame bigint NOT NULL,"
    " identity text,"
    " similarity real,"
    " age_years real,"
    " gender text,"
    " quality real,"
    " duration_s real,"
    " body jsonb NOT NULL,"
    " received_at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS events_ts ON {s}.events (ts)",
    "CREATE INDEX IF NOT EXISTS events_box_camera_ts ON {s}.events (box, camera, ts)",
    "CREATE INDEX IF NOT EXISTS events_site_ts ON {s}.events (site, ts)",
    "CREATE INDEX IF NOT EXISTS events_identity_ts ON {s}.events (identity, ts) WHERE identity IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS events_type_ts ON {s}.events (type, ts)",
    "CREATE INDEX IF NOT EXISTS events_box_seq ON {s}.events (box, seq)",
    "CREATE TABLE IF NOT EXISTS {s}.boxes ("
    " box text PRIMARY KEY,"
    " site text,"
    " last_seq bigint NOT NULL,"
    " last_ts timestamptz NOT NULL,"
    " last_received timestamptz NOT NULL,"
    " events bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {s}.gaps ("
    " box text NOT NULL,"
    " site text,"
    " from_seq bigint NOT NULL,"
    " to_seq bigint NOT NULL,"
    " found_at timestamptz NOT NULL DEFAULT now(),"
    " progress_at timestamptz NOT NULL DEFAULT now(),"
    " next_request timestamptz NOT NULL,"
    " requests integer NOT NULL DEFAULT 0,"
    " given_up boolean NOT NULL DEFAULT false,"
    " PRIMARY KEY (box, from_seq))",
    # why a gap was given up: 'no answer' (backfill_give_up_s passed) or 'not on the box' (the box said so)
    "ALTER TABLE {s}.gaps ADD COLUMN IF NOT EXISTS reason text",
)

_COLUMNS = (
    ("id", "uuid"), ("site", "text"), ("box", "text"), ("camera", "text"), ("seq", "bigint"), ("type", "text"),
    ("ts", "timestamptz"), ("track_id", "text"), ("frame", "bigint"), ("identity", "text"), ("similarity", "real"),
    ("age_years", "real"), ("gender", "text"), ("quality", "real"), ("duration_s", "real"), ("body", "jsonb"),
)


def import_psycopg() -> Any:
    """psycopg 3, imported only by the collector (the `fleet` extra)."""
    try:
        import psycopg
    except ImportError:
        raise MissingExtraError("psycopg", "fleet") from None
    return psycopg


def read_db_password(db: CollectorDatabase) -> str | None:
    """The database password from `password_file` (None without one); InputError when it cannot be read."""
    if db.password_file is None:
        return None
    try:
        return db.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{db.password_file}: cannot read the database password: {e}") from None


def db_error_text(e: BaseException) -> str:
    """A database error as one log or error line (psycopg's messages span lines), at most 300 characters."""
    return " ".join(str(e).split())[:300] or type(e).__name__


def open_store(db: CollectorDatabase, password: str | None, application: str) -> EventStore:
    """A connection to the central database with the tables created (psycopg's errors pass through)."""
    psycopg = import_psycopg()
    kwargs: dict[str, Any] = {"connect_timeout": db.connect_timeout_s, "application_name": application}
    if password is not None:
        kwargs["password"] = password
    conn = psycopg.connect(db.dsn, **kwargs)
    try:
        store = EventStore(conn, db.db_schema)
        store.create()
    except BaseException:
        conn.close()
        raise
    return store


def ts_epoch(ts: str) -> float:
    """Seconds since the epoch of a schema `ts` ("2026-11-22T18:00:00.123Z", already validated)."""
    whole, _, frac = ts.rstrip("Z").partition(".")
    base = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return base + (float("0." + frac) if frac else 0.0)


@dataclass
class Gap:
    """Events `from_seq`..`to_seq` of a box, never stored."""

    box: str
    site: str | None
    from_seq: int
    to_seq: int
    requests: int = 0
    stalled_s: float = 0.0  # seconds since it was found or last narrowed


def holes(lo: int, hi: int, present: Sequence[int]) -> list[tuple[int, int]]:
    """The ranges of lo..hi that `present` (ascending, may hold numbers outside lo..hi) leaves out."""
    out, nxt = [], lo
    for x in present:
        if x > hi:
            break
        if x > nxt:
            out.append((nxt, x - 1))
        nxt = max(nxt, x + 1)
    if nxt <= hi:
        out.append((nxt, hi))
    return out


@dataclass
class BoxMark:
    """What one stored batch says about one box."""

    site: str | None
    last_seq: int
    last_ts: str
    stored: int


def event_row(ev: dict[str, Any], body: str) -> tuple[Any, ...]:
    """The `events` columns of a validated event (`decode_event`'s dict) and its JSON text."""
    ident, age, gender = ev["identity"], ev["age"], ev["gender"]
    return (
        uuid.UUID(ev["id"]), ev.get("site"), ev.get("box") or "", ev["camera"], ev["seq"], ev["type"], ev["ts"],
        ev["track_id"], ev["frame"], ident["name"] if ident else None, ident["similarity"] if ident else None,
        age["years"] if age else None, gender["label"] if gender else None, ev["quality"], ev["duration_s"], body,
    )


class EventStore:
    """One connection to the central database; `insert` is one transaction (all of a batch or nothing)."""

    def __init__(self, conn: Any, schema: str, gap_grace_s: float = 10.0) -> None:
        self.psycopg = import_psycopg()
        #: a gap found now is first asked for this much later: events in flight, or delivered out of order,
        #: fill it meanwhile
        self.gap_grace_s = float(gap_grace_s)
        from psycopg import sql

        self.conn = conn
        s = sql.Identifier(schema)
        self._s = s
        self._ddl = [sql.SQL(stmt).format(s=s) for stmt in _DDL]
        cols = sql.SQL(", ").join(sql.Identifier(c) for c, _ in _COLUMNS)
        arrays = sql.SQL(", ").join(sql.SQL("%s::" + t + "[]") for _, t in _COLUMNS)
        self._insert = sql.SQL(
            "INSERT INTO {s}.events ({cols}) SELECT * FROM unnest({arrays}) ON CONFLICT (id) DO NOTHING "
            "RETURNING box, seq"
        ).format(s=s, cols=cols, arrays=arrays)
        self._boxes = sql.SQL(
            "INSERT INTO {s}.boxes AS b (box, site, last_seq, last_ts, last_received, events) "
            "VALUES (%s, %s, %s, %s, now(), %s) ON CONFLICT (box) DO UPDATE SET site = excluded.site, "
            "last_ts = CASE WHEN excluded.last_seq >= b.last_seq THEN excluded.last_ts ELSE b.last_ts END, "
            "last_seq = GREATEST(b.last_seq, excluded.last_seq), last_received = now(), "
            "events = b.events + excluded.events"
        ).format(s=s)

    def create(self) -> None:
        """Tables and indexes (idempotent; serialised between collectors by an advisory lock)."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            for stmt in self._ddl:
                cur.execute(stmt)

    def insert(self, events: Sequence[tuple[dict[str, Any], str]]) -> dict[str, BoxMark]:
        """Store (validated event, its JSON) pairs in one transaction; per box, what was new. Events whose id is
        already stored are skipped (at-least-once delivery, deduplicated here). Gaps in a named box's `seq` are
        kept up to date in the same transaction (`_track_gaps`)."""
        from psycopg import sql

        rows = [event_row(ev, body) for ev, body in events]
        columns = [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in _COLUMNS]
        marks: dict[str, BoxMark] = {}
        for ev, _ in events:
            box = ev.get("box") or ""
            m = marks.get(box)
            if m is None:
                marks[box] = BoxMark(ev.get("site"), ev["seq"], ev["ts"], 0)
            elif ev["seq"] >= m.last_seq:
                m.site, m.last_seq, m.last_ts = ev.get("site"), ev["seq"], ev["ts"]
        with self.conn.transaction(), self.conn.cursor() as cur:
            named = sorted(b for b in marks if b)  # a box without a name cannot be asked to resend: no gaps
            before: dict[str, int] = {}
            if named:
                cur.execute(sql.SQL("SELECT box, last_seq FROM {s}.boxes WHERE box = ANY(%s) FOR UPDATE")
                            .format(s=self._s), (named,))
                before = {str(b): int(n) for b, n in cur.fetchall()}
            cur.execute(self._insert, columns)
            new: dict[str, list[int]] = {}
            for box, seq in cur.fetchall():
                marks[box].stored += 1
                new.setdefault(box, []).append(int(seq))
            cur.executemany(self._boxes, [(b, m.site, m.last_seq, m.last_ts, m.stored) for b, m in marks.items()])
            for box in named:
                if box in new:
                    self._track_gaps(cur, box, marks[box].site, before.get(box, 0), sorted(new[box]))
        return marks

    def _track_gaps(self, cur: Any, box: str, site: str | None, last: int, seqs: list[int]) -> None:
        """In the insert's transaction: the holes `seqs` (newly stored, ascending) leave above the box's previous
        highest seq `last` become gaps; those at or below it narrow the gaps they fall in."""
        from psycopg import sql

        s = self._s
        grace = self.gap_grace_s
        above = [x for x in seqs if x > last]
        if above:
            for a, b in holes(last + 1, above[-1], above):
                cur.execute(sql.SQL("INSERT INTO {s}.gaps (box, site, from_seq, to_seq, next_request) VALUES "
                                    "(%s, %s, %s, %s, now() + make_interval(secs => %s)) ON CONFLICT DO NOTHING")
                            .format(s=s), (box, site, a, b, grace))
        below = [x for x in seqs if x <= last]
        if not below:
            return
        cur.execute(sql.SQL("SELECT from_seq, to_seq, site, found_at, requests, given_up, reason FROM {s}.gaps "
                            "WHERE box = %s AND to_seq >= %s AND from_seq <= %s FOR UPDATE").format(s=s),
                    (box, below[0], below[-1]))
        for lo, hi, gsite, found, requests, given_up, reason in cur.fetchall():
            if not any(lo <= x <= hi for x in below):
                continue
            cur.execute(sql.SQL("SELECT seq FROM {s}.events WHERE box = %s AND seq BETWEEN %s AND %s ORDER BY seq")
                        .format(s=s), (box, lo, hi))
            left = holes(int(lo), int(hi), [int(x) for (x,) in cur.fetchall()])
            cur.execute(sql.SQL("DELETE FROM {s}.gaps WHERE box = %s AND from_seq = %s").format(s=s), (box, lo))
            for a, b in left:  # what is left is asked for again after the grace (a resend may be under way)
                cur.execute(sql.SQL("INSERT INTO {s}.gaps (box, site, from_seq, to_seq, found_at, progress_at, "
                                    "next_request, requests, given_up, reason) VALUES (%s, %s, %s, %s, %s, now(), "
                                    "now() + make_interval(secs => %s), %s, %s, %s)").format(s=s),
                            (box, gsite, a, b, found, grace, requests if given_up else 0, given_up, reason))

    def _run(self, stmt: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement on this store's schema (`{s}` in `stmt`) in a transaction of its own; its rows, if any."""
        from psycopg import sql

        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(sql.SQL(stmt).format(s=self._s), params)
            return list(cur.fetchall()) if cur.description is not None else []

    def due_gaps(self, limit: int = 100) -> list[Gap]:
        """Open gaps whose next request is due, the most overdue first."""
        rows = self._run("SELECT box, site, from_seq, to_seq, requests, extract(epoch FROM now() - progress_at) "
                         "FROM {s}.gaps WHERE NOT given_up AND next_request <= now() ORDER BY next_request LIMIT %s",
                         (limit,))
        return [Gap(str(b), st, int(a), int(z), int(n), float(stall)) for b, st, a, z, n, stall in rows]

    def gap_requested(self, gap: Gap, retry_s: float) -> None:
        """A request for `gap` went out: the next one after `retry_s` unless the gap narrows first."""
        self._run("UPDATE {s}.gaps SET requests = requests + 1, next_request = now() + make_interval(secs => %s) "
                  "WHERE box = %s AND from_seq = %s", (retry_s, gap.box, gap.from_seq))

    def give_up_gap(self, gap: Gap) -> None:
        """Nothing came for `gap` for too long: no longer asked for (`reason` 'no answer')."""
        self._run("UPDATE {s}.gaps SET given_up = true, reason = 'no answer' WHERE box = %s AND from_seq = %s",
                  (gap.box, gap.from_seq))

    def gone_from_box(self, box: str, from_seq: int, to_seq: int) -> list[tuple[int, int]]:
        """The box answered that it no longer holds `from_seq..to_seq`: the open gaps' parts in that range are given
        up now (`reason` 'not on the box'), their parts outside it stay as they were. Returns the ranges given up."""
        from psycopg import sql

        s = self._s
        out: list[tuple[int, int]] = []
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT from_seq, to_seq, site, found_at, progress_at, next_request, requests FROM "
                                "{s}.gaps WHERE box = %s AND NOT given_up AND to_seq >= %s AND from_seq <= %s "
                                "ORDER BY from_seq FOR UPDATE").format(s=s), (box, from_seq, to_seq))
            for lo, hi, site, found, progress, due, requests in cur.fetchall():
                lo, hi = int(lo), int(hi)
                a, b = max(lo, from_seq), min(hi, to_seq)
                pieces = [(lo, a - 1, False), (a, b, True), (b + 1, hi, False)]
                cur.execute(sql.SQL("DELETE FROM {s}.gaps WHERE box = %s AND from_seq = %s").format(s=s), (box, lo))
                for x, y, gone in pieces:
                    if x <= y:
                        cur.execute(sql.SQL("INSERT INTO {s}.gaps (box, site, from_seq, to_seq, found_at, progress_at, "
                                            "next_request, requests, given_up, reason) VALUES (%s, %s, %s, %s, %s, %s, "
                                            "%s, %s, %s, %s)").format(s=s),
                                    (box, site, x, y, found, progress, due, requests, gone,
                                     "not on the box" if gone else None))
                out.append((a, b))
        return out

    def missing(self) -> dict[str, tuple[int, int]]:
        """Per box with gaps: (events still asked for, events given up)."""
        rows = self._run("SELECT box, coalesce(sum(to_seq - from_seq + 1) FILTER (WHERE NOT given_up), 0), "
                         "coalesce(sum(to_seq - from_seq + 1) FILTER (WHERE given_up), 0) FROM {s}.gaps GROUP BY box")
        return {str(b): (int(o), int(g)) for b, o, g in rows}

    def prune(self, max_age_s: float, chunk: int = 10_000, budget_s: float = 5.0) -> int:
        """Delete events captured more than `max_age_s` ago, `chunk` rows per transaction, for up to `budget_s`
        (the rest at the next call); returns how many were deleted."""
        from psycopg import sql

        stmt = sql.SQL(
            "DELETE FROM {s}.events WHERE id = ANY(ARRAY(SELECT id FROM {s}.events "
            "WHERE ts < now() - make_interval(secs => %s) LIMIT %s))"
        ).format(s=self._s)
        total, t0 = 0, time.monotonic()
        while True:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.execute(stmt, (max_age_s, chunk))
                n = int(cur.rowcount)
            total += n
            if n < chunk or time.monotonic() - t0 > budget_s:
                return total
