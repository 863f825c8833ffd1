"""Subprocess helpers shared by the end-to-end, service and events tests: the CLI's environment, polling with a
deadline, and `edge-mtl run` as a background process whose stderr is collected by a thread."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a CLI subprocess: this checkout importable, one intra-op thread per library (the CI box
    has two cores and the suite runs beside other work), no systemd variables leaking in."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra or {})
    return env


def wait_until(cond: Callable[[], bool], timeout: float, what: object, step: float = 0.05) -> None:
    """Poll `cond` until true; fail the test (never hang) after `timeout` seconds (`what` is formatted then)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


class _LogWait:
    """What `Daemon.wait_log` waits for; the daemon's last log lines are read when the failure is formatted."""

    def __init__(self, pattern: str, daemon: Daemon) -> None:
        self.pattern, self.daemon = pattern, daemon

    def __str__(self) -> str:
        return f"log line {self.pattern!r}; the daemon's log ends:\n{self.daemon.stderr[-3000:]}"


class Daemon:
    """`edge-mtl run ...` in the background; stderr collected by a thread (the pipe never fills up)."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_mtl", "run", *args], cwd=REPO, env=env or child_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, umask=0o022,
        )
        self.pid = self.proc.pid
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

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        """The exit code, waiting up to `timeout` (the test fails, and the process is killed, if it does not come)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"edge-mtl run did not exit within {timeout:g} s:\n{self.stderr[-3000:]}")
        self._reader.join(10)
        return rc

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait_log(self, pattern: str, timeout: float, after: int = 0) -> re.Match[str]:
        """The first match of `pattern` in stderr at or after character `after`, waiting up to `timeout`; fails
        at once if the daemon exits without logging it."""
        found: list[re.Match[str]] = []
        rx = re.compile(pattern)

        def seen() -> bool:
            m = rx.search(self.stderr, after)
            if m:
                found.append(m)
                return True
            if not self.alive():
                pytest.fail(f"edge-mtl run exited ({self.proc.returncode}) before logging {pattern!r}:\n"
                            f"{self.stderr[-3000:]}")
            return False

        wait_until(seen, timeout, _LogWait(pattern, self))
        return found[0]

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
