"""`edge-mtl events tail`: print queued events as JSON lines, optionally following new ones.

It is a plain reader of the queue (no cursor is committed), so it can run beside the daemon at any time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TextIO

from edge_mtl.errors import InputError
from edge_mtl.events.dbfaults import db_guard
from edge_mtl.events.queue import EventQueue

log = logging.getLogger(__name__)

_BATCH = 1000


def tail(
    db: str | os.PathLike[str],
    from_seq: int | None,
    follow: bool,
    out: TextIO,
    stop: threading.Event | None = None,
    poll_s: float = 0.2,
) -> int:
    """Write the events with seq >= `from_seq` (None: from the oldest stored) to `out`, one JSON line each.

    With `follow`, keep polling every `poll_s` for new events until `stop` is set or the user interrupts
    (Ctrl-C ends following normally: exit code 0); a queue the daemon has not created yet (no file, or the empty
    file it is initialising) is waited for, as `tail -F` waits for a log. Returns the exit code. Without
    `follow`, a missing queue is an InputError (exit 2); a foreign file always is.
    """
    if from_seq is not None and (isinstance(from_seq, bool) or not isinstance(from_seq, int) or from_seq < 0):
        raise InputError(f"events tail: --from must be a sequence number >= 0, got {from_seq!r}")
    if follow:
        try:
            if not _wait_for_queue(Path(db), stop, poll_s):
                return 0
        except KeyboardInterrupt:
            return 0
    with db_guard(db, "event queue"), EventQueue(db, create=False) as q:
        next_seq = max(1, from_seq or 0)
        first = q.first_seq()
        if from_seq is not None and from_seq > 0 and from_seq < first:
            log.warning("events before seq %d were already pruned; starting at %d", first, first)
        try:
            while True:
                rows = q.read_raw(next_seq, _BATCH)
                if rows:
                    out.write("".join(body + "\n" for _, body in rows))
                    out.flush()
                    next_seq = rows[-1][0] + 1
                    if len(rows) == _BATCH:
                        continue
                if not follow:
                    return 0
                if stop is None:
                    time.sleep(poll_s)
                elif stop.wait(poll_s):
                    return 0
        except KeyboardInterrupt:
            if not follow:
                raise
            return 0


def _wait_for_queue(path: Path, stop: threading.Event | None, poll_s: float) -> bool:
    """Wait until `path` exists and is no longer the empty file its creator is initialising (False: stopped).
    A folder is not waited for: opening it reports the error."""
    waiting = False
    while not path.is_dir() and (not path.exists() or path.stat().st_size == 0):
        if not waiting:
            log.info("waiting for the event queue %s to be created", path)
            waiting = True
        if stop is None:
            time.sleep(poll_s)
        elif stop.wait(poll_s):
            return False
    return True
