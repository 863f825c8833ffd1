"""RTSP end to end against a real GStreamer RTSP server: frames, a crashed server, a hung server, no server."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from capture_helpers import RtspServer, free_port

from edge_mtl.capture import FrameSource, NetworkSource, open_source, redact_url
from edge_mtl.config import CameraConfig
from edge_mtl.errors import InputError
from edge_mtl.types import Frame

pytestmark = pytest.mark.timeout(120)

CAMERA = "door"


def camera(url: str, **kw: Any) -> CameraConfig:
    base: dict[str, Any] = {"reconnect_initial_s": 0.2, "reconnect_max_s": 1.0, "watchdog_s": 3.0}
    base.update(kw)
    return CameraConfig(name=CAMERA, source=url, **base)


def collect(src: FrameSource, n: int, limit_s: float, after_index: int = -1) -> list[Frame]:
    """`n` frames with index > after_index, in increasing index order, within limit_s (else the test fails)."""
    frames: list[Frame] = []
    deadline = time.monotonic() + limit_s
    while len(frames) < n:
        assert time.monotonic() < deadline, f"got {len(frames)}/{n} frames in {limit_s}s: {src.stats()}"
        f = src.read(timeout=0.5)
        if f is None or f.index <= after_index:
            continue
        assert not frames or f.index > frames[-1].index
        frames.append(f)
    return frames


def wait_for(cond: Any, src: FrameSource, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not cond(src.stats()):
        assert time.monotonic() < deadline, f"{what} not reached within {limit_s}s: {src.stats()}"
        src.read(timeout=0.1)  # keep consuming like a pipeline would


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("edge_mtl.capture") and r.levelno == logging.WARNING and CAMERA in r.getMessage()
    ]


def test_rtsp_frames_then_reconnect_after_server_restart(
    rtsp_server: RtspServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_mtl.capture")
    src = open_source(camera(rtsp_server.url))
    assert isinstance(src, NetworkSource)
    src.start()
    try:
        first = collect(src, 10, limit_s=20)
        assert all(f.camera == CAMERA and f.image.ndim == 3 and f.image.shape[2] == 3 for f in first)
        assert all(abs(time.time() - f.timestamp) < 5 for f in first)
        st = src.stats()
        assert st["connected"] and st["reconnects"] == 0 and st["fps"] is not None
        assert not outage_warnings(caplog)

        rtsp_server.kill()  # crash mid-stream
        wait_for(lambda s: not s["connected"], src, 10, "disconnect")
        down_at = time.monotonic()
        while time.monotonic() - down_at < 2.0:  # server stays down ~2 s; the source keeps retrying
            src.read(timeout=0.2)
        assert src.stats()["reconnect_attempts"] >= 2
        rtsp_server.start()

        later = collect(src, 10, limit_s=30, after_index=first[-1].index)
        st = src.stats()
        assert st["connected"] and st["reconnects"] >= 1
        assert later[0].index > first[-1].index
        # one WARNING for the whole outage, however many attempts it took
        assert len(outage_warnings(caplog)) == 1, [r.getMessage() for r in outage_warnings(caplog)]
        assert any("flowing again" in r.getMessage() for r in caplog.records)
    finally:
        assert src.stop(timeout=10)
    assert not src.stats()["connected"]


def test_rtsp_watchdog_reconnects_hung_stream(rtsp_server: RtspServer) -> None:
    """A server that stops sending but keeps the connection open must not block the reader forever."""
    src = open_source(camera(rtsp_server.url, watchdog_s=1.5))
    src.start()
    try:
        first = collect(src, 5, limit_s=20)
        rtsp_server.pause()
        try:
            wait_for(lambda s: not s["connected"], src, 10, "watchdog disconnect")
            assert src.read(timeout=0.5) is None or src.read(timeout=0.5) is None
        finally:
            rtsp_server.resume()
        later = collect(src, 5, limit_s=30, after_index=first[-1].index)
        assert later[0].index > first[-1].index
        assert src.stats()["reconnects"] >= 1
    finally:
        assert src.stop(timeout=10)


def test_rtsp_nothing_listening_retries_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """A camera that is down at start is not an error: the source retries with backoff, warning once."""
    caplog.set_level(logging.INFO, logger="edge_mtl.capture")
    src = open_source(camera(f"rtsp://user:secret@127.0.0.1:{free_port()}/none", reconnect_initial_s=0.1))
    src.start()  # does not raise
    try:
        wait_for(lambda s: s["reconnect_attempts"] >= 3, src, 20, "three reconnect attempts")
        st = src.stats()
        assert not st["connected"] and st["frames_read"] == 0 and not src.finished
        assert "secret" not in st["source"]
        assert len(outage_warnings(caplog)) == 1
        assert all("secret" not in r.getMessage() for r in caplog.records)
    finally:
        assert src.stop(timeout=10)
    assert src.finished


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:pw@10.0.0.5:554/s1") == "rtsp://admin:***@10.0.0.5:554/s1"
    assert redact_url("rtsp://10.0.0.5/s1") == "rtsp://10.0.0.5/s1"


@pytest.mark.parametrize("url", ["rtsp:///nohost", "ftp://host/x", "rtsp://host:99999/x"])
def test_bad_urls_are_input_errors(url: str) -> None:
    with pytest.raises(InputError):
        open_source(camera(url))
