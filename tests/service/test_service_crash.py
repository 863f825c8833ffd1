"""kill -9 of `edge-mtl run` while it writes events: nothing committed is lost, seqs stay contiguous, the JSONL
log holds only whole lines, and consumers resume from their sequence number."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

from service_helpers import EVENTFUL, Daemon, edge_mtl, jsonl_lines, queue_len, queue_rows, wait_until


def _check_after_kill(db: Path, log: Path, committed: list[tuple[int, str]]) -> list[tuple[int, str]]:
    rows = queue_rows(db)
    assert rows[: len(committed)] == committed, "an event committed before the kill changed or disappeared"
    assert [s for s, _ in rows] == list(range(1, len(rows) + 1)), "seqs are not contiguous"
    lines = jsonl_lines(log)  # asserts: no partial last line, every line whole JSON
    # the log is a prefix of the queue (it may lag by the batch it had not synced yet)
    assert lines == [b for _, b in rows[: len(lines)]]
    return rows


def test_kill_9_loses_no_committed_event_and_consumers_resume(
    tmp_path: Path, model_args: list[str], clips: dict[str, Path]
) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(EVENTFUL)
    db, log = tmp_path / "events.db", tmp_path / "events.jsonl"
    argv = ["--config", str(cfg), "--events", str(db), "--jsonl", str(log), *model_args]
    rng = random.Random(7)
    seen = 0
    for round_ in range(2):
        with Daemon(["--source", str(clips["noise"]), "--loop", *argv]) as d:
            target = seen + 150
            wait_until(lambda t=target: queue_len(db) >= t, 90,  # type: ignore[misc]
                       f"{target} events (round {round_})")
            committed = queue_rows(db)
            time.sleep(rng.uniform(0.0, 0.3))  # land the kill anywhere in the write/sync cycle
            d.signal(signal.SIGKILL)
            assert d.wait(30) == -signal.SIGKILL
        rows = _check_after_kill(db, log, committed)
        seen = len(rows)

    # a consumer that processed up to seq N asks for the rest: exactly N+1..last, in order
    n = len(jsonl_lines(log))
    tail = edge_mtl("events", "tail", "--events", str(db), "--from", str(n + 1))
    assert tail.returncode == 0, tail.stderr
    got = tail.stdout.splitlines()
    assert [json.loads(x)["seq"] for x in got] == list(range(n + 1, seen + 1))
    assert got == [b for _, b in queue_rows(db)[n:]]

    # the next run catches the JSONL log up from its cursor, repeats nothing, and numbering goes on
    proc = edge_mtl("run", "--source", str(clips["short"]), *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = queue_rows(db)
    assert len(rows) > seen and [s for s, _ in rows] == list(range(1, len(rows) + 1))
    assert jsonl_lines(log) == [b for _, b in rows]
