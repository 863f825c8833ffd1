"""Latency stays bounded when the camera is faster than processing: a real-time source keeps only its newest frame
(docs/pipeline.md, latest-frame policy), so the frames processed are always fresh and the surplus is counted as dropped,
instead of a backlog whose age grows without bound."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edge_mtl.capture import FileSource
from edge_mtl.capture.file import DEFAULT_FPS
from edge_mtl.pipeline import Pipeline
from edge_mtl.runtime.registry import load_detector, load_recognizer
from tests.capture.capture_helpers import SMALL_CLIP

pytestmark = [pytest.mark.data, pytest.mark.timeout(120)]

DELAY_S = 0.4  # per detector call: with a 30 fps camera, about 12 frames arrive while one is processed
RUN_S = 6.0
MAX_AGE_S = 1.0  # generous: one processing step (~0.45 s) plus scheduling noise on a busy machine


class SlowEngine:
    """Test-only stand-in for a slow machine: the real engine, plus a fixed sleep per call (costs no CPU)."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner = inner
        self.metadata = inner.metadata
        self.provider = inner.provider
        self.delay_s = delay_s

    def run(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        time.sleep(self.delay_s)
        out: dict[str, npt.NDArray[np.float32]] = self.inner.run(batch)
        return out


def test_frame_age_bounded_and_drops_counted_when_processing_is_slow(data_dir: Path, app_config: Any) -> None:
    detector = load_detector(app_config)
    detector.engine = SlowEngine(detector.engine, DELAY_S)
    pipeline = Pipeline(app_config, detector, load_recognizer(app_config))
    # a camera stand-in: the clip paced at its native 30 fps, looped, latest frame only
    src = FileSource("cam", data_dir / "videos" / SMALL_CLIP, realtime=True, loop=True)
    src.start()
    ages_in: list[float] = []  # frame age when processing starts: how stale the input is
    ages_out: list[float] = []  # frame age when its events are ready: capture-to-result latency
    indices: list[int] = []
    try:
        end = time.monotonic() + RUN_S
        while time.monotonic() < end:
            frame = src.read(timeout=2.0)
            assert frame is not None, f"the real-time source delivered nothing for 2 s: {src.stats()}"
            ages_in.append(time.time() - frame.timestamp)
            pipeline.process([frame])
            ages_out.append(time.time() - frame.timestamp)
            indices.append(frame.index)
        stats = src.stats()
    finally:
        src.stop()
        pipeline.close()

    summary = (f"ages in {np.round(ages_in, 2).tolist()}, out max {max(ages_out):.2f} s, "
               f"indices {indices}, stats {stats}")
    fps = stats["fps"] or DEFAULT_FPS
    assert fps > 2.0 / DELAY_S, summary  # the camera really is faster than processing
    assert len(indices) >= 5, summary
    # fresh frames only: no backlog builds up, however long it runs
    assert max(ages_in) < MAX_AGE_S, summary
    assert max(ages_out) < MAX_AGE_S + DELAY_S + 0.5, summary
    late = ages_in[len(ages_in) // 2 :]
    assert np.mean(late) < MAX_AGE_S / 2, summary
    # the frames in between were skipped, and counted as dropped
    gaps = np.diff(indices)
    assert np.median(gaps) >= 5, summary
    assert stats["frames_dropped"] >= stats["frames_read"] - stats["frames_delivered"] - 1, summary
    assert stats["frames_dropped"] >= 0.5 * stats["frames_read"], summary
    assert stats["frames_delivered"] == len(indices)
