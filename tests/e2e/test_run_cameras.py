"""`edge-mtl run` with two cameras in one process (recognition batched across them) and with --annotate."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mtl.events.schema import decode_event
from tests.capture.capture_helpers import SMALL_CLIP
from tests.e2e.conftest import edge_mtl, read_jsonl, write_config
from tests.e2e.e2e_helpers import queue_events

pytestmark = [pytest.mark.data, pytest.mark.timeout(180)]


def test_two_cameras_one_process(data_dir: Path, tmp_path: Path, shipped_models: tuple[Path, Path]) -> None:
    clip = data_dir / "videos" / SMALL_CLIP
    db, log = tmp_path / "events.db", tmp_path / "events.jsonl"
    # every confirmed face is analysed at every step, so faces of the two cameras meet in the recognizer even if
    # one camera runs a frame ahead of the other (which faces are due is the scheduler's business, not this test's)
    cfg = write_config(tmp_path / "edge-mtl.toml", {"recognition": {"every_n_frames": 1}})
    det, rec = shipped_models
    proc = edge_mtl("run", "--detector", str(det), "--recognizer", str(rec), "--config", str(cfg),
                    "--source", str(clip), "--camera", "hall", "--source", str(clip),
                    "--camera", "gate", "--events", str(db), "--jsonl", str(log), "--max-frames", "60")
    events = queue_events(db)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["id"] for e in read_jsonl(log)] == [e["id"] for e in events]
    for cam in ("hall", "gate"):
        mine = [e for e in events if e["camera"] == cam]
        for e in mine:
            decode_event(e)
            assert e["track_id"].startswith(f"{cam}-"), e
        kinds = Counter(e["type"] for e in mine)
        assert kinds["face.appeared"] >= 1, (cam, kinds)
        appeared = {e["track_id"] for e in mine if e["type"] == "face.appeared"}
        assert appeared == {e["track_id"] for e in mine if e["type"] == "face.left"}
        assert any(e["age"] is not None for e in mine if e["type"] == "face.left"), "never analysed"
        # each camera's source delivered all its frames to the pipeline
        stats = re.search(rf"source {cam}: (\{{.*\}})", proc.stderr)
        assert stats, proc.stderr[-3000:]
        assert ast.literal_eval(stats.group(1))["frames_delivered"] == 60
    appeared_ids = [e["track_id"] for e in events if e["type"] == "face.appeared"]
    assert len(appeared_ids) == len(set(appeared_ids))
    # faces of both cameras went through the recognizer together: some call had more than one face
    m = re.search(r"recognizer batches \(faces per call: calls\): (\{.*\})", proc.stderr)
    assert m, proc.stderr[-3000:]
    batches = {int(k): int(v) for k, v in ast.literal_eval(m.group(1)).items()}
    assert max(batches) >= 2, batches


def _frames(path: Path) -> tuple[list[np.ndarray], float, int]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot open {path}"
    fps, declared = float(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames, fps, declared


def _outline(shape: tuple[int, ...], bbox: list[float], pad: int = 1) -> np.ndarray:
    """Mask of the pixels within `pad` of the outline of an [x, y, w, h] box."""
    x, y, w, h = (round(v) for v in bbox)
    mask = np.zeros(shape[:2], np.uint8)
    cv2.rectangle(mask, (x, y), (x + w, y + h), 1, 1)
    return cv2.dilate(mask, np.ones((2 * pad + 1, 2 * pad + 1), np.uint8)).astype(bool)


def test_annotate_writes_boxes(data_dir: Path, tmp_path: Path, model_args: list[str]) -> None:
    clip = data_dir / "videos" / SMALL_CLIP
    out, db = tmp_path / "annotated.mp4", tmp_path / "events.db"
    n = 60
    edge_mtl("run", *model_args, "--source", str(clip), "--events", str(db), "--max-frames", str(n),
             "--annotate", str(out))
    frames, fps, declared = _frames(out)
    source, src_fps, _ = _frames(clip)
    assert len(frames) == n and declared == n
    assert frames[0].shape == source[0].shape  # same size as the input (568 x 320 x 3)
    assert abs(fps - src_fps) < 0.5, (fps, src_fps)
    appeared = [e for e in queue_events(db) if e["type"] == "face.appeared"]
    assert appeared, "no face found in the clip: nothing to draw"

    def diff(i: int) -> np.ndarray:
        return np.abs(frames[i].astype(np.int16) - source[i].astype(np.int16)).mean(axis=2)

    first = min(e["frame"] for e in appeared)
    for e in appeared:
        d = diff(e["frame"])
        ring = _outline(d.shape, e["bbox"])
        # the box is drawn where the face was found: many pixels along its outline changed a lot (elsewhere the
        # frames differ by video compression only, a few levels)
        assert (d[ring] > 30).mean() > 0.2, (e, (d[ring] > 30).mean(), np.median(d))
        if first > 0:  # before any track was confirmed nothing is drawn there
            d0 = diff(first - 1)
            assert (d0[ring] > 30).mean() < 0.05, (e, (d0[ring] > 30).mean(), np.median(d0))
