"""SQLite and file-write failures as the operator should meet them: one line naming the file (exit 2).

SQLite's own messages ("database disk image is malformed", "database or disk is full") name no file, and a
traceback or "internal error" helps nobody at 3 a.m. `db_guard(path, what)` turns them into an `InputError` whose
one-line message says which file, what is wrong with it and what to do; `write_guard` does the same for plain
file writes (the JSONL log) that fail with ENOSPC, EDQUOT, EFBIG or EIO.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_mtl.errors import InputError

#: errno values of a write that failed for lack of room (disk full, quota, file-size limit).
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class StorageError(InputError):
    """A database or log file that cannot be read or written: damaged, full or unreadable (exit 2)."""


def is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno in NO_SPACE
    if isinstance(e, sqlite3.Error):
        return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(e)
    return False


def nearly_full(path: str | os.PathLike[str]) -> bool:
    """The filesystem holding `path` has less than 1 MiB (or 0.5%) left: SQLite reports a write into a full tmpfs
    or into its memory-mapped WAL index as "disk I/O error", not as SQLITE_FULL."""
    try:
        st = os.statvfs(Path(path).parent)
    except OSError:
        return False
    free = st.f_bavail * st.f_frsize
    return free < max(1 << 20, st.f_blocks * st.f_frsize // 200)


def describe_db_error(path: str | os.PathLike[str], what: str, e: sqlite3.Error) -> str:
    """The one line for a failed SQLite operation on `path` (`what`: "gallery", "event queue", ...)."""
    p = Path(path)
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if is_disk_full(e) or ("I/O error" in msg and nearly_full(p)):
        return f"{p}: {what}: disk full ({msg}); free space on {p.parent} and start again"
    if isinstance(e, sqlite3.OperationalError) and "locked" in msg:
        return f"{p}: {what}: busy ({msg}); another process holds it"
    if isinstance(e, sqlite3.OperationalError) and ("readonly" in msg or "unable to open" in msg):
        return f"{p}: {what}: cannot open or write ({msg}); check its owner and permissions"
    return f"{p}: {what} is damaged ({msg}); restore it from a backup or move it aside"


@contextmanager
def db_guard(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Run the block; a SQLite error in it becomes a StorageError naming `path` (an InputError stays as it is)."""
    try:
        yield
    except sqlite3.Error as e:
        raise StorageError(describe_db_error(path, what, e)) from None


@contextmanager
def write_guard(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Run the block; an OSError writing `path` becomes a StorageError naming it."""
    try:
        yield
    except OSError as e:
        p = Path(path)
        why = e.strerror or str(e)
        if e.errno in NO_SPACE:
            raise StorageError(f"{p}: {what}: disk full ({why}); free space on {p.parent} and start again") from None
        raise StorageError(f"{p}: {what}: write failed ({why})") from None
