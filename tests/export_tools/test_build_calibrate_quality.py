"""`edge-mtl calibrate-quality`: the quality logit mapped onto a reference release's scale, folded into the head."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from build_helpers import REC_ARGS, faces_like, make_recognizer

from edge_mtl.commands.cli import main
from edge_mtl.errors import InputError, ModelError
from edge_mtl.export_tools.export import export_checkpoint, export_module
from edge_mtl.export_tools.onnx_utils import read_metadata
from edge_mtl.models.checkpoint import load_checkpoint, save_checkpoint
from edge_mtl.train.post.calibrate_quality import calibrate_quality, fit_affine, reference_logits


def _crop_cache(folder: Path, n: int) -> Path:
    imgs = ((faces_like(n, seed=11).transpose(0, 2, 3, 1) + 1) * 127.5).clip(0, 255).astype(np.uint8)
    with open(folder / "src.u8", "wb") as f:
        np.save(f, imgs)
    status = ["detected"] * n
    status[1] = "missing"
    (folder / "src.json").write_text(json.dumps({"keys": [f"k{i}" for i in range(n)], "status": status}))
    return folder


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    model = make_recognizer(2)
    ckpt = tmp_path / "new.pt"
    save_checkpoint(ckpt, {"kind": "recognizer", "model": model.state_dict(), "optimizer": {"state": {}},
                           "model_args": {"recognizer": REC_ARGS.to_dict()}, "epoch": 6})
    # the reference release: the same network with its quality logit doubled and shifted by one
    ref_model = copy.deepcopy(model)
    with torch.no_grad():
        last = ref_model.heads["quality"][2]
        last.weight.mul_(2.0)
        last.bias.mul_(2.0).add_(1.0)
    ref = tmp_path / "ref.onnx"
    export_module(ref_model, "recognizer", REC_ARGS.to_dict(), ref, version="ref", provenance="test")
    return ckpt, ref, _crop_cache(tmp_path, 24)


def test_calibrated_model_scores_quality_like_the_reference(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ckpt, ref, crops = setup
    report = calibrate_quality(ckpt, ref, crops, ["src"], tmp_path / "cal.pt", faces=24)
    assert report["faces"] == 23  # the missing face is not drawn
    assert report["scale"] == pytest.approx(2.0, rel=1e-3) and report["shift"] == pytest.approx(1.0, abs=1e-3)
    assert report["rank_correlation_with_reference"] == pytest.approx(1.0)
    state = load_checkpoint(tmp_path / "cal.pt")
    assert "optimizer" not in state and state["quality_calibration"]["scale"] == report["scale"]
    export_checkpoint(tmp_path / "cal.pt", tmp_path / "cal.onnx", real_inputs=None)
    imgs = np.load(crops / "src.u8")
    np.testing.assert_allclose(reference_logits(tmp_path / "cal.onnx", imgs), reference_logits(ref, imgs),
                               atol=2e-3)
    prov = json.loads(read_metadata(tmp_path / "cal.onnx").provenance)
    assert prov["quality_calibration"]["reference"] == "ref.onnx"


def test_fit_affine_matches_mean_and_spread() -> None:
    rng = np.random.default_rng(0)
    new = rng.normal(3.0, 0.5, 1000)
    ref = rng.normal(1.0, 0.8, 1000)
    a, b = fit_affine(new, ref)
    assert (a * new + b).mean() == pytest.approx(ref.mean()) and (a * new + b).std() == pytest.approx(ref.std())
    with pytest.raises(ModelError, match="constant"):
        fit_affine(np.ones(10), ref[:10])


def test_bad_input_is_a_clear_error(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ckpt, ref, crops = setup
    with pytest.raises(InputError, match="no crop cache for absent"):
        calibrate_quality(ckpt, ref, crops, ["absent"], tmp_path / "x.pt")
    args = ["calibrate-quality", str(ckpt), "--reference", str(ref), "--crops", str(crops),
            "-o", str(tmp_path / "y.pt")]
    assert main([*args, "--sources", "absent"]) == 2
    assert main([*args, "--sources", "src", "--faces", "24"]) == 0
    assert not (tmp_path / "x.pt").exists()
