"""Helpers for capture tests: clip names and a real GStreamer RTSP server run as a subprocess."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
SMALL_CLIP = "selfie_portrait.mp4"  # 320x568, 30 fps, 345 frames, moov atom first (a truncated copy still opens)
MOOV_LAST_CLIP = "pedestrians_1080p.mp4"  # moov atom at the end: a truncated copy cannot be opened


def gst_rtsp_missing() -> str | None:
    """Why the system Python cannot run the RTSP server, or None when it can."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
        "assert Gst.ElementFactory.find('rtph264pay') and Gst.ElementFactory.find('qtdemux')"
    )
    try:
        r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run {SYSTEM_PYTHON}: {e}"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return (
            f"{SYSTEM_PYTHON} cannot import gi/GstRtspServer ({last}); apt-get install python3-gi "
            "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
            "gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly"
        )
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RtspServer:
    """One gst-rtsp-server subprocess serving `clip` (remuxed) at rtsp://127.0.0.1:port/test; restartable on
    the same port, so a test can kill it mid-stream and bring it back."""

    def __init__(self, port: int, clip: Path | None, repeat: int = 1) -> None:
        self.port = port
        self.clip = clip
        self.repeat = repeat
        self.url = f"rtsp://127.0.0.1:{port}/test"
        self.proc: subprocess.Popen[bytes] | None = None
        self._work: str | None = None

    def start(self, timeout: float = 20.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if self._work is None:  # kept across restarts until kill(), so a server that died alone leaks nothing
            self._work = tempfile.mkdtemp(prefix="rtsp-server-")
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--max-seconds", "180",
               "--work-dir", self._work]
        if self.clip is not None:
            cmd += ["--file", str(self.clip), "--repeat", str(self.repeat)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        out = b""
        while b"\n" not in out:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                err = self.kill()
                raise RuntimeError(f"RTSP server did not become ready (out={out!r}, err={err[-500:]!r})")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                out += chunk
        assert out.startswith(b"READY "), out

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but no data flows, as with a hung camera."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> str:
        """Kill the server abruptly (a crashed camera); returns its stderr."""
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            err = b""
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None
        return err.decode(errors="replace")
