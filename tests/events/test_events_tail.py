"""`edge-mtl events tail`: JSON lines from the queue, --from, --follow, and the CLI's exit codes."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest
from events_helpers import make_event, wait_until

from edge_mtl.commands.cli import main
from edge_mtl.errors import InputError
from edge_mtl.events.queue import EventQueue
from edge_mtl.events.schema import decode_event
from edge_mtl.events.tail import tail


def _seqs(text: str) -> list[int]:
    return [decode_event(line)["seq"] for line in text.splitlines()]


def test_tail_prints_every_event_as_a_json_line(queue: EventQueue) -> None:
    queue.append([make_event(i) for i in range(5)])
    out = io.StringIO()
    assert tail(queue.path, from_seq=None, follow=False, out=out) == 0
    text = out.getvalue()
    assert text.endswith("\n")
    assert _seqs(text) == [1, 2, 3, 4, 5]
    assert [json.loads(x) for x in text.splitlines()] == queue.read()


def test_tail_from_seq_and_after_pruning(queue: EventQueue, caplog: pytest.LogCaptureFixture) -> None:
    queue.append([make_event(i) for i in range(10)])
    out = io.StringIO()
    tail(queue.path, from_seq=8, follow=False, out=out)
    assert _seqs(out.getvalue()) == [8, 9, 10]
    queue.prune(None, 4)
    out = io.StringIO()
    tail(queue.path, from_seq=None, follow=False, out=out)
    assert _seqs(out.getvalue()) == [7, 8, 9, 10]
    out = io.StringIO()
    tail(queue.path, from_seq=2, follow=False, out=out)  # already pruned: starts at the oldest, with a warning
    assert _seqs(out.getvalue()) == [7, 8, 9, 10]
    assert any("pruned" in r.getMessage() for r in caplog.records)
    out = io.StringIO()
    tail(queue.path, from_seq=11, follow=False, out=out)
    assert out.getvalue() == ""


def test_tail_large_queue_in_batches(queue: EventQueue) -> None:
    queue.append([make_event(i) for i in range(2500)])
    out = io.StringIO()
    tail(queue.path, from_seq=0, follow=False, out=out)
    assert _seqs(out.getvalue()) == list(range(1, 2501))


@pytest.mark.timeout(60)
def test_tail_follow_prints_new_events_until_stopped(queue: EventQueue) -> None:
    queue.append([make_event(0)])
    out = io.StringIO()
    stop = threading.Event()
    result: list[int] = []
    t = threading.Thread(
        target=lambda: result.append(tail(queue.path, None, follow=True, out=out, stop=stop, poll_s=0.02))
    )
    t.start()
    try:
        wait_until(lambda: len(out.getvalue().splitlines()) == 1, 10, "the first event")
        queue.append([make_event(1), make_event(2)])
        wait_until(lambda: len(out.getvalue().splitlines()) == 3, 10, "events appended while following")
        queue.append([make_event(3)])
        wait_until(lambda: len(out.getvalue().splitlines()) == 4, 10, "a later event")
    finally:
        stop.set()
        t.join(timeout=10)
    assert not t.is_alive()
    assert result == [0]
    assert _seqs(out.getvalue()) == [1, 2, 3, 4]


def test_tail_follow_waits_for_the_queue_to_be_created(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`tail --follow` started before the daemon (no file yet, then the empty file being initialised) waits for
    the queue instead of failing, then prints its events; a foreign file is still an error, stopping still works."""
    db = tmp_path / "later" / "events.db"
    out = io.StringIO()
    stop = threading.Event()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(tail(db, None, follow=True, out=out, stop=stop, poll_s=0.02)))
    with caplog.at_level("INFO", logger="edge_mtl.events.tail"):
        t.start()
        try:
            wait_until(lambda: "waiting for the event queue" in caplog.text, 10, "the waiting message")
            db.parent.mkdir()
            db.touch()  # what the creator's O_CREAT leaves before its tables are committed
            time.sleep(0.3)  # several polls see the empty file
            assert t.is_alive(), "an empty file is waited for, not reported as a foreign one"
            with EventQueue(db) as q:
                q.append([make_event(0), make_event(1)])
                wait_until(lambda: _seqs(out.getvalue()) == [1, 2], 10, "the events of the new queue")
        finally:
            stop.set()
            t.join(timeout=10)
    assert not t.is_alive() and result == [0]
    stop2 = threading.Event()
    stop2.set()
    assert tail(tmp_path / "never.db", None, follow=True, out=io.StringIO(), stop=stop2) == 0
    junk = tmp_path / "junk.db"
    junk.write_text("hello")
    with pytest.raises(InputError, match="not an edge-mtl event queue"):
        tail(junk, None, True, io.StringIO())


def test_tail_missing_or_foreign_db_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such event queue"):
        tail(tmp_path / "nope.db", None, False, io.StringIO())
    assert not (tmp_path / "nope.db").exists()  # tail never creates a queue
    junk = tmp_path / "junk.db"
    junk.write_text("hello")
    with pytest.raises(InputError, match="not an edge-mtl event queue"):
        tail(junk, None, False, io.StringIO())
    with pytest.raises(InputError, match="--from"):
        tail(junk, -1, False, io.StringIO())


def test_cli_events_tail(queue: EventQueue, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queue.append([make_event(i) for i in range(3)])
    assert main(["events", "tail", "--events", str(queue.path), "--from", "2"]) == 0
    assert _seqs(capsys.readouterr().out) == [2, 3]
    assert main(["events", "tail", "--events", str(tmp_path / "missing.db")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such event queue" in err
