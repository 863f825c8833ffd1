"""systemd integration, through a real AF_UNIX datagram socket as $NOTIFY_SOCKET: READY=1 after start, STATUS,
WATCHDOG=1 only while the daemon makes progress, and SIGTERM draining within service.stop_timeout_s."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

from service_helpers import (
    EVENTFUL,
    Daemon,
    MjpegCamera,
    NotifySocket,
    child_env,
    jsonl_lines,
    listening_sockets,
    queue_len,
    queue_rows,
    wait_until,
)

from edge_mtl.config import CameraConfig
from edge_mtl.daemon.notify import SystemdNotifier
from edge_mtl.daemon.progress import ProgressMonitor


def test_ready_status_watchdog_and_sigterm_drain(
    tmp_path: Path, model_args: list[str], clips: dict[str, Path], notify: NotifySocket
) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(EVENTFUL + "\n[service]\nstop_timeout_s = 10.0\n")
    db, log = tmp_path / "events.db", tmp_path / "events.jsonl"
    with Daemon(["--config", str(cfg), "--source", str(clips["noise"]), "--loop", "--events", str(db),
                 "--jsonl", str(log), *model_args], env=child_env(notify.env(watchdog_s=1.0))) as d:
        ready = notify.wait_for("READY=1", 120, daemon=d)
        # no message but STATUS before READY: nothing claims to be up while models load
        assert all(m.startswith("STATUS=") for t, m in notify.messages(until=ready) if m != "READY=1")
        notify.wait_for("WATCHDOG=1", 20, since=ready, count=3, daemon=d)
        wait_until(lambda: queue_len(db) >= 50, 60, "50 events in the queue")
        notify.wait_for("STATUS=frames=", 20, since=ready, daemon=d)
        status = notify.messages("STATUS=frames=")[-1][1]
        assert "fps=" in status and "events=" in status and "drops=" in status
        # no listening socket at all: service.metrics_port is not set
        assert listening_sockets(d.pid) == []
        t_term = time.monotonic()
        d.signal(signal.SIGTERM)
        rc = d.wait(30)
        took = time.monotonic() - t_term
    assert rc == 0, d.stderr[-3000:]
    assert took < 10.0 + 5.0, took  # stop_timeout_s plus interpreter exit; generous on a loaded machine
    assert notify.messages("STOPPING=1")
    rows = queue_rows(db)
    events = [json.loads(b) for _, b in rows]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    # in-flight tracks were ended: every track that appeared also left
    kinds = Counter(e["type"] for e in events)
    appeared = {e["track_id"] for e in events if e["type"] == "face.appeared"}
    left = {e["track_id"] for e in events if e["type"] == "face.left"}
    assert kinds["face.appeared"] > 0 and appeared == left
    # the JSONL log was flushed up to the last event before exit
    assert jsonl_lines(log) == [b for _, b in rows]


def test_stalled_source_stops_the_watchdog_and_a_reconnecting_one_does_not(
    tmp_path: Path, model_args: list[str], notify: NotifySocket
) -> None:
    """A camera that keeps its connection open but sends nothing (a wedged stream) is a stall: WATCHDOG=1 stops,
    so systemd would restart the daemon; it resumes when frames flow again. A camera that is gone and being
    reconnected is not a stall: the watchdog keeps being petted (a restart would not bring the camera back)."""
    cam = MjpegCamera(fps=10)
    stall_s = 1.0
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        "[[cameras]]\nname = \"door\"\n"
        f"source = \"{cam.url}\"\n"
        # the capture's own read timeout: long, so a frozen stream stays 'open but silent' for the whole test
        "watchdog_s = 60.0\nreconnect_initial_s = 0.2\nreconnect_max_s = 0.5\n"
        f"[service]\nwatchdog_stall_s = {stall_s}\nstop_timeout_s = 5.0\n"
        "[detector]\ninput_size = 160\n"
    )
    try:
        with Daemon(["--config", str(cfg), "--events", str(tmp_path / "e.db"), *model_args],
                    env=child_env(notify.env(watchdog_s=0.4))) as d:
            ready = notify.wait_for("READY=1", 120, daemon=d)
            notify.wait_for("WATCHDOG=1", 20, since=ready, count=5, daemon=d)
            # 1. freeze: the socket stays open, no frame comes
            cam.frozen.set()
            t_freeze = time.monotonic()
            time.sleep(stall_s + 3.0)
            quiet_from = t_freeze + stall_s + 1.0  # detection within a few pet intervals of stall_s
            pets = notify.messages("WATCHDOG=1", since=quiet_from)
            assert pets == [], f"still petting {time.monotonic() - t_freeze:.1f} s after the stream froze"
            assert d.alive()
            # 2. thaw: frames flow on the same connection, petting resumes
            cam.frozen.clear()
            t_thaw = time.monotonic()
            notify.wait_for("WATCHDOG=1", 15, since=t_thaw, count=3, daemon=d)
            # 3. the camera goes away: the source reconnects with backoff, which is not a stall
            cam.close()
            t_gone = time.monotonic()
            time.sleep(stall_s + 3.0)
            late = notify.messages("WATCHDOG=1", since=t_gone + stall_s + 1.0)
            assert len(late) >= 3, "a camera that is down and being reconnected must not stop the watchdog"
            assert "reconnect" in d.stderr
            d.signal(signal.SIGTERM)
            assert d.wait(30) == 0, d.stderr[-3000:]
    finally:
        if not cam.gone.is_set():
            cam.close()


# ------------------------------------------------------------------ the policy itself, on synthetic stats
def _stats(name: str, reads: int, attempts: int = 0, connected: bool = True, age: float | None = 0.0,
           finished: bool = False, error: str | None = None) -> dict[str, object]:
    return {"name": name, "frames_read": reads, "reconnect_attempts": attempts, "connected": connected,
            "last_frame_age_s": age, "finished": finished, "error": error}


def test_progress_monitor_states() -> None:
    cams = [CameraConfig(name="a", source="rtsp://x/1", watchdog_s=5, reconnect_max_s=10)]
    m = ProgressMonitor(stall_s=30, cameras=cams, now=0.0)
    assert m.update(1.0, 10, [_stats("a", 10)]) and m.states == {"a": "delivering"}
    # open, frames stop: fine until stall_s, then stalled
    assert m.update(20.0, 10, [_stats("a", 10, age=19.0)])
    assert not m.update(32.0, 10, [_stats("a", 10, age=31.0)]) and m.states["a"] == "stalled"
    assert any("stalled" in p for p in m.problems)
    # the capture gave up and reconnects: attempts move -> progress again (nothing to restart)
    assert m.update(33.0, 10, [_stats("a", 10, attempts=1, connected=False, age=32.0)])
    assert m.states["a"] == "reconnecting"
    assert m.update(60.0, 10, [_stats("a", 10, attempts=3, connected=False, age=59.0)])
    # a reconnect loop that stops moving for longer than stall + backoff cap + open timeout is wedged
    assert m.update(90.0, 10, [_stats("a", 10, attempts=3, connected=False, age=89.0)])  # 30 < 30 + 11 + 5
    assert not m.update(107.0, 10, [_stats("a", 10, attempts=3, connected=False, age=106.0)])
    # a dead capture thread is never progress
    m2 = ProgressMonitor(stall_s=30, cameras=cams, now=0.0)
    assert not m2.update(1.0, 5, [_stats("a", 5, finished=True, error="RuntimeError: boom")])
    # a file that ended is fine, as long as another camera still makes progress
    m3 = ProgressMonitor(stall_s=30, cameras=cams, now=0.0)
    assert m3.update(40.0, 7, [_stats("a", 7, finished=True), _stats("b", 7, age=0.1)])


def test_notifier_parses_the_environment() -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": "@abc", "WATCHDOG_USEC": "2000000"})
    assert n.enabled and n.addr == "\0abc" and n.watchdog_s == 2.0
    n.close()
    # a watchdog meant for another process (WATCHDOG_PID) is not ours; no socket: a no-op
    n = SystemdNotifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
    assert not n.enabled and n.watchdog_s is None
    n.notify("READY=1")  # no socket: nothing happens, nothing raises
