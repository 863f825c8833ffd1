"""Network streams (rtsp://, rtsps://, http(s)://) through OpenCV's FFMPEG backend.

Transport and latency: OpenCV passes the environment variable ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` (``key;value``
pairs joined by ``|``) to FFmpeg when it opens a stream, and only then; it has no per-capture property for them.
`ensure_ffmpeg_options` sets it to `FFMPEG_OPTIONS`, RTP interleaved in the RTSP TCP connection (no UDP loss,
no firewall trouble; OpenCV's own default only *prefers* TCP), when the user has not set it, and leaves a user's
value alone: exporting ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` before start is the override. The variable is process-wide
and also reaches file captures, so it holds only ``rtsp_transport`` (ignored by every other demuxer). Low latency
comes from the reader thread draining the stream continuously into a one-frame slot, not from FFmpeg flags:
``fflags;nobuffer`` was tried and makes FFmpeg lose frames of MP4/AVI files opened in the same process (all of
them for an MP4 with its index at the end), so do not add it to a user override either.

Timeouts: ``CAP_PROP_OPEN_TIMEOUT_MSEC`` and ``CAP_PROP_READ_TIMEOUT_MSEC`` are passed at open (OpenCV's FFmpeg
interrupt callback enforces them), both equal to the camera's ``watchdog_s``: a dead stream makes ``read`` fail
after that long instead of blocking forever, and the reader reconnects. Before OpenCV sees the URL, the server
must answer an RTSP OPTIONS/DESCRIBE (or HTTP GET) within the same time (`edge_mtl.capture.probe`): OpenCV opens
captures one at a time, and a server that accepts and never answers would otherwise hold up every other camera.
"""

from __future__ import annotations

import logging
import os
from typing import Unpack
from urllib.parse import urlsplit, urlunsplit

import cv2

from edge_mtl.capture.base import LiveOptions, LiveSource, open_capture
from edge_mtl.capture.probe import probe_stream
from edge_mtl.errors import InputError

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
FFMPEG_OPTIONS = "rtsp_transport;tcp"


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and metrics (camera URLs often embed credentials)."""
    parts = urlsplit(url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    netloc = f"{user}:***@{host}" if user else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_url(url: str) -> str:
    """Validate a stream URL's scheme and host; InputError with a one-line reason otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as e:
        raise InputError(f"{redact_url(url)}: invalid URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in NETWORK_SCHEMES:
        raise InputError(f"{redact_url(url)}: unsupported scheme {scheme!r} (use one of {', '.join(NETWORK_SCHEMES)})")
    if not parts.hostname:
        raise InputError(f"{redact_url(url)}: URL has no host")
    return url


def ensure_ffmpeg_options() -> None:
    """Set OpenCV's FFmpeg capture options for low-latency RTSP over TCP unless the user already set them."""
    if FFMPEG_OPTIONS_ENV not in os.environ:
        os.environ[FFMPEG_OPTIONS_ENV] = FFMPEG_OPTIONS
        log.debug("set %s=%s", FFMPEG_OPTIONS_ENV, FFMPEG_OPTIONS)


class NetworkSource(LiveSource):
    """An RTSP/HTTP camera: live (latest frame only), never an error at start (a camera that is down at boot is
    retried with backoff like one that drops later)."""

    kind = "rtsp"

    def __init__(self, name: str, url: str, **options: Unpack[LiveOptions]) -> None:
        self.url = check_url(url)
        super().__init__(name, redact_url(url), **options)
        self.kind = urlsplit(url).scheme.lower()

    def _prepare(self) -> None:
        ensure_ffmpeg_options()

    def _open_capture(self) -> cv2.VideoCapture:
        # OpenCV opens every FFmpeg capture under one process-wide lock: only a server that answers may hold it
        # (edge_mtl.capture.probe).
        probe_stream(self.url, self.watchdog_s)
        timeout_ms = max(100, int(self.watchdog_s * 1000))
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms,
                  *self.decode.capture_params()]
        return open_capture(self.url, cv2.CAP_FFMPEG, params, "no connection or no video stream")
