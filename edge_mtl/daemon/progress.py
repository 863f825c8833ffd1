"""The watchdog policy: is the daemon making progress, camera by camera (see ProgressMonitor)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_mtl.config import CameraConfig


@dataclass
class _SourceSeen:
    frames_read: int
    attempts: int
    connected: bool
    changed: float  # monotonic time of the last change of any of the above


class ProgressMonitor:
    """Decides whether the daemon is making progress, i.e. whether to pet the systemd watchdog.

    Per camera, from its capture stats: `delivering` (open, a frame within `stall_s`), `reconnecting` (closed and
    retrying: its attempt counter moves at least every backoff cap + open timeout), `stalled` (open but silent for
    `stall_s`, or a reconnect loop that stopped moving: the capture thread is wedged in a call that cannot be
    interrupted), `failed` (the capture thread died), `finished` (a file ended). Progress means no camera is stalled
    or failed, and a frame was processed within `stall_s` unless every unfinished camera is reconnecting.

    Keep each camera's `watchdog_s` (capture read timeout) below `stall_s`, or an outage looks like a stall until
    the capture gives up on the connection.
    """

    def __init__(self, stall_s: float, cameras: Sequence[CameraConfig], now: float) -> None:
        self.stall_s = float(stall_s)
        self.cams = {c.name: c for c in cameras}
        self.seen: dict[str, _SourceSeen] = {}
        self.frames = -1
        self.last_processed = now
        self.states: dict[str, str] = {}
        self.problems: list[str] = []
        self.progressing = True

    def _grace(self, name: str) -> float:
        cam = self.cams.get(name)
        if cam is None:
            return self.stall_s
        return self.stall_s + 1.1 * cam.reconnect_max_s + cam.watchdog_s

    def update(self, now: float, frames_processed: int, stats: Sequence[Mapping[str, Any]]) -> bool:
        if frames_processed != self.frames:
            self.frames = frames_processed
            self.last_processed = now
        states: dict[str, str] = {}
        problems: list[str] = []
        for st in stats:
            name = str(st["name"])
            reads, attempts, conn = int(st["frames_read"]), int(st["reconnect_attempts"]), bool(st["connected"])
            prev = self.seen.get(name)
            if prev is None or (prev.frames_read, prev.attempts, prev.connected) != (reads, attempts, conn):
                self.seen[name] = prev = _SourceSeen(reads, attempts, conn, now)
            quiet = now - prev.changed
            age = st.get("last_frame_age_s")
            if st.get("finished"):
                if st.get("error"):
                    states[name] = "failed"
                    problems.append(f"{name}: capture failed: {st['error']}")
                else:
                    states[name] = "finished"
            elif conn:
                if (age is not None and age < self.stall_s) or quiet < self.stall_s:
                    states[name] = "delivering"
                else:
                    states[name] = "stalled"
                    problems.append(f"{name}: stalled: open but no frame for {quiet:.0f} s")
            elif quiet < self._grace(name):
                states[name] = "reconnecting"
                since = f" (no frame for {age:.0f} s)" if age is not None else ""
                problems.append(f"{name}: reconnecting{since}")
            else:
                states[name] = "stalled"
                problems.append(f"{name}: stalled: reconnect loop silent for {quiet:.0f} s")
        self.states = states
        idle = now - self.last_processed
        waiting = all(s in ("reconnecting", "finished") for s in states.values())
        bad = any(s in ("stalled", "failed") for s in states.values())
        if idle >= self.stall_s and not waiting:
            problems.append(f"no frame processed for {idle:.0f} s")
        self.problems = problems
        self.progressing = not bad and (idle < self.stall_s or waiting)
        return self.progressing
