"""Child process for the kill -9 test: appends events forever, reporting each committed batch on stdout.

Usage: python events_crash_child.py DB JSONL START_FRAME. A line "seq seq ..." is printed (and flushed) only
after `append()` returned, so every seq the parent reads was committed. The JSONL log is synced every few
batches, so the kill can land anywhere: inside an append, between a JSONL write and its cursor commit, inside
a rotation.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from events_helpers import make_event

from edge_mtl.events.jsonl import JsonlLog
from edge_mtl.events.queue import EventQueue


def main() -> None:
    db, jsonl, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
    q = EventQueue(db)
    log = JsonlLog(q, jsonl, max_bytes=8192, backups=1000)
    log.sync()
    i = start
    batch = 0
    while True:
        n = 1 + batch % 4
        seqs = q.append([make_event(i + k, camera=("lobby", "gate")[batch % 2]) for k in range(n)])
        sys.stdout.write(" ".join(map(str, seqs)) + "\n")
        sys.stdout.flush()
        i += n
        batch += 1
        if batch % 3 == 0:
            log.sync()


if __name__ == "__main__":
    main()
