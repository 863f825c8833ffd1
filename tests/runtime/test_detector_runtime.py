"""FaceDetector on frames of any size and layout: results come back in the original frame's pixels.

Two engines: `SquareEngine`, a small numpy engine that "detects" one bright square exactly (so the letterbox and
rescaling arithmetic can be checked against a known answer), and a tiny random detector exported to ONNX and run
by the real ONNX Runtime backend (so the whole path from file to `Detections` runs).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge_mtl.errors import ModelError
from edge_mtl.models.metadata import detector_metadata, recognizer_metadata
from edge_mtl.runtime.detector import FaceDetector
from edge_mtl.runtime.engine import ModelMetadata
from edge_mtl.runtime.postprocess import anchor_centers
from edge_mtl.types import Detections

# face-like landmark positions inside a square of unit side: left eye, right eye, nose, mouth centre
REL_LANDMARKS = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.5, 0.8]])


class SquareEngine:
    """Finds the bounding box of bright pixels in each input and reports it as one face at the anchor nearest its
    centre (score 0.9), plus a weaker duplicate at a neighbouring anchor (score 0.6) that NMS must remove."""

    provider = "numpy"

    def __init__(self) -> None:
        self.metadata: ModelMetadata = detector_metadata({"points": 4})
        self.inputs: list[tuple[int, ...]] = []

    def run(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        n, _, h, w = batch.shape
        self.inputs.append(batch.shape)
        meta = self.metadata
        pix = batch * np.asarray(meta.std, np.float32)[None, :, None, None] + np.asarray(meta.mean)[None, :, None, None]
        out: dict[str, npt.NDArray[np.float32]] = {}
        levels = {s: anchor_centers(h, w, s) for s in meta.strides}
        for s, c in levels.items():
            out[f"score_{s}"] = np.zeros((n, len(c), 1), np.float32)
            out[f"box_{s}"] = np.ones((n, len(c), 4), np.float32)
            out[f"kps_{s}"] = np.zeros((n, len(c), 8), np.float32)
        for i in range(n):
            mask = pix[i].mean(0) > 127.5
            if not mask.any():
                continue
            ys, xs = np.nonzero(mask)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0
            side = max(x2 - x1, y2 - y1)
            s = 8 if side < 64 else 16 if side < 128 else 32
            c = levels[s]
            centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
            order = np.argsort(np.linalg.norm(c - centre, axis=1), kind="stable")
            lms = np.array([x1, y1]) + REL_LANDMARKS * np.array([x2 - x1, y2 - y1])
            for a, score in ((order[0], 0.9), (order[1], 0.6)):
                cx, cy = c[a]
                out[f"score_{s}"][i, a, 0] = score
                out[f"box_{s}"][i, a] = np.array([cx - x1, cy - y1, x2 - cx, y2 - cy]) / s
                out[f"kps_{s}"][i, a] = ((lms - c[a]) / s).reshape(-1)
        return out


def _frame(h: int, w: int, square: tuple[int, int, int, int], channels: int | None = 3) -> np.ndarray:
    shape = (h, w) if channels is None else (h, w, channels)
    img = np.full(shape, 20, np.uint8)
    x1, y1, x2, y2 = square
    img[y1:y2, x1:x2] = 255
    return img


CASES = {
    # name: (h, w, square x1 y1 x2 y2, channels)
    "landscape": (480, 640, (200, 100, 300, 200), 3),
    "portrait": (1000, 562, (100, 600, 260, 760), 3),
    "grayscale_2d": (300, 400, (10, 20, 70, 80), None),
    "grayscale_1ch": (300, 400, (300, 200, 380, 280), 1),
    "bgra": (240, 320, (0, 0, 64, 64), 4),
    "tiny_32x20": (20, 32, (10, 4, 22, 16), 3),
    "4k": (2160, 3840, (1800, 900, 2400, 1500), 3),
    "4k_small_face": (2160, 3840, (3000, 1500, 3120, 1620), 3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_square_found_in_original_pixels(name: str) -> None:
    h, w, sq, ch = CASES[name]
    img = _frame(h, w, sq, ch)
    det = FaceDetector(SquareEngine(), input_size=320, score_threshold=0.5, nms_threshold=0.4)
    d = det.detect(img)
    assert isinstance(d, Detections)
    assert len(d) == 1, "one face; its weaker duplicate must be suppressed"
    scale = 320 / max(h, w)
    tol = 1.5 / scale + 0.5  # one network-input pixel of resampling, in original pixels
    np.testing.assert_allclose(d.boxes[0], sq, atol=tol)
    want_lms = np.array(sq[:2]) + REL_LANDMARKS * (np.array(sq[2:]) - np.array(sq[:2]))
    np.testing.assert_allclose(d.landmarks[0], want_lms, atol=tol)
    assert d.scores[0] == pytest.approx(0.9)
    assert (d.boxes[:, [0, 2]] >= 0).all() and (d.boxes[:, [0, 2]] <= w).all()
    assert (d.boxes[:, [1, 3]] >= 0).all() and (d.boxes[:, [1, 3]] <= h).all()


def test_letterbox_input_is_multiple_of_32_and_long_side_is_input_size() -> None:
    eng = SquareEngine()
    det = FaceDetector(eng, input_size=320)
    for h, w in ((1000, 562), (480, 640), (20, 32), (2160, 3840), (333, 333)):
        canvas, scale = det.prepare(np.zeros((h, w, 3), np.uint8))
        assert canvas.shape[0] % 32 == 0 and canvas.shape[1] % 32 == 0
        assert scale == pytest.approx(320 / max(h, w))
        assert max(canvas.shape[:2]) == 320


def test_batch_mixes_sizes_and_keeps_order() -> None:
    eng = SquareEngine()
    det = FaceDetector(eng, input_size=256)
    frames = [_frame(*CASES[n][:3], channels=3) for n in ("landscape", "portrait", "tiny_32x20", "landscape")]
    frames.append(np.full((100, 100, 3), 20, np.uint8))  # no face
    out = det.detect_batch(frames)
    assert [len(d) for d in out] == [1, 1, 1, 1, 0]
    for f, d in zip(frames, out, strict=True):
        single = det.detect(f)
        np.testing.assert_array_equal(single.boxes, d.boxes)
    # the two landscape frames share one engine call
    assert any(shape[0] == 2 for shape in eng.inputs)
    assert out[4].landmarks.shape == (0, 4, 2)


def test_min_face_and_threshold() -> None:
    img = _frame(480, 640, (200, 100, 250, 150), 3)  # a 50 px face
    assert len(FaceDetector(SquareEngine(), input_size=320, min_face=49).detect(img)) == 1
    assert len(FaceDetector(SquareEngine(), input_size=320, min_face=60).detect(img)) == 0
    assert len(FaceDetector(SquareEngine(), input_size=320, score_threshold=0.95).detect(img)) == 0
    d = FaceDetector(SquareEngine(), input_size=320, score_threshold=0.7).detect(img)
    assert d.scores.tolist() == pytest.approx([0.9])


def test_refuses_a_recognizer_engine() -> None:
    class Rec:
        provider = "x"
        metadata = recognizer_metadata({"input_size": 112})

        def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover - never called
            raise AssertionError

    with pytest.raises(ModelError, match="expected a detector model"):
        FaceDetector(Rec())


# ------------------------------------------------------------------ the real ONNX Runtime path
def _tiny_models() -> Any:
    """tests/tiny_models.py (shared with the CLI tests), loaded by path: tests/ is not a package."""
    path = Path(__file__).resolve().parents[1] / "tiny_models.py"
    spec = importlib.util.spec_from_file_location("tiny_models", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    torch.set_num_threads(1)
    return _tiny_models().export_tiny_detector(tmp_path_factory.mktemp("det") / "detector.onnx", score_bias=0.0)


SIZES = {
    "landscape": (480, 640, 3),
    "portrait": (640, 360, 3),
    "grayscale_2d": (240, 320, None),
    "tiny_32x20": (20, 32, 3),
    "4k": (2160, 3840, 3),
}


@pytest.mark.parametrize("name", list(SIZES))
def test_onnx_detector_any_frame(tiny_onnx: Path, name: str) -> None:
    from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine

    h, w, ch = SIZES[name]
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w) if ch is None else (h, w, ch), dtype=np.uint8)
    if name == "4k":
        img = cv2.resize(rng.integers(0, 256, (108, 192, 3), dtype=np.uint8), (w, h))
    eng = OnnxRuntimeEngine(tiny_onnx, threads=1)
    assert eng.metadata.kind == "detector" and eng.provider == "CPUExecutionProvider"
    det = FaceDetector(eng, input_size=160, score_threshold=0.3, nms_threshold=0.4)
    d = det.detect(img)
    assert isinstance(d, Detections)
    assert len(d) >= 1, "scores are near 0.5 for this random model, so some boxes pass 0.3"
    assert d.landmarks.shape[1:] == (4, 2)
    assert np.isfinite(d.boxes).all() and np.isfinite(d.landmarks).all()
    assert (d.scores >= 0.3).all() and (d.scores <= 1).all()
    assert (d.boxes[:, 0] >= 0).all() and (d.boxes[:, 2] <= w).all() and (d.boxes[:, 0] <= d.boxes[:, 2]).all()
    assert (d.boxes[:, 1] >= 0).all() and (d.boxes[:, 3] <= h).all() and (d.boxes[:, 1] <= d.boxes[:, 3]).all()
    # coordinates are in original pixels: landmarks spread over the frame, not over the 160 px network input
    if max(h, w) > 1000:
        assert d.landmarks[..., 0].max() > 200 or d.boxes[:, 2].max() > 200


# ------------------------------------------------------------------ metadata and preprocessing
def test_metadata_props_round_trip_and_refusals() -> None:
    from edge_mtl.runtime.engine import META_PREFIX

    meta = detector_metadata({"widths": [8, 8], "points": 5}, version="v3", provenance="unit test")
    props = meta.to_props()
    assert all(k.startswith(META_PREFIX) for k in props) and all(isinstance(v, str) for v in props.values())
    back = ModelMetadata.from_props({**props, "other.key": "ignored"}, "m.onnx")
    assert back == meta and back.points == 5 and back.strides == (8, 16, 32)
    rec = recognizer_metadata({"input_size": 112})
    assert ModelMetadata.from_props(rec.to_props()) == rec and len(rec.template) == 4
    with pytest.raises(ModelError, match=r"m\.onnx: no edge-mtl metadata"):
        ModelMetadata.from_props({"producer": "x"}, "m.onnx")
    bad = {**props, META_PREFIX + "mean": "[1, 2]"}
    with pytest.raises(ModelError, match="malformed edge-mtl metadata"):
        ModelMetadata.from_props(bad, "m.onnx")
    bad = {**props, META_PREFIX + "input_size": "large"}
    with pytest.raises(ModelError, match="malformed edge-mtl metadata"):
        ModelMetadata.from_props(bad, "m.onnx")


def test_normalize_follows_metadata() -> None:
    from edge_mtl.runtime.engine import normalize

    bgr = np.zeros((1, 2, 3, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # B, G, R
    rgb_meta = ModelMetadata("detector", "v", "input", ("o",), "RGB", (1.0, 2.0, 3.0), (2.0, 4.0, 8.0), 64)
    x = normalize(bgr, rgb_meta, bgr_input=True)
    assert x.shape == (1, 3, 2, 3) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    # channel 0 is R for an RGB model: (30 - 1) / 2
    assert x[0, :, 0, 0].tolist() == [(30 - 1) / 2, (20 - 2) / 4, (10 - 3) / 8]
    bgr_meta = ModelMetadata("detector", "v", "input", ("o",), "BGR", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 64)
    assert normalize(bgr, bgr_meta, bgr_input=True)[0, :, 1, 2].tolist() == [10, 20, 30]
    assert normalize(bgr, rgb_meta, bgr_input=False)[0, 0, 0, 0] == (10 - 1) / 2
    assert bgr[0, 0, 0].tolist() == [10, 20, 30], "the input is not modified"
