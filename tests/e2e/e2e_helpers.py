"""Helpers for the end-to-end tests: `edge-mtl run` as a background process, polling the event queue, timestamps."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REPO, child_env


def wait_until(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> None:
    """Poll `cond`; fail the test (never hang) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def event_time(ev: dict[str, Any]) -> float:
    """An event's `ts` (capture time of its frame) as epoch seconds."""
    return datetime.strptime(ev["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def queue_events(db: Path) -> list[dict[str, Any]]:
    """Every event in the queue, [] while the daemon has not created it yet (for polling while it starts)."""
    from edge_mtl.errors import InputError
    from edge_mtl.events.queue import EventQueue

    if not db.exists():
        return []
    try:
        with EventQueue(db, create=False) as q:
            return q.read(1, 10_000_000)
    except InputError:  # created but its tables not committed yet
        return []


class Daemon:
    """`edge-mtl run ...` in the background; stderr collected by a thread (the pipe never fills up)."""

    def __init__(self, args: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_mtl.cli", "run", *args], cwd=REPO, env=child_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self._lines.append(line)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            pytest.fail(f"edge-mtl run exited ({self.proc.returncode}) early:\n{self.stderr[-3000:]}")

    def wait_log(self, pattern: str, timeout: float, after: int = 0) -> re.Match[str]:
        """The first match of `pattern` in stderr at or after character `after`, waiting up to `timeout`."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            m = re.compile(pattern).search(self.stderr, after)
            if m:
                found.append(m)
                return True
            self.check_alive()
            return False

        wait_until(seen, timeout, f"log line {pattern!r}")
        return found[0]

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit code (the test fails if it does not come within `timeout`)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"edge-mtl run did not exit within {timeout:g} s of SIGTERM:\n{self.stderr[-3000:]}")
        self._reader.join(10)
        return rc

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(30)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
