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

from edge_mtl.capture.base import Backoff, CaptureOpenError, FrameBuffer, FrameSource, ThreadedSource
from edge_mtl.capture.file import FileSource
from edge_mtl.capture.rtsp import NETWORK_SCHEMES, NetworkSource, redact_url
from edge_mtl.capture.v4l2 import V4L2Source, is_device
from edge_mtl.config import CameraConfig
from edge_mtl.errors import InputError

__all__ = [
    "Backoff",
    "CaptureOpenError",
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


def open_source(cfg: CameraConfig, *, max_frames: int | None = None) -> FrameSource:
    """The FrameSource for one camera (not started). InputError for a source that can never work: an unknown
    scheme, a URL without host, a missing video device or a missing file (an unreadable file fails in `start`)."""
    kind = source_kind(cfg.source)
    if kind == "network":
        return NetworkSource(
            cfg.name,
            cfg.source,
            max_frames=max_frames,
            reconnect_initial_s=cfg.reconnect_initial_s,
            reconnect_max_s=cfg.reconnect_max_s,
            watchdog_s=cfg.watchdog_s,
        )
    if kind == "v4l2":
        return V4L2Source(
            cfg.name,
            cfg.source,
            max_frames=max_frames,
            reconnect_initial_s=cfg.reconnect_initial_s,
            reconnect_max_s=cfg.reconnect_max_s,
            watchdog_s=cfg.watchdog_s,
        )
    path = urlsplit(cfg.source).path if cfg.source.startswith("file://") else cfg.source
    src = FileSource(cfg.name, path, loop=cfg.loop, realtime=cfg.realtime, max_frames=max_frames)
    if not src.path.exists():
        raise InputError(f"{src.path}: no such file")
    return src
