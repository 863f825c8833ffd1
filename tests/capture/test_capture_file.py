"""File sources on real clips: order, counts, max_frames, loop, finished, latest-frame policy, bad files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from capture_helpers import MOOV_LAST_CLIP

from edge_mtl.capture import FileSource, FrameSource, open_source
from edge_mtl.capture.rtsp import FFMPEG_OPTIONS_ENV
from edge_mtl.config import CameraConfig
from edge_mtl.errors import InputError
from edge_mtl.types import Frame

pytestmark = pytest.mark.timeout(60)


def drain(src: FrameSource, limit_s: float = 20.0) -> list[Frame]:
    """Read until the source is finished (bounded)."""
    frames: list[Frame] = []
    deadline = time.monotonic() + limit_s
    while not src.finished:
        assert time.monotonic() < deadline, f"source not finished after {limit_s}s: {src.stats()}"
        f = src.read(timeout=0.5)
        if f is not None:
            frames.append(f)
    return frames


def count_frames_directly(path: Path) -> int:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def cam(source: Path | str, **kw: object) -> CameraConfig:
    return CameraConfig(name="cam0", source=str(source), **kw)  # type: ignore[arg-type]


def test_every_frame_in_order(small_clip: Path) -> None:
    expected = count_frames_directly(small_clip)
    src = open_source(cam(small_clip))
    assert isinstance(src, FileSource)
    src.start()
    try:
        frames = drain(src)
    finally:
        assert src.stop(timeout=5)
    assert len(frames) == expected > 100
    assert [f.index for f in frames] == list(range(expected))
    assert all(f.camera == "cam0" and f.image.shape == (568, 320, 3) for f in frames)
    ts = [f.timestamp for f in frames]
    assert ts == sorted(ts) and abs(ts[0] - time.time()) < 60
    # offline, frames are stamped in media time: 1/30 s apart however fast they were read
    np.testing.assert_allclose(np.diff(ts), 1 / 30, atol=1e-6)
    st = src.stats()
    assert st["frames_read"] == st["frames_delivered"] == expected
    assert st["frames_dropped"] == 0 and st["reconnects"] == 0 and st["error"] is None
    assert st["fps"] == pytest.approx(30.0, rel=0.01)
    assert st["finished"] is True and st["name"] == "cam0"
    assert src.read(timeout=5.0) is None  # finished: returns at once, no frame


def test_max_frames_stops_reader_and_finished_waits_for_consumer(small_clip: Path) -> None:
    src = open_source(cam(small_clip), max_frames=3)
    src.start()
    try:
        deadline = time.monotonic() + 10
        while src.stats()["frames_read"] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
        assert src.stats()["frames_read"] == 3  # an offline reader does not read past max_frames
        assert not src.finished  # frames still waiting for the consumer
        frames = [src.read(timeout=2.0) for _ in range(3)]
        assert [f.index for f in frames if f is not None] == [0, 1, 2]
        assert src.finished
        assert src.read(timeout=1.0) is None
    finally:
        assert src.stop(timeout=5)


def test_loop_restarts_file_with_continuing_index(small_clip: Path) -> None:
    n = count_frames_directly(small_clip)
    src = open_source(cam(small_clip, loop=True), max_frames=n + 5)
    src.start()
    try:
        frames = drain(src)
    finally:
        assert src.stop(timeout=5)
    assert [f.index for f in frames] == list(range(n + 5))
    # frame n is the file's first frame again, decoded identically
    assert np.array_equal(frames[n].image, frames[0].image)
    assert not np.array_equal(frames[n - 1].image, frames[0].image)
    assert src.stats()["reconnects"] == 0


def test_realtime_file_keeps_only_newest_frame(small_clip: Path) -> None:
    """A consumer slower than the clip's 30 fps sees drops, never a growing backlog."""
    src = open_source(cam(small_clip, realtime=True))
    src.start()
    ages: list[float] = []
    indices: list[int] = []
    try:
        deadline = time.monotonic() + 15
        while len(indices) < 10 and time.monotonic() < deadline:
            f = src.read(timeout=1.0)
            if f is None:
                continue
            ages.append(time.time() - f.timestamp)
            indices.append(f.index)
            time.sleep(0.1)  # "inference" at ~10 fps
    finally:
        assert src.stop(timeout=5)
    st = src.stats()
    assert len(indices) == 10, st
    assert indices == sorted(set(indices))
    assert indices[-1] - indices[0] > len(indices)  # gaps: frames were skipped
    assert st["frames_dropped"] > 0
    assert st["frames_read"] >= st["frames_delivered"] + st["frames_dropped"]
    assert max(ages) < 0.5, ages  # latency bound (generous): one frame period plus scheduling noise


def test_stop_does_not_hang_on_full_queue(small_clip: Path) -> None:
    src = open_source(cam(small_clip))
    src.start()
    time.sleep(0.3)  # reader fills its bounded queue, then blocks
    assert src.stats()["frames_read"] <= 8
    assert src.stop(timeout=5)
    assert src.finished or src.read(timeout=0.1) is not None


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_source(cam(tmp_path / "nope.mp4"))


def test_directory_is_input_error(tmp_path: Path) -> None:
    src = FileSource("cam0", tmp_path)
    with pytest.raises(InputError, match="not a regular file"):
        src.start()


def test_random_bytes_is_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    src = open_source(cam(bad))
    with pytest.raises(InputError, match="cannot open as a video") as e:
        src.start()
    assert "\n" not in str(e.value)
    assert src.stop(timeout=1)


def test_truncated_file_without_index_is_input_error(videos_dir: Path, tmp_path: Path) -> None:
    """An MP4 whose index (moov) is at the end cannot be opened once cut."""
    data = (videos_dir / MOOV_LAST_CLIP).read_bytes()
    assert data.find(b"moov") > len(data) // 2
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        open_source(cam(bad)).start()


def test_truncated_file_with_index_first_yields_frames_then_finishes(small_clip: Path, tmp_path: Path) -> None:
    """An MP4 with its index first still opens when cut: frames up to the cut, then finished, no crash."""
    data = small_clip.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    full = count_frames_directly(small_clip)
    src = open_source(cam(cut))
    src.start()
    try:
        frames = drain(src)
    finally:
        assert src.stop(timeout=5)
    assert 0 < len(frames) < full
    assert [f.index for f in frames] == list(range(len(frames)))
    assert src.stats()["error"] is None


def test_corrupted_middle_is_skipped_not_fatal(small_clip: Path, tmp_path: Path) -> None:
    """Garbage written over part of the video data: decoding goes on past it and the file still finishes."""
    data = bytearray(small_clip.read_bytes())
    start = data.find(b"mdat") + len(data) // 3
    data[start : start + 20_000] = os.urandom(20_000)
    bad = tmp_path / "damaged.mp4"
    bad.write_bytes(bytes(data))
    full = count_frames_directly(small_clip)
    src = open_source(cam(bad))
    src.start()
    try:
        frames = drain(src)
    finally:
        assert src.stop(timeout=5)
    assert len(frames) > full // 2  # frames after the damage still arrive
    assert [f.index for f in frames] == list(range(len(frames)))
    assert src.stats()["error"] is None


def write_synthetic_clip(path: Path, frames: int, fps: float = 30.0, size: tuple[int, int] = (64, 48)) -> None:
    """A tiny MJPG AVI whose frame k is uniformly grey level 4k (no data needed, negligible CPU)."""
    w, h = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert out.isOpened()
    for k in range(frames):
        out.write(np.full((h, w, 3), (4 * k) % 256, np.uint8))
    out.release()


def test_realtime_file_finishes_at_end_without_reconnecting(tmp_path: Path) -> None:
    clip = tmp_path / "short.avi"
    write_synthetic_clip(clip, 20)
    src = open_source(cam(clip, realtime=True))
    src.start()
    try:
        frames = drain(src, limit_s=15)
    finally:
        assert src.stop(timeout=5)
    st = src.stats()
    assert 0 < len(frames) <= 20
    assert st["frames_read"] == 20 and st["reconnects"] == 0 and st["reconnect_attempts"] == 0
    assert st["frames_delivered"] + st["frames_dropped"] == 20
    # the newest frame is never dropped: the last one read is the last one delivered
    assert frames[-1].index == 19
    assert abs(float(frames[-1].image.mean()) - 76) < 3


def test_realtime_loop_with_max_frames(tmp_path: Path) -> None:
    clip = tmp_path / "short.avi"
    write_synthetic_clip(clip, 10, fps=50.0)
    src = open_source(cam(clip, realtime=True, loop=True), max_frames=15)
    src.start()
    try:
        frames = drain(src, limit_s=15)
    finally:
        assert src.stop(timeout=5)
    assert len(frames) == 15
    idx = [f.index for f in frames]
    assert idx == sorted(set(idx)) and idx[-1] >= 14  # read past the file's 10 frames: it looped
    assert src.finished and src.read(timeout=1) is None


def test_rtsp_capture_options_do_not_change_file_decoding(small_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening an RTSP source sets OpenCV's process-wide FFmpeg options; files read in the same process must
    still yield every frame (an earlier choice, fflags=nobuffer, silently lost frames)."""
    expected = count_frames_directly(small_clip)
    monkeypatch.delenv(FFMPEG_OPTIONS_ENV, raising=False)  # restored after the test
    net = open_source(CameraConfig(name="net", source="rtsp://127.0.0.1:1/x"))
    net.start()  # sets the options
    assert net.stop(timeout=5)
    assert os.environ.get(FFMPEG_OPTIONS_ENV)
    src = open_source(cam(small_clip))
    src.start()
    try:
        frames = drain(src)
    finally:
        assert src.stop(timeout=5)
    assert len(frames) == expected
