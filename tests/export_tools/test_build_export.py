"""ONNX export: metadata round trip, checker, dynamic axes, parity, checkpoints and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from build_helpers import DET_ARGS, REC_ARGS, make_detector, make_recognizer

from edge_mtl.commands.cli import main
from edge_mtl.errors import ModelError
from edge_mtl.export_tools.export import ParityError, _parity, export_checkpoint, model_metadata
from edge_mtl.export_tools.onnx_utils import read_metadata
from edge_mtl.export_tools.parity import EXPORT_TOLERANCES, compare_heads, describe_failure
from edge_mtl.models.checkpoint import save_checkpoint
from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine
from edge_mtl.runtime.torch_engine import TorchEngine


def test_recognizer_export_metadata_and_parity(rec_export) -> None:
    path, _, report = rec_export
    onnx.checker.check_model(str(path), full_check=True)
    meta = read_metadata(path)
    assert meta.kind == "recognizer" and meta.precision == "fp32" and meta.version == "test-1"
    assert meta.output_names == ("embedding", "age", "gender", "quality")
    assert meta.input_size == 112 and meta.mean == (127.5, 127.5, 127.5) and len(meta.template) == 4
    assert meta.args["widths"] == list(REC_ARGS.widths) and meta.provenance == "unit tests"
    assert set(report["parity"]) == {"embedding", "age", "gender", "quality"}
    assert all(h["ok"] for h in report["parity"].values())
    assert report["parity"]["embedding"]["cosine_min"] > 0.9999
    assert report["macs"] > 0 and report["params"] > 0 and report["bytes"] == path.stat().st_size
    # the runtime backend reads the same metadata and honours the dynamic batch
    eng = OnnxRuntimeEngine(path)
    assert eng.metadata == meta
    out = eng.run(np.zeros((5, 3, 112, 112), np.float32))
    assert out["embedding"].shape == (5, 32) and out["age"].shape == (5, 2) and out["quality"].shape == (5, 1)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["gender"].sum(1), 1.0, atol=1e-5)


def test_fused_export_matches_unfused_training_model(rec_export) -> None:
    """RepVGG fusion happens on a copy: the caller's model keeps its branches, and outputs agree."""
    path, model, _ = rec_export
    assert any(hasattr(m, "conv3") for m in model.modules()), "export must not fuse the caller's model"
    from edge_mtl.models.recognizer import RecognizerExport

    ref = TorchEngine(RecognizerExport(model), read_metadata(path))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)
    a, b = ref.run(x), OnnxRuntimeEngine(path).run(x)
    assert np.abs(a["age"] - b["age"]).max() < 0.05
    assert float((a["embedding"] * b["embedding"]).sum(1).min()) > 0.9999


def test_detector_export_dynamic_hw(det_export) -> None:
    path, _, report = det_export
    meta = read_metadata(path)
    assert meta.kind == "detector" and meta.strides == (8, 16, 32)
    assert all(h["ok"] for h in report["parity"].values())
    assert len(report["parity"]) == 9
    eng = OnnxRuntimeEngine(path)
    for h, w in ((96, 160), (224, 128)):
        out = eng.run(np.zeros((2, 3, h, w), np.float32))
        for s in (8, 16, 32):
            a = (h // s) * (w // s)
            assert out[f"score_{s}"].shape == (2, a, 1)
            assert out[f"box_{s}"].shape == (2, a, 4)
            assert out[f"kps_{s}"].shape == (2, a, 8)


def test_parity_detects_a_wrong_model(rec_export) -> None:
    path, _, _ = rec_export
    other = make_recognizer(seed=7)
    from edge_mtl.export_tools.export import deploy_module

    meta = read_metadata(path)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)
    report, _ = _parity(deploy_module(other, "recognizer", fuse=False), path, meta, [("random", x)],
                        EXPORT_TOLERANCES)
    assert not report["embedding"]["ok"]
    assert "embedding" in describe_failure(report)


def test_compare_heads_tolerances() -> None:
    ref = {"age": np.array([[30.0, 3.0]], np.float32), "box_8": np.full((1, 4, 4), 10.0, np.float32)}
    ok = compare_heads(ref, {"age": ref["age"] + 0.01, "box_8": ref["box_8"] + 0.005}, EXPORT_TOLERANCES)
    assert ok["age"]["ok"] and ok["box_8"]["ok"]  # box tolerance scales with magnitude: 1e-3 + 1e-3 * 10
    bad = compare_heads(ref, {"age": ref["age"] + 0.1, "box_8": ref["box_8"] * np.nan}, EXPORT_TOLERANCES)
    assert not bad["age"]["ok"] and not bad["box_8"]["ok"]
    missing = compare_heads(ref, {"age": ref["age"]}, EXPORT_TOLERANCES)
    assert missing["box_8"]["error"] == "missing output"


def _checkpoint(path: Path, kind: str, model: torch.nn.Module, args: dict) -> Path:
    save_checkpoint(
        path,
        {
            "kind": kind,
            "model": model.state_dict(),
            "model_args": {kind: args},
            "config": {"task": {"kind": kind, "sources": ["caltech", "wider"], "split_seed": 0},
                       "data": {"wider_images": "/data/wider", "teacher": None}},
            "epoch": 3,
            "global_step": 120,
        },
    )
    return path


def test_export_checkpoint_with_provenance(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "det.pt", "detector", make_detector(3), DET_ARGS.to_dict())
    report = export_checkpoint(ckpt, tmp_path / "det.onnx", version="1.2.3", real_inputs=None)
    meta = read_metadata(tmp_path / "det.onnx")
    prov = json.loads(meta.provenance)
    assert prov["sources"] == ["caltech", "wider"] and prov["data"] == {"wider_images": "/data/wider"}
    assert prov["epoch"] == 3 and prov["checkpoint"] == "det.pt" and len(prov["checkpoint_sha256"]) == 64
    assert meta.version == "1.2.3" and report["checkpoint"] == str(ckpt)


def test_bad_checkpoints_are_model_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError):
        export_checkpoint(junk, tmp_path / "x.onnx")
    # weights that do not fit the stored args
    wrong = dict(REC_ARGS.to_dict(), embedding_dim=64)
    ckpt = _checkpoint(tmp_path / "rec.pt", "recognizer", make_recognizer(), wrong)
    with pytest.raises(ModelError, match="do not match"):
        export_checkpoint(ckpt, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = _checkpoint(tmp_path / "rec.pt", "recognizer", make_recognizer(), REC_ARGS.to_dict())
    out = tmp_path / "rec.onnx"
    assert main(["export", str(ckpt), "-o", str(out), "--version", "9"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["output"] == str(out) and all(h["ok"] for h in report["parity"].values())
    assert read_metadata(out).version == "9" and read_metadata(out).compatible == {}
    # a new recognizer has no measured identity thresholds until stamped: the export says so, with the command
    assert read_metadata(out).operating_points == {}
    assert any("no measured identity thresholds" in r.message and f"--stamp --recognizer {out}" in r.message
               for r in caplog.records if r.levelname == "WARNING")
    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(out)]) == 2
    # a release that declares earlier versions' gallery embeddings comparable (kept by quantize: whole metadata)
    new = tmp_path / "rec10.onnx"
    assert main(["export", str(ckpt), "-o", str(new), "--version", "10", "--compatible-with", "9:0.04",
                 "--compatible-with", "8", "--no-check"]) == 0
    assert list(read_metadata(new).compatible.items()) == [("9", 0.04), ("8", 0.0)]  # order is preference
    capsys.readouterr()
    assert main(["export", str(ckpt), "-o", str(tmp_path / "x.onnx"), "--version", "9", "--compatible-with", "9"]) == 2
    assert "earlier recognizer versions" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    for bad in ("9:x", "9:1.5", ":0.1"):
        assert main(["export", str(ckpt), "-o", str(tmp_path / "x.onnx"), "--compatible-with", bad]) == 2
        assert "VERSION:MARGIN" in capsys.readouterr().err


def test_model_metadata_lists_round_trip() -> None:
    meta = model_metadata("detector", DET_ARGS.to_dict())
    assert meta.args["widths"] == list(DET_ARGS.widths)  # tuples stored as lists, as they read back


def test_parity_error_is_internal_error() -> None:
    from edge_mtl.errors import EdgeMtlError, InputError

    assert issubclass(ParityError, EdgeMtlError) and not issubclass(ParityError, InputError)


def test_export_averaged_checkpoint_records_its_sources(tmp_path: Path) -> None:
    from edge_mtl.train.post.average import average_checkpoints

    paths = []
    for i in range(2):
        paths.append(_checkpoint(tmp_path / f"e{i}.pt", "recognizer", make_recognizer(i), REC_ARGS.to_dict()))
    average_checkpoints(paths, tmp_path / "avg.pt")
    report = export_checkpoint(tmp_path / "avg.pt", tmp_path / "avg.onnx", real_inputs=None)
    assert all(h["ok"] for h in report["parity"].values())  # the ONNX model is the averaged weights
    prov = json.loads(read_metadata(tmp_path / "avg.onnx").provenance)
    assert prov["averaged_from"] == [{"checkpoint": "e0.pt", "epoch": 3}, {"checkpoint": "e1.pt", "epoch": 3}]
