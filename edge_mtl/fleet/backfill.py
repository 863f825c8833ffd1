"""`edge-mtl collect --import`: a box's own event record into the central store, each event stored once.

The collector stores what reaches it through the broker. Events a box produced before the collector's persistent
session existed (the collector started after the boxes, or its session expired during a long outage), or that a
broker dropped (`max_queued_messages` reached, a crash between autosaves), never reach it that way; the box still
holds them, in its SQLite queue (`events.db`, within its retention) and its JSON-lines log. This reads either kind
of file, validates each event as the collector does (`decode_event`) and inserts it in batches through the same
`EventStore.insert`: an event already stored (same id) is skipped, so importing a file twice, or a file whose
events also arrived through the broker, stores nothing twice. Lines that are not valid events are counted and
reported, never stored, and never stop the import.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edge_mtl.errors import EdgeMtlError, InputError
from edge_mtl.events.queue import EventQueue
from edge_mtl.events.schema import decode_event
from edge_mtl.fleet.config import CollectorConfig
from edge_mtl.fleet.store import EventStore, db_error_text, import_psycopg, open_store, read_db_password

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"
#: Invalid events named in the log, per file (the rest are only counted).
LOGGED_INVALID = 5


class DatabaseUnavailableError(EdgeMtlError):
    """The central database could not be reached or refused the import (exit code 1)."""


def is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def event_texts(path: Path, page: int = 1000) -> Iterator[tuple[str, str | bytes]]:
    """(where, JSON text) of every event in a box's queue file or JSON-lines log, in order: str from a queue, the
    line's bytes from a log; `where` names the queue's seq or the log's line for messages."""
    if is_sqlite(path):
        q = EventQueue(path, create=False)
        try:
            seq = q.first_seq()
            while True:
                rows = q.read_raw(seq, page)
                if not rows:
                    return
                for s, text in rows:
                    yield f"seq {s}", text
                seq = rows[-1][0] + 1
        finally:
            q.close()
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield f"line {n}", line.rstrip(b"\r\n")  # not UTF-8: decode_event rejects it like any bad line


def check_sources(paths: Sequence[Path]) -> None:
    """InputError, before anything is written, for a path that is not a readable file or is an SQLite database
    other than an edge-mtl event queue."""
    for p in paths:
        if not p.is_file():
            what = "not a file" if p.exists() else "no such file"
            raise InputError(f"{p}: {what} (give a box's event queue, events.db, or its JSON-lines log)")
        try:
            sqlite = is_sqlite(p)
        except OSError as e:
            raise InputError(f"{p}: cannot read: {e.strerror or e}") from None
        if sqlite:
            EventQueue(p, create=False).close()  # InputError now for a database that is not an event queue


def _import_file(store: EventStore, path: Path, batch: int, boxes: Counter[str]) -> dict[str, Any]:
    """One file's events into `store`, `batch` per transaction; its counts; `boxes` counts what each box got."""
    row: dict[str, Any] = {"file": str(path), "read": 0, "stored": 0, "duplicates": 0, "invalid": 0}
    pending: list[tuple[dict[str, Any], str]] = []

    def flush() -> None:
        if pending:
            marks = store.insert(pending)
            stored = sum(m.stored for m in marks.values())
            row["stored"] += stored
            row["duplicates"] += len(pending) - stored
            for box, m in marks.items():
                boxes[box or "(unnamed)"] += m.stored
            pending.clear()

    for where, raw in event_texts(path):
        row["read"] += 1
        try:
            ev = decode_event(raw)
            pending.append((ev, raw if isinstance(raw, str) else raw.decode("utf-8")))
        except ValueError as e:
            row["invalid"] += 1
            if row["invalid"] <= LOGGED_INVALID:
                log.warning("%s, %s: not an event (not stored): %s", path, where, str(e)[:200])  # one line already
            continue
        if len(pending) >= batch:
            flush()
    flush()
    if row["invalid"] > LOGGED_INVALID:
        log.warning("%s: %d invalid events in all", path, row["invalid"])
    log.info("%s: %d events read, %d stored, %d already stored, %d invalid", path, row["read"], row["stored"],
             row["duplicates"], row["invalid"])
    return row


def import_files(store: EventStore, paths: Sequence[Path], batch: int = 1000) -> dict[str, Any]:
    """Insert every valid event of `paths` into `store`, `batch` per transaction. Returns per file and in all:
    events read, stored (new), duplicates (already stored), invalid; and per box the events stored."""
    boxes: Counter[str] = Counter()
    files = [_import_file(store, path, batch, boxes) for path in paths]
    total = {k: sum(f[k] for f in files) for k in ("read", "stored", "duplicates", "invalid")}
    return {"files": files, **total, "stored_by_box": dict(sorted(boxes.items()))}


def import_events(cfg: CollectorConfig, paths: Sequence[Path], batch: int = 1000) -> dict[str, Any]:
    """`edge-mtl collect --config ... --import FILE...`: the files checked first (InputError), then imported
    into the configured database; DatabaseUnavailableError when it cannot be reached or fails mid-way (what was
    committed stays: importing again completes the rest)."""
    check_sources(paths)
    password = read_db_password(cfg.database)
    psycopg = import_psycopg()
    try:
        store = open_store(cfg.database, password, "edge-mtl collect --import")
    except psycopg.Error as e:
        raise DatabaseUnavailableError(f"PostgreSQL: {db_error_text(e)}") from None
    try:
        return import_files(store, paths, batch)
    except psycopg.Error as e:
        raise DatabaseUnavailableError(
            f"PostgreSQL: {db_error_text(e)} (what was committed stays; import again to complete)") from None
    finally:
        store.conn.close()
