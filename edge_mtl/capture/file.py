"""Video files: offline processing (every frame, in order) or, with ``realtime=True``, a camera stand-in paced at
the file's native frame rate with the latest-frame policy. ``loop=True`` restarts the file at its end."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2

from edge_mtl.capture.base import DecodeOptions, ThreadedSource, nominal_fps
from edge_mtl.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0  # pacing rate for a realtime file that declares no frame rate


def open_video_file(path: Path, params: list[int] | None = None) -> cv2.VideoCapture:
    """Open `path` with the FFMPEG backend (`params`: VideoCapture open parameters); InputError (one line) when it
    is not a readable video."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params or [])
    except cv2.error as e:
        raise InputError(f"{path}: cannot open as a video: {str(e).strip().splitlines()[-1]}") from None
    if not cap.isOpened():
        cap.release()
        raise InputError(f"{path}: cannot open as a video (unsupported, truncated or corrupt file)")
    w, h = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    if w < 1 or h < 1:
        cap.release()
        raise InputError(f"{path}: no video stream")
    return cap


class FileSource(ThreadedSource):
    """A video file read by its own thread. The file is opened in `start`, so a missing or unreadable file is an
    InputError there (CLI exit 2) rather than a silent empty run."""

    kind = "file"

    def __init__(
        self,
        name: str,
        path: str | Path,
        *,
        loop: bool = False,
        realtime: bool = False,
        max_frames: int | None = None,
        queue_size: int = 4,
        decode: DecodeOptions | None = None,
    ) -> None:
        self.path = Path(path)
        super().__init__(
            name, str(self.path), live=realtime, reconnecting=False, max_frames=max_frames, queue_size=queue_size,
            decode=decode,
        )
        self.loop = loop
        self.realtime = realtime
        self._pace_start: float | None = None
        self._paced = 0
        self._period = 1.0 / DEFAULT_FPS
        self._media_period = 1.0 / DEFAULT_FPS
        self._t0: float | None = None
        self._spent: cv2.VideoCapture | None = None  # the last pass's capture, kept to seek back when looping

    def _prepare(self) -> None:
        cap = open_video_file(self.path, self.decode.capture_params())
        fps = nominal_fps(cap)
        self._media_period = 1.0 / (fps or DEFAULT_FPS)
        if self.realtime:
            if fps is None:
                log.warning("%s: %s declares no frame rate; pacing at %.0f fps", self.name, self.path, DEFAULT_FPS)
            self._period = 1.0 / (fps or DEFAULT_FPS)
        self._adopt(cap)

    def _open_capture(self) -> cv2.VideoCapture:
        return open_video_file(self.path, self.decode.capture_params())

    def _frame_time(self) -> float:
        """Offline, frames are stamped in media time (the first frame's wall time + index / fps), so track
        durations and event times mean seconds of video however fast or slow the file is processed; realtime
        (a camera stand-in) uses the wall clock like a camera."""
        if self.realtime:
            return time.time()
        if self._t0 is None:
            self._t0 = time.time()
        return self._t0 + self._next_index * self._media_period

    def _end_pass(self) -> None:
        if not self.loop:
            self._release()
            return
        cap, self._cap = self._cap, None
        with self._lock:
            self._connected = False
        self._spent = cap

    def _release(self) -> None:
        spent, self._spent = self._spent, None
        if spent is not None:
            spent.release()
        super()._release()

    def _end_of_stream(self) -> bool:
        if not self.loop:
            log.info("%s: end of %s", self.name, self.path)
            return False
        cap = self._rewind()
        if cap is None:
            try:
                cap = open_video_file(self.path, self.decode.capture_params())
            except InputError as e:
                log.error("%s: cannot reopen to loop: %s", self.name, e)
                return False
        self._adopt(cap)
        return True

    def _rewind(self) -> cv2.VideoCapture | None:
        """The file's capture seeked back to its first frame, or None (then it is reopened). Seeking does not take
        the process-wide lock OpenCV holds while opening any FFmpeg capture, so a network camera stuck in its open
        cannot stall a looping file (edge_mtl.capture.probe)."""
        cap = self._spent
        self._spent = None
        if cap is None:
            return None
        try:
            if cap.set(cv2.CAP_PROP_POS_FRAMES, 0) and cap.get(cv2.CAP_PROP_POS_FRAMES) == 0:
                return cap
        except cv2.error as e:
            log.debug("%s: cannot seek %s to its start: %s", self.name, self.path, e)
        cap.release()
        return None

    def _before_grab(self) -> None:
        """Realtime pacing: frame n is grabbed at start + n / fps, as a camera would deliver it. A reader that fell
        more than a second behind (a stall) restarts the schedule instead of bursting to catch up."""
        if not self.realtime:
            return
        now = time.monotonic()
        if self._pace_start is None:
            self._pace_start = now
            self._paced = 0
        due = self._pace_start + self._paced * self._period
        if now - due > 1.0:
            self._pace_start, self._paced, due = now, 0, now
        if due > now:
            self._stop.wait(due - now)
        self._paced += 1
