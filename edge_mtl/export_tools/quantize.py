"""INT8 by explicit quantization: a Q/DQ ONNX calibrated on real faces, plus the accuracy gate (docs/acceleration.md).

TensorRT 10.1 deprecated and 11 removed implicit INT8 calibration, so INT8 lives in the ONNX as
QuantizeLinear/DequantizeLinear pairs that TensorRT builds strongly typed and ONNX Runtime runs on the CPU. Choices:

- ONNX Runtime's `quantize_static` in QDQ format on Conv, Gemm and MatMul; int8 activations and weights, both
  symmetric (zero-point 0, what TensorRT supports), weights per output channel.
- Bias stays float (`QuantizeBias=False`): TensorRT refuses DequantizeLinear on int32 ("only activation types
  allowed as input to this layer"); its kernels quantize the bias themselves.
- Layout "shared" (default): Q/DQ on the inputs *and* outputs of each Conv/Gemm/MatMul. ONNX Runtime's CPU
  kernels only fuse DQ->Conv->Q into an integer convolution when the output is quantized (measured here on the
  recognizer at batch 16: 3.7x faster than FP32, vs 0.6x with input-only Q/DQ), and TensorRT parses it fine,
  propagating the extra Q/DQ through the ReLU (which commutes with zero-point-0 quantization). Layout "tensorrt":
  Q/DQ only on the inputs of weighted ops (NVIDIA's recommended placement), for TensorRT-only deployments.
- Removable activations (ReLU/Clip after a quantized output) are kept: ONNX Runtime only drops them for
  asymmetric quantization anyway, and TensorRT fuses them.
- Calibration: MinMax, Entropy or Percentile (99.999) ranges from ONNX Runtime's calibrators on real inputs
  (`edge_mtl.export_tools.calibration`); "auto" tries all three and keeps the one whose model scores best on held-out
  inputs (the worst gated metric's margin first, then the next worst; see calib/README.md for the comparison).
  Ranges are saved as JSON (ONNX Runtime's calibration cache format plus an `edge_mtl` section naming the images
  and the FP32 model they belong to), so the shipped INT8 models can be reproduced from calib/ without the data.

The gate compares the INT8 model's heads with the FP32 model's on held-out real inputs and fails the command when a
head degrades past its threshold; nodes that hurt can be kept in float (`exclude_nodes`), chosen by hand or by the
sensitivity pass (`auto_exclude`), which ranks quantized nodes by how much error each adds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_mtl.errors import EdgeMtlError, InputError, ModelError
from edge_mtl.export_tools.onnx_utils import (
    file_sha256,
    graph_sha256,
    import_onnx,
    load_model,
    metadata_of,
    op_histogram,
    ort_cpu_session,
    read_metadata,
    run_session,
    save_model_atomic,
    set_metadata,
)
from edge_mtl.runtime.engine import ModelMetadata
from edge_mtl.vision.boxes import iou_matrix

log = logging.getLogger(__name__)

QUANT_OPS = ("Conv", "Gemm", "MatMul")
METHODS = ("minmax", "entropy", "percentile")
LAYOUTS = ("shared", "tensorrt")
PERCENTILE = 99.999
CALIB_BATCH = 16


class GateError(EdgeMtlError):
    """A quantized model lost too much accuracy against its FP32 source (exit code 1).

    `report` holds what was measured (gate metrics, and the per-method comparison or sensitivity steps).
    """

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


# ------------------------------------------------------------------ calibration data
def _one_batch_reader(batch: npt.NDArray[np.float32], input_name: str) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class OneBatch(CalibrationDataReader):
        def __init__(self) -> None:
            self._done = False

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            if self._done:
                return None
            self._done = True
            return {input_name: np.ascontiguousarray(batch, np.float32)}

        def __len__(self) -> int:
            return len(batch)

    return OneBatch()


def calibrate(
    model: Path,
    inputs: npt.NDArray[np.float32],
    method: str,
    input_name: str,
    out: Path,
    percentile: float = PERCENTILE,
    batch: int | None = None,
) -> None:
    """Measure activation ranges of `model`'s Conv/Gemm/MatMul tensors on `inputs`; write ONNX Runtime's
    calibration cache JSON to `out`.

    We drive ONNX Runtime's calibrators ourselves rather than through `quantize_static` because that path cannot
    set the histogram size: its Entropy calibrator then has 128 bins, which leaves it no threshold to choose and
    makes it identical to MinMax. Here Entropy uses 2048 bins over [-T, T] searched down to 256 quantized bins
    (128 per side: TensorRT's classic |x| setting) and Percentile 2048 bins of |x|, symmetric like the quantization.
    Feeding one batch per `collect_data` call bounds memory (the calibrators hold every output of a call).
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if batch is None:  # bound the activations the calibrator holds: 16 crops, or 3 frames of 640 x 640
        batch = max(1, min(CALIB_BATCH, 1_600_000 // int(inputs.shape[2] * inputs.shape[3])))
    # ONNX Runtime's entropy histograms always span [-T, T] and count quantized bins over that whole range, so
    # int8's 128 levels per side are 256 bins here (128 would search 7-bit thresholds and clip far too much).
    options: dict[str, Any] = {"symmetric": method != "minmax", "num_bins": 2048, "num_quantized_bins": 256,
                               "percentile": percentile}
    with tempfile.TemporaryDirectory(prefix="edge-mtl-calib-") as tmpdir, _quiet():
        calibrator = create_calibrator(
            model,
            list(QUANT_OPS),
            augmented_model_path=str(Path(tmpdir) / "augmented.onnx"),
            calibrate_method=_method(method),
            extra_options=options,
        )
        for i in range(0, len(inputs), batch):
            calibrator.collect_data(_one_batch_reader(inputs[i : i + batch], input_name))
        save_tensors_data(calibrator.compute_data(), out)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantization tools print progress to stdout (the CLI's JSON channel) and log a line per
    copied bias on the root logger at INFO: send the first to our debug log and mute the second while they run."""
    buf = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        logging.disable(previous)
    if buf.getvalue().strip():
        log.debug("onnxruntime quantization: %s", buf.getvalue().strip().replace("\n", "; "))


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    try:
        return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile}[name]
    except KeyError:
        raise InputError(f"unknown calibration method {name!r}; use one of {METHODS} or 'auto'") from None


def _method_name(value: Any) -> str:
    s = value.get("value", "") if isinstance(value, dict) else str(value)
    tail = s.split(".")[-1].lower()
    return tail if tail in METHODS else "minmax"


# ------------------------------------------------------------------ Q/DQ inspection
def qdq_summary(model: Any) -> dict[str, Any]:
    """What the Q/DQ graph holds: node counts, zero points, per-channel weights, which nodes were quantized."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    nonzero_zp, per_channel, per_tensor, int_types = 0, 0, 0, set()
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(n.input) > 2 and n.input[2] in inits:
            zp = numpy_helper.to_array(inits[n.input[2]])
            int_types.add(str(zp.dtype))
            nonzero_zp += int(np.count_nonzero(zp))
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:  # a weight
            scale = numpy_helper.to_array(inits[n.input[1]])
            if scale.ndim == 1:  # per-channel scales are 1-D (even with one channel), per-tensor ones scalars
                per_channel += 1
            else:
                per_tensor += 1
    quantized = []
    for n in model.graph.node:
        if n.op_type in QUANT_OPS and any(
            (p := producers.get(i)) is not None and p.op_type == "DequantizeLinear" for i in n.input[:2]
        ):
            quantized.append(n.name)
    hist = op_histogram(model)
    return {
        "quantize_linear": hist.get("QuantizeLinear", 0),
        "dequantize_linear": hist.get("DequantizeLinear", 0),
        "zero_point_types": sorted(int_types),
        "nonzero_zero_points": nonzero_zp,
        "per_channel_weights": per_channel,
        "per_tensor_weights": per_tensor,
        "quantized_nodes": quantized,
        "float_nodes": [n.name for n in model.graph.node if n.op_type in QUANT_OPS and n.name not in quantized],
    }


def activation_scales(model: Any) -> dict[str, float]:
    """Scale of every quantized activation tensor (QuantizeLinear input -> scale); range = 127 * scale."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[1] in inits:
            out[n.input[0]] = float(numpy_helper.to_array(inits[n.input[1]]).reshape(-1)[0])
    return dict(sorted(out.items()))


# ------------------------------------------------------------------ calibration files
def _strip_histograms(cache: dict[str, Any]) -> dict[str, Any]:
    """Keep only what the quantizer reads (lowest/highest): histograms make the file 100x larger."""
    for entry in cache.get("data", {}).values():
        for k in ("hist", "hist_edges", "bins"):
            entry.pop(k, None)
    return cache


def write_calibration_file(
    path: str | Path, cache: dict[str, Any], info: dict[str, Any]
) -> None:
    """ONNX Runtime's calibration cache (ranges) plus an `edge_mtl` section, as one JSON file."""
    payload = _strip_histograms(dict(cache))
    payload["edge_mtl"] = info
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_calibration_file(path: str | Path) -> dict[str, Any]:
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a calibration file ({e})") from None
    if not isinstance(d, dict) or "data" not in d or "calibration_method" not in d:
        raise InputError(f"{path}: not a calibration file (no 'data'/'calibration_method')")
    return d


# ------------------------------------------------------------------ quantization
def _extra_options(layout: str) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "QDQKeepRemovableActivations": True,
    }
    if layout == "tensorrt":
        opts["OpTypesToExcludeOutputQuantization"] = list(QUANT_OPS)
    elif layout != "shared":
        raise InputError(f"unknown Q/DQ layout {layout!r}; use one of {LAYOUTS}")
    return opts


def preprocess(src: Path, dst: Path) -> None:
    """ONNX Runtime's quantization pre-processing: shape inference plus basic graph optimisation (folds the
    BatchNorm after the embedding's Linear into a Gemm, so it is quantized with it)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    calibration: npt.NDArray[np.float32] | None,
    *,
    exclude_nodes: Sequence[str] = (),
    per_channel: bool = True,
    method: str = "minmax",
    layout: str = "shared",
    percentile: float = PERCENTILE,
    calibration_file: str | Path | None = None,
    save_calibration: str | Path | None = None,
    calibration_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the symmetric INT8 Q/DQ variant of the FP32 model `src` to `dst` (metadata precision "int8").

    `calibration` is N x 3 x H x W preprocessed float32 (real faces or frames); instead, `calibration_file` (a JSON
    written by `save_calibration`) reproduces a previous calibration without data, and must belong to the same
    FP32 model. Returns a report: Q/DQ summary, method, layout, activation scales.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    import_onnx()
    src, dst = Path(src), Path(dst)
    model = load_model(src)
    meta = metadata_of(model, str(src))
    if meta.precision != "fp32":
        raise ModelError(f"{src}: INT8 quantization needs an FP32 model, this one is {meta.precision}")
    src_sha, src_graph = file_sha256(src), graph_sha256(model)
    extra = _extra_options(layout)
    with tempfile.TemporaryDirectory(prefix="edge-mtl-quant-") as tmpdir:
        tmp = Path(tmpdir)
        pre = tmp / "pre.onnx"
        preprocess(src, pre)
        cache_path = tmp / "calibration.json"
        if calibration_file is not None:
            cached = read_calibration_file(calibration_file)
            info = cached.get("edge_mtl") or {}
            # the graph's hash when the file records it (metadata may be rewritten since), else the file's
            owner, mine = ((info["graph_sha256"], src_graph) if info.get("graph_sha256")
                           else (info.get("model_sha256"), src_sha))
            if owner and owner != mine:
                raise InputError(
                    f"{calibration_file}: ranges were computed for another FP32 model (sha256 {owner[:12]}, this is "
                    f"{mine[:12]}); calibrate again from data (--data)"
                )
            method = _method_name(cached["calibration_method"])
            cache_path.write_text(json.dumps(cached), encoding="utf-8")
        else:
            if calibration is None or len(calibration) == 0:
                raise InputError("INT8 quantization needs calibration inputs or a calibration file")
            calibration = np.asarray(calibration, np.float32)
            if calibration.ndim != 4 or calibration.shape[1] != 3:
                raise InputError(f"calibration: expected N x 3 x H x W, got {list(calibration.shape)}")
            calibrate(pre, calibration, method, meta.input_name, cache_path, percentile)
        pre_names = {n.name for n in load_model(pre).graph.node}
        unknown = [n for n in exclude_nodes if n not in pre_names]
        if unknown:
            raise InputError(f"exclude: no node named {unknown} in {src.name} (see the report's quantized_nodes)")
        out_tmp = tmp / "int8.onnx"
        try:
            cached_names = set(json.loads(cache_path.read_text(encoding="utf-8"))["data"])
            missing = sorted({t for n in load_model(pre).graph.node if n.op_type in QUANT_OPS for t in n.input[:1]}
                             - cached_names)
            if missing:
                raise KeyError(f"no range for tensors {missing[:3]}")
            with _quiet():
                quantize_static(
                    str(pre),
                    str(out_tmp),
                    None,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANT_OPS),
                    per_channel=per_channel,
                    reduce_range=False,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(exclude_nodes),
                    calibrate_method=_method(method),
                    extra_options=extra,
                    calibration_cache_path=str(cache_path),
                )
        except (KeyError, ValueError) as e:
            if calibration_file is not None:
                raise InputError(f"{calibration_file}: does not fit {src.name} ({e})") from None
            raise
        qmodel = load_model(out_tmp)
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    summary = qdq_summary(qmodel)
    if summary["nonzero_zero_points"]:
        raise ModelError(f"{src.name}: quantizer produced {summary['nonzero_zero_points']} non-zero zero points")
    if not summary["quantized_nodes"]:
        raise ModelError(f"{src.name}: no Conv/Gemm/MatMul node was quantized")
    qinfo = {
        "method": method,
        "layout": layout,
        "per_channel": per_channel,
        "symmetric": True,
        "excluded": list(exclude_nodes),
        "source_sha256": src_sha,
    }
    # The FP32 model's measured identity thresholds do not hold for INT8 (shipped 1.4: 0.452 vs 0.438 at FAR 1e-2):
    # the quantized file carries none until measured (`edge-mtl eval verification --stamp` on it).
    qmeta = dataclasses.replace(meta, precision="int8", operating_points={}, operating_points_source="")
    if meta.operating_points:
        log.info("%s: measured identity thresholds not carried over to INT8; measure them with "
                 "'edge-mtl eval verification --stamp' on the quantized model", src.name)
    set_metadata(qmodel, qmeta, extra={"quantization": json.dumps(qinfo)})
    onnx = import_onnx()
    del qmodel.graph.value_info[:]  # shapes recorded before Q/DQ insertion can go stale; the checker re-infers them
    try:
        onnx.checker.check_model(qmodel, full_check=True)
    except Exception as e:
        raise ModelError(f"INT8 model of {src.name} fails the ONNX checker: {str(e)[:300]}") from None
    save_model_atomic(qmodel, dst)
    ort_cpu_session(dst)  # it must load in ONNX Runtime, or it is no use to anyone
    scales = activation_scales(qmodel)
    if save_calibration is not None:
        info = {
            "model": src.name,
            "model_sha256": src_sha,
            "graph_sha256": src_graph,
            "kind": meta.kind,
            "method": method,
            "percentile": percentile if method == "percentile" else None,
            "activation_scales": scales,
            **(calibration_info or {}),
        }
        write_calibration_file(save_calibration, cache, info)
    report = {
        "output": str(dst),
        "precision": "int8",
        "bytes": dst.stat().st_size,
        "calibration_inputs": 0 if calibration is None or calibration_file else len(calibration),
        **qinfo,
        **summary,
        "activation_scales": scales,
    }
    log.info(
        "int8: %s -> %s (%s, %d nodes quantized, %d kept float)",
        src.name,
        dst,
        method,
        len(summary["quantized_nodes"]),
        len(summary["float_nodes"]),
    )
    return report


# ------------------------------------------------------------------ accuracy gate
INT8_THRESHOLDS: dict[str, tuple[str, float]] = {
    "embedding_cosine_mean": (">=", 0.98),
    "embedding_cosine_min": (">=", 0.90),
    "age_mae_delta_years": ("<=", 1.0),
    "gender_agreement": (">=", 0.97),
    "quality_mae": ("<=", 0.05),
    "detector_recall_proxy": (">=", 0.95),
    "detector_precision_proxy": (">=", 0.90),
    "detector_score_mae": ("<=", 0.02),
}
FP16_THRESHOLDS: dict[str, tuple[str, float]] = {
    "embedding_cosine_mean": (">=", 0.999),
    "embedding_cosine_min": (">=", 0.995),
    "age_mae_delta_years": ("<=", 0.2),
    "gender_agreement": (">=", 0.99),
    "quality_mae": ("<=", 0.01),
    "detector_recall_proxy": (">=", 0.99),
    "detector_precision_proxy": (">=", 0.98),
    "detector_score_mae": ("<=", 0.005),
}
GATE_SCORE_THRESHOLD = 0.5
GATE_IOU = 0.5


def _matched(ref: npt.NDArray[np.float32], cand: npt.NDArray[np.float32]) -> int:
    """Greedy one-to-one matches at IoU >= GATE_IOU (reference boxes in score order)."""
    if len(ref) == 0 or len(cand) == 0:
        return 0
    iou = iou_matrix(ref, cand)
    used = np.zeros(len(cand), bool)
    hits = 0
    for i in range(len(ref)):
        row = np.where(used, -1.0, iou[i])
        j = int(np.argmax(row))
        if row[j] >= GATE_IOU:
            used[j] = True
            hits += 1
    return hits


def recognizer_metrics(ref: dict[str, Any], cand: dict[str, Any]) -> dict[str, float]:
    a, b = np.asarray(ref["embedding"], np.float64), np.asarray(cand["embedding"], np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {
        "embedding_cosine_mean": float(cos.mean()),
        "embedding_cosine_min": float(cos.min()),
        "age_mae_delta_years": float(np.abs(ref["age"][:, 0] - cand["age"][:, 0]).mean()),
        "age_std_mae_delta_years": float(np.abs(ref["age"][:, 1] - cand["age"][:, 1]).mean()),
        "gender_agreement": float((ref["gender"].argmax(1) == cand["gender"].argmax(1)).mean()),
        "gender_prob_max_diff": float(np.abs(ref["gender"] - cand["gender"]).max()),
        "quality_mae": float(np.abs(ref["quality"] - cand["quality"]).mean()),
    }


def detector_metrics(
    ref: dict[str, Any], cand: dict[str, Any], meta: ModelMetadata, input_hw: tuple[int, int]
) -> dict[str, float]:
    """Recall proxy: the share of the FP32 model's faces (score >= 0.5, after NMS) that the quantized model also
    finds (IoU >= 0.5); precision proxy: the share of the quantized model's faces that FP32 also has."""
    from edge_mtl.runtime.postprocess import decode

    strides = list(meta.strides)
    n_img = ref[f"score_{strides[0]}"].shape[0]
    ref_total = cand_total = ref_hit = cand_hit = 0
    for i in range(n_img):
        dets = []
        for out in (ref, cand):
            boxes, _, _ = decode(
                [out[f"score_{s}"][i] for s in strides],
                [out[f"box_{s}"][i] for s in strides],
                [out[f"kps_{s}"][i] for s in strides],
                strides,
                input_hw,
                GATE_SCORE_THRESHOLD,
                0.4,
            )
            dets.append(boxes)
        ref_total += len(dets[0])
        cand_total += len(dets[1])
        ref_hit += _matched(dets[0], dets[1])
        cand_hit += _matched(dets[1], dets[0])
    score_mae = float(np.mean([np.abs(ref[f"score_{s}"] - cand[f"score_{s}"]).mean() for s in strides]))
    metrics: dict[str, float] = {"detector_score_mae": score_mae, "detector_faces_fp32": float(ref_total),
                                 "detector_faces_quantized": float(cand_total)}
    if ref_total:
        metrics["detector_recall_proxy"] = ref_hit / ref_total
    if cand_total:
        metrics["detector_precision_proxy"] = cand_hit / cand_total
    return metrics


def gate(
    fp32_model: str | Path,
    int8_model: str | Path,
    eval_inputs: npt.NDArray[np.float32],
    thresholds: dict[str, tuple[str, float]] | None = None,
) -> dict[str, Any]:
    """Compare a quantized model's heads with its FP32 source on held-out real inputs (ONNX Runtime CPU).

    Thresholds default by the quantized model's precision (INT8_THRESHOLDS or FP16_THRESHOLDS). Metrics without
    a threshold are reported only; detector recall/precision proxies are skipped when no face is found.
    """
    meta_q = read_metadata(int8_model)
    meta_f = read_metadata(fp32_model)
    if meta_q.kind != meta_f.kind:
        raise InputError(f"gate: {fp32_model} is a {meta_f.kind}, {int8_model} is a {meta_q.kind}")
    if thresholds is None:
        thresholds = FP16_THRESHOLDS if meta_q.precision == "fp16" else INT8_THRESHOLDS
    x = np.asarray(eval_inputs, np.float32)
    ref = run_session(ort_cpu_session(fp32_model), x)
    cand = run_session(ort_cpu_session(int8_model), x)
    if meta_f.kind == "recognizer":
        values = recognizer_metrics(ref, cand)
    else:
        values = detector_metrics(ref, cand, meta_f, (x.shape[2], x.shape[3]))
    metrics: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        entry: dict[str, Any] = {"value": value}
        if name in thresholds:
            op, limit = thresholds[name]
            ok = bool(np.isfinite(value)) and (value >= limit if op == ">=" else value <= limit)
            entry.update({"threshold": f"{op} {limit}", "ok": ok})
        metrics[name] = entry
    failed = [n for n, e in metrics.items() if e.get("ok") is False]
    return {
        "passed": not failed,
        "failed": failed,
        "kind": meta_f.kind,
        "precision": meta_q.precision,
        "inputs": len(x),
        "metrics": metrics,
    }


def gate_margins(result: dict[str, Any]) -> list[float]:
    """Each gated metric's margin to its threshold, relative to the room the threshold leaves; worst first."""
    margins = []
    for e in result["metrics"].values():
        if "threshold" not in e:
            continue
        op, limit = e["threshold"].split()
        limit_f = float(limit)
        scale = max(abs(1.0 - limit_f), 1e-3) if op == ">=" else max(limit_f, 1e-3)
        margins.append((e["value"] - limit_f) / scale if op == ">=" else (limit_f - e["value"]) / scale)
    return sorted(float(m) for m in margins)


def gate_score(result: dict[str, Any]) -> float:
    """One number to rank candidate quantizations: the worst head's margin to its threshold, relative."""
    margins = gate_margins(result)
    return margins[0] if margins else 0.0


def gate_rank(result: dict[str, Any] | None) -> tuple[float, ...]:
    """Sort key (higher is better) of a candidate quantization: its margins worst first, so that candidates tied on
    the worst metric (gender agreement moves in steps of 1/128 and often ties) are told apart by the next one."""
    return tuple(gate_margins(result)) if result else (0.0,)


# ------------------------------------------------------------------ sensitivity
def layer_errors(
    fp32_model: str | Path, int8_model: str | Path, inputs: npt.NDArray[np.float32]
) -> list[dict[str, Any]]:
    """For each quantized Conv/Gemm/MatMul: the relative error (||q - f||^2 / ||f||^2) of its output in the INT8
    model, and how much it adds over its input's error. Largest additions first: the best exclusion candidates."""
    onnx = import_onnx()
    from onnx import helper

    q = load_model(int8_model)
    summary = qdq_summary(q)
    targets = {n.name: n for n in q.graph.node if n.name in set(summary["quantized_nodes"])}
    producers = {o: n for n in q.graph.node for o in n.output}

    def float_source(name: str) -> str:
        """Follow DQ <- Q back to the float tensor they quantize."""
        p = producers.get(name)
        while p is not None and p.op_type in ("DequantizeLinear", "QuantizeLinear"):
            name = p.input[0]
            p = producers.get(name)
        return name

    tensors: dict[str, tuple[str, str]] = {}
    for name, node in targets.items():
        tensors[name] = (float_source(node.input[0]), node.output[0])
    wanted = sorted({t for pair in tensors.values() for t in pair})
    with tempfile.TemporaryDirectory(prefix="edge-mtl-sens-") as tmpdir:
        results = []
        for path, tag in ((fp32_model, "f"), (int8_model, "q")):
            m = load_model(path)
            if tag == "f":
                pre = Path(tmpdir) / "pre.onnx"
                preprocess(Path(path), pre)  # same node and tensor names as the quantized graph
                m = load_model(pre)
            have = {o.name for o in m.graph.output}
            for t in wanted:
                if t not in have:
                    m.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
            p = Path(tmpdir) / f"{tag}.onnx"
            onnx.save(m, str(p))
            results.append(run_session(ort_cpu_session(p), inputs))
    ref, cand = results

    def nmse(t: str) -> float:
        if t not in ref or t not in cand:
            return 0.0
        f, g = ref[t].astype(np.float64), cand[t].astype(np.float64)
        return float(((g - f) ** 2).sum() / max((f**2).sum(), 1e-12))

    rows = []
    for name, (tin, tout) in tensors.items():
        e_in, e_out = nmse(tin), nmse(tout)
        rows.append({"node": name, "op": targets[name].op_type, "input_nmse": e_in, "output_nmse": e_out,
                     "added": e_out - e_in})
    return sorted(rows, key=lambda r: -r["added"])


# ------------------------------------------------------------------ a model file in, its variant out
@dataclass(frozen=True)
class QuantizeOptions:
    """One `edge-mtl quantize` run: an FP16 or INT8 (Q/DQ) variant of `model`, gated against it on real faces."""

    model: Path
    output: Path
    precision: str  # fp16 or int8
    calib: Path | None = None  # a .json calibration file or a .npy array (default: the recipe on `data`)
    data: Path | None = None  # default: $EDGE_MTL_DATA or ../shared/data
    no_gate: bool = False  # skip the accuracy gate
    detector: Path | None = None  # crops faces for recognizer calibration (default: the shipped detector)
    method: str = "minmax"  # minmax, entropy, percentile or auto
    layout: str = "shared"  # shared or tensorrt
    exclude: tuple[str, ...] = ()  # nodes kept in float
    auto_exclude: int = 0  # keep up to this many more of the most sensitive nodes in float until the gate passes
    save_calib: Path | None = None  # write the calibration ranges (JSON) here
def _default_detector() -> Path:
    from edge_mtl.paths import default_model

    return default_model("detector.onnx")


def _calibration_inputs(
    opts: QuantizeOptions, meta: ModelMetadata
) -> tuple[npt.NDArray[np.float32] | None, Path | None, dict[str, Any]]:
    """(array, calibration file, info) from --calib (.npy array or .json ranges) or the recipe on --data."""
    from edge_mtl.export_tools import calibration as cal

    calib = opts.calib
    if calib is not None:
        calib = Path(calib)
        if not calib.is_file():
            raise InputError(f"--calib {calib}: no such file (expected a .json calibration file or a .npy array)")
        if calib.suffix == ".json":
            return None, calib, {"calibration_file": str(calib)}
        if calib.suffix == ".npy":
            arr = np.load(calib, allow_pickle=False).astype(np.float32)
            return arr, None, {"calibration_array": str(calib), "inputs": len(arr)}
        raise InputError(f"--calib {calib}: expected a .json calibration file or a .npy array")
    if meta.kind == "recognizer":
        det = Path(opts.detector or _default_detector())
        if not det.is_file():
            raise InputError(f"recognizer calibration needs the detector to crop faces: {det} not found (--detector)")
        cs = cal.recognizer_calibration(det, meta, data=opts.data)
    else:
        cs = cal.detector_calibration(meta, data=opts.data)
    return cs.inputs, None, {"recipe": "calib/README.md", **cs.info, "images": cs.manifest}


def _eval_inputs(opts: QuantizeOptions, meta: ModelMetadata) -> npt.NDArray[np.float32]:
    from edge_mtl.export_tools import calibration as cal

    if meta.kind == "recognizer":
        det = Path(opts.detector or _default_detector())
        if not det.is_file():
            raise InputError(f"the recognizer gate needs the detector to crop faces: {det} not found (--detector)")
        return cal.recognizer_eval_set(det, meta, data=opts.data).inputs
    return cal.detector_eval_set(meta, data=opts.data).inputs


def quantize_with_gate(
    src: str | Path,
    dst: str | Path,
    calibration: npt.NDArray[np.float32] | None,
    eval_inputs: npt.NDArray[np.float32] | None,
    *,
    method: str = "minmax",
    layout: str = "shared",
    exclude_nodes: Sequence[str] = (),
    auto_exclude: int = 0,
    calibration_file: Path | None = None,
    save_calibration: str | Path | None = None,
    calibration_info: dict[str, Any] | None = None,
    thresholds: dict[str, tuple[str, float]] | None = None,
) -> dict[str, Any]:
    """Quantize, gate, and (optionally) keep the most sensitive nodes in float until the gate passes.

    `method="auto"` quantizes with each calibration method and keeps the best-scoring one on `eval_inputs`.
    Raises GateError when the final model fails the gate (the output is then removed).
    """
    src, dst = Path(src), Path(dst)
    save_calibration = Path(save_calibration) if save_calibration is not None else None
    methods = list(METHODS) if method == "auto" else [method]
    if method == "auto" and (eval_inputs is None or calibration_file is not None):
        raise InputError("calibration method 'auto' needs calibration data and held-out inputs (the gate)")
    excluded = list(exclude_nodes)
    with tempfile.TemporaryDirectory(prefix="edge-mtl-q-") as tmpdir:
        candidates = []
        for m in methods:
            out = Path(tmpdir) / f"{m}.onnx"
            cal_out = Path(tmpdir) / f"{m}.json"
            rep = quantize_int8(src, out, calibration, exclude_nodes=excluded, method=m, layout=layout,
                                calibration_file=calibration_file, save_calibration=cal_out,
                                calibration_info=calibration_info)
            g = gate(src, out, eval_inputs, thresholds) if eval_inputs is not None else None
            score = gate_score(g) if g else 0.0
            candidates.append((score, m, out, cal_out, rep, g))
            if g:
                log.info("int8 %s: gate %s (score %.3f)", m, "passed" if g["passed"] else "failed", score)
        candidates.sort(key=lambda c: gate_rank(c[5]), reverse=True)  # stable: ties keep the order of `methods`
        _, best_method, best_out, best_cal, report, result = candidates[0]
        comparison = {c[1]: {"score": c[0], "passed": c[5]["passed"] if c[5] else None,
                             "metrics": {k: v["value"] for k, v in (c[5] or {"metrics": {}})["metrics"].items()}}
                      for c in candidates}
        steps = []
        while result is not None and not result["passed"] and len(excluded) - len(exclude_nodes) < auto_exclude:
            ranking = layer_errors(src, best_out, eval_inputs[:16] if eval_inputs is not None else calibration[:16])  # type: ignore[index]
            pick = next((r for r in ranking if r["node"] not in excluded), None)
            if pick is None:
                break
            excluded.append(pick["node"])
            report = quantize_int8(src, best_out, calibration, exclude_nodes=excluded, method=best_method,
                                   layout=layout, calibration_file=best_cal if calibration_file is None else
                                   calibration_file, calibration_info=calibration_info)
            result = gate(src, best_out, eval_inputs, thresholds)  # type: ignore[arg-type]
            steps.append({"excluded": pick["node"], "added_nmse": pick["added"], "passed": result["passed"],
                          "score": gate_score(result)})
            log.info("int8: keeping %s in float -> gate %s", pick["node"], "passed" if result["passed"] else "failed")
        report["excluded"] = excluded  # (its "method" is the one the ranges were made with, from quantize_int8)
        if len(methods) > 1:
            report["method_comparison"] = comparison
        if steps:
            report["sensitivity_steps"] = steps
        report["gate"] = result
        if result is not None and not result["passed"]:
            raise GateError(
                f"INT8 gate failed for {src.name}: "
                + ", ".join(f"{n} = {result['metrics'][n]['value']:.4g} (need {result['metrics'][n]['threshold']})"
                            for n in result["failed"])
                + "; keep sensitive nodes in float (--exclude NODE, --auto-exclude N) or use --precision fp16",
                report,
            )
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(best_out, dst)
        report["output"] = str(dst)
        if save_calibration is not None:
            save_calibration.parent.mkdir(parents=True, exist_ok=True)
            os.replace(best_cal, save_calibration)
            report["calibration_file"] = str(save_calibration)
    return report


def quantize_model(opts: QuantizeOptions) -> dict[str, Any]:
    """The FP16 or INT8 variant of a model, gated (GateError when it fails); returns the report."""
    src, dst = Path(opts.model), Path(opts.output)
    meta = read_metadata(src)
    no_gate = opts.no_gate
    exclude = list(opts.exclude)
    if opts.precision == "fp16":
        from edge_mtl.export_tools.fp16 import to_fp16

        report = to_fp16(src, dst, exclude_nodes=exclude)
        if not no_gate:
            result = gate(src, dst, _eval_inputs(opts, meta))
            report["gate"] = result
            if not result["passed"]:
                dst.unlink(missing_ok=True)
                raise GateError(f"FP16 gate failed for {src.name}: {result['failed']}", report)
        return report
    if opts.precision != "int8":
        raise InputError(f"--precision must be fp16 or int8, got {opts.precision!r}")
    calibration, calib_file, info = _calibration_inputs(opts, meta)
    eval_inputs = None if no_gate else _eval_inputs(opts, meta)
    return quantize_with_gate(
        src,
        dst,
        calibration,
        eval_inputs,
        method=opts.method,
        layout=opts.layout,
        exclude_nodes=exclude,
        auto_exclude=opts.auto_exclude,
        calibration_file=calib_file,
        save_calibration=opts.save_calib,
        calibration_info=info,
    )
