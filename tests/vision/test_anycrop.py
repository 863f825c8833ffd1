"""A face that fills the image is detected again with a border around it (edge_mtl.vision.anycrop), in the
detector used by analyze, enroll and the daemon's frames: the rule, the mapping back, and the real detector on
real tight crops (UTKFace chips, a face cut out of an LFW photo)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge_mtl.config import AppConfig
from edge_mtl.data.images import read_image
from edge_mtl.runtime.detector import FaceDetector
from edge_mtl.types import Detections
from edge_mtl.vision.anycrop import (
    PadRetry,
    add_border,
    cut_at_box,
    detect_with_retry,
    fills_image,
    needs_retry,
    shift_back,
    touching,
)


def _dets(boxes: list[list[float]]) -> Detections:
    b = np.array(boxes, np.float32).reshape(-1, 4)
    lms = np.stack([np.stack([b[:, 0] + 10, b[:, 1] + 10] * 2, 1)] * 2, 1).reshape(-1, 4, 2)
    return Detections(b, np.full(len(b), 0.9, np.float32), lms.astype(np.float32))


def test_rule_fill_and_empty() -> None:
    shape = (200, 160, 3)
    r = PadRetry(pad=0.25, fill=0.8)
    # the largest face decides: 150 of 200 rows is 0.75 (no), 130 of 160 columns is 0.81 (yes)
    assert not fills_image(_dets([[0, 0, 100, 150], [0, 0, 10, 10]]), shape, 0.8)
    assert fills_image(_dets([[10, 20, 140, 60], [0, 0, 10, 10]]), shape, 0.8)
    assert needs_retry(_dets([[10, 20, 140, 60]]), shape, r, still=False)
    # nothing found: stills retry, frames do not, unless told to
    empty = Detections.empty()
    assert needs_retry(empty, shape, r, still=True) and not needs_retry(empty, shape, r, still=False)
    assert needs_retry(empty, shape, PadRetry(when_empty="always"), still=False)
    assert not needs_retry(empty, shape, PadRetry(when_empty="never"), still=True)
    assert not needs_retry(_dets([[0, 0, 200, 200]]), shape, PadRetry(pad=0), still=True)
    # a small face at the edge: stills retry (a forehead found in a tight crop), frames do not
    edge = _dets([[100, 0, 150, 30], [20, 50, 60, 90]])
    assert touching(edge, shape).tolist() == [True, False]
    assert needs_retry(edge, shape, r, still=True) and not needs_retry(edge, shape, r, still=False)
    assert not needs_retry(edge, shape, PadRetry(when_touching="never"), still=True)


def test_retry_result_keeps_other_first_pass_faces() -> None:
    shape = (200, 200, 3)
    first = _dets([[100, 0, 150, 30], [20, 120, 50, 150], [60, 40, 190, 190]])
    seen: list[tuple[int, ...]] = []

    def detect(img: npt.NDArray[np.uint8]) -> Detections:
        seen.append(img.shape)
        return _dets([[100, 80, 220, 230]])  # the face, in the bordered image's pixels (border 50)

    out = detect_with_retry(detect, np.zeros(shape, np.uint8), first, PadRetry(pad=0.25), still=True)
    assert seen == [(300, 300, 3)]
    # the retried face, plus the small face that neither touches the edge nor overlaps it; the edge box and the
    # first pass's own version of the big face are gone
    assert out.boxes.tolist() == [[50, 30, 170, 180], [20, 120, 50, 150]]
    # nothing found again: the first pass stands
    none = detect_with_retry(lambda im: Detections.empty(), np.zeros(shape, np.uint8), first, PadRetry(), True)
    assert none is first


def test_border_and_shift_back() -> None:
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    rep, grey = add_border(img, 2, "replicate"), add_border(img, 2, "grey")
    assert rep.shape == grey.shape == (6, 7, 3)
    assert (rep[0, 0] == img[0, 0]).all() and (rep[-1, -1] == img[-1, -1]).all() and (grey[0, 0] == 128).all()
    d = shift_back(_dets([[5, 4, 40, 60]]), 10, (40, 40))
    # boxes into the original pixels and clipped to it; landmarks shifted, not clipped (they may lie outside)
    assert d.boxes.tolist() == [[0, 0, 30, 40]]
    assert d.landmarks[0, 0].tolist() == [5, 4]


class CountingEngine:
    """The real ONNX Runtime engine, counting the inputs it runs."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.metadata, self.calls = engine, engine.metadata, 0

    def run(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        self.calls += batch.shape[0]
        return self.engine.run(batch)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    from edge_mtl.runtime.registry import load_detector

    det = load_detector(AppConfig())
    det.engine = CountingEngine(det.engine)  # type: ignore[assignment]
    return det


def _lm(d: Detections) -> npt.NDArray[np.float32]:
    wh = d.boxes[:, 2:] - d.boxes[:, :2]
    return d.landmarks[int(np.argmax(wh[:, 0] * wh[:, 1]))]


@pytest.mark.data
def test_real_chips_tight_like_with_context(detector: FaceDetector, data_dir: Path) -> None:
    """UTKFace chips as stored (the face fills them) get, through the retry, the landmarks the detector finds on
    the same chip inside a grey border (shifted back); the retry ran exactly for the chips whose face fills them."""
    names = sorted(os.listdir(data_dir / "utkface"))[::1000][:8]
    eng = detector.engine
    assert isinstance(eng, CountingEngine) and detector.pad_retry is not None and detector.pad_retry.enabled
    retried = 0
    for n in names:
        chip = read_image(data_dir / "utkface" / n)
        first = detector._detect_batch([chip])[0]
        before = eng.calls
        tight = detector.detect(chip)
        retried += eng.calls - before == 2  # the chip, then the chip with a border
        assert eng.calls - before == 1 + needs_retry(first, chip.shape, detector.pad_retry, still=True), n
        off = 50
        ctx = detector.detect(cv2.copyMakeBorder(chip, off, off, off, off, cv2.BORDER_CONSTANT, value=(128,) * 3))
        iod = float(np.linalg.norm(_lm(ctx)[1] - _lm(ctx)[0]))
        err = np.linalg.norm(_lm(tight) - (_lm(ctx) - off), axis=1).mean()
        assert err < 0.1 * iod, (n, err, iod)
        assert (tight.boxes >= 0).all() and (tight.boxes <= 200).all()
    assert retried >= 4


@pytest.mark.data
def test_frames_pay_no_second_pass_when_empty(detector: FaceDetector, data_dir: Path) -> None:
    eng = detector.engine
    assert isinstance(eng, CountingEngine)
    blank = np.full((360, 640, 3), 90, np.uint8)
    before = eng.calls
    assert len(detector.detect_batch([blank])[0]) == 0 and eng.calls - before == 1  # a camera frame
    before = eng.calls
    assert len(detector.detect(blank)) == 0 and eng.calls - before == 2  # a still image: retried
    # a frame whose face fills it is retried in the daemon's path too
    chips = (read_image(data_dir / "utkface" / n) for n in sorted(os.listdir(data_dir / "utkface"))[1::500])
    chip = next(c for c in chips if fills_image(detector._detect_batch([c])[0], c.shape, 0.8))
    before = eng.calls
    assert len(detector.detect_batch([chip, blank])[0]) >= 1 and eng.calls - before == 3


def test_cut_at_box_is_the_square_around_the_box_clipped_to_the_image() -> None:
    img = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3).astype(np.uint8)
    cut = cut_at_box(img, [40, 30, 60, 70])  # 20 x 40: a 40 x 40 square centred at (50, 50)
    assert cut.shape == (40, 40, 3) and np.array_equal(cut, img[30:70, 30:70]) and cut.flags.c_contiguous
    edge = cut_at_box(img, [0, 80, 30, 100])  # 30 x 20 at the corner: the square leaves the image
    assert np.array_equal(edge, img[75:100, 0:30])


def _tight_lfw(data_dir: Path, tmp_path: Path) -> Path:
    """A face cut out of a real LFW photo: the square of the detector's box, as an ID photo would be."""
    from edge_mtl.runtime.registry import load_detector

    img = read_image(data_dir / "lfw" / "images_deepfunneled" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")
    cut = cut_at_box(img, load_detector(AppConfig()).detect(img).boxes[0])
    path = tmp_path / "tight.png"
    cv2.imwrite(str(path), cut)
    return path


@pytest.mark.data
def test_analyze_and_enroll_a_tight_cut(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_mtl.commands.cli import main

    path = _tight_lfw(data_dir, tmp_path)
    assert main(["analyze", "--json", "--no-embedding", str(path)]) == 0
    faces = json.loads(capsys.readouterr().out.splitlines()[0])["faces"]
    assert len(faces) == 1 and faces[0]["gender"]["label"] == "male" and 10 < faces[0]["age"]["years"] < 45
    # the landmarks lie where the eyes are: both inside the cut, left of right
    (lx, ly), (rx, ry) = faces[0]["landmarks"][:2]
    side = cv2.imread(str(path)).shape[0]
    assert 0 < lx < rx < side and 0 < ly < side / 2 and 0 < ry < side / 2
    gallery = tmp_path / "g.sqlite"
    assert main(["enroll", "--gallery", str(gallery), "--name", "aaron", str(path)]) == 0
