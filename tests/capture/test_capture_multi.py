"""Several cameras in one process: each source its own thread, read fairly through MultiSource/read_any."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.capture import MultiSource, open_source, read_any
from edge_mtl.config import CameraConfig
from edge_mtl.errors import InputError
from edge_mtl.types import Frame

pytestmark = pytest.mark.timeout(60)


def cams(clip: Path, names: list[str], max_frames: int) -> MultiSource:
    return MultiSource([open_source(CameraConfig(name=n, source=str(clip)), max_frames=max_frames) for n in names])


def test_multisource_round_robin_and_finish(small_clip: Path) -> None:
    multi = cams(small_clip, ["a", "b"], max_frames=10)
    multi.start()
    try:
        deadline = time.monotonic() + 10
        while any(s.stats()["frames_read"] < 4 for s in multi.sources):  # both queues full (4 each)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        frames: list[Frame] = []
        deadline = time.monotonic() + 20
        while not multi.finished:
            assert time.monotonic() < deadline, multi.stats()
            f = multi.read(timeout=0.5)
            if f is not None:
                frames.append(f)
    finally:
        assert multi.stop(timeout=5)
    assert [f.camera for f in frames[:8]] == ["a", "b"] * 4  # strict alternation while both have frames
    assert Counter(f.camera for f in frames) == {"a": 10, "b": 10}
    for name in "ab":
        assert [f.index for f in frames if f.camera == name] == list(range(10))
    assert multi.read(timeout=2.0) is None  # finished: at once
    assert set(multi.stats()) == {"a", "b"}


def test_multisource_live_sources_both_served(small_clip: Path) -> None:
    """Two realtime (latest-frame) sources: a blocked read is woken by either camera and neither is starved."""
    multi = MultiSource(
        [
            open_source(CameraConfig(name="slow", source=str(small_clip), realtime=True)),
            open_source(CameraConfig(name="fast", source=str(small_clip), realtime=True)),
        ]
    )
    with multi:
        got = [multi.read(timeout=5.0) for _ in range(6)]
    assert all(g is not None for g in got)
    assert {g.camera for g in got if g is not None} == {"slow", "fast"}


def test_multisource_start_failure_stops_started_sources(tmp_path: Path, small_clip: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    good = open_source(CameraConfig(name="good", source=str(small_clip)))
    multi = MultiSource([good, open_source(CameraConfig(name="bad", source=str(bad)))])
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(InputError):
        multi.start()
    deadline = time.monotonic() + 5
    while "capture-good" in {t.name for t in threading.enumerate()} - before:
        assert time.monotonic() < deadline, "started source was not stopped"
        time.sleep(0.02)


def test_multisource_rejects_duplicate_names(small_clip: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        cams(small_clip, ["x", "x"], max_frames=1)


def test_read_any_rotates(small_clip: Path) -> None:
    srcs = [open_source(CameraConfig(name=n, source=str(small_clip)), max_frames=3) for n in ("p", "q")]
    for s in srcs:
        s.start()
    try:
        got: list[Frame] = []
        nxt = 0
        deadline = time.monotonic() + 10
        while len(got) < 6:
            assert time.monotonic() < deadline
            f, nxt = read_any(srcs, timeout=0.5, start=nxt)
            if f is not None:
                got.append(f)
        assert Counter(f.camera for f in got) == {"p": 3, "q": 3}
        f, _ = read_any(srcs, timeout=1.0, start=nxt)
        assert f is None and all(s.finished for s in srcs)
    finally:
        for s in srcs:
            assert s.stop(timeout=5)
