"""`edge-mtl run` on a real RTSP camera (GStreamer's RTSP server streaming a real clip) that crashes mid-stream
and comes back on the same port: the daemon reconnects, keeps emitting events, and drains cleanly on SIGTERM."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest

from edge_mtl.events.schema import decode_event
from tests.capture.capture_helpers import RtspServer, free_port, gst_rtsp_missing
from tests.e2e.conftest import read_jsonl
from tests.e2e.e2e_helpers import Daemon, event_time, queue_events, wait_until

pytestmark = [pytest.mark.data, pytest.mark.timeout(240)]

CAMERA = "door"


def test_rtsp_camera_crash_and_restart(data_dir: Path, tmp_path: Path, model_args: list[str]) -> None:
    why = gst_rtsp_missing()
    if why:
        pytest.skip(why)
    # The 1080p pedestrians clip (4.2 s) played 8 times back to back by the server, remuxed (no encoding): several
    # people walking toward the camera. The server starts every client at the first frame, so a client that
    # reconnects sees the clip again.
    clip = data_dir / "videos" / "pedestrians_1080p.mp4"
    server = RtspServer(free_port(), clip, repeat=8)
    server.start()
    db, log = tmp_path / "events.db", tmp_path / "events.jsonl"
    try:
        with Daemon([*model_args, "--source", server.url, "--camera", CAMERA, "--events", str(db),
                     "--jsonl", str(log)]) as daemon:

            def appeared(after: float = 0.0) -> list[dict]:
                daemon.check_alive()
                return [e for e in queue_events(db) if e["type"] == "face.appeared" and event_time(e) > after]

            wait_until(lambda: bool(appeared()), 90, "a face.appeared event from the RTSP camera")
            before = queue_events(db)

            server.kill()  # the camera crashes mid-stream
            killed_at = time.time()
            daemon.wait_log(rf"{CAMERA}: .*reconnecting with backoff", 30)
            # nobody is followed through the outage: the tracks of the lost stream end at once
            wait_until(lambda: {e["track_id"] for e in queue_events(db) if e["type"] == "face.left"}
                       >= {e["track_id"] for e in before if e["type"] == "face.appeared"}, 15,
                       "face.left for every track that was live when the stream was lost")
            time.sleep(max(0.0, killed_at + 2.0 - time.time()))  # down for about 2 s
            server.start()  # same port, same path
            restarted_at = time.time()
            daemon.wait_log(rf"{CAMERA}: frames flowing again", 45)
            wait_until(lambda: bool(appeared(after=restarted_at)), 60, "a face.appeared event after the restart")
            assert daemon.stop() == 0, daemon.stderr[-3000:]
        stderr = daemon.stderr
    finally:
        server.kill()

    events = queue_events(db)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1))
    for e in events:
        decode_event(e)
        assert e["camera"] == CAMERA
    # the outage is logged (WARNING) and the source counts the reconnect
    assert re.search(rf"WARNING .*{CAMERA}: .*reconnecting with backoff", stderr), stderr[-3000:]
    stats = re.findall(rf"source {CAMERA}: .*'reconnects': (\d+)", stderr)
    assert stats and int(stats[-1]) >= 1, stderr[-3000:]

    after = [e for e in events if event_time(e) > restarted_at]
    assert any(e["type"] == "face.appeared" for e in after)
    assert min(e["seq"] for e in after) > max(e["seq"] for e in before)
    # track ids keep counting up across the outage: a track id is never reused
    appeared_ids = [e["track_id"] for e in events if e["type"] == "face.appeared"]
    assert len(appeared_ids) == len(set(appeared_ids)), appeared_ids
    old = {e["track_id"] for e in before if e["type"] == "face.appeared"}
    assert not old & {e["track_id"] for e in after if e["type"] == "face.appeared"}
    # every track that appeared also left, exactly once (SIGTERM ends the ones still live)
    left = Counter(e["track_id"] for e in events if e["type"] == "face.left")
    assert set(left) == set(appeared_ids) and set(left.values()) == {1}, (left, appeared_ids)
    # tracks of the lost stream ended with their last sighting, before the camera came back
    assert all(event_time(e) < restarted_at for e in events if e["type"] == "face.left" and e["track_id"] in old)
    # the JSONL log is the queue, line for line
    assert [e["id"] for e in read_jsonl(log)] == [e["id"] for e in events]
