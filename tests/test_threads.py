"""OS thread names (edge_mtl.threads): what top -H and benchmarks/thread_cpu.py attribute CPU by."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from edge_mtl.threads import name_this_thread, thread_name

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names via /proc are Linux's")


def _comm(tid: int) -> str:
    return Path(f"/proc/self/task/{tid}/comm").read_text().strip()


def test_a_thread_names_itself_and_long_names_are_cut_to_15_bytes() -> None:
    seen: dict[str, str] = {}

    def run() -> None:
        assert name_this_thread("cap:a-very-long-camera-name")
        seen["name"] = _comm(threading.get_native_id())

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen["name"] == "cap:a-very-long"


def test_threads_started_inside_thread_name_inherit_it_and_the_caller_gets_its_name_back() -> None:
    before = _comm(threading.get_native_id())
    inner: dict[str, str] = {}
    release = threading.Event()

    def worker() -> None:
        inner["name"] = _comm(threading.get_native_id())
        release.wait(5)

    with thread_name("onnxrt"):
        assert _comm(threading.get_native_id()) == "onnxrt"
        t = threading.Thread(target=worker)
        t.start()
    assert _comm(threading.get_native_id()) == before
    release.set()
    t.join()
    assert inner["name"] == "onnxrt"
