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


def test_no_images_are_stored(tmp_path: Path, model_args: list[str], clips: dict[str, Path]) -> None:
    """A run writes the queue and the log, nothing else: no image file, and no event field holds pixels."""
    cfg = tmp_path / "run.toml"
    cfg.write_text(EVENTFUL)
    work = tmp_path / "state"
    work.mkdir()
    proc = edge_mtl("run", "--config", str(cfg), "--source", str(clips["short"]), "--events",
                    str(work / "events.db"), "--jsonl", str(work / "events.jsonl"), *model_args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in work.iterdir())
    assert names == ["events.db", "events.jsonl"], names
    for line in jsonl_lines(work / "events.jsonl"):
        assert len(line) < 1024  # a thumbnail would not fit; the schema has no field for one anyway
