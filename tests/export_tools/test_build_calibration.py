"""Calibration and gate inputs from the shared face data: split discipline, shapes, preprocessing, manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_mtl.export_tools import calibration as cal
from edge_mtl.export_tools.export import model_metadata
from edge_mtl.paths import default_model

pytestmark = pytest.mark.data


def test_letterbox_matches_the_detector_and_pads_square() -> None:
    im = np.full((300, 400, 3), 200, np.uint8)
    sq = cal.letterbox(im, 640)
    assert sq.shape == (640, 640, 3) and sq[:480, :640].min() == 200 and sq[480:].max() == 0
    native = cal.letterbox(im, 640, square=False)
    assert native.shape == (480, 640, 3)  # what FaceDetector.prepare feeds the model
    portrait = cal.letterbox(np.zeros((500, 100, 3), np.uint8), 320, square=False)
    assert portrait.shape == (320, 64, 3)


def test_splits_keep_calibration_and_gate_apart(data_dir: Path) -> None:
    train, val = cal.utkface_names(data_dir, "train"), cal.utkface_names(data_dir, "val")
    reserved = cal.reserved_utkface(data_dir)
    assert train and val and not set(train) & set(val)
    assert not (set(train) | set(val)) & reserved
    ctrain, cval = cal.caltech_names(data_dir, "train"), cal.caltech_names(data_dir, "val")
    assert ctrain and cval and not set(ctrain) & set(cval)
    assert abs(len(cval) / (len(ctrain) + len(cval)) - 0.1) < 0.01


def test_detector_calibration_set(data_dir: Path) -> None:
    from build_helpers import DET_ARGS

    meta = model_metadata("detector", DET_ARGS.to_dict())
    cs = cal.detector_calibration(meta, data_dir, n_images=3, videos={"selfie_portrait.mp4": 2}, input_size=320)
    assert cs.inputs.shape == (5, 3, 320, 320) and cs.inputs.dtype == np.float32
    assert cs.inputs.min() >= -1.0 and cs.inputs.max() <= 1.0  # (x - 127.5) / 128
    train = set(cal.caltech_names(data_dir, "train"))
    images = [m.split("/")[-1] for m in cs.manifest if m.startswith("caltech")]
    assert len(images) == 3 and set(images) <= train
    assert sum(m.startswith("videos/selfie_portrait.mp4#") for m in cs.manifest) == 2
    again = cal.detector_calibration(meta, data_dir, n_images=3, videos={}, input_size=320)
    assert again.manifest == cs.manifest[:3]  # seeded: the same images every time
    held = cal.detector_eval_set(meta, data_dir, n=2, input_size=320)
    assert not {m.split("/")[-1] for m in held.manifest} & train


def test_parity_inputs_are_real_validation_images(data_dir: Path) -> None:
    from build_helpers import REC_ARGS

    meta = model_metadata("recognizer", REC_ARGS.to_dict())
    x = cal.parity_inputs("recognizer", meta, data_dir, n=3)
    assert x is not None and x.shape == (3, 3, 112, 112) and x.std() > 0.1


@pytest.mark.skipif(not default_model("detector.onnx").is_file(), reason="no shipped detector in export/ yet")
def test_recognizer_calibration_uses_detected_aligned_faces(data_dir: Path) -> None:
    from build_helpers import REC_ARGS

    meta = model_metadata("recognizer", REC_ARGS.to_dict())
    cs = cal.recognizer_calibration(default_model("detector.onnx"), meta, data_dir,
                                    counts={"utkface": 12, "celeba_crops": 8})
    assert cs.inputs.shape[1:] == (3, 112, 112) and len(cs.inputs) >= 16
    train = set(cal.utkface_names(data_dir, "train"))
    assert all(m.split("/")[-1] in train for m in cs.manifest if m.startswith("utkface/"))
