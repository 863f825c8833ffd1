"""A camera read as two streams: the full-resolution one for face crops, a low-resolution one for the detector.

IP cameras offer a substream (often 640x360 or 704x576) beside the main stream. Scaling a 1080p frame down for
the detector costs more CPU than decoding a substream already that small, and a substream never needs converting
at full size. `DetectStreamSource` reads both, each with its own reader thread and the latest-frame policy, and
delivers the main stream's frames with the newest substream frame attached as `Frame.detect_image`; the detector
runs on that and scales its boxes and landmarks back to the main frame (per axis: a substream may have another
aspect ratio), and faces are aligned from the main frame.

The two streams are not frame-synchronous: a substream frame is attached only when it was captured within
`max_skew_s` of the main frame (else the detector scales the main frame itself and `detect_fallbacks` counts it).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from edge_mtl.capture.base import DecodeOptions, FrameSource
from edge_mtl.config import CameraConfig
from edge_mtl.types import Frame

log = logging.getLogger(__name__)

#: the largest capture-time difference between a main frame and the substream frame it is detected on
MAX_SKEW_S = 0.25


class DetectStreamSource(FrameSource):
    """Main stream frames with the newest detect-stream frame attached (see the module docstring)."""

    def __init__(self, main: FrameSource, detect: FrameSource, max_skew_s: float = MAX_SKEW_S) -> None:
        self.name = main.name
        self.main = main
        self.detect = detect
        self.max_skew_s = float(max_skew_s)
        self.kind = getattr(main, "kind", "source")
        self.reconnecting = bool(getattr(main, "reconnecting", False))
        self.live = bool(getattr(main, "live", True))
        self._latest: Frame | None = None
        self._paired = 0
        self._fallbacks = 0

    def start(self) -> None:
        self.main.start()
        try:
            self.detect.start()
        except BaseException:
            self.main.stop(timeout=2.0)
            raise

    def read(self, timeout: float) -> Frame | None:
        frame = self.main.read(timeout)
        if frame is None:
            return None
        newest = self.detect.read(0.0)
        if newest is not None:
            self._latest = newest
        sub = self._latest
        if sub is None or abs(sub.timestamp - frame.timestamp) > self.max_skew_s:
            self._fallbacks += 1
            return frame
        self._paired += 1
        return Frame(image=frame.image, camera=frame.camera, index=frame.index, timestamp=frame.timestamp,
                     detect_image=sub.image)

    def request_stop(self) -> None:
        self.main.request_stop()
        self.detect.request_stop()

    def stop(self, timeout: float = 5.0) -> bool:
        self.request_stop()
        ok = self.main.stop(timeout)
        return self.detect.stop(timeout) and ok

    @property
    def finished(self) -> bool:
        return self.main.finished

    def stats(self) -> dict[str, Any]:
        st = dict(self.main.stats())
        sub = self.detect.stats()
        st["detect_stream"] = {k: sub.get(k) for k in ("source", "frames_read", "frames_dropped", "connected",
                                                       "reconnects", "error")}
        st["detect_paired"] = self._paired
        st["detect_fallbacks"] = self._fallbacks
        return st

    def add_waker(self, event: threading.Event) -> None:
        self.main.add_waker(event)


def open_detect_stream(
    cfg: CameraConfig, *, max_frames: int | None = None, decode: DecodeOptions | None = None
) -> DetectStreamSource:
    """Both streams of `cfg` (`cfg.detect_source` set): the main one as configured, the detect stream with the
    same reconnect settings, never scaled again in its capture thread (the detector resizes what is left)."""
    from edge_mtl.capture import _open_one

    assert cfg.detect_source is not None
    opts = decode or DecodeOptions()
    main = _open_one(cfg, cfg.source, max_frames=max_frames,
                     decode=DecodeOptions(opts.threads, opts.convert_dropped, None))
    sub = _open_one(cfg, cfg.detect_source, max_frames=None,
                    decode=DecodeOptions(opts.threads, opts.convert_dropped, None))
    if not getattr(main, "live", True) or not getattr(sub, "live", True):
        log.warning("camera %s: detect_source pairs live streams; offline files are paired by capture time only "
                    "when both play in real time (realtime = true)", cfg.name)
    return DetectStreamSource(main, sub)
