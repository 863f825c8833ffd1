"""`edge-mtl collect --import`: a box's own event record (its SQLite queue or its JSON-lines log) into a real
PostgreSQL, for the events the broker never carried to the collector (it started after the boxes). Each event is
stored once however often it is imported; bad lines are counted, never stored; bad input exits 2 before anything is
written, an unreachable database exits 1."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest

from edge_mtl.commands.cli import main
from edge_mtl.events.queue import EventQueue
from tests.events.events_helpers import make_event
from tests.fleet.fleet_helpers import Postgres

pytestmark = pytest.mark.timeout(120)


def _config(tmp: Path, dsn: str) -> Path:
    p = tmp / "collector.toml"
    p.write_text(f'[collector.broker]\nhost = "127.0.0.1"\n[collector.database]\ndsn = "{dsn}"\n'
                 "connect_timeout_s = 2\n", encoding="utf-8")
    return p


def _box_queue(tmp: Path, box: str, n: int) -> Path:
    q = EventQueue(tmp / f"{box}.db")
    evs = [make_event(i, camera="door") for i in range(n)]
    for e in evs:
        e.box, e.site = box, "north"
    q.append(evs)
    q.close()
    return tmp / f"{box}.db"


def _import(capsys: pytest.CaptureFixture[str], cfg: Path, *files: Path) -> dict[str, object]:
    assert main(["collect", "--config", str(cfg), "--import", *map(str, files)]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_import_a_box_queue_and_log_each_event_once(postgres: Postgres, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, postgres.dsn)
    db = _box_queue(tmp_path, "box-a", 250)
    first = _import(capsys, cfg, db)
    assert (first["read"], first["stored"], first["duplicates"], first["invalid"]) == (250, 250, 0, 0)
    assert first["stored_by_box"] == {"box-a": 250}
    rows = postgres.query("SELECT count(*), count(DISTINCT id), min(seq), max(seq), min(site) FROM edge_mtl.events")
    assert rows == [(250, 250, 1, 250, "north")]
    assert postgres.query("SELECT last_seq, events FROM edge_mtl.boxes WHERE box = 'box-a'") == [(250, 250)]

    # the box's JSON-lines log holds the same events, plus what a log can hold that is not an event
    q = EventQueue(db, create=False)
    texts = [t for _, t in q.read_raw(1, 1000)]
    q.close()
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"\n".join(t.encode() for t in texts[:100]) + b"\n\n{\"type\": \"face.seen\"}\n\xff\xfe not utf-8\n"
                    + b"\n".join(t.encode() for t in texts[100:]) + b"\n")
    again = _import(capsys, cfg, log, db)
    assert [(f["read"], f["stored"], f["duplicates"], f["invalid"]) for f in again["files"]] == [  # type: ignore[attr-defined]
        (252, 0, 250, 2), (250, 0, 250, 0)]
    assert postgres.query("SELECT count(*) FROM edge_mtl.events") == [(250,)]

    # a second box's log: only its events are new
    other = _box_queue(tmp_path, "box-b", 40)
    third = _import(capsys, cfg, other)
    assert third["stored_by_box"] == {"box-b": 40} and third["stored"] == 40
    assert postgres.query("SELECT box, count(*) FROM edge_mtl.events GROUP BY box ORDER BY box") == [
        ("box-a", 250), ("box-b", 40)]


def test_import_refuses_bad_files_before_writing(postgres: Postgres, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, postgres.dsn)
    good = _box_queue(tmp_path, "box-a", 10)
    other_db = tmp_path / "other.db"
    with sqlite3.connect(other_db) as conn:
        conn.execute("CREATE TABLE t (x)")
    for bad, why in ((tmp_path / "absent.db", "no such file"), (other_db, "not an edge-mtl event queue"),
                     (tmp_path, "not a file")):
        assert main(["collect", "--config", str(cfg), "--import", str(good), str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("edge-mtl: error: ") and why in err and "\n" not in err, err
    # nothing was written, not even the good file's events
    assert postgres.query("SELECT to_regclass('edge_mtl.events') IS NULL") == [(True,)]


def test_import_with_the_database_down_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _config(tmp_path, f"host=127.0.0.1 port={port} dbname=x user=x")
    db = _box_queue(tmp_path, "box-a", 5)
    assert main(["collect", "--config", str(cfg), "--import", str(db)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-mtl: error: PostgreSQL:") and "\n" not in err, err
    assert EventQueue(db, create=False).count() == 5  # the box's record is untouched
