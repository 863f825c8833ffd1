"""What the service keeps: owner-only files whatever the umask, no face images, retention by age and by count."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

import numpy as np
from service_helpers import EVENTFUL, edge_mtl, jsonl_lines, populate, queue_rows

from edge_mtl.events.queue import EventQueue


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_event_files_and_gallery_are_owner_only_and_retention_prunes(
    tmp_path: Path, model_args: list[str], clips: dict[str, Path]
) -> None:
    db, log = tmp_path / "events.db", tmp_path / "events.jsonl"
    populate(db, 1500)
    with EventQueue(db) as q:
        q.set_cursor("dashboard", 100)  # a consumer that is behind: it loses events, and the log says so
    old = time.time() - 40 * 86400
    with sqlite3.connect(db) as c:  # the first 300 events were stored 40 days ago
        c.execute("UPDATE events SET stored_at = ? WHERE seq <= 300", (old,))
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        EVENTFUL
        + "\n[events]\nretention_days = 30\nretention_max_events = 1000\njsonl_max_bytes = 4096\njsonl_backups = 2\n"
    )
    proc = edge_mtl("run", "--config", str(cfg), "--source", str(clips["noise"]), "--events", str(db),
                    "--jsonl", str(log), *model_args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = queue_rows(db)
    seqs = [s for s, _ in rows]
    # age removed 1..300, count kept the newest 1000 of 1500: 501..1500 remain, then this run's events
    assert seqs[0] == 501 and seqs == list(range(501, 501 + len(seqs))) and len(seqs) > 1000
    assert "retention deletes 400 event(s) consumer 'dashboard' has not read yet" in proc.stderr
    assert "pruned 500 event(s)" in proc.stderr
    # owner-only whatever the umask (the run used 022): queue, JSONL log and its rotations
    rotated = sorted(tmp_path.glob("events.jsonl.*"))
    assert len(rotated) == 2, "jsonl_backups = 2 rotations expected"
    for p in [db, log, *rotated, *tmp_path.glob("events.db-*")]:
        assert _mode(p) == 0o600, f"{p.name}: {oct(_mode(p))}"
    assert jsonl_lines(log)[-1] == rows[-1][1]
    # no images: the run wrote the queue and the log, nothing else (the schema has no field for pixels either)
    names = {p.name for p in tmp_path.iterdir()} - {"run.toml"}
    assert names <= {"events.db", "events.db-wal", "events.db-shm", "events.jsonl", "events.jsonl.1",
                      "events.jsonl.2"}, names


def test_queue_wal_and_gallery_files_are_owner_only(tmp_path: Path) -> None:
    from edge_mtl.identity.gallery import Gallery

    old = os.umask(0o022)
    try:
        db = tmp_path / "q" / "events.db"
        populate(db, 3)
        with EventQueue(db) as q:  # while a connection is open, the WAL and shared-memory files exist
            q.read(1)
            wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
            assert wal.exists() and shm.exists()
            assert {_mode(db), _mode(wal), _mode(shm)} == {0o600}
        g = tmp_path / "g" / "gallery.db"
        with Gallery(g) as gal:
            gal.add("alice", np.eye(1, 128, dtype=np.float32), [0.9], ["a.jpg"], model="tiny-test")
        assert _mode(g) == 0o600
    finally:
        os.umask(old)


def test_jsonl_files_age_out(tmp_path: Path, model_args: list[str], clips: dict[str, Path]) -> None:
    """The JSONL log obeys events.retention_days too: a rotated file whose newest line is too old is deleted, and
    an active file whose oldest line is too old is rotated so it can age out as a whole."""
    from edge_mtl.events.jsonl import JsonlLog

    db, log = tmp_path / "events.db", tmp_path / "events.jsonl"
    populate(db, 30)  # events captured on 2026-11-22 (tests.events.events_helpers.EPOCH)
    with EventQueue(db) as q, JsonlLog(q, log, 1 << 20, 3) as j:
        j.sync()
    stale, recent = tmp_path / "events.jsonl.2", tmp_path / "events.jsonl.1"
    stale.write_text('{"old": 1}\n')
    recent.write_text('{"recent": 1}\n')
    now = time.time()
    os.utime(stale, (now - 10 * 86400, now - 10 * 86400))
    first_ts = log.read_text().splitlines()[0]
    retention_days = 0.5
    assert json_ts(first_ts) < now - retention_days * 86400 / 4, "the seeded events must be old enough"
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"[events]\nretention_days = {retention_days}\njsonl_backups = 3\n")
    proc = edge_mtl("run", "--config", str(cfg), "--source", str(clips["gray"]), "--events", str(db),
                    "--jsonl", str(log), *model_args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in tmp_path.glob("events.jsonl*"))
    # the stale file is gone; the active file was rotated to .1 (pushing the recent one to .2)
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"], names
    assert (tmp_path / "events.jsonl.2").read_text() == '{"recent": 1}\n'
    assert (tmp_path / "events.jsonl.1").read_text().splitlines()[0] == first_ts
    assert "rotating (events.retention_days)" in proc.stderr and "older than events.retention_days" in proc.stderr


def json_ts(line: str) -> float:
    import json
    from datetime import UTC, datetime

    ts = json.loads(line)["ts"]
    return datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()


def test_removed_people_and_pruned_events_leave_no_bytes_behind(tmp_path: Path) -> None:
    """Erasure is real: after `gallery remove` and after retention pruning, the data is not recoverable from the
    files' free pages (SQLite secure_delete, on in Debian/Ubuntu builds; this test fails where it is not)."""
    from edge_mtl.identity.gallery import Gallery
    from tests.events.events_helpers import make_event

    v = (np.arange(128, dtype=np.float32) + 0.123456)[None]
    v /= np.linalg.norm(v)
    g = tmp_path / "gallery.db"
    with Gallery(g) as gal:
        gal.add("alice-erased", v, [0.9], ["alice.jpg"], model="m")
        gal.add("bob", np.roll(v, 3, axis=1), [0.9], ["bob.jpg"], model="m")
    with Gallery(g) as gal:
        assert gal.remove("alice-erased") == 1
    data = b"".join(p.read_bytes() for p in tmp_path.glob("gallery.db*"))
    assert v.tobytes() not in data and b"alice-erased" not in data
    db = tmp_path / "events.db"
    with EventQueue(db) as q:
        q.append([make_event(i, identity={"name": "carol-pruned", "similarity": 0.7}) for i in range(50)])
        q.append([make_event(i) for i in range(1000)])
        assert q.prune(None, 1000) == 50
    data = b"".join(p.read_bytes() for p in tmp_path.glob("events.db*"))
    assert b"carol-pruned" not in data
