"""The JSONL events log, written from the durable queue (docs/events.md): one event per line, rotated by size.

Never a half line: each batch is written as whole lines with unbuffered `os.write`, then fsync'd, and only then
does the log's cursor in the queue advance. A process killed at any point (kill -9) therefore leaves only whole
lines. A power cut or a full disk can still leave a torn last line; opening the log truncates it back to the
last newline, and the next `sync()` rewrites from the cursor.

Duplicates: after a crash between the fsync and the cursor commit, the lines of that last batch are already in
the file but not yet committed. Opening the log reads the seq of the last whole line (in the current file, or
in `.1` right after a rotation) and, if it is a newer event of the *same* queue (same seq and id), advances the
cursor to it, so a crash normally repeats nothing. Only if that line cannot be matched (it was torn, or the
queue pruned it) can the last batch appear twice: consumers should de-duplicate by `seq` (at-least-once).

Rotation: when the next line would push the file past `max_bytes`, `path` becomes `path.1`, `path.1` becomes
`path.2` and so on, keeping `backups` old files (0: the full file is simply deleted). Files are owner-only.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from types import TracebackType

from edge_mtl.errors import InputError
from edge_mtl.events.queue import EventQueue

log = logging.getLogger(__name__)

_BATCH = 1000
_TAIL_CHUNK = 64 * 1024


def _fsync_dir(path: Path) -> None:
    """Make renames and file creation in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_line(path: Path) -> bytes | None:
    """The last newline-terminated line of `path` (without the newline), or None if there is none."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            buf = b""
            pos = end
            while pos > 0:
                step = min(_TAIL_CHUNK, pos)
                pos -= step
                f.seek(pos)
                buf = f.read(step) + buf
                body = buf[:-1] if buf.endswith(b"\n") else buf
                nl = body.rfind(b"\n")
                if nl >= 0 or pos == 0:
                    if not buf.endswith(b"\n"):
                        return None  # a torn last line; the caller repairs it first
                    return body[nl + 1 :]
    except FileNotFoundError:
        return None
    return None


class JsonlLog:
    """Appends every event of `queue` after the cursor `cursor_name` to `path`, one JSON line each.

    `sync()` may be called from any thread (calls are serialised); one JsonlLog per file and cursor.
    """

    def __init__(
        self,
        queue: EventQueue,
        path: str | os.PathLike[str],
        max_bytes: int,
        backups: int,
        cursor_name: str = "jsonl",
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"JsonlLog: max_bytes must be positive, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"JsonlLog: backups must be >= 0, got {backups}")
        self.queue = queue
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.backups = int(backups)
        self.cursor_name = cursor_name
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder, not a JSONL log")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._size = 0
        self._lock = threading.Lock()
        self._open()
        _fsync_dir(self.path.parent)  # the file's creation survives a power cut
        self._recover()

    # -- files -----------------------------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as e:
            raise InputError(f"{self.path}: cannot open JSONL log: {e.strerror}") from None
        os.fchmod(self._fd, 0o600)
        self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        with self._lock:
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _recover(self) -> None:
        """Cut a torn last line, then skip what the file already holds beyond the cursor (see module doc)."""
        if self._size > 0:
            with self.path.open("rb") as f:
                f.seek(max(0, self._size - 1))
                torn = f.read(1) != b"\n"
            if torn:
                keep = self._size
                with self.path.open("rb") as f:
                    pos = self._size
                    while pos > 0:
                        step = min(_TAIL_CHUNK, pos)
                        pos -= step
                        f.seek(pos)
                        nl = f.read(step).rfind(b"\n")
                        if nl >= 0:
                            keep = pos + nl + 1
                            break
                    else:
                        keep = 0
                os.truncate(self.path, keep)
                os.fsync(self._fd)
                log.warning("%s: cut a torn last line (%d bytes)", self.path, self._size - keep)
                self._size = keep
        line = _last_line(self.path) if self._size > 0 else _last_line(self._rotated(1))
        if line is None:
            return
        try:
            last = json.loads(line)
            seq, ev_id = int(last["seq"]), str(last["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("%s: last line is not an event; not using it to resume", self.path)
            return
        cursor = self.queue.get_cursor(self.cursor_name)
        if seq <= cursor:
            return
        stored = self.queue.read(seq, limit=1)
        if stored and stored[0].get("seq") == seq and stored[0].get("id") == ev_id:
            log.info("%s: already holds events up to seq %d; advancing its cursor from %d", self.path, seq, cursor)
            self.queue.set_cursor(self.cursor_name, seq)
        else:
            log.warning(
                "%s: last line (seq %d) does not match the queue %s; writing from its cursor %d",
                self.path,
                seq,
                self.queue.path,
                cursor,
            )

    def _rotated(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _rotate(self) -> None:
        """path -> path.1 -> ... -> path.<backups>; the oldest falls off. The current file is already fsync'd."""
        self._close_fd()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = self._rotated(i)
                if src.exists():
                    os.replace(src, self._rotated(i + 1))
            os.replace(self.path, self._rotated(1))
        self._open()
        _fsync_dir(self.path.parent)
        log.info("rotated %s", self.path)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(data)

    def rotate(self) -> None:
        """Start a new file now, as if `max_bytes` had been reached (retention by age: a caller rotates a file
        whose oldest line is too old, so that whole files can age out). A no-op on an empty file."""
        with self._lock:
            if self._fd < 0:
                raise ValueError(f"{self.path}: JSONL log is closed")
            if self._size > 0:
                os.fsync(self._fd)
                self._rotate()

    # -- syncing ---------------------------------------------------------------------------------------------

    def sync(self) -> int:
        """Write every event after the cursor; returns how many lines were written."""
        with self._lock:
            return self._sync()

    def _sync(self) -> int:
        if self._fd < 0:
            raise ValueError(f"{self.path}: JSONL log is closed")
        total = 0
        cursor = self.queue.get_cursor(self.cursor_name)
        while True:
            rows = self.queue.read_raw(cursor + 1, _BATCH)
            if not rows:
                return total
            if rows[0][0] > cursor + 1 and cursor > 0:
                log.warning("%s: events %d..%d were pruned before being logged", self.path, cursor + 1, rows[0][0] - 1)
            pending = bytearray()
            for _, body in rows:
                line = body.encode("utf-8") + b"\n"
                if self._size + len(pending) > 0 and self._size + len(pending) + len(line) > self.max_bytes:
                    self._write(bytes(pending))
                    pending.clear()
                    os.fsync(self._fd)
                    self._rotate()
                pending += line
            self._write(bytes(pending))
            os.fsync(self._fd)
            cursor = rows[-1][0]
            self.queue.set_cursor(self.cursor_name, cursor)
            total += len(rows)
