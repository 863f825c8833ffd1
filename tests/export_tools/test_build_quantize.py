"""INT8 Q/DQ quantization: symmetric zero points, per-channel weights, float bias, layouts, calibration files,
exclusions, the accuracy gate and the sensitivity pass, on small random models with synthetic calibration data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from build_helpers import faces_like
from onnx import numpy_helper

from edge_mtl.errors import InputError, ModelError
from edge_mtl.export_tools.onnx_utils import onnx_precision, read_metadata
from edge_mtl.export_tools.quantize import (
    GateError,
    activation_scales,
    gate,
    gate_rank,
    gate_score,
    layer_errors,
    qdq_summary,
    quantize_int8,
    quantize_with_gate,
    read_calibration_file,
)
from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine


@pytest.fixture(scope="module")
def calib() -> np.ndarray:
    return faces_like(24, seed=1)


@pytest.fixture(scope="module")
def held_out() -> np.ndarray:
    return faces_like(12, seed=2)


@pytest.fixture(scope="module")
def rec_int8(rec_export, calib, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    src, _, _ = rec_export
    d = tmp_path_factory.mktemp("int8")
    dst, cal = d / "rec8.onnx", d / "rec8.calib.json"
    report = quantize_int8(src, dst, calib, save_calibration=cal, calibration_info={"recipe": "synthetic"})
    return dst, cal, report


def _weight_dq(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    inits = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]


def test_qdq_graph_is_symmetric_per_channel_with_float_bias(rec_int8) -> None:
    dst, _, report = rec_int8
    model = onnx.load(str(dst))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and report["quantize_linear"] > 0
    for n in qdq:  # zero point 0, int8
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any()
    weights = _weight_dq(model)
    assert weights
    for n in weights:  # per output channel: one scale per channel of the weight (axis 1 for a Gemm B of in x out)
        w, scale = inits[n.input[0]], inits[n.input[1]]
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        assert w.dtype == np.int8
        assert scale.ndim == 1 and scale.shape[0] == w.shape[axis] and (scale > 0).all()
        assert int(np.abs(w).max()) <= 127  # symmetric range, -128 unused
    # bias stays float (TensorRT refuses int32 DequantizeLinear)
    assert all(inits[n.input[0]].dtype != np.int32 for n in weights)
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert all(len(n.input) < 3 or (n.input[2] in inits and inits[n.input[2]].dtype == np.float32) for n in convs)
    assert report["nonzero_zero_points"] == 0 and report["per_tensor_weights"] == 0
    assert not report["float_nodes"] and len(report["quantized_nodes"]) == len(convs)
    assert onnx_precision(model) == "int8" and read_metadata(dst).precision == "int8"
    q = json.loads({p.key: p.value for p in model.metadata_props}["edge_mtl.quantization"])
    assert q["method"] == "minmax" and q["per_channel"] and q["layout"] == "shared"


def test_int8_runs_in_onnxruntime_and_gate_measures_it(rec_export, rec_int8, held_out) -> None:
    src, _, _ = rec_export
    dst, _, _ = rec_int8
    eng = OnnxRuntimeEngine(dst)
    assert eng.metadata.precision == "int8"
    q = eng.run(held_out)
    f = OnnxRuntimeEngine(src).run(held_out)
    assert not np.array_equal(q["embedding"], f["embedding"])  # quantization did change the arithmetic
    result = gate(src, dst, held_out)
    m = result["metrics"]
    assert result["inputs"] == 12 and result["precision"] == "int8"
    assert 0.9 < m["embedding_cosine_mean"]["value"] < 1.0
    assert m["embedding_cosine_min"]["value"] <= m["embedding_cosine_mean"]["value"]
    assert 0.0 < m["age_mae_delta_years"]["value"] < 5.0
    assert 0.0 <= m["gender_agreement"]["value"] <= 1.0
    assert m["quality_mae"]["value"] >= 0.0
    assert result["passed"] == all(e["ok"] for e in m.values() if "ok" in e)
    assert np.isfinite(gate_score(result))


def test_gate_fails_with_strict_thresholds_and_output_is_not_written(rec_export, calib, held_out,
                                                                     tmp_path: Path) -> None:
    src, _, _ = rec_export
    dst = tmp_path / "strict.onnx"
    strict = {"embedding_cosine_min": (">=", 0.999999)}
    with pytest.raises(GateError, match="embedding_cosine_min"):
        quantize_with_gate(src, dst, calib, held_out, thresholds=strict, auto_exclude=2)
    assert not dst.exists()


def test_auto_exclude_keeps_sensitive_nodes_float(rec_export, calib, held_out, tmp_path: Path) -> None:
    src, _, _ = rec_export
    f = OnnxRuntimeEngine(src).run(held_out)
    base = tmp_path / "base.onnx"
    quantize_int8(src, base, calib)
    q = OnnxRuntimeEngine(base).run(held_out)
    cos = float((f["embedding"] * q["embedding"]).sum(1).mean())
    # a threshold just above what plain INT8 reaches, so the sensitivity pass has to work for it
    target = {"embedding_cosine_mean": (">=", cos + (1 - cos) * 0.3)}
    dst = tmp_path / "auto.onnx"
    try:
        report = quantize_with_gate(src, dst, calib, held_out, thresholds=target, auto_exclude=6)
    except GateError:
        pytest.fail("six float nodes should recover 30% of the INT8 embedding error on this model")
    steps = report["sensitivity_steps"]
    assert steps and steps[-1]["passed"] and report["excluded"] == [s["excluded"] for s in steps]
    model = onnx.load(str(dst))
    assert set(report["excluded"]) <= set(qdq_summary(model)["float_nodes"])


def test_layer_errors_rank_nodes(rec_export, rec_int8, held_out) -> None:
    src, _, _ = rec_export
    dst, _, report = rec_int8
    rows = layer_errors(src, dst, held_out[:4])
    assert {r["node"] for r in rows} == set(report["quantized_nodes"])
    assert rows == sorted(rows, key=lambda r: -r["added"])
    assert all(r["output_nmse"] >= 0 for r in rows) and rows[0]["output_nmse"] > 0


def test_calibration_file_reproduces_the_model(rec_export, rec_int8, tmp_path: Path) -> None:
    src, _, _ = rec_export
    dst, cal, report = rec_int8
    saved = read_calibration_file(cal)
    assert saved["edge_mtl"]["recipe"] == "synthetic" and saved["edge_mtl"]["model_sha256"] == report["source_sha256"]
    assert saved["edge_mtl"]["activation_scales"] == report["activation_scales"]
    again = tmp_path / "again.onnx"
    quantize_int8(src, again, None, calibration_file=cal)
    assert activation_scales(onnx.load(str(again))) == report["activation_scales"]
    a, b = onnx.load(str(dst)), onnx.load(str(again))
    assert [t.raw_data for t in a.graph.initializer] == [t.raw_data for t in b.graph.initializer]
    # metadata rewritten in place (as `eval verification --stamp` does) leaves the graph, and the ranges, valid
    import dataclasses

    from edge_mtl.export_tools.onnx_utils import graph_sha256, load_model, metadata_of, save_model_atomic, set_metadata

    model = load_model(src)
    assert saved["edge_mtl"]["graph_sha256"] == graph_sha256(model)
    set_metadata(model, dataclasses.replace(metadata_of(model), operating_points={"plain": {"0.01": 0.4}}))
    restamped = tmp_path / "restamped.onnx"
    save_model_atomic(model, restamped)
    assert restamped.read_bytes() != src.read_bytes()
    quantize_int8(restamped, tmp_path / "again2.onnx", None, calibration_file=cal)
    c = onnx.load(str(tmp_path / "again2.onnx"))
    assert [t.raw_data for t in a.graph.initializer] == [t.raw_data for t in c.graph.initializer]


def test_calibration_file_refuses_another_model(det_export, rec_int8, tmp_path: Path) -> None:
    src, _, _ = det_export
    _, cal, _ = rec_int8
    with pytest.raises(InputError, match="another FP32 model"):
        quantize_int8(src, tmp_path / "x.onnx", None, calibration_file=cal)


def test_exclude_and_tensorrt_layout(rec_export, rec_int8, calib, tmp_path: Path) -> None:
    src, _, _ = rec_export
    _, _, report = rec_int8
    victim = report["quantized_nodes"][0]
    dst = tmp_path / "trt.onnx"
    r = quantize_int8(src, dst, calib, exclude_nodes=[victim], layout="tensorrt", method="percentile")
    assert victim in r["float_nodes"] and victim not in r["quantized_nodes"]
    model = onnx.load(str(dst))
    consumers = {i: n for n in model.graph.node for i in n.input}
    for n in model.graph.node:  # TensorRT layout: Q/DQ on weighted ops' inputs only, never on their outputs
        if n.op_type in ("Conv", "Gemm", "MatMul"):
            assert consumers.get(n.output[0]) is None or consumers[n.output[0]].op_type != "QuantizeLinear"
    with pytest.raises(InputError, match="no node named"):
        quantize_int8(src, tmp_path / "y.onnx", calib, exclude_nodes=["nope"])


def test_percentile_ranges_are_tighter_than_minmax(rec_export, rec_int8, calib, tmp_path: Path) -> None:
    src, _, _ = rec_export
    _, _, minmax = rec_int8
    r = quantize_int8(src, tmp_path / "p.onnx", calib, method="percentile")
    common = set(r["activation_scales"]) & set(minmax["activation_scales"])
    assert common
    assert all(r["activation_scales"][t] <= minmax["activation_scales"][t] * 1.0001 for t in common)
    assert any(r["activation_scales"][t] < minmax["activation_scales"][t] * 0.999 for t in common)


def test_detector_int8_and_gate(det_export, tmp_path: Path) -> None:
    src, _, _ = det_export
    frames = faces_like(6, size=128, seed=3)
    dst = tmp_path / "det8.onnx"
    r = quantize_int8(src, dst, frames)
    assert r["per_channel_weights"] > 10 and r["nonzero_zero_points"] == 0
    result = gate(src, dst, frames[:3])
    assert "detector_score_mae" in result["metrics"] and result["metrics"]["detector_score_mae"]["value"] >= 0
    out = OnnxRuntimeEngine(dst).run(np.zeros((1, 3, 96, 64), np.float32))  # dynamic H, W survive quantization
    assert out["score_8"].shape == (1, 12 * 8, 1)


def test_quantize_refuses_bad_inputs(rec_export, rec_int8, tmp_path: Path) -> None:
    src, _, _ = rec_export
    dst, _, _ = rec_int8
    with pytest.raises(ModelError, match="needs an FP32 model"):
        quantize_int8(dst, tmp_path / "x.onnx", faces_like(4))
    with pytest.raises(InputError, match="N x 3 x H x W"):
        quantize_int8(src, tmp_path / "x.onnx", np.zeros((4, 112, 112), np.float32))
    with pytest.raises(InputError):
        quantize_int8(src, tmp_path / "x.onnx", None)


def test_cli_int8_from_npy_without_gate(rec_export, calib, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_mtl.commands.cli import main

    src, _, _ = rec_export
    npy = tmp_path / "calib.npy"
    np.save(npy, calib)
    out, saved = tmp_path / "cli8.onnx", tmp_path / "calib" / "rec.json"
    rc = main(["quantize", str(src), "-o", str(out), "--precision", "int8", "--calib", str(npy), "--no-gate",
               "--method", "percentile", "--save-calib", str(saved)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["precision"] == "int8" and report["gate"] is None and saved.is_file()
    assert report["method"] == "percentile"
    # and back from the saved ranges, without data: the report names the method the ranges were made with
    rc = main(["quantize", str(src), "-o", str(tmp_path / "cli8b.onnx"), "--precision", "int8", "--calib",
               str(saved), "--no-gate"])
    assert rc == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["method"] == "percentile"
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "cli8b.onnx")).metadata_props}
    assert json.loads(props["edge_mtl.quantization"])["method"] == "percentile"


def test_measured_identity_thresholds_are_not_carried_over_to_int8(rec_export, calib, tmp_path: Path) -> None:
    """A recognizer's stamped thresholds were measured on its own outputs: INT8 moves similarities enough to move them
    (shipped 1.4: 0.452 vs 0.438 at FAR 1e-2), so the quantized file carries none until measured; FP16 keeps them,
    saying they were measured in FP32."""
    import dataclasses

    from edge_mtl.export_tools.fp16 import to_fp16
    from edge_mtl.export_tools.onnx_utils import load_model, metadata_of, save_model_atomic, set_metadata

    src, _, _ = rec_export
    stamped = tmp_path / "rec.onnx"
    model = load_model(src)
    points = {"plain": {"0.01": 0.41, "0.001": 0.52}}
    set_metadata(model, dataclasses.replace(metadata_of(model), operating_points=points,
                                            operating_points_source="LFW View 2, test"))
    save_model_atomic(model, stamped)
    assert read_metadata(stamped).operating_points == points
    quantize_int8(stamped, tmp_path / "rec8.onnx", calib)
    q = read_metadata(tmp_path / "rec8.onnx")
    assert q.precision == "int8" and q.operating_points == {} and q.operating_points_source == ""
    to_fp16(stamped, tmp_path / "rec16.onnx")
    h = read_metadata(tmp_path / "rec16.onnx")
    assert h.operating_points == points and h.operating_points_source == "LFW View 2, test (measured in fp32)"


def test_gate_rank_breaks_ties_on_the_worst_metric_by_the_next() -> None:
    """Two INT8 candidates with the same gender agreement (the metric that moves in steps of 1/n and ties): the one
    that keeps embeddings and age closer to FP32 ranks first, whatever order they were tried in."""

    def result(cos: float, age: float, gender: float) -> dict[str, Any]:
        return {"metrics": {
            "embedding_cosine_mean": {"value": cos, "threshold": ">= 0.98"},
            "age_mae_delta_years": {"value": age, "threshold": "<= 1.0"},
            "gender_agreement": {"value": gender, "threshold": ">= 0.97"},
            "gender_prob_max_diff": {"value": 0.2},  # reported, not gated: no say in the rank
        }}

    minmax, percentile = result(0.9946, 0.466, 0.9765625), result(0.9962, 0.358, 0.9765625)
    assert gate_score(minmax) == pytest.approx(gate_score(percentile)) == pytest.approx(0.21875)
    assert gate_rank(percentile) > gate_rank(minmax)
    assert gate_rank(percentile)[1] == pytest.approx(0.642) and gate_rank(minmax)[1] == pytest.approx(0.534)
    ranked = sorted([("minmax", minmax), ("percentile", percentile)], key=lambda c: gate_rank(c[1]), reverse=True)
    assert [name for name, _ in ranked] == ["percentile", "minmax"]
    # a better worst margin still wins over any later one
    assert gate_rank(result(0.981, 0.9, 0.99)) < gate_rank(result(0.9962, 0.358, 0.9765625)) < gate_rank(
        result(0.99, 0.5, 0.99))
    assert gate_rank(None) == (0.0,)
