"""Helpers for the end-to-end tests: `edge-mtl run` as a background process, polling the event queue, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.proc_helpers import Daemon as Daemon  # re-exported
from tests.proc_helpers import wait_until as wait_until


def event_time(ev: dict[str, Any]) -> float:
    """An event's `ts` (capture time of its frame) as epoch seconds."""
    return datetime.strptime(ev["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def queue_events(db: Path) -> list[dict[str, Any]]:
    """Every event in the queue, [] while the daemon has not created it yet (for polling while it starts)."""
    from edge_mtl.errors import InputError
    from edge_mtl.events.queue import EventQueue

    if not db.exists():
        return []
    try:
        with EventQueue(db, create=False) as q:
            return q.read(1, 10_000_000)
    except InputError:  # created but its tables not committed yet
        return []
