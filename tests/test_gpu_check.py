"""The GPU check (scripts/gpu_check.sh) runs here on the CPU, so that it cannot rot between GPU loans.

The real run builds a small bundle from ../shared/data and runs `--device cpu --quick` through the shell entry:
the torch backend with the shipped ONNX weights must pass the quantize gate against ONNX Runtime, every step that
cannot run on the CPU must be listed with its reason, and the stream trials' frame accounting must add up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.paths import data_root

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.data
@pytest.mark.slow
def test_cpu_quick_run_on_real_inputs(tmp_path: Path) -> None:
    data = data_root()
    if data is None:
        pytest.skip("../shared/data not found")
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    made = _run("bundle", "--quick", "--bundle", str(bundle), "--data", str(data))
    assert made.returncode == 0, made.stderr[-2000:]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["faces"]["shape"][1:] == [112, 112, 3]
    assert (bundle / "video.mp4").stat().st_size > 1_000_000
    assert sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) < 16 * 2**20

    res = _run("--device", "cpu", "--quick", "--bundle", str(bundle), "--out", str(out), "--budget", "280")
    assert res.returncode == 0, res.stderr[-3000:]
    rep = json.loads((out / "gpu_check.json").read_text())
    assert rep["inputs"]["source"] == "real"
    assert rep["environment"]["device"] == "cpu"
    assert not rep["errors"], rep["errors"]

    # torch FP32 with the ONNX file's weights agrees with ONNX Runtime FP32: gate passed, heads within export tolerance
    fp32 = {p["model"]: p for p in rep["parity"] if p["backend"] == "torch" and p["precision"] == "fp32"}
    assert set(fp32) == {"detector", "landmarks", "recognizer"}
    for model, p in fp32.items():
        assert p["passed"] is True, (model, p)
        assert all(h["ok"] for h in p["heads"].values()), (model, p["heads"])
    rec = fp32["recognizer"]["metrics"]
    assert rec["embedding_cosine_min"]["value"] > 0.9999
    assert fp32["detector"]["metrics"]["detector_faces_fp32"]["value"] > 0  # real frames, real faces
    assert {p["precision"] for p in rep["parity"]} <= {"fp32", "fp16", "bf16"}

    tp = [t for t in rep["throughput"] if t["backend"] == "torch" and t["precision"] == "fp32"]
    assert {t["model"] for t in tp} == {"detector", "landmarks", "recognizer"}
    for t in tp:
        assert [r["batch"] for r in t["rows"]] == [1, 2]
        assert all(r["items_per_s"] > 0 for r in t["rows"])
    det_shape = next(t for t in tp if t["model"] == "detector")["rows"][0]["shape"]
    assert det_shape == [1, 3, 384, 640]  # a 1080p frame as the detector sees it

    skipped = {s["step"]: s["reason"] for s in rep["skipped"]}
    assert skipped["ONNX Runtime CUDA EP"] == "--device cpu"
    assert skipped["TensorRT engines (build-engine)"] == "--device cpu"

    e2e = rep["end_to_end"]
    assert e2e["precision"] == "fp32" and e2e["trials"]
    for t in e2e["trials"]:
        assert t["processed"] >= 0 and t["dropped"] >= 0
        # a frame is processed, replaced before it was taken (dropped) or still waiting in its slot
        assert t["processed"] + t["dropped"] <= t["produced"] + t["streams"]
        assert t["ok"] == (t["drop_rate"] <= e2e["drop_limit"] and t["delivered"] >= 0.95 and t["processed"] > 0)
    served = [t["streams"] for t in e2e["trials"] if t["ok"]]
    assert e2e["max_streams"] == (max(served) if served else 0)
    text = (out / "gpu_check.txt").read_text()
    assert "parity vs ONNX Runtime FP32 CPU" in text and "end to end:" in text
    tables = (out / "gpu_check.md").read_text()
    assert "| recognizer | pass (" in tables and "| streams | drop |" in tables


def test_missing_bundle_is_one_line_and_exit_2(tmp_path: Path) -> None:
    res = _run("--device", "cpu", "--quick", "--bundle", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "nope" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()


def test_foreign_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text('{"version": 99}')
    res = _run("--device", "cpu", "--quick", "--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "version 99" in res.stderr and "Traceback" not in res.stderr


def test_without_cuda_every_gpu_step_is_skipped_with_its_reason(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = _run("--device", "cuda", "--synthetic", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    rep = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rep["inputs"]["source"] == "synthetic" and "SYNTHETIC" in rep["inputs"]["note"]
    assert rep["parity"] == [] and rep["throughput"] == [] and "end_to_end" not in rep
    reasons = {s["step"]: s["reason"] for s in rep["skipped"]}
    assert reasons["torch backend (fp32, fp16, bf16)"].startswith("no CUDA")
    assert "no real inputs" in reasons["parity (all models and backends)"]
    assert reasons["end to end (streams per GPU)"].startswith("no CUDA")
    assert reasons["ONNX Runtime CUDA EP"].startswith("no CUDA")
    assert reasons["TensorRT engines (build-engine)"].startswith("no CUDA")


def test_onnx_weights_refuse_a_file_whose_metadata_names_another_architecture(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from edge_mtl.export_tools.onnx_utils import load_model, metadata_of, save_model_atomic, set_metadata
    from edge_mtl.export_tools.onnx_weights import WeightLoadError, load_torch_module, torch_module_from_onnx

    src = ROOT / "export" / "landmarks.onnx"
    module, meta, report = load_torch_module(src)
    assert all(e["ok"] for e in report.values())
    w = module.model.head[1].weight.detach().numpy()  # type: ignore[index,union-attr]
    assert np.abs(w).max() > 0  # the trained weights, not the module's initialisation

    model = load_model(src)
    meta = metadata_of(model)
    args = dict(meta.args, widths=[24, 48, 64, 128])
    import dataclasses

    set_metadata(model, dataclasses.replace(meta, args=args))
    bad = tmp_path / "landmarks.onnx"
    save_model_atomic(model, bad)
    with pytest.raises(WeightLoadError, match=r"landmarks\.onnx"):
        torch_module_from_onnx(bad)


def test_a_spent_budget_skips_each_measurement_with_its_reason(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    res = _run("--device", "cpu", "--quick", "--synthetic", "--budget", "1", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    rep = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rep["throughput"] == [] and rep["parity"] == []
    skipped = {s["step"]: s["reason"] for s in rep["skipped"]}
    for model in ("detector", "landmarks", "recognizer"):
        for precision in ("fp32", "fp16", "bf16"):
            assert skipped[f"{model} torch {precision}"].startswith("out of time: "), skipped
    assert "no real clip" in skipped["end to end (streams per GPU)"]
    # the torch modules were still loaded and checked against ONNX Runtime before the budget ran out
    assert set(rep["torch_modules"]["max_abs"]) == {"detector", "landmarks", "recognizer"}
