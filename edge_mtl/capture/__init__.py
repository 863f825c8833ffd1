"""Frame sources: files, RTSP/HTTP streams and V4L2 cameras behind one `FrameSource` interface (adding one:
docs/architecture.md).

`open_source(cfg)` picks the implementation from ``cfg.source``:

* ``rtsp://``, ``rtsps://``, ``http://``, ``https://`` -> `NetworkSource` (live, reconnects);
* an integer (``"0"``), ``/dev/videoN`` or another character device -> `V4L2Source` (live, reconnects);
* anything else -> a video file, `FileSource` (offline, every frame; live when ``cfg.realtime``).

Usage::

    src = open_source(cam_cfg, max_frames=100)
    src.start()                      # InputError for a missing or unreadable file
    while not src.finished:
        frame = src.read(timeout=0.5)
        ...
    src.stop()

Several cameras: give each its own source; the daemon reads them in turn and waits on one event that every
source sets (`add_waker`) when a frame arrives.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from edge_mtl.capture.base import (
    Backoff,
    CaptureOpenError,
    DecodeOptions,
    FrameBuffer,
    FrameSource,
    ThreadedSource,
)
from edge_mtl.capture.file import FileSource
from edge_mtl.capture.rtsp import NETWORK_SCHEMES, NetworkSource, redact_url
from edge_mtl.capture.v4l2 import V4L2Source, is_device
from edge_mtl.config import CameraConfig
from edge_mtl.errors import InputError

__all__ = [
    "Backoff",
    "CaptureOpenError",
    "DecodeOptions",
    "FileSource",
    "FrameBuffer",
    "FrameSource",
    "NetworkSource",
    "ThreadedSource",
    "V4L2Source",
    "open_source",
    "redact_url",
    "source_kind",
]


def source_kind(source: str) -> str:
    """'network', 'v4l2' or 'file' for a configured source string; InputError for an unknown URL scheme."""
    if "://" in source:
        scheme = urlsplit(source).scheme.lower()
        if scheme in NETWORK_SCHEMES:
            return "network"
        if scheme == "file":
            return "file"
        raise InputError(
            f"{redact_url(source)}: unsupported source scheme {scheme!r} (file path, /dev/videoN or "
            f"{', '.join(s + '://' for s in NETWORK_SCHEMES)})"
        )
    if is_device(source):
        return "v4l2"
    return "file"


def open_source(
    cfg: CameraConfig, *, max_frames: int | None = None, decode: DecodeOptions | None = None
) -> FrameSource:
    """The FrameSource for one camera (not started). InputError for a source that can never work: an unknown
    scheme, a URL without host, a missing video device or a missing file (an unreadable file fails in `start`).
    With `cfg.detect_source`, a `DetectStreamSource` pairing the two streams."""
    if cfg.detect_source is not None:
        from edge_mtl.capture.detect_stream import open_detect_stream

        return open_detect_stream(cfg, max_frames=max_frames, decode=decode)
    return _open_one(cfg, cfg.source, max_frames=max_frames, decode=decode)


def _open_one(
    cfg: CameraConfig, source: str, *, max_frames: int | None, decode: DecodeOptions | None
) -> FrameSource:
    kind = source_kind(source)
    if kind in ("network", "v4l2"):
        live = NetworkSource if kind == "network" else V4L2Source
        return live(
            cfg.name,
            source,
            max_frames=max_frames,
            reconnect_initial_s=cfg.reconnect_initial_s,
            reconnect_max_s=cfg.reconnect_max_s,
            watchdog_s=cfg.watchdog_s,
            decode=decode,
        )
    path = urlsplit(source).path if source.startswith("file://") else source
    src = FileSource(cfg.name, path, loop=cfg.loop, realtime=cfg.realtime, max_frames=max_frames, decode=decode)
    if not src.path.exists():
        raise InputError(f"{src.path}: no such file")
    return src
