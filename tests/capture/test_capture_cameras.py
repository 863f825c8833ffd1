"""Serving several cameras on a small box (docs/performance.md): frames that will be dropped are decoded but never
converted, frames scaled for the detector in the capture thread, a low-resolution detect stream paired with the
full-resolution one, the per-camera detection rate with boxes carried in between, the rate monitor's warnings."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mtl.capture import DecodeOptions, FileSource, open_source
from edge_mtl.capture.detect_stream import DetectStreamSource
from edge_mtl.capture.rate import RateMonitor, decode_options
from edge_mtl.config import CameraConfig
from edge_mtl.track.bytetrack import ByteTracker
from edge_mtl.types import Detections

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pedestrian_frame(data_dir: Path) -> np.ndarray:
    """Frame 30 of the 1080p pedestrians clip (several faces)."""
    clip = data_dir / "videos" / "pedestrians_1080p.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} is not available")
    cap = cv2.VideoCapture(str(clip))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, frame = cap.read()
    cap.release()
    assert ok
    return np.asarray(frame)


class CountingSource(FileSource):
    """A real file source that counts the frames it converts to BGR."""

    converted = 0

    def _grab(self, convert: bool = True) -> tuple[str, np.ndarray | None]:  # type: ignore[override]
        status, image = super()._grab(convert)
        if image is not None:
            self.converted += 1
        return status, image


def slow_consumer(src: FileSource, reads: int, every_s: float) -> list[int]:
    got = []
    src.start()
    try:
        while len(got) < reads:
            f = src.read(timeout=2.0)
            assert f is not None, src.stats()
            got.append(f.index)
            time.sleep(every_s)
    finally:
        assert src.stop(timeout=5)
    return got


@pytest.mark.parametrize("convert_dropped", [False, True])
def test_live_source_converts_only_frames_it_hands_over(small_clip: Path, convert_dropped: bool) -> None:
    src = CountingSource("cam0", small_clip, realtime=True, loop=True,
                         decode=DecodeOptions(threads=1, convert_dropped=convert_dropped))
    got = slow_consumer(src, reads=12, every_s=0.2)  # the clip runs at 30 fps: ~5 frames per read are dropped
    st = src.stats()
    assert st["frames_dropped"] >= 10, st
    # every frame read is delivered, dropped, or (at most one) still waiting in the slot
    assert st["frames_read"] - st["frames_delivered"] - st["frames_dropped"] in (0, 1), st
    assert got == sorted(got) and len(set(got)) == len(got)
    if convert_dropped:
        assert src.converted == st["frames_read"], (src.converted, st)  # every frame converted
    else:
        # about the first frame after each take and the one arriving as the next take is due, not those between
        assert src.converted < 0.6 * st["frames_read"], (src.converted, st)


def test_offline_file_still_delivers_every_frame(small_clip: Path) -> None:
    src = open_source(CameraConfig(name="c", source=str(small_clip)), max_frames=20,
                      decode=DecodeOptions(threads=1, detect_size=320))
    src.start()
    frames = []
    try:
        while not src.finished and len(frames) < 20:
            f = src.read(timeout=2.0)
            if f is not None:
                frames.append(f)
    finally:
        src.stop()
    assert [f.index for f in frames] == list(range(20))
    # scaled in the capture thread: long side to the detector's input, the aspect kept (320x568 portrait clip)
    assert all(f.detect_image is not None and f.detect_image.shape == (320, 180, 3) for f in frames)


def test_decode_policy_follows_the_camera_count_and_settings() -> None:
    cam = CameraConfig(name="c", source="x.mp4")
    assert decode_options(cam, 1, 640) == DecodeOptions(threads=0, convert_dropped=False, detect_size=640)
    assert decode_options(cam, 4, 640).threads == 1
    assert decode_options(cam.model_copy(update={"decode_threads": 3}), 4, 640).threads == 3
    assert decode_options(cam.model_copy(update={"detect_fps": 5.0}), 4, 640).detect_size is None
    assert decode_options(cam.model_copy(update={"detect_source": "y.mp4"}), 4, 640).detect_size is None
    assert decode_options(cam.model_copy(update={"scale_in_capture": False}), 4, 640).detect_size is None


def test_detect_stream_pairs_the_low_resolution_stream(small_clip: Path) -> None:
    cfg = CameraConfig(name="cam0", source=str(small_clip), detect_source=str(small_clip), realtime=True,
                       loop=True)
    src = open_source(cfg, decode=DecodeOptions(threads=1, detect_size=640))
    assert isinstance(src, DetectStreamSource)
    src.start()
    frames = []
    try:
        deadline = time.monotonic() + 20
        while len(frames) < 8 and time.monotonic() < deadline:
            f = src.read(timeout=1.0)
            if f is not None:
                frames.append(f)
            time.sleep(0.05)
    finally:
        assert src.stop(timeout=5)
    st = src.stats()
    assert len(frames) == 8 and st["detect_paired"] + st["detect_fallbacks"] == 8
    assert st["detect_paired"] >= 6, st
    assert st["detect_stream"]["frames_read"] > 0
    paired = [f for f in frames if f.detect_image is not None]
    # the detect stream's frame, as decoded (not scaled again in its capture thread)
    assert all(f.detect_image.shape == f.image.shape for f in paired)


def test_detector_maps_boxes_from_a_scaled_or_other_aspect_stream(pedestrian_frame: np.ndarray) -> None:
    from edge_mtl.config import AppConfig
    from edge_mtl.runtime.detector import scale_for_detection
    from edge_mtl.runtime.registry import load_detector
    from edge_mtl.vision.boxes import box_iou

    det = load_detector(AppConfig())
    full = det.detect_batch([pedestrian_frame])[0]
    pre = det.detect_batch([pedestrian_frame], [scale_for_detection(pedestrian_frame, det.input_size)])[0]
    np.testing.assert_array_equal(full.boxes, pre.boxes)  # the same pixels reach the network
    assert len(full) >= 3
    # a 704x576 "substream" of the 16:9 view: boxes scaled back per axis land on the same faces
    sub = cv2.resize(pedestrian_frame, (704, 576), interpolation=cv2.INTER_AREA)
    other = det.detect_batch([pedestrian_frame], [sub])[0]
    strong = full.boxes[full.scores >= 0.3]
    assert len(strong) >= 2
    iou = box_iou(strong.astype(np.float64), other.boxes.astype(np.float64))
    assert (iou.max(axis=1) > 0.5).mean() >= 0.6, iou.max(axis=1)


def test_tracker_extrapolates_without_changing_state() -> None:
    tr = ByteTracker(confirm_frames=1)
    for k in range(6):  # a face moving 10 px right per update
        box = np.array([[100 + 10 * k, 100, 160 + 10 * k, 170]], np.float32)
        tr.update(Detections(box, np.array([0.9], np.float32), np.zeros((1, 5, 2), np.float32)))
    before = tr._mean.copy()
    half = tr.extrapolate(0.5)[1]
    assert half[0] == pytest.approx(155.0, abs=2.0) and half[2] == pytest.approx(215.0, abs=2.0)
    np.testing.assert_array_equal(tr._mean, before)


def test_pipeline_detects_at_the_configured_rate_and_carries_the_rest(pedestrian_frame: np.ndarray) -> None:
    from edge_mtl.config import AppConfig
    from edge_mtl.pipeline import Pipeline
    from edge_mtl.runtime.registry import load_detector, load_recognizer
    from edge_mtl.types import Frame

    cfg = AppConfig()
    cams = [CameraConfig(name="a", source="a.mp4", detect_fps=5.0), CameraConfig(name="b", source="b.mp4")]
    pipe = Pipeline(cfg, load_detector(cfg), load_recognizer(cfg), cameras=cams)
    t0 = 1000.0
    for i in range(10):  # 25 fps cameras: 0.4 s
        pipe.process([Frame(pedestrian_frame, "a", i, t0 + i / 25), Frame(pedestrian_frame, "b", i, t0 + i / 25)])
    a, b = pipe.cameras["a"], pipe.cameras["b"]
    assert a.frames == b.frames == 10
    assert b.detected == 10
    assert a.detected == 2  # at 0.0 s and 0.2 s
    assert len(a.latency) == 10 and all(x >= 0 for x in a.latency)
    q = a.latency_quantiles()
    assert q is not None and 0 <= q[0] <= q[1]
    assert pipe.timer.counts.get("carry", 0) >= 1


def test_cameras_with_the_same_detection_rate_detect_in_different_steps() -> None:
    from edge_mtl.config import AppConfig
    from edge_mtl.pipeline import CameraState

    cfg = AppConfig()
    a, b = CameraState("a", cfg, detect_fps=5.0, phase=0.0), CameraState("b", cfg, detect_fps=5.0, phase=0.5)
    t0 = 1000.0

    def due(cam: CameraState, ts: float) -> bool:  # each camera on its own: detected whenever due
        if cam.detect_lateness(ts) is None:
            return False
        cam.mark_detected(ts)
        return True

    steps = [(due(a, t0 + i / 25), due(b, t0 + i / 25)) for i in range(25)]  # one second
    da = [i for i, (x, _) in enumerate(steps) if x]
    db = [i for i, (_, y) in enumerate(steps) if y]
    assert len(da) == 5 and len(db) == 5, (da, db)  # 5 detections a second each
    assert not set(da) & set(db), (da, db)  # never in the same step
    assert da[0] == 0 and db[0] == 3  # b waits half a period (0.1 s) for its first


def test_scheduled_detections_are_capped_per_step_most_overdue_first(pedestrian_frame: np.ndarray) -> None:
    """Four cameras at detect_fps = 5 whose steps come 0.1 s apart (the loop is slower than the cameras): at most
    one of them is detected per step (`service.detections_per_step`), the most overdue first, so every step stays
    one detection long and every camera still gets its turn; a camera without a schedule is detected every step."""
    from edge_mtl.config import AppConfig
    from edge_mtl.pipeline import Pipeline
    from edge_mtl.runtime.registry import load_detector, load_recognizer
    from edge_mtl.types import Frame

    cfg = AppConfig()
    cams = [CameraConfig(name=n, source=f"{n}.mp4", detect_fps=5.0) for n in "abcd"]
    cams.append(CameraConfig(name="e", source="e.mp4"))
    pipe = Pipeline(cfg, load_detector(cfg), load_recognizer(cfg), cameras=cams)
    t0 = 1000.0
    per_step = []
    for i in range(20):  # 2 s of steps 0.1 s apart: each of a-d is due every 2nd step on its own, so 2 per step
        before = {n: pipe.camera(n).detected for n in "abcde"}
        pipe.process([Frame(pedestrian_frame, n, i, t0 + i / 10) for n in "abcde"])
        per_step.append([n for n in "abcd" if pipe.cameras[n].detected > before[n]])
        assert pipe.cameras["e"].detected == before["e"] + 1
    assert all(len(s) == 1 for s in per_step), per_step  # one scheduled detection per step, never none when due
    counts = [sum(n in s for s in per_step) for n in "abcd"]
    assert counts == [5, 5, 5, 5], (counts, per_step)  # round robin by lateness: fair, below the 10 asked for
    assert all(pipe.cameras[n].frames == 20 for n in "abcd")  # every frame still processed (carried)

    cfg2 = AppConfig.model_validate({"service": {"detections_per_step": 4}})
    pipe2 = Pipeline(cfg2, load_detector(cfg2), load_recognizer(cfg2), cameras=cams[:4])
    for i in range(20):
        pipe2.process([Frame(pedestrian_frame, n, i, t0 + i / 10) for n in "abcd"])
    # the budget allows the full rate (5/s over 2 s; c and d start later by their phases)
    assert [pipe2.cameras[n].detected for n in "abcd"] == [10, 10, 9, 9]


def test_rate_monitor_warns_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    cams = {"a": CameraConfig(name="a", source="a", detect_fps=5.0), "b": CameraConfig(name="b", source="b")}
    mon = RateMonitor(cams, window_s=4.0)
    caplog.set_level(logging.INFO, logger="edge_mtl.capture.rate")
    counts = {"a": 0, "b": 0}
    for t in range(12):  # a: 2 detections/s of its 5; b: 25 frames/s of its stream's 25
        counts["a"] += 2
        counts["b"] += 25
        rates = mon.update(float(t), counts, {"a": 25.0, "b": 25.0}, {"a": True, "b": True})
        if t < 3:
            assert not rates["a"].behind  # no verdict before a full window
    assert rates["a"].behind and rates["a"].episodes == 1 and rates["a"].target_fps == 5.0
    assert rates["a"].fps == pytest.approx(2.0)
    assert not rates["b"].behind and rates["b"].target_fps == 25.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "camera a falls behind" in warnings[0].getMessage()
    for t in range(12, 20):  # back at 5/s
        counts["a"] += 5
        rates = mon.update(float(t), counts, {"a": 25.0}, {"a": True, "b": True})
    assert not rates["a"].behind and rates["a"].episodes == 1
    assert any("back at its configured rate" in r.getMessage() for r in caplog.records)
    rates = mon.update(20.0, counts, {}, {"a": False, "b": False})  # not delivering: an outage, not a slow camera
    assert not rates["a"].behind
    # detect_fps above the stream's own rate: the target is the stream's rate
    fast = RateMonitor({"c": CameraConfig(name="c", source="c", detect_fps=30.0)}, window_s=2.0)
    for t in range(5):
        r = fast.update(float(t), {"c": 25 * t}, {"c": 25.0}, {"c": True})["c"]
    assert r.target_fps == 25.0 and not r.behind


def test_metrics_show_the_rate_of_each_camera() -> None:
    from edge_mtl.daemon.metrics import CameraSnapshot, Snapshot, render_prometheus

    cam = CameraSnapshot(name="a", kind="file", frames_processed=50, frames_detected=10, rate_fps=2.0,
                         target_fps=5.0, behind=True, behind_episodes=1, latency_s=(0.04, 0.25))
    text = render_prometheus(Snapshot(ready=True, progressing=True, serving=True, frames=50, cameras=[cam]))
    for line in ('edge_mtl_frames_detected_total{camera="a"} 10.0', 'edge_mtl_camera_target_fps{camera="a"} 5.0',
                 'edge_mtl_camera_rate_fps{camera="a"} 2.0', 'edge_mtl_camera_behind{camera="a"} 1.0',
                 'edge_mtl_camera_behind_total{camera="a"} 1.0',
                 'edge_mtl_frame_latency_seconds{camera="a",quantile="0.5"} 0.04',
                 'edge_mtl_frame_latency_seconds{camera="a",quantile="0.95"} 0.25'):
        assert line in text.splitlines(), line


def test_prescaled_frames_give_exactly_the_detections_of_an_odd_sized_frame(data_dir: Path) -> None:
    """A frame whose scaled size is rounded (320x568 -> 361x640): boxes map back as if the detector had scaled it."""
    from edge_mtl.config import AppConfig
    from edge_mtl.runtime.detector import scale_for_detection
    from edge_mtl.runtime.registry import load_detector

    cap = cv2.VideoCapture(str(data_dir / "videos" / "selfie_portrait.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (568, 320, 3)
    det = load_detector(AppConfig())
    small = scale_for_detection(frame, det.input_size)
    assert small.shape == (640, 361, 3)
    full = det.detect_batch([frame])[0]
    pre = det.detect_batch([frame], [small])[0]
    assert len(full) >= 1
    np.testing.assert_array_equal(full.boxes, pre.boxes)
    np.testing.assert_array_equal(full.landmarks, pre.landmarks)
