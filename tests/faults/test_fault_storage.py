"""Damaged databases and a full disk: exit 2 with one line naming the file, never a traceback or "internal error",
and nothing already accepted lost or written twice (issue 23, case 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fault_helpers import check_nothing_lost, corrupt_page, fill, make_gallery, small_filesystem

from tests.service.service_helpers import EVENTFUL, edge_mtl, jsonl_lines, one_line_error, populate, queue_rows


def _edge_mtl_line(stderr: str) -> str:
    """The daemon's contract when it stops on a fault: exactly one `edge-mtl: error:` line and no traceback (the
    log lines before it may say what it was doing)."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("edge-mtl:")]
    assert len(lines) == 1 and lines[0].startswith("edge-mtl: error: "), stderr[-3000:]
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr[-3000:]
    return lines[0]


@pytest.fixture
def damaged_gallery(tmp_path: Path) -> Path:
    g = tmp_path / "gallery.db"
    make_gallery(g, 20)  # ~60 embeddings: a dozen pages
    corrupt_page(g)
    return g


@pytest.fixture
def damaged_queue(tmp_path: Path) -> Path:
    db = tmp_path / "events.db"
    populate(db, 400)
    corrupt_page(db)
    return db


def test_gallery_list_on_a_damaged_page_names_the_file(damaged_gallery: Path) -> None:
    r = edge_mtl("gallery", "list", "--gallery", str(damaged_gallery))
    assert r.returncode == 2, r.stderr
    line = one_line_error(r.stderr)
    assert str(damaged_gallery) in line and "damaged" in line, line


def test_enroll_into_a_damaged_gallery_names_the_file(data_dir: Path, damaged_gallery: Path) -> None:
    img = sorted((data_dir / "lfw" / "images_deepfunneled" / "George_W_Bush").glob("*.jpg"))[0]
    r = edge_mtl("enroll", "--gallery", str(damaged_gallery), "--name", "someone", str(img))
    assert r.returncode == 2, r.stderr
    line = one_line_error(r.stderr)
    assert str(damaged_gallery) in line and "damaged" in line, line


def test_events_tail_on_a_damaged_page_names_the_file(damaged_queue: Path) -> None:
    r = edge_mtl("events", "tail", "--events", str(damaged_queue))
    assert r.returncode == 2, r.stderr[-2000:]
    line = one_line_error(r.stderr)
    assert str(damaged_queue) in line and "damaged" in line, line


def test_run_on_a_damaged_queue_names_the_file(
    damaged_queue: Path, model_args: list[str], clips: dict[str, Path]
) -> None:
    r = edge_mtl("run", "--source", str(clips["noise"]), "--events", str(damaged_queue), *model_args)
    assert r.returncode == 2, r.stderr[-2000:]
    line = _edge_mtl_line(r.stderr)
    assert str(damaged_queue) in line and "damaged" in line, line


def test_disk_full_exits_2_and_loses_or_repeats_nothing(
    tmp_path: Path, models: dict[str, Path], clips: dict[str, Path]
) -> None:
    """A real full filesystem (a small tmpfs) under the queue and the JSONL log while events are being written."""
    with small_filesystem(tmp_path / "fs", 1024) as fs:
        db, jsonl = fs / "events.db", fs / "events.jsonl"
        cfg = tmp_path / "edge-mtl.toml"
        cfg.write_text(EVENTFUL.replace("[detector]\n", f"[detector]\nmodel = \"{models['detector']}\"\n", 1)
                       + f'[recognizer]\nmodel = "{models["recognizer"]}"\n'
                       + f'[events]\ndb = "{db}"\njsonl = "{jsonl}"\n')
        filler = fill(fs, 200)
        r = edge_mtl("run", "--config", str(cfg), "--source", str(clips["noise"]), "--loop", timeout=120)
        assert r.returncode == 2, r.stderr[-3000:]
        line = _edge_mtl_line(r.stderr)
        assert "disk full" in line and str(fs) in line, line
        stored = queue_rows(db)
        assert stored, "nothing was stored before the disk filled up"
        logged = [json.loads(ln)["seq"] for ln in jsonl_lines(jsonl)]
        assert len(logged) == len(set(logged)), f"a seq written twice to the JSONL log: {logged}"
        assert set(logged) <= {s for s, _ in stored}

        # Space freed, the daemon started again (no new events: the quiet detector): the log catches up exactly.
        filler.unlink()
        r = edge_mtl("run", "--source", str(clips["noise"]), "--max-frames", "2", "--detector",
                     str(models["quiet_detector"]), "--recognizer", str(models["recognizer"]),
                     "--events", str(db), "--jsonl", str(jsonl))
        assert r.returncode == 0, r.stderr[-3000:]
        seqs = check_nothing_lost(db, jsonl)
        assert seqs[: len(stored)] == [s for s, _ in stored]


def test_jsonl_never_writes_a_seq_twice_when_the_queue_cannot_commit_its_cursor(tmp_path: Path) -> None:
    """The queue on a full filesystem, the JSONL log on another: lines get written but the cursor commit fails.
    Retried syncs (the daemon flushes every 0.5 s and once more while stopping) must not repeat those lines, and a
    restart after space is freed resumes exactly after them."""
    from edge_mtl.events.dbfaults import StorageError, db_guard
    from edge_mtl.events.jsonl import JsonlLog
    from edge_mtl.events.queue import EventQueue

    jsonl = tmp_path / "events.jsonl"
    with small_filesystem(tmp_path / "fs", 1024) as fs:
        db = fs / "events.db"
        populate(db, 30)
        with EventQueue(db) as q:
            filler = fill(fs, 0)
            log = JsonlLog(q, jsonl, 1 << 20, 2)
            for _ in range(3):
                with pytest.raises(StorageError, match="disk full"), db_guard(db, "event queue"):
                    log.sync()
            log.close()
            assert q.get_cursor("jsonl") == 0  # the commit never got through
        logged = [json.loads(ln)["seq"] for ln in jsonl_lines(jsonl)]
        assert logged == list(range(1, 31)), logged  # once each, in order
        filler.unlink()
        with EventQueue(db) as q, JsonlLog(q, jsonl, 1 << 20, 2) as log:
            assert log.sync() == 0
        check_nothing_lost(db, jsonl)
