"""The durable SQLite queue: seq assignment, retention, cursors, permissions, concurrency (real SQLite)."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from events_helpers import make_event

from edge_mtl.errors import InputError
from edge_mtl.events.queue import EventQueue
from edge_mtl.events.schema import decode_event


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_append_assigns_contiguous_seqs_and_stores_encoded_events(queue: EventQueue) -> None:
    evs = [make_event(i) for i in range(5)]
    assert queue.append(evs) == [1, 2, 3, 4, 5]
    assert [e.seq for e in evs] == [1, 2, 3, 4, 5]
    assert queue.append([make_event(9)]) == [6]
    assert queue.append([]) == []
    assert (queue.first_seq(), queue.last_seq(), queue.count()) == (1, 6, 6)
    got = queue.read()
    assert [e["seq"] for e in got] == [1, 2, 3, 4, 5, 6]
    assert [e["id"] for e in got[:5]] == [e.id for e in evs]
    for e in got:
        assert decode_event(e) == e
    raw = queue.read_raw(3, limit=2)
    assert [s for s, _ in raw] == [3, 4]
    assert decode_event(raw[0][1])["frame"] == 2
    assert queue.read(from_seq=7) == []
    assert [e["seq"] for e in queue.read(from_seq=0, limit=2)] == [1, 2]
    with pytest.raises(ValueError):
        queue.read(1, limit=0)


def test_new_queue_is_empty(queue: EventQueue) -> None:
    assert (queue.first_seq(), queue.last_seq(), queue.count()) == (1, 0, 0)
    assert queue.read() == []


def test_bad_event_fails_the_whole_batch(queue: EventQueue) -> None:
    queue.append([make_event(0)])
    good, bad = make_event(1), make_event(2, camera="no/slashes")
    with pytest.raises(ValueError, match="camera"):
        queue.append([good, bad])
    assert good.seq is None and bad.seq is None  # restored
    assert queue.count() == 1 and queue.last_seq() == 1
    assert queue.append([good]) == [2]  # no gap after the failed batch
    with pytest.raises(ValueError, match="Event"):
        queue.append([{"type": "face.left"}])  # type: ignore[list-item]


def test_seq_is_never_reused_after_pruning_everything(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    with EventQueue(db) as q:
        q.append([make_event(i) for i in range(10)])
        assert q.prune(max_age_s=None, max_events=0) == 10
        assert q.count() == 0
        assert q.last_seq() == 10 and q.first_seq() == 11
        assert q.append([make_event(11)]) == [11]
        q.prune(None, 0)
    with EventQueue(db, create=False) as q:  # also after reopening an empty queue
        assert q.last_seq() == 11
        assert q.append([make_event(12), make_event(13)]) == [12, 13]
        assert [e["seq"] for e in q.read()] == [12, 13]


def test_prune_by_count_keeps_the_newest(queue: EventQueue) -> None:
    queue.append([make_event(i) for i in range(20)])
    assert queue.prune(None, 5) == 15
    assert [e["seq"] for e in queue.read()] == [16, 17, 18, 19, 20]
    assert queue.prune(None, 5) == 0
    assert queue.prune(None, None) == 0
    with pytest.raises(ValueError):
        queue.prune(None, -1)
    with pytest.raises(ValueError):
        queue.prune(float("nan"), None)


def test_prune_by_age(queue: EventQueue) -> None:
    queue.append([make_event(i) for i in range(6)])
    queue.append([make_event(i) for i in range(6, 10)])
    # back-date the first batch by an hour (white-box: the append time is the retention clock)
    with sqlite3.connect(queue.path) as c:
        c.execute("UPDATE events SET stored_at = stored_at - 3600 WHERE seq <= 6")
    assert queue.prune(max_age_s=1800, max_events=None) == 6
    assert [e["seq"] for e in queue.read()] == [7, 8, 9, 10]
    assert queue.prune(max_age_s=1800, max_events=2) == 2
    assert queue.first_seq() == 9


def test_cursors_are_durable_and_checked(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    with EventQueue(db) as q:
        assert q.get_cursor("jsonl") == 0
        q.append([make_event(i) for i in range(5)])
        q.set_cursor("jsonl", 3)
        q.set_cursor("mqtt:a", 5)
        q.set_cursor("jsonl", 4)
        assert q.get_cursor("jsonl") == 4
        with pytest.raises(ValueError, match="beyond the last event"):
            q.set_cursor("jsonl", 6)
        with pytest.raises(ValueError):
            q.set_cursor("jsonl", -1)
        with pytest.raises(ValueError):
            q.set_cursor("", 1)
        assert q.get_cursor("jsonl") == 4
    with EventQueue(db, create=False) as q:
        assert q.cursors() == {"jsonl": 4, "mqtt:a": 5}
        # a consumer resumes from its cursor
        assert [e["seq"] for e in q.read(q.get_cursor("jsonl") + 1)] == [5]
        assert q.delete_cursor("mqtt:a") and not q.delete_cursor("mqtt:a")
        assert q.cursors() == {"jsonl": 4}


def test_retention_wins_over_cursors_with_a_warning(queue: EventQueue, caplog: pytest.LogCaptureFixture) -> None:
    queue.append([make_event(i) for i in range(10)])
    queue.set_cursor("slow", 2)
    queue.set_cursor("fast", 9)
    with caplog.at_level(logging.WARNING, logger="edge_mtl.events.queue"):
        assert queue.prune(None, 3) == 7
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "5 event(s)" in warned[0] and "'slow'" in warned[0]
    assert queue.get_cursor("slow") == 2  # the cursor is left alone; the consumer sees the gap
    assert queue.read(queue.get_cursor("slow") + 1)[0]["seq"] == 8


def test_files_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        db = tmp_path / "sub" / "q.db"
        with EventQueue(db) as q:
            q.append([make_event(0)])
            for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                assert p.exists(), p
                assert _mode(p) == 0o600, (p, oct(_mode(p)))
    finally:
        os.umask(old)


def test_open_errors_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such event queue"):
        EventQueue(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    for create in (True, False):
        with pytest.raises(InputError, match="not an edge-mtl event queue"):
            EventQueue(junk, create=create)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(InputError, match="not an edge-mtl event queue"):
        EventQueue(other)
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(InputError, match="empty file"):
        EventQueue(empty, create=False)
    with pytest.raises(InputError, match="folder"):
        EventQueue(tmp_path)
    with pytest.raises(InputError) as info:
        EventQueue(tmp_path / "missing.db", create=False)
    assert "\n" not in str(info.value)


def test_closed_queue_refuses_use(tmp_path: Path) -> None:
    q = EventQueue(tmp_path / "q.db")
    q.close()
    with pytest.raises(ValueError, match="closed"):
        q.append([make_event(0)])


@pytest.mark.timeout(120)
def test_concurrent_appender_readers_and_cursor_writer(tmp_path: Path) -> None:
    """One appender thread, two reader threads, one cursor writer: every reader sees every event
    in order with no gap, and nothing deadlocks or fails with "database is locked"."""
    q = EventQueue(tmp_path / "q.db")
    total = 1200
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: dict[str, list[int]] = {"r1": [], "r2": []}

    def appender() -> None:
        try:
            i = 0
            while i < total:
                n = min(1 + i % 17, total - i)
                q.append([make_event(i + k) for k in range(n)])
                i += n
        except BaseException as e:
            errors.append(e)

    def reader(name: str) -> None:
        try:
            nxt = 1
            while len(seen[name]) < total and not stop.is_set():
                rows = q.read(nxt, limit=50)
                for r in rows:
                    assert r["seq"] == nxt, (name, r["seq"], nxt)
                    seen[name].append(r["seq"])
                    nxt += 1
                if not rows:
                    stop.wait(0.002)
        except BaseException as e:
            errors.append(e)

    def cursor_writer() -> None:
        try:
            while not stop.is_set():
                last = q.last_seq()
                q.set_cursor("w", last)
                assert q.get_cursor("w") >= last
                stop.wait(0.005)
        except BaseException as e:
            errors.append(e)

    threads = [
        threading.Thread(target=appender),
        threading.Thread(target=reader, args=("r1",)),
        threading.Thread(target=reader, args=("r2",)),
    ]
    side = threading.Thread(target=cursor_writer)
    for t in [*threads, side]:
        t.start()
    for t in threads:
        t.join(timeout=90)
    stop.set()
    side.join(timeout=10)
    assert not any(t.is_alive() for t in [*threads, side]), "a thread hung"
    assert not errors, errors
    assert seen["r1"] == seen["r2"] == list(range(1, total + 1))
    assert q.last_seq() == total == q.count()
    q.close()


def test_two_processes_share_one_queue(tmp_path: Path) -> None:
    """A reader in another process (like `events tail`) sees what this process appended, and vice versa."""
    import subprocess
    import sys

    db = tmp_path / "q.db"
    with EventQueue(db) as q:
        q.append([make_event(i) for i in range(3)])
        code = (
            "import sys; from edge_mtl.events.queue import EventQueue\n"
            "sys.path.insert(0, sys.argv[2]); from events_helpers import make_event\n"
            "q = EventQueue(sys.argv[1], create=False)\n"
            "assert [e['seq'] for e in q.read()] == [1, 2, 3]\n"
            "q.append([make_event(7)]); q.set_cursor('child', 4); q.close()\n"
        )
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        subprocess.run(
            [sys.executable, "-c", code, str(db), str(Path(__file__).parent)], check=True, env=env, timeout=60
        )
        assert q.last_seq() == 4 and q.get_cursor("child") == 4
        assert q.read(4)[0]["frame"] == 7
