"""Where the daemon's events go: the durable SQLite queue first, then the JSONL log and stdout; and retention."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from edge_mtl.config import AppConfig
from edge_mtl.types import Event

log = logging.getLogger(__name__)

#: Seconds between two retention passes over the queue and the JSONL log.
PRUNE_INTERVAL_S = 600.0


class EventSink:
    """Durable queue first (an event exists once it is committed there), then the JSONL log and stdout.

    Also applies retention (events.retention_days / retention_max_events) when opened and every 10 minutes.
    """

    def __init__(self, cfg: AppConfig, print_events: bool = False) -> None:
        from edge_mtl.events.jsonl import JsonlLog
        from edge_mtl.events.queue import EventQueue

        ev = cfg.events
        self.cfg = cfg
        self.queue = EventQueue(ev.db)
        try:
            self.jsonl = JsonlLog(self.queue, ev.jsonl, ev.jsonl_max_bytes, ev.jsonl_backups) if ev.jsonl else None
        except BaseException:
            self.queue.close()
            raise
        self.print_events = print_events
        self.written = 0
        self.by_type: dict[str, int] = {}
        self.pruned = 0
        self._last_prune = -float("inf")

    def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self.queue.append(list(events))
        self.written += len(events)
        for e in events:
            self.by_type[e.type] = self.by_type.get(e.type, 0) + 1
        if self.print_events:
            from edge_mtl.events.schema import encode_event

            for e in events:
                sys.stdout.write(encode_event(e) + "\n")
            sys.stdout.flush()

    def flush(self) -> None:
        """Bring the JSONL log up to the queue (whole lines, fsync'd)."""
        if self.jsonl is not None:
            self.jsonl.sync()

    def prune(self, force: bool = False) -> int:
        """Retention by age and count, at most every PRUNE_INTERVAL_S unless forced: the queue's events, and the
        JSONL log's files by age (their size is bounded by rotation already)."""
        now = time.monotonic()
        if not force and now - self._last_prune < PRUNE_INTERVAL_S:
            return 0
        self._last_prune = now
        ev = self.cfg.events
        n = self.queue.prune(ev.retention_days * 86400.0, ev.retention_max_events)
        self.pruned += n
        if self.jsonl is not None:
            self._age_out_jsonl(ev.retention_days * 86400.0, ev.jsonl_backups)
        return n

    def _age_out_jsonl(self, max_age_s: float, backups: int) -> None:
        """Whole files leave the JSONL log by age: a rotated file once its newest line (its mtime) is older than
        `max_age_s`; the active file is rotated once its oldest line is older than max_age_s / (backups + 1), so no
        file spans more than that. A line is thus gone at most max_age_s * (1 + 1 / (backups + 1)) after it was
        written (docs/privacy.md), or sooner when rotation by size pushes it out."""
        assert self.jsonl is not None
        path = self.jsonl.path
        cutoff = time.time() - max_age_s
        oldest = _first_line_time(path)
        if oldest is not None and oldest < time.time() - max_age_s / (backups + 1):
            log.info("%s: oldest line is from %s; rotating (events.retention_days)", path,
                     time.strftime("%Y-%m-%d %H:%M", time.gmtime(oldest)))
            self.jsonl.rotate()
        for p in path.parent.glob(path.name + ".*"):
            if not p.name[len(path.name) + 1 :].isdigit():
                continue
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    log.info("deleted %s: every line in it is older than events.retention_days", p)
            except FileNotFoundError:
                continue

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self.jsonl is not None:
                self.jsonl.close()
            self.queue.close()


def _first_line_time(path: Path) -> float | None:
    """Capture time (epoch seconds) of the first event in a JSONL file; None if empty or unreadable."""
    try:
        with path.open("rb") as f:
            line = f.readline(65536)
        ts = json.loads(line)["ts"]
        return datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        return None
