"""Frame sources: the interface the pipeline reads frames through, and the threaded reader they share.

Capture never blocks on inference (docs/pipeline.md, data flow). Each source owns one reader thread that talks to
the file, stream or device and hands frames over through a small buffer:

* live sources (RTSP/HTTP, V4L2, files with ``realtime=True``) keep only the newest frame: a one-slot buffer that
  the reader overwrites, counting each overwritten frame as dropped, so latency never grows when processing is
  slower than the camera;
* offline files deliver every frame through a bounded queue on which the reader blocks.

Live sources reconnect on their own: an open failure, a read failure or no frame for ``watchdog_s`` closes the
capture and reopens it after an exponential backoff (with a little jitter) that resets after the next good frame.
One WARNING is logged when an outage starts and one INFO line when frames flow again, never one per attempt.
"""

from __future__ import annotations

import abc
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypedDict, Unpack

import cv2
import numpy as np

from edge_mtl.threads import name_this_thread
from edge_mtl.types import Frame

log = logging.getLogger(__name__)

GrabStatus = Literal["ok", "corrupt", "end"]

# Consecutive failed grabs before giving up. OpenCV's grab() returns False both at the end of the stream and on a
# packet it cannot decode (then the next call goes on), and retrying at a real end costs microseconds. A file
# retries long (damage spanning a few seconds of video is skipped); a live stream retries briefly and within
# `watchdog_s` before it reconnects.
FILE_GRAB_RETRIES = 250
LIVE_GRAB_RETRIES = 30


@dataclass(frozen=True)
class DecodeOptions:
    """How a capture thread decodes (docs/performance.md measures each choice).

    threads: FFmpeg decoder threads of this stream (CAP_PROP_N_THREADS; 0: OpenCV's default, one per core). One
        per stream fits a small box serving several cameras: each stream already has its own reader thread.
    convert_dropped: live sources only. False (default): a frame that arrives while the previous one still waits
        unprocessed, and well before the consumer is due to take it (from the mean interval between its takes), is
        decoded (grab) but never converted to BGR (retrieve), and counted as dropped; frames arriving within one
        frame interval of the consumer's next take are converted and replace the waiting one, so the frame taken
        is about as fresh as with True. True: every frame is converted and the newest replaces the waiting one
        (the CPU of converting every frame that is thrown away).
    detect_size: when set, the capture thread also scales each delivered frame for the detector (long side to this
        many pixels, `Frame.detect_image`), in native code beside the main loop instead of inside it.
    """

    threads: int = 0
    convert_dropped: bool = False
    detect_size: int | None = None

    def capture_params(self) -> list[int]:
        """Extra VideoCapture open parameters."""
        return [cv2.CAP_PROP_N_THREADS, self.threads] if self.threads > 0 else []


class CaptureOpenError(Exception):
    """A capture could not be opened right now (cameras are retried; files turn it into InputError)."""


class FrameSource(abc.ABC):
    """What the pipeline needs from a camera: start, read with a timeout, stop, and numbers for metrics.

    One consumer thread calls `read`; the source's own reader thread produces. `read` never blocks longer than its
    timeout and returns None when no frame came in time or the source is finished.
    """

    name: str

    @abc.abstractmethod
    def start(self) -> None:
        """Start the reader thread. Raises InputError when the input can never work (missing or unreadable file)."""

    @abc.abstractmethod
    def read(self, timeout: float) -> Frame | None:
        """The next frame (offline) or the newest frame (live), waiting at most `timeout` seconds."""

    @abc.abstractmethod
    def request_stop(self) -> None:
        """Ask the reader to stop without waiting (lets a caller stop many sources in parallel)."""

    @abc.abstractmethod
    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the reader and release the capture; True when the thread ended within `timeout`."""

    @property
    @abc.abstractmethod
    def finished(self) -> bool:
        """True once no frame will ever come again and every captured frame was consumed."""

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters for metrics and health (see `ThreadedSource.stats`)."""

    @abc.abstractmethod
    def add_waker(self, event: threading.Event) -> None:
        """Set `event` whenever a frame becomes available or the source finishes (the daemon waits on it)."""

    def __enter__(self) -> FrameSource:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Backoff:
    """Exponential reconnect delays: initial, doubling up to a cap, each stretched by up to `jitter` (a fraction)
    so that many cameras behind one switch do not reconnect in lockstep."""

    def __init__(self, initial_s: float, max_s: float, jitter: float = 0.1, rng: random.Random | None = None):
        if initial_s <= 0 or max_s <= 0:
            raise ValueError(f"backoff delays must be positive, got initial={initial_s} max={max_s}")
        self.initial_s = float(initial_s)
        self.max_s = max(float(max_s), self.initial_s)
        self.jitter = float(jitter)
        self._rng = rng or random.Random()
        self._current = self.initial_s

    def next_delay(self) -> float:
        """The delay before the next attempt; the one after it is twice as long (up to the cap)."""
        base = self._current
        self._current = min(self._current * 2.0, self.max_s)
        return base * (1.0 + self._rng.uniform(0.0, self.jitter))

    def reset(self) -> None:
        self._current = self.initial_s


class FrameBuffer:
    """Hand-over between the reader thread and the consumer.

    `overwrite=True`: the latest-frame policy (a put on a full buffer replaces the oldest frame and counts a drop).
    `overwrite=False`: a bounded FIFO whose `put` waits for room (offline files, where every frame matters).
    """

    def __init__(self, capacity: int, overwrite: bool, on_put: Callable[[], None] | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.overwrite = overwrite
        self.dropped = 0
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._on_put = on_put
        self._last_take: float | None = None  # monotonic time of the consumer's last take
        self._take_interval: float | None = None  # its mean interval between takes (moving average)

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        """Add a frame; False when the buffer was closed or `stop` was set while waiting for room."""
        with self._cond:
            if self._closed:
                return False
            if self.overwrite:
                while len(self._items) >= self.capacity:
                    self._items.popleft()
                    self.dropped += 1
            else:
                while len(self._items) >= self.capacity:
                    if self._closed or stop.is_set():
                        return False
                    self._cond.wait(0.1)
            self._items.append(frame)
            self._cond.notify_all()
        if self._on_put is not None:
            self._on_put()
        return True

    def wants(self, now: float, margin: float) -> bool:
        """Whether a new frame is worth converting for the consumer: the buffer is empty, or the consumer is due
        within `margin` seconds (from the mean interval between its takes), so that the waiting frame would be
        stale by then and a fresher one should replace it."""
        with self._cond:
            if not self._items or self._take_interval is None or self._last_take is None:
                return True
            return now - self._last_take >= self._take_interval - margin

    def skip(self) -> None:
        """Count a frame dropped without ever entering the buffer (decoded, not converted)."""
        with self._cond:
            self.dropped += 1

    def get(self, timeout: float) -> Frame | None:
        """The oldest frame in the buffer, waiting up to `timeout`; None at once when closed and empty."""
        with self._cond:
            if not self._items and not self._closed and timeout > 0:
                self._cond.wait_for(lambda: bool(self._items) or self._closed, timeout)
            if not self._items:
                return None
            frame = self._items.popleft()
            now = time.monotonic()
            if self._last_take is not None:
                gap = now - self._last_take
                self._take_interval = gap if self._take_interval is None else 0.7 * self._take_interval + 0.3 * gap
            self._last_take = now
            self._cond.notify_all()  # a blocked producer has room now
            return frame

    def close(self) -> None:
        """No more puts; consumers drain what is left, then get None without waiting."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._items.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def nominal_fps(cap: cv2.VideoCapture) -> float | None:
    """The capture's declared frame rate, or None when it is missing or absurd (some RTSP streams report the
    90 kHz RTP clock)."""
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not np.isfinite(fps) or fps <= 0.0 or fps > 1000.0:
        return None
    return fps


def open_capture(target: str, api: int, params: Sequence[int], not_opened: str) -> cv2.VideoCapture:
    """`cv2.VideoCapture(target, api, params)`, or CaptureOpenError with OpenCV's own last line, or with
    `not_opened` when OpenCV hands back a capture that is not open."""
    try:
        cap = cv2.VideoCapture(target, api, list(params))
    except cv2.error as e:
        raise CaptureOpenError(str(e).strip().splitlines()[-1]) from None
    if not cap.isOpened():
        cap.release()
        raise CaptureOpenError(not_opened)
    return cap


class ThreadedSource(FrameSource):
    """A source read by one thread through OpenCV's VideoCapture; subclasses say how to open it.

    Subclass hooks: `_open_capture` (open or raise CaptureOpenError), `_prepare` (checks done in `start`, in the
    caller's thread, raising InputError), `_end_of_stream` (what an exhausted file does), `_before_grab`
    (pacing). The base class owns the thread, the buffer, the counters and the reconnect loop.
    """

    kind = "source"

    def __init__(
        self,
        name: str,
        display: str,
        *,
        live: bool,
        reconnecting: bool,
        max_frames: int | None = None,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        watchdog_s: float = 10.0,
        queue_size: int = 4,
        decode: DecodeOptions | None = None,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        self.name = name
        self.display = display  # the source as safe to log (credentials removed)
        self.live = live  # latest-frame policy (else every frame, in order)
        self.reconnecting = reconnecting  # a camera: failures reconnect (else a file: failures end it)
        self.max_frames = max_frames
        self.watchdog_s = float(watchdog_s)
        self._backoff = Backoff(reconnect_initial_s, reconnect_max_s)
        self._wakers: list[threading.Event] = []
        self._buffer = FrameBuffer(1 if live else queue_size, overwrite=live, on_put=self._wake)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._limit = threading.Event()  # max_frames delivered
        self._lock = threading.Lock()  # counters shared by the two threads
        self._thread: threading.Thread | None = None
        self._cap: cv2.VideoCapture | None = None  # owned by the reader thread once started
        self._next_index = 0
        self._frames_read = 0
        self._frames_delivered = 0
        self._frames_corrupt = 0
        self._reconnects = 0
        self._reconnect_attempts = 0
        self._attempted = False  # an open was tried: later opens are reconnects
        self._outage_since: float | None = None
        self._last_frame_mono: float | None = None
        self._last_good_mono = time.monotonic()
        self._fps: float | None = None
        self._frame_count: int | None = None  # frames a file declares (None: a camera, or unknown)
        self._connected = False
        self._error: str | None = None
        self.decode = decode or DecodeOptions()

    # ---- hooks -------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def _open_capture(self) -> cv2.VideoCapture:
        """Open the capture, or raise CaptureOpenError with a short reason."""

    def _prepare(self) -> None:
        """Checks run by `start` in the caller's thread; raise InputError for input that can never work."""

    def _end_of_stream(self) -> bool:
        """Called when a file (a non-reconnecting source) has no more frames and its capture is released:
        True after reopening it with `_adopt` (loop), False to finish."""
        return False

    def _before_grab(self) -> None:
        """Called before each frame is grabbed (realtime files pace themselves here)."""

    def _end_pass(self) -> None:
        """A file's pass ended: release its capture (a looping file may keep it to seek back instead)."""
        self._release()

    # ---- public API --------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._prepare()
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.name}", daemon=True)
        self._thread.start()

    def read(self, timeout: float) -> Frame | None:
        if self._limit.is_set():
            return None
        frame = self._buffer.get(timeout)
        if frame is None:
            return None
        with self._lock:
            self._frames_delivered += 1
            reached = self.max_frames is not None and self._frames_delivered >= self.max_frames
        if reached:
            self._limit.set()
            self._buffer.close()
            self._buffer.clear()
            self._wake()
        return frame

    def request_stop(self) -> None:
        self._stop.set()
        self._buffer.close()

    def stop(self, timeout: float = 5.0) -> bool:
        self.request_stop()
        thread = self._thread
        if thread is None:  # never started (or start failed): nothing will come
            self._release()
            self._done.set()
            return True
        thread.join(max(0.0, timeout))
        if thread.is_alive():
            # A blocking open/read inside OpenCV cannot be interrupted; it ends within its own timeout and the
            # thread then releases the capture itself (it is a daemon thread, so it never holds up exit).
            log.warning("%s: capture thread did not stop within %.1fs", self.name, timeout)
            return False
        return True

    @property
    def finished(self) -> bool:
        if self._limit.is_set():
            return True
        return self._done.is_set() and len(self._buffer) == 0

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and health:

        frames_read (from the source), frames_delivered (returned by `read`), frames_dropped (overwritten by a
        newer frame, or decoded but never converted because the previous one still waited: latest-frame policy),
        frames_corrupt (grabbed but not decodable), reconnects (successful opens after the first attempt),
        reconnect_attempts (opens tried after the first), last_frame_age_s (seconds since the last frame was read;
        None before the first), fps (nominal), connected, finished, error (why the reader thread died, if it
        did)."""
        now = time.monotonic()
        with self._lock:
            return {
                "name": self.name,
                "kind": self.kind,
                "source": self.display,
                "frames_read": self._frames_read,
                "frames_delivered": self._frames_delivered,
                "frames_dropped": self._buffer.dropped,
                "frames_corrupt": self._frames_corrupt,
                "reconnects": self._reconnects,
                "reconnect_attempts": self._reconnect_attempts,
                "last_frame_age_s": None if self._last_frame_mono is None else now - self._last_frame_mono,
                "fps": self._fps,
                "connected": self._connected,
                "finished": self.finished,
                "error": self._error,
            }

    def add_waker(self, event: threading.Event) -> None:
        self._wakers.append(event)

    # ---- reader thread -----------------------------------------------------------------------------------------

    def _wake(self) -> None:
        for event in self._wakers:
            event.set()

    def _stopping(self) -> bool:
        return self._stop.is_set() or self._limit.is_set()

    def _run(self) -> None:
        name_this_thread(f"cap:{self.name}")
        try:
            self._loop()
        except Exception as e:  # a bug or an OpenCV failure we did not anticipate: report it, do not hang
            log.exception("%s: capture thread failed", self.name)
            with self._lock:
                self._error = f"{type(e).__name__}: {e}"
        finally:
            self._release()
            self._buffer.close()
            self._done.set()
            self._wake()

    def _loop(self) -> None:
        pass_frames = 0  # frames read since the capture was (re)opened
        failures = 0  # consecutive failed grabs
        while not self._stopping():
            if self._cap is None:
                if not self._connect():
                    continue
                pass_frames = failures = 0
            if not self.live and self.max_frames is not None and self._frames_read >= self.max_frames:
                return
            if failures == 0:
                self._before_grab()
                if self._stopping():
                    return
            convert = (not self.live or self.decode.convert_dropped
                       or self._buffer.wants(time.monotonic(), self._frame_interval()))
            status, image = self._grab(convert)
            if status == "ok":
                if failures:
                    # OpenCV's grab fails on a packet it cannot decode and goes on with the next one: those
                    # failures were corrupt frames, not the end of the stream.
                    with self._lock:
                        self._frames_corrupt += failures
                    failures = 0
                pass_frames += 1
                if image is None:
                    self._skip()
                elif not self._deliver(image):
                    return
            elif status == "corrupt":
                with self._lock:
                    self._frames_corrupt += 1
                if self.reconnecting and time.monotonic() - self._last_good_mono > self.watchdog_s:
                    self._lost(f"no decodable frame for {self.watchdog_s:.1f}s")
            elif self.reconnecting:
                failures += 1
                stalled = time.monotonic() - self._last_good_mono > self.watchdog_s
                if stalled or failures >= LIVE_GRAB_RETRIES:
                    self._lost("read failed, timed out or the stream ended")
            else:
                failures += 1
                at_end = self._frame_count is not None and pass_frames >= self._frame_count
                if not at_end and failures < FILE_GRAB_RETRIES:
                    continue
                self._end_pass()
                if pass_frames == 0:
                    log.warning("%s: %s: no decodable frame in this pass; stopping", self.name, self.display)
                    return
                if self._frame_count is not None and pass_frames < 0.9 * self._frame_count:
                    log.warning(
                        "%s: %s ended after %d of %d frames (truncated or damaged file?)",
                        self.name,
                        self.display,
                        pass_frames,
                        self._frame_count,
                    )
                if not self._end_of_stream():
                    return
                pass_frames = failures = 0

    def _grab(self, convert: bool = True) -> tuple[GrabStatus, np.ndarray | None]:
        """Decode the next frame; with `convert`, also convert it to BGR and return it (else "ok", None)."""
        cap = self._cap
        assert cap is not None
        try:
            if not cap.grab():
                return "end", None
            if not convert:
                return "ok", None
            ok, image = cap.retrieve()
        except cv2.error as e:
            log.debug("%s: OpenCV error while reading: %s", self.name, e)
            return "corrupt", None
        if not ok or image is None or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            return "corrupt", None
        if image.dtype != np.uint8:
            return "corrupt", None
        return "ok", image

    def _frame_time(self) -> float:
        """The timestamp of the frame about to be delivered (wall clock; file sources use media time)."""
        return time.time()

    def _frame_interval(self) -> float:
        """Seconds between two frames of the stream (its declared rate, else 25 fps)."""
        with self._lock:
            fps = self._fps
        return 1.0 / fps if fps else 0.04

    def _skip(self) -> None:
        """A frame decoded but not converted: it would only have replaced the one still waiting (live sources)."""
        self._next_index += 1
        self._counted_read(time.monotonic())
        self._buffer.skip()

    def _counted_read(self, now_mono: float) -> None:
        self._last_good_mono = now_mono
        with self._lock:
            self._frames_read += 1
            self._last_frame_mono = now_mono
        if self._outage_since is not None:
            log.info(
                "%s: frames flowing again from %s after %.1fs", self.name, self.display, now_mono - self._outage_since
            )
            self._outage_since = None
        self._backoff.reset()

    def _deliver(self, image: np.ndarray) -> bool:
        now_mono = time.monotonic()
        ts = self._frame_time()
        small = None
        if self.decode.detect_size is not None:
            from edge_mtl.runtime.detector import scale_for_detection

            small = scale_for_detection(image, self.decode.detect_size)
        frame = Frame(image=image, camera=self.name, index=self._next_index, timestamp=ts, detect_image=small)
        self._next_index += 1
        self._counted_read(now_mono)
        return self._buffer.put(frame, self._stop)

    def _connect(self) -> bool:
        """Open the capture once; on failure wait the next backoff delay. True when open."""
        retry = self._attempted
        self._attempted = True
        if retry:
            with self._lock:
                self._reconnect_attempts += 1
        try:
            cap = self._open_capture()
        except CaptureOpenError as e:
            self._begin_outage(f"cannot open: {e}")
            self._stop.wait(self._backoff.next_delay())
            return False
        if retry:
            with self._lock:
                self._reconnects += 1
        self._adopt(cap)
        return True

    def _adopt(self, cap: cv2.VideoCapture) -> None:
        """Make an opened capture the current one (used by `_connect` and by file sources that open in `start`
        or reopen to loop)."""
        self._cap = cap
        fps = nominal_fps(cap)
        count = float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        self._frame_count = int(count) if not self.reconnecting and np.isfinite(count) and count >= 1 else None
        with self._lock:
            self._connected = True
            self._fps = fps if fps is not None else self._fps
        self._attempted = True
        self._last_good_mono = time.monotonic()
        log.debug("%s: opened %s (fps=%s)", self.name, self.display, fps)

    def _lost(self, reason: str) -> None:
        """Close a live capture that stopped delivering and wait before reopening it."""
        self._release()
        self._begin_outage(reason)
        self._stop.wait(self._backoff.next_delay())

    def _begin_outage(self, reason: str) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "%s: %s: %s; reconnecting with backoff %.1fs..%.1fs",
                self.name,
                self.display,
                reason,
                self._backoff.initial_s,
                self._backoff.max_s,
            )
        else:
            log.debug("%s: still unavailable: %s", self.name, reason)

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        with self._lock:
            self._connected = False
        if cap is not None:
            try:
                cap.release()
            except cv2.error as e:
                log.debug("%s: release failed: %s", self.name, e)


class LiveOptions(TypedDict, total=False):
    """A camera's keyword options (`ThreadedSource`'s, with its defaults)."""

    max_frames: int | None
    reconnect_initial_s: float
    reconnect_max_s: float
    watchdog_s: float
    decode: DecodeOptions | None


class LiveSource(ThreadedSource):
    """A camera (network stream or video device): live (the newest frame only) and reconnecting with backoff, so a
    camera that is down at start or drops later is retried, never an error that ends the source."""

    def __init__(self, name: str, display: str, **options: Unpack[LiveOptions]) -> None:
        super().__init__(name, display, live=True, reconnecting=True, **options)
