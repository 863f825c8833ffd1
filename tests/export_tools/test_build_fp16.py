"""FP16 conversion: which ops stay FP32, FP32 I/O, metadata, parity, and that FP32-kept reductions do not overflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_mtl.commands.cli import main
from edge_mtl.errors import ModelError
from edge_mtl.export_tools.fp16 import convert_fp16_model, to_fp16
from edge_mtl.export_tools.onnx_utils import onnx_precision, read_metadata
from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine


def _io_types(model: onnx.ModelProto) -> set[int]:
    return {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}


def test_recognizer_fp16_policy_and_parity(rec_export, tmp_path: Path) -> None:
    src, _, _ = rec_export
    dst = tmp_path / "rec16.onnx"
    report = to_fp16(src, dst)
    assert all(h["ok"] for h in report["parity"].values()), report["parity"]
    # heavy ops in FP16, the sensitive readouts in FP32
    assert report["fp16_ops"]["Conv"] >= 5 and report["fp16_ops"]["Gemm"] >= 3
    for op in ("Softmax", "ReduceL2", "ReduceSum", "Div", "Pow", "Sqrt", "Range"):
        assert op in report["fp32_ops"], op
        assert op not in report["fp16_ops"], op
    assert not report["unknown_ops"]
    model = onnx.load(str(dst))
    assert _io_types(model) == {TensorProto.FLOAT}
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
    assert onnx_precision(model) == "fp16"
    meta = read_metadata(dst)
    assert meta.precision == "fp16" and meta.output_names == read_metadata(src).output_names
    # casts only at precision boundaries: input, the 3 head readouts, quality output -> a handful
    assert report["casts"] <= 8
    out = OnnxRuntimeEngine(dst).run(np.zeros((3, 3, 112, 112), np.float32))
    assert out["embedding"].dtype == np.float32 and out["embedding"].shape == (3, 32)


def test_detector_fp16_shared_head_weights_are_converted(det_export, tmp_path: Path) -> None:
    src, _, _ = det_export
    dst = tmp_path / "det16.onnx"
    report = to_fp16(src, dst)
    assert all(h["ok"] for h in report["parity"].values())
    # the exporter shares the head's weights across levels through Identity nodes: they must not force FP32
    assert report["fp32_ops"] == {}
    assert report["casts"] == 1 + 9  # the input, and the nine outputs back to FP32
    model = onnx.load(str(dst))
    float32_weights = [t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT
                       and numpy_helper.to_array(t).size > 8]
    assert float32_weights == []


def _sum_model() -> onnx.ModelProto:
    """x -> Relu -> Mul(1000) -> ReduceSum: the sum of 128 values near 1000 overflows FP16 (max 65504)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 128])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])
    k = numpy_helper.from_array(np.array(1000.0, np.float32), "k")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "k"], ["m"], name="mul"),
        helper.make_node("ReduceSum", ["m", "axes"], ["y"], name="sum", keepdims=1),
    ]
    graph = helper.make_graph(nodes, "sum", [x], [y], initializer=[k, axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fp32_reduction_is_typed_fp32_in_the_graph(tmp_path: Path) -> None:
    """TensorRT builds strongly typed, so what matters is the type the graph gives the sum's input.

    (ONNX Runtime's CPU provider cannot show the overflow: it computes FP16 ops it has no kernel for in FP32 and
    drops the casts around them, so this is checked on the graph's types, not on ORT's result.)
    """
    import onnxruntime as ort

    fp16, summary = convert_fp16_model(_sum_model())
    assert summary["fp32_ops"] == {"ReduceSum": 1} and summary["fp16_ops"] == {"Mul": 1, "Relu": 1}
    inferred = onnx.shape_inference.infer_shapes(fp16, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    sum_node = next(n for n in inferred.graph.node if n.op_type == "ReduceSum")
    assert types[sum_node.input[0]] == TensorProto.FLOAT  # cast back to FP32 before summing
    assert types["m"] == TensorProto.FLOAT16  # the Mul itself ran in FP16
    onnx.checker.check_model(fp16, full_check=True)
    p = tmp_path / "sum16.onnx"
    onnx.save(fp16, str(p))
    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": np.ones((2, 128), np.float32)})[0]
    assert np.allclose(y, 128000.0)
    # excluding the Mul keeps it FP32 as well
    _, s2 = convert_fp16_model(_sum_model(), exclude_nodes=["mul"])
    assert s2["fp32_ops"] == {"Mul": 1, "ReduceSum": 1}


def test_fp16_refuses_non_fp32_and_truncated(rec_export, tmp_path: Path) -> None:
    src, _, _ = rec_export
    half = tmp_path / "h.onnx"
    to_fp16(src, half, check=False)
    with pytest.raises(ModelError, match="needs an FP32 model"):
        to_fp16(half, tmp_path / "hh.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    with pytest.raises(ModelError):
        to_fp16(broken, tmp_path / "b16.onnx")


def test_truncated_onnx_is_model_error_and_exit_2(rec_export, tmp_path: Path) -> None:
    src, _, _ = rec_export
    broken = tmp_path / "truncated.onnx"
    broken.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(ModelError):
        OnnxRuntimeEngine(broken)
    assert main(["quantize", str(broken), "-o", str(tmp_path / "o.onnx"), "--precision", "fp16", "--no-gate"]) == 2
    assert not (tmp_path / "o.onnx").exists()


def test_cli_quantize_fp16(rec_export, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    src, _, _ = rec_export
    out = tmp_path / "cli16.onnx"
    assert main(["quantize", str(src), "-o", str(out), "--precision", "fp16", "--no-gate"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["precision"] == "fp16" and read_metadata(out).precision == "fp16"
