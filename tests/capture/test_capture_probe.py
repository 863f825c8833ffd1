"""The pre-open probe refuses only a network camera that stays silent (real sockets on localhost)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from edge_mtl.capture.base import CaptureOpenError
from edge_mtl.capture.probe import probe_stream


def _server(handle: Callable[[socket.socket], None]) -> tuple[int, socket.socket]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def run() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=run, daemon=True).start()
    return int(srv.getsockname()[1]), srv


def _rtsp_answering(conn: socket.socket) -> None:
    """Answers every request head with 401 (as a camera does before authentication)."""
    buf = b""
    with conn:
        while True:
            data = conn.recv(4096)
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                cseq = next((ln.split(b":")[1].strip() for ln in head.split(b"\r\n") if ln.startswith(b"CSeq")), b"0")
                conn.sendall(b"RTSP/1.0 401 Unauthorized\r\nCSeq: " + cseq + b"\r\nContent-Length: 4\r\n\r\nnope")


def test_an_answering_camera_passes_even_when_it_refuses_us() -> None:
    port, srv = _server(_rtsp_answering)
    try:
        probe_stream(f"rtsp://user:pw@127.0.0.1:{port}/live", 2.0)
    finally:
        srv.close()


def test_a_camera_that_hangs_up_is_left_to_opencv() -> None:
    port, srv = _server(lambda c: c.close())
    try:
        probe_stream(f"rtsp://127.0.0.1:{port}/live", 2.0)  # no error: OpenCV fails it fast itself
    finally:
        srv.close()


def test_a_silent_camera_is_refused_within_its_timeout() -> None:
    held: list[socket.socket] = []
    port, srv = _server(held.append)
    try:
        for url in (f"rtsp://127.0.0.1:{port}/live", f"http://127.0.0.1:{port}/mjpg"):
            t0 = time.monotonic()
            with pytest.raises(CaptureOpenError, match=r"no answer within 0\.5s"):
                probe_stream(url, 0.5)
            assert time.monotonic() - t0 < 2.0
    finally:
        srv.close()
        for c in held:
            c.close()


def test_nothing_listening_is_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CaptureOpenError, match="cannot connect"):
        probe_stream(f"rtsp://127.0.0.1:{port}/live", 1.0)
