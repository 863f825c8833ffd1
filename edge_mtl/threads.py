"""Operating-system names for the daemon's threads.

Python's thread names stay inside Python; `top -H`, `ps -L`, `py-spy` and `benchmarks/thread_cpu.py` see the OS
name, which every thread inherits from the one that started it. Naming each long-lived thread after its role
(`cap:cam0`, `http`, `mqtt`) lets the CPU of a running daemon be attributed per thread: the capture threads (decode,
conversion, scaling), ONNX Runtime's pool threads (`onnxrt`: they start while the models load, see
`thread_name`), and the main thread (the loop: detection's own share, tracking, recognition), which keeps the
process's name so that `ps` and `pgrep` still find the daemon by it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

#: Linux keeps the first 15 bytes of a thread's name
MAX_NAME = 15


def _comm() -> Path:
    """Where Linux keeps the calling thread's name."""
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm")


def name_this_thread(name: str) -> bool:
    """Set the calling thread's OS name (Linux; elsewhere a no-op). False when it could not be set."""
    try:
        _comm().write_text(name.encode()[:MAX_NAME].decode(errors="ignore"))
    except OSError as e:
        log.debug("thread name %r not set: %s", name, e)
        return False
    return True


def _current_name() -> str | None:
    try:
        return _comm().read_text().strip()
    except OSError:
        return None


@contextmanager
def thread_name(name: str) -> Iterator[None]:
    """The calling thread carries `name` inside the block and its own name again after it: threads started inside
    (a library's worker pool) inherit `name`."""
    old = _current_name()
    changed = old is not None and name_this_thread(name)
    try:
        yield
    finally:
        if changed and old is not None:
            name_this_thread(old)
