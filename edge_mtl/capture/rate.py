"""Is each camera served at the rate it was configured for? Warnings and numbers for metrics.

A camera's target rate is its `detect_fps` when set (frames the detector ran on, per second; at most the stream's
own rate), else its stream's own frame rate (frames processed per second: without a detection rate every processed
frame is detected). Over a sliding window of `window_s`, a camera whose rate is below `tolerance` x target is
*behind*: one WARNING when it falls behind (with the rate it gets and what to change), one INFO line when it is
back, never one per check, and `episodes` counts how often it happened (edge_mtl_camera_behind_total). A camera
with no target (no detect_fps and a stream that declares no rate) or not delivering frames (reconnecting,
finished) is never behind: its outage is reported elsewhere.

Also decides how a camera's stream is decoded (`decode_options`), from the camera count and its settings.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from edge_mtl.capture.base import DecodeOptions
from edge_mtl.config import CameraConfig

log = logging.getLogger(__name__)

WINDOW_S = 10.0
TOLERANCE = 0.9


def decode_options(cam: CameraConfig, cameras: int, detect_size: int | None) -> DecodeOptions:
    """How the daemon decodes `cam` among `cameras` streams: FFmpeg threads as configured, else one per stream when
    there are several (each stream has its own reader thread already; docs/performance.md); frames scaled for the
    detector in the capture thread unless a detect stream is given (the detector scales that one) or only some
    frames are detected (detect_fps)."""
    threads = cam.decode_threads if cam.decode_threads is not None else (1 if cameras > 1 else 0)
    # with detect_fps most frames are never detected: the main loop scales the few that are
    scale = cam.scale_in_capture and cam.detect_source is None and cam.detect_fps is None
    return DecodeOptions(threads=threads, convert_dropped=cam.convert_dropped,
                         detect_size=detect_size if scale else None)


@dataclass
class CameraRate:
    """One camera's rate as last checked."""

    target_fps: float | None = None
    fps: float = 0.0  # detections per second with detect_fps, else frames processed per second
    behind: bool = False
    episodes: int = 0


class RateMonitor:
    """Tracks every camera's rate against its target (see the module docstring). Call `update` about once a second
    from one thread."""

    def __init__(self, cameras: Mapping[str, CameraConfig], window_s: float = WINDOW_S,
                 tolerance: float = TOLERANCE) -> None:
        self.cameras = dict(cameras)
        self.window_s = float(window_s)
        self.tolerance = float(tolerance)
        self.rates: dict[str, CameraRate] = {n: CameraRate() for n in self.cameras}
        self._history: dict[str, deque[tuple[float, int]]] = {n: deque() for n in self.cameras}

    def update(self, now: float, counts: Mapping[str, int], stream_fps: Mapping[str, float | None],
               delivering: Mapping[str, bool]) -> dict[str, CameraRate]:
        """`counts`: per camera, detections so far (cameras with detect_fps) or frames processed so far (others);
        `stream_fps`: the stream's declared rate; `delivering`: whether its source is delivering frames now."""
        for name, cam in self.cameras.items():
            rate = self.rates[name]
            hist = self._history[name]
            own = stream_fps.get(name)
            target = cam.detect_fps if cam.detect_fps is not None else own
            # a camera cannot be detected more often than it delivers frames
            rate.target_fps = min(target, own) if target is not None and own else target
            if not delivering.get(name, False):
                hist.clear()
                self._set(name, rate, False)
                continue
            hist.append((now, int(counts.get(name, 0))))
            while len(hist) > 2 and now - hist[1][0] >= self.window_s:
                hist.popleft()
            span = now - hist[0][0]
            if span < self.window_s * 0.9:
                continue  # not a full window yet (after start or an outage): no verdict
            rate.fps = (hist[-1][1] - hist[0][1]) / span
            behind = rate.target_fps is not None and rate.fps < self.tolerance * rate.target_fps
            self._set(name, rate, behind)
        return self.rates

    def _set(self, name: str, rate: CameraRate, behind: bool) -> None:
        if behind and not rate.behind:
            rate.episodes += 1
            what = "detections" if self.cameras[name].detect_fps is not None else "frames processed"
            log.warning(
                "camera %s falls behind its configured rate: %.1f %s/s of %.1f over the last %.0f s (set or lower "
                "cameras.detect_fps, use a detect_source substream, or serve fewer cameras: docs/performance.md)",
                name, rate.fps, what, rate.target_fps or 0.0, self.window_s)
        elif rate.behind and not behind:
            log.info("camera %s is back at its configured rate (%.1f/s)", name, rate.fps)
        rate.behind = behind
