"""Several cameras read by one consumer thread, fairly.

Each source keeps its own reader thread; `MultiSource.read` polls them round-robin starting after the camera that
delivered last, so one busy camera cannot starve the others, and sleeps on a shared event that every source sets
when it has a frame (no busy polling).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from edge_mtl.capture.base import FrameSource
from edge_mtl.types import Frame


class MultiSource:
    """Round-robin reader over several started-together sources; frames carry their camera name."""

    def __init__(self, sources: Sequence[FrameSource]) -> None:
        names = [s.name for s in sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"camera names must be unique, repeated: {repeated}")
        self.sources: list[FrameSource] = list(sources)
        self._ready = threading.Event()
        self._next = 0
        for s in self.sources:
            s.add_waker(self._ready)

    def start(self) -> None:
        """Start every source; if one fails (InputError), stop those already started and re-raise."""
        started: list[FrameSource] = []
        try:
            for s in self.sources:
                s.start()
                started.append(s)
        except BaseException:
            for s in started:
                s.stop(timeout=2.0)
            raise

    def read(self, timeout: float) -> Frame | None:
        """The next available frame from any source, waiting at most `timeout`; None on timeout or when every
        source is finished."""
        if not self.sources:
            return None
        deadline = time.monotonic() + max(0.0, timeout)
        n = len(self.sources)
        while True:
            self._ready.clear()  # before polling: a frame arriving after the poll sets it again
            for k in range(n):
                i = (self._next + k) % n
                frame = self.sources[i].read(0.0)
                if frame is not None:
                    self._next = (i + 1) % n
                    return frame
            if self.finished:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._ready.wait(remaining)

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.sources)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop all sources in parallel within `timeout` overall; True when every reader thread ended."""
        for s in self.sources:
            s.request_stop()
        deadline = time.monotonic() + timeout
        ok = True
        for s in self.sources:
            ok = s.stop(timeout=max(0.0, deadline - time.monotonic())) and ok
        return ok

    def stats(self) -> dict[str, dict[str, Any]]:
        return {s.name: s.stats() for s in self.sources}

    def __enter__(self) -> MultiSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_any(sources: Sequence[FrameSource], timeout: float, start: int = 0) -> tuple[Frame | None, int]:
    """Stateless form of `MultiSource.read` for callers that keep their own rotation: poll `sources` from index
    `start`, return (frame, index to start from next time). Sleeps in short steps, so prefer MultiSource."""
    n = len(sources)
    if n == 0:
        return None, start
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        for k in range(n):
            i = (start + k) % n
            frame = sources[i].read(0.0)
            if frame is not None:
                return frame, (i + 1) % n
        remaining = deadline - time.monotonic()
        if remaining <= 0 or all(s.finished for s in sources):
            return None, start
        time.sleep(min(0.005, remaining))
