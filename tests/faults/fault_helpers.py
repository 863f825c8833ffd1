"""Real broken parts for the fault-injection suite: a camera server that accepts and never answers, SQLite files
damaged in place, a small full filesystem, huge images; and readers for /health and /metrics."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import struct
import subprocess
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest


class HungServer:
    """A TCP listener that accepts every connection and never sends a byte (an IP camera wedged in its firmware)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)  # held open, never read from or written to

    def close(self) -> None:
        self.sock.close()
        for c in self._conns:
            c.close()
        self._thread.join(2)

    def __enter__(self) -> HungServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()


def health(port: int) -> tuple[int, dict[str, object]]:
    code, body = get(f"http://127.0.0.1:{port}/health")
    return code, json.loads(body)


def metric(port: int, name: str) -> float | None:
    """One unlabelled sample (or the first labelled one whose label set starts with `name`) from /metrics."""
    _, text = get(f"http://127.0.0.1:{port}/metrics")
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


# ------------------------------------------------------------------ damaged SQLite files
def make_gallery(path: Path, people: int, dim: int = 128, model: str = "tiny-test", per_person: int = 3) -> None:
    """A real gallery (edge_mtl's own Gallery class) with random unit embeddings."""
    from edge_mtl.identity.gallery import Gallery

    rng = np.random.default_rng(people)
    with Gallery(path) as g:
        for i in range(people):
            e = rng.normal(size=(per_person, dim)).astype(np.float32)
            e /= np.linalg.norm(e, axis=1, keepdims=True)
            g.add(f"person{i}", e, model=model)


def corrupt_page(path: Path, page: int | None = None) -> int:
    """Overwrite one page of a SQLite file with garbage (the header page stays intact: the file still opens).
    Default: a page in the middle. Returns the page number (1-based)."""
    with sqlite3.connect(path) as db:
        size = int(db.execute("PRAGMA page_size").fetchone()[0])
        count = int(db.execute("PRAGMA page_count").fetchone()[0])
    db.close()
    assert count >= 3, f"{path}: too few pages ({count}) to damage one in the middle"
    page = page or count // 2 + 1
    with open(path, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(np.random.default_rng(page).integers(0, 256, size, dtype=np.uint8).tobytes())
    return page


# ------------------------------------------------------------------ a real full disk
@contextlib.contextmanager
def small_filesystem(where: Path, size_kb: int) -> Iterator[Path]:
    """A real tmpfs of `size_kb` KiB mounted at `where` (root only; skipped where mounting is not allowed)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0700", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(fs: Path, leave_kb: int) -> Path:
    """Fill the filesystem at `fs` with one file, leaving about `leave_kb` KiB free."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    filler = fs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave_kb * 1024))
    return filler


# ------------------------------------------------------------------ huge images
def huge_png(path: Path, width: int, height: int) -> Path:
    """A real, valid PNG of width x height black pixels (1-bit), a few hundred KB on disk: deflate packs the
    zero rows ~1000:1. Decoded by OpenCV it would be width*height*3 bytes."""
    row = b"\x00" + bytes((width + 7) // 8)
    comp = zlib.compressobj(1)
    parts = [comp.compress(row * 1000) for _ in range(height // 1000)]
    parts += [comp.compress(row * (height % 1000)), comp.flush()]

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------ what nothing-lost means
def check_nothing_lost(db: Path, jsonl: Path) -> list[int]:
    """The queue's seqs are contiguous from 1, and the JSONL log holds exactly the queue, line for line, in order
    and without a duplicate. Returns the seqs."""
    from tests.service.service_helpers import jsonl_lines, queue_rows

    rows = queue_rows(db)
    seqs = [s for s, _ in rows]
    assert seqs == list(range(1, len(seqs) + 1)), f"queue seqs not contiguous: {seqs[:5]}..{seqs[-5:]}"
    lines = jsonl_lines(jsonl)
    logged = [json.loads(ln)["seq"] for ln in lines]
    assert len(logged) == len(set(logged)), f"a seq written twice to {jsonl}"
    assert lines == [body for _, body in rows], "the JSONL log differs from the queue"
    return seqs
