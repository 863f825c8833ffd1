"""kill -9 while appending: no committed event is lost, seqs stay contiguous, the JSONL log has no partial line
and resumes from its cursor without repeating anything."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_mtl.events.jsonl import JsonlLog
from edge_mtl.events.queue import EventQueue
from edge_mtl.events.schema import decode_event

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _jsonl_files(path: Path) -> list[Path]:
    """Oldest first: path.N ... path.1, path."""
    rotated = sorted(path.parent.glob(path.name + ".*"), key=lambda p: int(p.suffix[1:]), reverse=True)
    return [*rotated, path] if path.exists() else rotated


def _run_and_kill(db: Path, jsonl: Path, start: int, lines_before_kill: int, extra_delay: float) -> list[int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "events_crash_child.py"), str(db), str(jsonl), str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[bytes] = []

    def pump() -> None:
        assert proc.stdout is not None
        lines.extend(iter(proc.stdout.readline, b""))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    try:
        while len(lines) < lines_before_kill:
            if proc.poll() is not None:
                pytest.fail(f"child exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"child reported only {len(lines)} batches within 60 s")
            time.sleep(0.005)
        time.sleep(extra_delay)  # land the kill at an arbitrary point of the loop
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        reader.join(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    seqs: list[int] = []
    for line in lines:
        if line.endswith(b"\n"):  # a line cut by the kill reports nothing
            seqs += [int(s) for s in line.split()]
    return seqs


@pytest.mark.timeout(240)
def test_kill_9_loses_no_committed_event(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    jsonl = tmp_path / "log" / "events.jsonl"
    rng = random.Random(20261122)
    reported: list[int] = []
    for rnd in range(4):
        new = _run_and_kill(db, jsonl, 1000 * rnd, rng.randint(15, 60), rng.uniform(0, 0.03))
        assert new, "the child committed nothing before the kill"
        reported += new

        # the JSONL files as the crash left them: whole lines only, each a valid event, in seq order
        logged: list[int] = []
        for f in _jsonl_files(jsonl):
            data = f.read_bytes()
            assert data == b"" or data.endswith(b"\n"), f"{f} ends with a partial line"
            logged += [decode_event(line)["seq"] for line in data.splitlines()]
        assert logged == list(range(1, len(logged) + 1)), "JSONL has a gap or a duplicate"

        with EventQueue(db, create=False) as q:
            rows = q.read_raw(1, limit=1_000_000)
            stored = [s for s, _ in rows]
            assert stored == list(range(1, q.last_seq() + 1)), "seqs are not contiguous"
            missing = sorted(set(reported) - set(stored))
            assert not missing, f"committed events lost: {missing[:10]}"
            for _, body in rows:
                decode_event(body)
            # the log's committed cursor never runs ahead of what is in the file
            assert q.get_cursor("jsonl") <= len(logged)

    # a consumer resumes from its cursor: the log ends up with every event exactly once
    with EventQueue(db, create=False) as q, JsonlLog(q, jsonl, max_bytes=8192, backups=1000) as log:
        log.sync()
        last = q.last_seq()
        assert q.get_cursor("jsonl") == last
    logged = [decode_event(line)["seq"] for f in _jsonl_files(jsonl) for line in f.read_bytes().splitlines()]
    assert logged == list(range(1, last + 1))
    assert len(_jsonl_files(jsonl)) > 2, "expected the log to have rotated"
