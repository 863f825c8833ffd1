"""Ask a network camera whether it answers before OpenCV opens it, so that a silent camera cannot stall the others.

Why: OpenCV's FFmpeg backend opens every capture of the process under one global lock (`CvCapture_FFMPEG::open`
holds a static mutex around `avformat_open_input` and the stream probing). A camera whose server accepts the TCP
connection and then never answers holds that lock for the whole open timeout (the camera's `watchdog_s`), and
every other FFmpeg open in the process waits behind it: another camera's reconnect, or a looping file's reopen
(measured: a file open took 3.5 s instead of milliseconds beside a 4 s hung open; reproduced by
tests/faults/test_fault_cameras.py). Reads and seeks do not take the lock; only opens do.

`probe_stream` does the part of the handshake that such a server fails in plain Python, with its own socket
timeout and no shared lock: RTSP `OPTIONS` and `DESCRIBE` (any status line counts as an answer, 401 included:
FFmpeg authenticates itself), or an HTTP `GET` whose status line must come back. Only a camera that answers is
handed to OpenCV; one that closes the connection or answers garbage is too (OpenCV fails it fast, or copes with
its quirks): only silence is refused. A server that answers the probe and then stalls inside SETUP/PLAY or
before its first packet can still hold the lock for up to one open timeout per attempt; keep `watchdog_s` short
for such cameras.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from urllib.parse import urlsplit, urlunsplit

from edge_mtl.capture.base import CaptureOpenError

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
USER_AGENT = "edge-mtl-probe"


def _strip_credentials(url: str) -> str:
    p = urlsplit(url)
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{p.port}" if p.port is not None else host
    return urlunsplit((p.scheme, netloc, p.path or "/", p.query, ""))


class _Conn:
    """A socket with an overall deadline: every receive waits at most what is left of `timeout_s`."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme.lower()
        self.host = parts.hostname or ""
        self.port = parts.port or DEFAULT_PORTS.get(self.scheme, 554)
        self.deadline = time.monotonic() + timeout_s
        self.buf = b""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self._left())
        except TimeoutError:
            raise CaptureOpenError(f"no TCP connection within {timeout_s:.1f}s") from None
        except OSError as e:
            raise CaptureOpenError(f"cannot connect: {e.strerror or e}") from None
        if self.scheme in ("rtsps", "https"):
            ctx = ssl.create_default_context()
            ctx.check_hostname = False  # FFmpeg does not verify either unless told to (tls_verify)
            ctx.verify_mode = ssl.CERT_NONE
            try:
                sock.settimeout(self._left())
                sock = ctx.wrap_socket(sock, server_hostname=self.host)
            except (OSError, ssl.SSLError) as e:
                sock.close()
                raise CaptureOpenError(f"TLS handshake failed or timed out: {e}") from None
        self.sock = sock

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self._left())
        self.sock.sendall(data)

    def read_head(self) -> bytes:
        """Bytes up to and including the blank line that ends a response head."""
        while b"\r\n\r\n" not in self.buf:
            self.sock.settimeout(self._left())
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
            if len(self.buf) > 65536:
                raise ConnectionError("response head too long")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head

    def skip_body(self, head: bytes) -> None:
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length" and v.strip().isdigit():
                length = int(v.strip())
        while len(self.buf) < length:
            self.sock.settimeout(self._left())
            chunk = self.sock.recv(min(65536, length - len(self.buf)))
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        self.buf = self.buf[length:]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def probe_stream(url: str, timeout_s: float) -> None:
    """Raise CaptureOpenError unless the server at `url` answers a request within `timeout_s` seconds."""
    conn = _Conn(url, timeout_s)
    target = _strip_credentials(url)
    try:
        if conn.scheme in ("rtsp", "rtsps"):
            for cseq, method in ((1, "OPTIONS"), (2, "DESCRIBE")):
                extra = "Accept: application/sdp\r\n" if method == "DESCRIBE" else ""
                conn.send(f"{method} {target} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: {USER_AGENT}\r\n{extra}\r\n"
                          .encode())
                head = conn.read_head()
                if not head.startswith(b"RTSP/"):
                    raise ConnectionError(f"not an RTSP answer to {method}: {head[:40]!r}")
                conn.skip_body(head)
        else:
            path = urlsplit(url)
            req = urlunsplit(("", "", path.path or "/", path.query, ""))
            conn.send(f"GET {req} HTTP/1.0\r\nHost: {conn.host}\r\nUser-Agent: {USER_AGENT}\r\n\r\n".encode())
            head = conn.read_head()
            if not head.startswith(b"HTTP/"):
                raise ConnectionError(f"not an HTTP answer: {head[:40]!r}")
    except TimeoutError:
        raise CaptureOpenError(f"connected, but no answer within {timeout_s:.1f}s") from None
    except OSError as e:
        # Closed or garbled, but not silent: OpenCV fails such a server fast (or copes with its quirks), so the
        # shared lock is not held long. Only silence is refused here.
        log.debug("probe of %s: %s; leaving it to OpenCV", target, e)
    finally:
        conn.close()
