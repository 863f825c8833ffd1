"""Source selection and V4L2 behaviour without a camera: a missing node is an InputError; a node that exists but
cannot be opened as a camera (here /dev/null) is retried with backoff like an unplugged camera."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from edge_mtl.capture import FileSource, NetworkSource, V4L2Source, open_source, source_kind
from edge_mtl.config import CameraConfig
from edge_mtl.errors import InputError

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("rtsp://10.0.0.1/stream", "network"),
        ("RTSPS://10.0.0.1/stream", "network"),
        ("http://cam.local/mjpg", "network"),
        ("/dev/video0", "v4l2"),
        ("0", "v4l2"),
        ("/dev/null", "v4l2"),  # any character device
        ("clips/lobby.mp4", "file"),
        ("file:///tmp/x.mp4", "file"),
    ],
)
def test_source_kind(source: str, kind: str) -> None:
    assert source_kind(source) == kind


def test_unknown_scheme_is_input_error() -> None:
    with pytest.raises(InputError, match="unsupported source scheme"):
        open_source(CameraConfig(name="c", source="gopher://x/y"))


@pytest.mark.parametrize("source", ["/dev/video99", "99"])
def test_missing_video_device_is_input_error(source: str) -> None:
    if os.path.exists("/dev/video99"):
        pytest.skip("this machine has a /dev/video99")
    with pytest.raises(InputError, match="/dev/video99: no such video device"):
        open_source(CameraConfig(name="usb", source=source))


def test_unopenable_device_retries_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_mtl.capture")
    src = open_source(CameraConfig(name="usb", source="/dev/null", reconnect_initial_s=0.05, reconnect_max_s=0.2))
    assert isinstance(src, V4L2Source)
    src.start()  # not an error: the device exists and may become usable
    try:
        deadline = time.monotonic() + 10
        while src.stats()["reconnect_attempts"] < 3:
            assert time.monotonic() < deadline, src.stats()
            assert src.read(timeout=0.1) is None
        st = src.stats()
        assert not st["connected"] and st["frames_read"] == 0 and st["kind"] == "v4l2"
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "usb" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        assert src.stop(timeout=5)


def test_open_source_types(tmp_path: Path) -> None:
    clip = tmp_path / "x.mp4"
    clip.write_bytes(b"")
    assert isinstance(open_source(CameraConfig(name="f", source=str(clip))), FileSource)
    assert isinstance(open_source(CameraConfig(name="n", source="rtsp://127.0.0.1:1/x")), NetworkSource)
