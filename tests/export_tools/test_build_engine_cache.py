"""TensorRT engine-cache logic that needs no TensorRT: profiles, keys, entries, mismatch messages, precision checks.

Tests at the bottom (marked `tensorrt`) build and run real engines; they skip where TensorRT or a GPU is absent.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.errors import InputError, MissingExtraError, ModelError
from edge_mtl.export_tools.onnx_utils import read_metadata
from edge_mtl.runtime.engine_cache import (
    BuildTarget,
    CacheEntry,
    Profile,
    cache_key,
    check_engine_precision,
    check_entry,
    check_network_precision,
    check_shape,
    engine_paths,
    make_profile,
    mismatch,
    read_entry,
    summarize_layers,
    trt_log_level,
    write_entry,
)

ORIN = BuildTarget((8, 7), "10.3.0", "Orin")
H100 = BuildTarget((9, 0), "10.8.0", "NVIDIA H100")


def test_recognizer_profile(rec_export) -> None:
    meta = read_metadata(rec_export[0])
    p = make_profile(meta, max_batch=32)
    assert p.input_name == "input"
    assert p.min == (1, 3, 112, 112) and p.opt == (8, 3, 112, 112) and p.max == (32, 3, 112, 112)
    assert make_profile(meta, max_batch=4).opt == (4, 3, 112, 112)  # opt never above max
    assert p.contains((17, 3, 112, 112)) and not p.contains((33, 3, 112, 112)) and not p.contains((1, 3, 96, 112))
    with pytest.raises(InputError):
        make_profile(meta, max_batch=0)


def test_detector_profile(det_export) -> None:
    meta = read_metadata(det_export[0])  # input size 640
    p = make_profile(meta, max_batch=4)
    assert p.min == (1, 3, 32, 32)
    assert p.opt == (1, 3, 480, 640)  # a 4:3 landscape frame at the input size
    assert p.max == (4, 3, 640, 640)  # landscape and portrait letterboxes both fit
    assert p.contains((1, 3, 640, 480)) and p.contains((4, 3, 480, 640)) and not p.contains((1, 3, 672, 640))
    big = make_profile(meta, max_batch=2, max_side=1000)
    assert big.max == (2, 3, 1024, 1024)  # rounded up to the stride
    small = make_profile(meta, max_batch=1, max_side=320)
    assert small.opt[2] <= 320 and small.opt[3] <= 320


def test_cache_key_depends_on_everything_that_matters(rec_export) -> None:
    meta = read_metadata(rec_export[0])
    p = make_profile(meta, 32)
    base = cache_key("a" * 64, ORIN, "fp16", p)
    assert base == cache_key("a" * 64, BuildTarget((8, 7), "10.3.0", "another name"), "fp16", p)
    variants = [
        cache_key("b" * 64, ORIN, "fp16", p),
        cache_key("a" * 64, BuildTarget((8, 6), "10.3.0"), "fp16", p),
        cache_key("a" * 64, BuildTarget((8, 7), "10.3.1"), "fp16", p),
        cache_key("a" * 64, ORIN, "int8", p),
        cache_key("a" * 64, ORIN, "fp16", make_profile(meta, 16)),
    ]
    assert len({base, *variants}) == 6


def _entry(tmp_path: Path, target: BuildTarget = ORIN, model_path: str = "export/recognizer-int8.onnx") -> CacheEntry:
    p = Profile("input", (1, 3, 112, 112), (8, 3, 112, 112), (32, 3, 112, 112))
    from build_helpers import REC_ARGS

    from edge_mtl.export_tools.export import model_metadata

    meta = model_metadata("recognizer", REC_ARGS.to_dict(), precision="int8")
    return CacheEntry(
        key=cache_key("c" * 64, target, "int8", p),
        model_sha256="c" * 64,
        model_path=model_path,
        kind="recognizer",
        precision="int8",
        compute_capability=target.compute_capability,
        gpu_name=target.gpu_name,
        tensorrt=target.tensorrt,
        profile=p,
        metadata=meta.to_props(),
        built_at="2026-11-23T12:00:00Z",
        build_seconds=12.5,
        layers={"weighted_int8": 14},
    )


def test_entry_round_trip_and_metadata(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    plan, js = engine_paths(tmp_path, "recognizer-int8", entry.key)
    assert plan.suffix == ".plan" and js.suffix == ".json" and plan.stem == js.stem
    assert plan.name.startswith("recognizer-int8-") and entry.key[:16] in plan.name
    write_entry(js, entry)
    back = read_entry(js)
    assert back == entry
    assert back.model_metadata.precision == "int8" and back.model_metadata.kind == "recognizer"
    js.write_text(json.dumps({"schema": "something else"}))
    with pytest.raises(ModelError, match="not a valid engine cache entry"):
        read_entry(js)
    with pytest.raises(ModelError, match="unreadable"):
        read_entry(tmp_path / "missing.json")


def test_mismatch_message_names_both_boxes(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    assert mismatch(entry, ORIN) is None
    check_entry(entry, ORIN, "engines/x.plan")  # no error on the box that built it
    with pytest.raises(ModelError) as e:
        check_entry(entry, H100, "engines/x.plan")
    msg = str(e.value)
    assert "engine built for sm_87 / TensorRT 10.3.0, this box is sm_90 / TensorRT 10.8.0" in msg
    assert "rebuild with `edge-mtl build-engine export/recognizer-int8.onnx`" in msg
    # same GPU, TensorRT upgraded: also a mismatch
    assert "TensorRT 10.3.1" in (mismatch(entry, BuildTarget((8, 7), "10.3.1")) or "")


def test_shape_outside_profile_is_input_error(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    check_shape(entry.profile, (32, 3, 112, 112))
    with pytest.raises(InputError, match="outside the engine's profile"):
        check_shape(entry.profile, (64, 3, 112, 112))


INSPECTOR_INT8 = {
    "Layers": [
        {"Name": "input_quantize", "LayerType": "Reformat",
         "Inputs": [{"Name": "input", "Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Name": "q", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
        {"Name": "conv1 + relu", "LayerType": "CaskConvolution", "ParameterType": "Convolution",
         "Inputs": [{"Name": "q", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
         "Outputs": [{"Name": "c", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
        {"Name": "head gemm", "LayerType": "CaskGemmMatrixMultiply", "ParameterType": "MatrixMultiply",
         "Inputs": [{"Name": "c", "Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Name": "g", "Format/Datatype": "Row major linear FP32"}]},
    ]
}


def test_engine_precision_from_inspector() -> None:
    s = summarize_layers(INSPECTOR_INT8)
    assert s["layers"] == 3 and s["weighted"] == 2 and s["weighted_int8"] == 1 and s["weighted_fp32"] == 1
    assert check_engine_precision("int8", s) is True
    with pytest.raises(ModelError, match="metadata says fp16 but the built engine runs its weighted layers in int8"):
        check_engine_precision("fp16", s)
    fp16 = {"Layers": [{"Name": "c", "LayerType": "CaskConvolution",
                        "Inputs": [{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
                        "Outputs": [{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]}]}
    assert check_engine_precision("fp16", summarize_layers(fp16)) is True
    with pytest.raises(ModelError):
        check_engine_precision("int8", summarize_layers(fp16))
    with pytest.raises(ModelError):
        check_engine_precision("fp32", summarize_layers(fp16))
    # TensorRT 11 splits the field into Format and DataType
    trt11 = {"Layers": [{"Name": "c", "LayerType": "CaskConvolution",
                         "Inputs": [{"Format": "Thirty-two wide channel vectorized row major (kCHW32)",
                                     "DataType": "Int8"}],
                         "Outputs": [{"Format": "Row major linear (kLINEAR)", "DataType": "Float"}]}]}
    assert summarize_layers(trt11)["weighted_int8"] == 1 and check_engine_precision("int8", summarize_layers(trt11))
    # a non-detailed inspector gives names only: nothing to verify, caller relies on the network check
    assert check_engine_precision("int8", summarize_layers({"Layers": ["conv1", "conv2"]})) is False


def test_network_precision_check() -> None:
    check_network_precision("int8", quantize_layers=12, half_tensors=0)
    check_network_precision("fp16", quantize_layers=0, half_tensors=30)
    check_network_precision("fp32", quantize_layers=0, half_tensors=0)
    with pytest.raises(ModelError, match="metadata says int8 but the network is fp32"):
        check_network_precision("int8", 0, 0, "m.onnx")
    with pytest.raises(ModelError, match="metadata says fp32 but the network is fp16"):
        check_network_precision("fp32", 0, 3)


def test_trt_log_levels() -> None:
    assert trt_log_level("Severity.ERROR") == logging.ERROR
    assert trt_log_level("INTERNAL_ERROR") == logging.CRITICAL
    assert trt_log_level("WARNING") == logging.WARNING
    assert trt_log_level("INFO") == logging.DEBUG and trt_log_level("VERBOSE") == logging.DEBUG


HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_missing_tensorrt_is_a_clear_error(rec_export, tmp_path: Path) -> None:
    from edge_mtl.runtime.tensorrt import TensorRTEngine
    from edge_mtl.runtime.tensorrt_build import build_engine

    with pytest.raises(MissingExtraError, match=r"edge-mtl\[tensorrt\]"):
        TensorRTEngine(rec_export[0], tmp_path)
    with pytest.raises(MissingExtraError):
        build_engine(rec_export[0], tmp_path)
    from edge_mtl.commands.cli import main

    assert main(["build-engine", str(rec_export[0]), "--cache", str(tmp_path)]) == 2


def test_plan_without_entry_is_refused(tmp_path: Path) -> None:
    from edge_mtl.runtime.tensorrt import resolve_engine

    plan = tmp_path / "orphan.plan"
    plan.write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match="no cache entry"):
        resolve_engine(plan, None, max_batch=1, workspace_mb=64, max_side=None, rebuild=True, device=0)


def test_plan_from_another_box_without_its_onnx_is_refused(tmp_path: Path) -> None:
    from edge_mtl.runtime.tensorrt import resolve_engine

    entry = _entry(tmp_path, ORIN, model_path=str(tmp_path / "gone.onnx"))
    plan, js = engine_paths(tmp_path, "recognizer-int8", entry.key)
    plan.write_bytes(b"\0" * 16)
    write_entry(js, entry)
    # on the box that built it, the plan is used as is
    assert resolve_engine(plan, None, max_batch=None, workspace_mb=64, max_side=None, rebuild=True, device=0,
                          target=ORIN) == (plan, entry)
    # elsewhere, with the ONNX gone, nothing can be rebuilt: a clear error naming both boxes
    with pytest.raises(ModelError, match=r"built for sm_87 / TensorRT 10.3.0, this box is sm_90 / TensorRT 10.8.0"):
        resolve_engine(plan, None, max_batch=None, workspace_mb=64, max_side=None, rebuild=True, device=0,
                       target=H100)


def test_runtime_module_imports_without_torch_or_tensorrt() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import edge_mtl.runtime.tensorrt, edge_mtl.runtime.engine_cache, edge_mtl.runtime.tensorrt_build; "
        "assert 'torch' not in sys.modules and 'tensorrt' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# ------------------------------------------------------------------ real TensorRT (skipped here)
def _gpu() -> None:
    pytest.importorskip("tensorrt")
    try:
        from edge_mtl.runtime.tensorrt_build import current_target

        current_target()
    except Exception as e:  # no driver, no device, no cuda-python
        pytest.skip(f"no usable GPU: {e}")


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_matches_onnxruntime(rec_export, precision: str, tmp_path: Path) -> None:
    _gpu()
    from build_helpers import faces_like

    from edge_mtl.export_tools.fp16 import to_fp16
    from edge_mtl.export_tools.quantize import quantize_int8
    from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine
    from edge_mtl.runtime.tensorrt import TensorRTEngine
    from edge_mtl.runtime.tensorrt_build import build_engine

    src = rec_export[0]
    model = tmp_path / f"rec-{precision}.onnx"
    if precision == "fp16":
        to_fp16(src, model)
    elif precision == "int8":
        quantize_int8(src, model, faces_like(16))
    else:
        model.write_bytes(src.read_bytes())
    plan = build_engine(model, tmp_path / "engines", max_batch=8, workspace_mb=256)
    entry = read_entry(plan.with_suffix(".json"))
    assert entry.precision == precision
    assert (entry.layers["network_qdq_layers"] > 0) == (precision == "int8")
    assert (entry.layers["network_fp16_tensors"] > 0) == (precision == "fp16")
    assert build_engine(model, tmp_path / "engines", max_batch=8, workspace_mb=256) == plan  # cache hit
    x = faces_like(5, seed=9)
    with TensorRTEngine(model, tmp_path / "engines", max_batch=8) as eng:
        assert eng.metadata.precision == precision and eng.provider.startswith("tensorrt-")
        got = eng.run(x)
        with pytest.raises(InputError):
            eng.run(np.zeros((9, 3, 112, 112), np.float32))
    ref = OnnxRuntimeEngine(model).run(x)
    cos = (got["embedding"] * ref["embedding"]).sum(1)
    assert cos.min() > (0.999 if precision != "int8" else 0.99)
    assert np.abs(got["age"][:, 0] - ref["age"][:, 0]).max() < 1.0


@pytest.mark.tensorrt
def test_tensorrt_detector_dynamic_shapes(det_export, tmp_path: Path) -> None:
    _gpu()
    from edge_mtl.export_tools.fp16 import to_fp16
    from edge_mtl.runtime.tensorrt import TensorRTEngine

    model = tmp_path / "det16.onnx"
    to_fp16(det_export[0], model)
    with TensorRTEngine(model, tmp_path / "engines", max_batch=2) as eng:
        for h, w in ((480, 640), (640, 480), (96, 128)):
            out = eng.run(np.zeros((2, 3, h, w), np.float32))
            assert out["score_8"].shape == (2, (h // 8) * (w // 8), 1)


def test_cuda_check_unpacks_results_and_raises_named_errors() -> None:
    import enum
    import types

    from edge_mtl.errors import BackendUnavailableError
    from edge_mtl.runtime.tensorrt_build import cuda_check

    # the shape of cuda-python's cudaError_t
    Err = enum.IntEnum("Err", {"cudaSuccess": 0, "cudaErrorMemoryAllocation": 2})

    cudart = types.SimpleNamespace(cudaError_t=Err)
    assert cuda_check(cudart, (Err.cudaSuccess, 1234), "cudaMalloc") == 1234
    assert cuda_check(cudart, (Err.cudaSuccess,), "cudaSetDevice") is None
    assert cuda_check(cudart, (Err.cudaSuccess, 1, 2), "x") == (1, 2)
    with pytest.raises(BackendUnavailableError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        cuda_check(cudart, (Err.cudaErrorMemoryAllocation, 0), "cudaMalloc")
