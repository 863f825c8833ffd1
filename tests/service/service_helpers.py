"""Helpers for the service tests: the daemon as a real subprocess, a real sd_notify socket, a real MJPEG camera,
tiny models, synthetic videos and the process's listening sockets."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.proc_helpers import REPO as REPO  # re-exported
from tests.proc_helpers import Daemon as Daemon
from tests.proc_helpers import child_env as child_env
from tests.proc_helpers import wait_until as wait_until

#: Settings that make a random detector produce a steady stream of tracks on noise frames (events to test with):
#: scores sit near 0.5, so thresholds go below that, every track is confirmed at once and ends two frames later.
EVENTFUL = """
[detector]
input_size = 160
score_threshold = 0.3
nms_threshold = 0.05
min_face = 16

[tracker]
high_threshold = 0.4
low_threshold = 0.3
new_track_threshold = 0.45
confirm_frames = 1
lost_frames = 2
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ inputs
def write_video(path: Path, frames: int, kind: str = "noise", size: tuple[int, int] = (160, 120),
                fps: float = 10.0, seed: int = 0) -> Path:
    """A small mp4v clip: 'noise' (random pixels: many random detections) or 'gray' (a flat picture)."""
    rng = np.random.default_rng(seed)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    assert w.isOpened(), "OpenCV cannot write mp4v here"
    for i in range(frames):
        if kind == "noise":
            img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        else:
            img = np.full((size[1], size[0], 3), 90 + (i % 3), np.uint8)
        w.write(img)
    w.release()
    return path


def corrupt_middle(src: Path, dst: Path, start: float = 0.4, length: float = 0.15) -> Path:
    """A copy of `src` with a run of bytes in the middle zeroed (damaged frames, intact container header)."""
    data = bytearray(src.read_bytes())
    a = int(len(data) * start)
    data[a : a + int(len(data) * length)] = bytes(int(len(data) * length))
    dst.write_bytes(bytes(data))
    return dst


def export_models(folder: Path) -> dict[str, Path]:
    """Tiny random-weight ONNX models with real metadata (docs/architecture.md, rule 4: the runtime never guesses).

    'detector' scores every anchor near 0.5 (it 'detects' noise); 'quiet_detector' keeps the trained-from-scratch
    prior (p=0.01), so it finds no face anywhere.
    """
    import torch

    from edge_mtl.export_tools.export import export_module
    from edge_mtl.models.detector import Detector, DetectorArgs
    from edge_mtl.models.recognizer import Recognizer, RecognizerArgs

    torch.set_num_threads(1)
    torch.manual_seed(0)
    dargs = DetectorArgs(widths=(8, 8, 8, 8, 8), depths=(1, 1, 1, 1), neck=8, head_convs=1)
    out: dict[str, Path] = {}
    det = Detector(dargs).eval()
    out["quiet_detector"] = folder / "quiet_detector.onnx"
    export_module(det, "detector", dargs.to_dict(), out["quiet_detector"], version="tiny-test", check=False)
    with torch.no_grad():
        det.cls.bias.fill_(0.0)
    out["detector"] = folder / "detector.onnx"
    export_module(det, "detector", dargs.to_dict(), out["detector"], version="tiny-test", check=False)
    rargs = RecognizerArgs(widths=(8, 8, 8, 8), depths=(1, 1, 1, 1), embedding_dim=128, embedding_hidden=16)
    out["recognizer"] = folder / "recognizer.onnx"
    export_module(Recognizer(rargs).eval(), "recognizer", rargs.to_dict(), out["recognizer"], version="tiny-test",
                  check=False)
    return out


# ------------------------------------------------------------------ the daemon
def edge_mtl(*args: str, timeout: float = 180, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion in a subprocess, as systemd or a user would."""
    return subprocess.run(
        [sys.executable, "-m", "edge_mtl", *args], capture_output=True, text=True, timeout=timeout,
        cwd=REPO, env=env or child_env(), umask=0o022,  # a permissive umask: file modes must not depend on it
    )


def one_line_error(stderr: str) -> str:
    """The CLI's error contract: exactly one `edge-mtl: error:` line, no traceback, no ERROR log lines. (Lines
    FFmpeg and OpenCV print themselves, e.g. "moov atom not found", are not edge-mtl's and are ignored.)"""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("edge-mtl:")]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr and " ERROR " not in stderr, stderr[-3000:]
    assert lines[0].startswith("edge-mtl: error: "), lines[0]
    return lines[0]


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET (abstract namespace)."""

    def __init__(self) -> None:
        self.name = f"@edge-mtl-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.settimeout(0.1)
        self._msgs: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            with self._lock:
                self._msgs.extend((now, part) for part in data.decode().split("\n") if part)

    def env(self, watchdog_s: float | None = None) -> dict[str, str]:
        e = {"NOTIFY_SOCKET": self.name}
        if watchdog_s is not None:
            e["WATCHDOG_USEC"] = str(int(watchdog_s * 1e6))
        return e

    def messages(self, prefix: str = "", since: float = 0.0, until: float = float("inf")) -> list[tuple[float, str]]:
        with self._lock:
            return [(t, m) for t, m in self._msgs if m.startswith(prefix) and since <= t <= until]

    def wait_for(self, prefix: str, timeout: float, since: float = 0.0, count: int = 1,
                 daemon: Daemon | None = None) -> float:
        """Monotonic time of the `count`-th message starting with `prefix` received after `since`."""

        def got() -> bool:
            if daemon is not None and not daemon.alive():
                pytest.fail(f"daemon exited ({daemon.proc.returncode}) while waiting for {prefix}:\n"
                            f"{daemon.stderr[-3000:]}")
            return len(self.messages(prefix, since)) >= count

        wait_until(got, timeout, f"{count} x {prefix!r} on NOTIFY_SOCKET")
        return self.messages(prefix, since)[count - 1][0]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class MjpegCamera:
    """A real HTTP MJPEG camera (multipart/x-mixed-replace) that can freeze (socket open, nothing sent: a wedged
    stream) and go away (connections and listener closed: a camera that is down)."""

    def __init__(self, fps: float = 10.0) -> None:
        self.frozen = threading.Event()
        self.gone = threading.Event()
        self.sent = 0
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                rng = np.random.default_rng(0)
                while not cam.gone.is_set():
                    if cam.frozen.is_set():
                        time.sleep(0.02)
                        continue
                    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
                    _, jpg = cv2.imencode(".jpg", img)
                    body = jpg.tobytes()
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(body)).encode() + b"\r\n\r\n" + body + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    cam.sent += 1
                    time.sleep(1.0 / fps)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                         daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.gone.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


# ------------------------------------------------------------------ sockets of a process
def listening_sockets(pid: int) -> list[tuple[str, str]]:
    """(protocol, local address) of every listening TCP or bound UDP socket the process `pid` holds open."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        table = Path(f"/proc/{pid}/net/{proto}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if inode not in inodes:
                continue
            if proto.startswith("tcp") and state != "0A":  # 0A = LISTEN
                continue
            found.append((proto, _addr(local)))
    return found


def _addr(hex_addr: str) -> str:
    ip_hex, port_hex = hex_addr.split(":")
    port = int(port_hex, 16)
    if len(ip_hex) == 8:
        ip = socket.inet_ntop(socket.AF_INET, bytes.fromhex(ip_hex)[::-1])
    else:
        raw = bytes.fromhex(ip_hex)
        ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return f"{ip}:{port}"


# ------------------------------------------------------------------ queue and JSONL checks
def queue_rows(db: Path) -> list[tuple[int, str]]:
    from edge_mtl.events.queue import EventQueue

    with EventQueue(db, create=False) as q:
        return q.read_raw(1, 10_000_000)


def queue_len(db: Path) -> int:
    """Events in the queue, 0 while the daemon has not created it yet (for polling while it starts)."""
    from edge_mtl.errors import InputError

    try:
        return len(queue_rows(db))
    except InputError:  # not there yet, or created but its tables not yet committed
        return 0


def queue_state(db: Path) -> tuple[list[tuple[int, str]], dict[str, int], int]:
    """Everything a failing command must leave alone: rows, cursors and the last seq."""
    from edge_mtl.events.queue import EventQueue

    with EventQueue(db, create=False) as q:
        return q.read_raw(1, 10_000_000), q.cursors(), q.last_seq()


def jsonl_lines(path: Path) -> list[str]:
    """Lines of the JSONL log (all rotated files, oldest first); asserts the file never ends in a half line."""
    files = sorted(path.parent.glob(path.name + ".*"), key=lambda p: int(p.suffix[1:]), reverse=True)
    files = [f for f in files if f.suffix[1:].isdigit()]
    if path.exists():
        files.append(path)
    lines: list[str] = []
    for f in files:
        data = f.read_bytes()
        assert not data or data.endswith(b"\n"), f"{f} ends with a partial line: {data[-80:]!r}"
        lines += data.decode().splitlines()
    for ln in lines:
        json.loads(ln)  # every line is a whole JSON object
    return lines


def populate(db: Path, n: int, start: int = 0) -> list[int]:
    """Append `n` valid events to the queue at `db` (created if needed); returns their seqs."""
    from edge_mtl.events.queue import EventQueue
    from tests.events.events_helpers import make_event

    with EventQueue(db) as q:
        return q.append([make_event(start + i, camera="seed") for i in range(n)])
