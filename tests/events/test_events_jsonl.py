"""The JSONL log: whole lines only, size rotation, resume from the cursor, repair after a crash."""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path

import pytest
from events_helpers import make_event

from edge_mtl.events.jsonl import JsonlLog
from edge_mtl.events.queue import EventQueue
from edge_mtl.events.schema import decode_event


def _files(path: Path) -> list[Path]:
    """Oldest first: path.N ... path.1, path."""
    rotated = sorted(path.parent.glob(path.name + ".*"), key=lambda p: int(p.suffix[1:]), reverse=True)
    return [*rotated, path] if path.exists() else rotated


def _seqs(path: Path) -> list[int]:
    out: list[int] = []
    for f in _files(path):
        data = f.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{f} ends with a partial line"
        out += [decode_event(line)["seq"] for line in data.splitlines()]
    return out


def test_sync_writes_each_event_once_as_one_line(queue: EventQueue, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlLog(queue, path, max_bytes=1 << 20, backups=3) as log:
        assert log.sync() == 0
        queue.append([make_event(i) for i in range(5)])
        assert log.sync() == 5
        assert log.sync() == 0
        queue.append([make_event(i) for i in range(5, 8)])
        assert log.sync() == 3
    lines = path.read_bytes().splitlines()
    assert [decode_event(x)["seq"] for x in lines] == list(range(1, 9))
    # the line is exactly what the queue stored
    assert lines[0].decode() == queue.read_raw(1, 1)[0][1]
    assert queue.get_cursor("jsonl") == 8


def test_rotation_by_size_keeps_backups(queue: EventQueue, tmp_path: Path) -> None:
    path = tmp_path / "log" / "events.jsonl"
    queue.append([make_event(i) for i in range(60)])
    line_len = len(queue.read_raw(1, 1)[0][1]) + 1
    max_bytes = 5 * line_len + 10  # five lines per file
    with JsonlLog(queue, path, max_bytes=max_bytes, backups=2) as log:
        assert log.sync() == 60
    files = _files(path)
    assert [f.name for f in files] == ["events.jsonl.2", "events.jsonl.1", "events.jsonl"]
    for f in files:
        assert f.stat().st_size <= max_bytes
        assert f.read_bytes().endswith(b"\n")
    assert _seqs(path) == list(range(46, 61))  # the newest 15 events in 3 files of 5, in order


def test_rotation_without_backups_and_oversized_lines(queue: EventQueue, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    queue.append([make_event(i) for i in range(7)])
    with JsonlLog(queue, path, max_bytes=100, backups=0) as log:  # every line is bigger than 100 bytes
        assert log.sync() == 7
    assert _files(path) == [path]
    assert _seqs(path) == [7]  # each line got a file of its own; only the current one is kept


def test_rotation_across_syncs_continues_numbering(queue: EventQueue, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    queue.append([make_event(10)])
    line_len = len(queue.read_raw(1, 1)[0][1]) + 2  # seqs 10..12 make lines one byte longer
    for i in range(11, 22):
        with JsonlLog(queue, path, max_bytes=3 * line_len, backups=10) as log:
            log.sync()
        queue.append([make_event(i)])
    with JsonlLog(queue, path, max_bytes=3 * line_len, backups=10) as log:
        log.sync()
    assert _seqs(path) == list(range(1, 13))
    assert len(_files(path)) == 4


def test_torn_last_line_is_cut_and_rewritten(
    queue: EventQueue, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.jsonl"
    queue.append([make_event(i) for i in range(4)])
    with JsonlLog(queue, path, max_bytes=1 << 20, backups=1) as log:
        log.sync()
    queue.append([make_event(i) for i in range(4, 6)])
    # a power cut in the middle of writing seq 5 (the cursor is still at 4)
    body5 = queue.read_raw(5, 1)[0][1].encode()
    with path.open("ab") as f:
        f.write(body5[: len(body5) // 2])
    with caplog.at_level(logging.WARNING, logger="edge_mtl.events.jsonl"), JsonlLog(queue, path, 1 << 20, 1) as log:
        assert path.read_bytes().endswith(b"\n")  # repaired on open
        assert log.sync() == 2
    assert any("torn" in r.getMessage() for r in caplog.records)
    assert _seqs(path) == [1, 2, 3, 4, 5, 6]


def test_torn_only_line_truncates_to_empty(queue: EventQueue, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"schema":"edge_mtl.ev')
    queue.append([make_event(0)])
    with JsonlLog(queue, path, 1 << 20, 1) as log:
        assert log.sync() == 1
    assert _seqs(path) == [1]


def test_crash_after_fsync_before_cursor_commit_repeats_nothing(queue: EventQueue, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    queue.append([make_event(i) for i in range(5)])
    with JsonlLog(queue, path, 1 << 20, 1) as log:
        log.sync()
    queue.append([make_event(i) for i in range(5, 9)])
    # the state a crash leaves between "lines written + fsync'd" and "cursor committed"
    with path.open("ab") as f:
        f.write(b"".join(body.encode() + b"\n" for _, body in queue.read_raw(6, 10)))
    assert queue.get_cursor("jsonl") == 5
    with JsonlLog(queue, path, 1 << 20, 1) as log:
        assert queue.get_cursor("jsonl") == 9
        assert log.sync() == 0
    assert _seqs(path) == list(range(1, 10))


def test_crash_right_after_rotation_uses_the_rotated_file(queue: EventQueue, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    queue.append([make_event(i) for i in range(3)])
    with JsonlLog(queue, path, 1 << 20, 3) as log:
        log.sync()
    queue.append([make_event(i) for i in range(3, 5)])
    with path.open("ab") as f:
        f.write(b"".join(body.encode() + b"\n" for _, body in queue.read_raw(4, 10)))
    os.replace(path, tmp_path / "events.jsonl.1")  # rotated, new file not created yet, cursor still at 3
    with JsonlLog(queue, path, 1 << 20, 3) as log:
        assert queue.get_cursor("jsonl") == 5
        assert log.sync() == 0
        queue.append([make_event(5)])
        assert log.sync() == 1
    assert _seqs(path) == [1, 2, 3, 4, 5, 6]


def test_last_line_from_another_queue_is_not_trusted(
    queue: EventQueue, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.jsonl"
    with EventQueue(tmp_path / "other.db") as other:
        other.append([make_event(i) for i in range(3)])
        path.write_bytes(b"".join(b.encode() + b"\n" for _, b in other.read_raw(1, 10)))
    queue.append([make_event(i) for i in range(4)])  # same seqs 1..3 exist here, with other ids
    with caplog.at_level(logging.WARNING, logger="edge_mtl.events.jsonl"), JsonlLog(queue, path, 1 << 20, 1) as log:
        assert queue.get_cursor("jsonl") == 0
        assert log.sync() == 4
    assert any("does not match" in r.getMessage() for r in caplog.records)
    assert _seqs(path) == [1, 2, 3, 1, 2, 3, 4]  # nothing skipped (at-least-once), the old lines stay


def test_events_pruned_before_logging_are_reported(
    queue: EventQueue, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.jsonl"
    queue.append([make_event(i) for i in range(3)])
    with JsonlLog(queue, path, 1 << 20, 1) as log:
        log.sync()
        queue.append([make_event(i) for i in range(3, 10)])
        queue.prune(None, 2)
        with caplog.at_level(logging.WARNING, logger="edge_mtl.events.jsonl"):
            assert log.sync() == 2
    assert _seqs(path) == [1, 2, 3, 9, 10]
    assert any("4..8" in r.getMessage() for r in caplog.records)


def test_log_files_are_owner_only(queue: EventQueue, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    old = os.umask(0)
    try:
        queue.append([make_event(i) for i in range(10)])
        with JsonlLog(queue, path, max_bytes=1500, backups=5) as log:
            log.sync()
    finally:
        os.umask(old)
    files = _files(path)
    assert len(files) > 1
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_bad_arguments(queue: EventQueue, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        JsonlLog(queue, tmp_path / "x.jsonl", max_bytes=0, backups=1)
    with pytest.raises(ValueError):
        JsonlLog(queue, tmp_path / "x.jsonl", max_bytes=10, backups=-1)
    log = JsonlLog(queue, tmp_path / "x.jsonl", max_bytes=10, backups=1)
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.sync()


@pytest.mark.timeout(60)
def test_concurrent_syncs_write_each_event_once(queue: EventQueue, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    errors: list[BaseException] = []
    with JsonlLog(queue, path, max_bytes=4000, backups=1000) as log:

        def syncer() -> None:
            try:
                for _ in range(40):
                    log.sync()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=syncer) for _ in range(3)]
        for t in threads:
            t.start()
        for i in range(0, 120, 4):
            queue.append([make_event(i + k) for k in range(4)])
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads) and not errors, errors
        log.sync()
    assert _seqs(path) == list(range(1, 121))
