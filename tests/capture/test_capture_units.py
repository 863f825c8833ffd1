"""Backoff schedule and the frame hand-over buffer (the two policies), with real threads."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from edge_mtl.capture import Backoff, FrameBuffer
from edge_mtl.types import Frame

pytestmark = pytest.mark.timeout(30)


def frame(i: int) -> Frame:
    return Frame(image=np.zeros((2, 2, 3), np.uint8), camera="c", index=i, timestamp=time.time())


def test_backoff_doubles_to_cap_with_small_jitter_and_resets() -> None:
    b = Backoff(0.5, 4.0, jitter=0.1, rng=random.Random(0))
    delays = [b.next_delay() for _ in range(7)]
    for d, base in zip(delays, [0.5, 1, 2, 4, 4, 4, 4], strict=True):
        assert base <= d <= base * 1.1
    assert len({round(d, 6) for d in delays[3:]}) > 1  # jittered, not lockstep
    b.reset()
    assert 0.5 <= b.next_delay() <= 0.55


def test_backoff_rejects_nonpositive() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_latest_buffer_overwrites_and_counts_drops() -> None:
    buf = FrameBuffer(1, overwrite=True)
    stop = threading.Event()
    for i in range(5):
        assert buf.put(frame(i), stop)
    assert buf.dropped == 4 and len(buf) == 1
    got = buf.get(0.0)
    assert got is not None and got.index == 4
    assert buf.get(0.05) is None


def test_fifo_buffer_blocks_producer_until_consumed() -> None:
    buf = FrameBuffer(2, overwrite=False)
    stop = threading.Event()
    done: list[int] = []

    def produce() -> None:
        for i in range(4):
            if buf.put(frame(i), stop):
                done.append(i)

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(0.3)
    assert done == [0, 1]  # third put waits for room
    got = [buf.get(2.0) for _ in range(4)]
    t.join(5)
    assert not t.is_alive()
    assert [g.index for g in got if g is not None] == [0, 1, 2, 3]
    assert buf.dropped == 0


def test_fifo_put_gives_up_on_stop_and_close_wakes_consumer() -> None:
    buf = FrameBuffer(1, overwrite=False)
    stop = threading.Event()
    assert buf.put(frame(0), stop)
    stop.set()
    assert not buf.put(frame(1), stop)
    assert buf.get(0.0) is not None
    threading.Timer(0.1, buf.close).start()
    t0 = time.monotonic()
    assert buf.get(10.0) is None
    assert time.monotonic() - t0 < 5.0  # woken by close, not by the 10 s timeout
