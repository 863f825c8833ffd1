"""FP32 ONNX -> FP16 ONNX with numerically sensitive operations kept in FP32 (docs/acceleration.md).

TensorRT 10.12 deprecated (and 11 removed) the FP16 builder flag: networks are strongly typed, so the FP16 engine
is whatever the ONNX says. This pass decides each node's precision and writes exactly that into the graph:

- FP16: the compute-heavy, well-conditioned ops: Conv, Gemm, MatMul, pooling, ReduceMean/Max/Min (averages and
  extrema of bounded activations), Resize, and pointwise activations (Relu, Sigmoid, Softplus, ...).
- FP32: ops that sum many terms, exponentiate or divide, where FP16's 65504 ceiling or 3 significant digits bite:
  Softmax/LogSoftmax (gender probabilities, age distribution), ReduceSum/ReduceL2/ReduceSumSquare/ReduceProd/
  ReduceLogSum(Exp) (the age expectation and variance sum up to 100^2-scaled terms; the embedding's L2 norm
  squares and sums 128 values that can overflow 65504), Exp/Log/Pow/Sqrt/Reciprocal/Div (the L2 division, the age
  std), Range (the 0..100 years vector must be exact), and normalisation layers (BatchNormalization left after a
  Linear has tiny variances that FP16 rounds to subnormals; Layer/Instance/Group/Lp normalisation).
- Elementwise and data-movement ops (Add, Mul, Sub, Clip, Reshape, Transpose, Concat, Gather, ...) follow their
  inputs: FP32 if any non-constant float input is FP32, else FP16. So a readout tail that starts at a Softmax
  stays FP32 to the output, while residual Adds inside the backbone stay FP16.
- Unknown ops are kept FP32 (safe default) and logged.

Inputs and outputs stay FP32 (keep_io_types) so every runtime feeds and reads float32; Casts are inserted only at
precision boundaries, each tensor cast at most once per direction. Constant inputs (weights, Constant nodes) are
stored in the precision of the node that consumes them (duplicated when consumers disagree). Written by this
project instead of onnxconverter-common so the policy above is explicit and tested.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge_mtl.errors import ModelError
from edge_mtl.export_tools.onnx_utils import (
    import_onnx,
    load_model,
    metadata_of,
    ort_cpu_session,
    run_session,
    save_model_atomic,
    set_metadata,
)
from edge_mtl.export_tools.parity import FP16_TOLERANCES, Tolerance, compare_heads, describe_failure, merge_reports

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

FP32_OPS = frozenset(
    {
        "Softmax",
        "LogSoftmax",
        "Hardmax",
        "ReduceSum",
        "ReduceL1",
        "ReduceL2",
        "ReduceSumSquare",
        "ReduceProd",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "CumSum",
        "Exp",
        "Log",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Div",
        "Range",
        "BatchNormalization",
        "LayerNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "LpNormalization",
        "MeanVarianceNormalization",
        "Erf",
        "TopK",
        "NonMaxSuppression",
        "RoiAlign",
        "Einsum",
    }
)
FP16_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "Resize",
        "Upsample",
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Elu",
        "Selu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Softplus",
        "Softsign",
        "Tanh",
        "Mish",
        "Gelu",
    }
)
FOLLOW_OPS = frozenset(
    {
        "Add",
        "Sub",
        "Mul",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Neg",
        "Abs",
        "Clip",
        "Where",
        "Reshape",
        "Flatten",
        "Transpose",
        "Concat",
        "Split",
        "Slice",
        "Gather",
        "GatherElements",
        "GatherND",
        "Unsqueeze",
        "Squeeze",
        "Identity",
        "Expand",
        "Tile",
        "Pad",
        "DepthToSpace",
        "SpaceToDepth",
        "Equal",
        "Less",
        "Greater",
        "LessOrEqual",
        "GreaterOrEqual",
        "Not",
        "And",
        "Or",
        "Dropout",
    }
)
# Ops whose float inputs are read for their shape or converted anyway: never cast around them.
NEUTRAL_OPS = frozenset({"Shape", "Size", "Cast", "CastLike", "ConstantOfShape", "NonZero", "EyeLike"})
# Float inputs whose type the ONNX spec fixes independently of the data type (Resize roi/scales, Upsample scales).
FIXED_INPUTS: dict[str, frozenset[int]] = {"Resize": frozenset({1, 2}), "Upsample": frozenset({1})}
FP16_MAX = 65504.0


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Constant nodes holding a tensor become initializers, so they are converted like weights."""
    keep = []
    for node in graph.node:
        value = [a for a in node.attribute if a.name == "value"] if node.op_type == "Constant" else []
        if value and not node.domain:
            t = graph.initializer.add()
            t.CopyFrom(value[0].t)
            t.name = node.output[0]
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _fold_constant_identities(graph: onnx.GraphProto) -> None:
    """Identity nodes over initializers (the TorchScript exporter's way of sharing a weight, e.g. the detector's
    head shared across levels) are replaced by the initializer, so shared weights are converted like any other."""
    inits = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and not node.domain and node.input[0] in inits and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    for node in keep:
        for i, nm in enumerate(node.input):
            if nm in alias:
                node.input[i] = alias[nm]
    del graph.node[:]
    graph.node.extend(keep)


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    onnx = import_onnx()
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    g = inferred.graph
    f32 = onnx.TensorProto.FLOAT
    names = {vi.name for vi in [*g.input, *g.output, *g.value_info] if vi.type.tensor_type.elem_type == f32}
    names |= {t.name for t in g.initializer if t.data_type == f32}
    return names


def convert_fp16_model(
    model: onnx.ModelProto, exclude_nodes: tuple[str, ...] | list[str] = ()
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The FP16 graph (a new ModelProto) and a summary of what ran in which precision."""
    onnx = import_onnx()
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        raise ModelError("fp16: graphs with control flow (If/Loop/Scan subgraphs) are not supported")
    _constants_to_initializers(g)
    _fold_constant_identities(g)
    is_float = _float_tensors(m)
    F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    inits = {t.name: t for t in g.initializer}
    dtype: dict[str, int] = {vi.name: F32 for vi in g.input if vi.name in is_float}
    excluded = set(exclude_nodes)
    fp16_inits: dict[str, str] = {}
    new_inits: list[Any] = []
    casts: dict[tuple[str, int], str] = {}
    nodes: list[Any] = []
    counts: dict[str, Counter[str]] = {"fp16": Counter(), "fp32": Counter()}
    stats = {"clamped_weights": 0, "underflow_weights": 0}
    unknown: set[str] = set()

    def fp16_initializer(name: str) -> str:
        if name not in fp16_inits:
            arr = numpy_helper.to_array(inits[name]).astype(np.float32)
            over = np.abs(arr) > FP16_MAX
            stats["clamped_weights"] += int(over.sum())
            half = np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)
            stats["underflow_weights"] += int(((half == 0) & (arr != 0)).sum())
            t = numpy_helper.from_array(half, name + "__fp16")
            new_inits.append(t)
            fp16_inits[name] = t.name
        return fp16_inits[name]

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            out = f"{name}__to_{'fp16' if to == F16 else 'fp32'}"
            nodes.append(helper.make_node("Cast", [name], [out], name=out, to=to))
            casts[key] = out
        return casts[key]

    for node in g.node:
        op = node.op_type
        float_in = [i for i, nm in enumerate(node.input) if nm and nm in is_float]
        float_out = [nm for nm in node.output if nm and nm in is_float]
        custom = node.domain not in ("", "ai.onnx")
        if op in NEUTRAL_OPS or custom:
            if custom:  # ops of other domains get FP32 inputs, as in the source graph
                unknown.add(f"{node.domain}::{op}")
                for i in float_in:
                    nm = node.input[i]
                    if nm not in inits and dtype.get(nm, F32) != F32:
                        node.input[i] = cast(nm, F32)
            for nm in float_out:
                dtype[nm] = F32
            nodes.append(node)
            continue
        fixed = FIXED_INPUTS.get(op, frozenset())
        if node.name in excluded or op in FP32_OPS:
            prec = F32
        elif op in FP16_OPS:
            prec = F16
        elif op in FOLLOW_OPS:
            dyn = [dtype.get(node.input[i], F32) for i in float_in if node.input[i] not in inits and i not in fixed]
            prec = F16 if dyn and all(d == F16 for d in dyn) else F32
        else:
            unknown.add(op)
            prec = F32
        for i in float_in:
            if i in fixed:
                continue
            nm = node.input[i]
            if nm in inits:
                if prec == F16:
                    node.input[i] = fp16_initializer(nm)
            elif dtype.get(nm, F32) != prec:
                node.input[i] = cast(nm, prec)
        for nm in float_out:
            dtype[nm] = prec
        if float_in or float_out:
            counts["fp16" if prec == F16 else "fp32"][op] += 1
        nodes.append(node)

    # Graph outputs stay FP32: an FP16 producer gets its output renamed and a Cast back to the public name.
    for out in g.output:
        if out.name in is_float and dtype.get(out.name) == F16:
            inner = out.name + "__fp16"
            for n in nodes:
                for seq in (n.input, n.output):
                    for i, nm in enumerate(seq):
                        if nm == out.name:
                            seq[i] = inner
            nodes.append(helper.make_node("Cast", [inner], [out.name], name=out.name + "__to_fp32", to=F32))
            casts[(inner, F32)] = out.name

    del g.node[:]
    g.node.extend(nodes)
    used = {nm for n in nodes for nm in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept + [t for t in new_inits if t.name in used])
    del g.value_info[:]
    if unknown:
        log.warning("fp16: ops kept in FP32 because this pass does not know them: %s", ", ".join(sorted(unknown)))
    if stats["clamped_weights"]:
        log.warning("fp16: %d weights exceeded the FP16 range and were clamped", stats["clamped_weights"])
    summary = {
        "fp16_ops": dict(sorted(counts["fp16"].items())),
        "fp32_ops": dict(sorted(counts["fp32"].items())),
        "casts": len(casts),
        "unknown_ops": sorted(unknown),
        "excluded_nodes": sorted(excluded),
        **stats,
    }
    return m, summary


def to_fp16(
    src: str | Path,
    dst: str | Path,
    *,
    exclude_nodes: tuple[str, ...] | list[str] = (),
    check: bool = True,
    inputs: list[npt.NDArray[np.float32]] | None = None,
    tolerances: dict[str, Tolerance] | None = None,
) -> dict[str, Any]:
    """Write the FP16 variant of `src` to `dst` (metadata precision "fp16") and report parity vs FP32.

    Parity runs both models in ONNX Runtime on the CPU on random inputs plus `inputs` (real preprocessed batches)
    if given; a head outside FP16_TOLERANCES raises ParityError. Caveat: ONNX Runtime's CPU provider runs FP16 ops
    it has no kernel for in FP32 and removes the casts around them, so this measures the effect of FP16 weights
    and of the FP16 tensors it does keep, not FP16 arithmetic everywhere; TensorRT computes every FP16 op in FP16,
    which is why the sensitive ops are typed FP32 in the graph (see the module docstring) rather than trusted to
    the parity numbers.
    """
    from edge_mtl.export_tools.export import ParityError, random_inputs

    onnx = import_onnx()
    src, dst = Path(src), Path(dst)
    model = load_model(src)
    meta = metadata_of(model, str(src))
    if meta.precision != "fp32":
        raise ModelError(f"{src}: FP16 conversion needs an FP32 model, this one is {meta.precision}")
    fp16, summary = convert_fp16_model(model, exclude_nodes)
    # FP16 keeps the FP32 model's measured identity thresholds (as a TensorRT FP16 engine built from the FP32 file
    # does): its outputs stay within FP16_TOLERANCES of FP32's (checked below); the source says so.
    src_note = f"{meta.operating_points_source} (measured in fp32)" if meta.operating_points else ""
    set_metadata(fp16, dataclasses.replace(meta, precision="fp16", operating_points_source=src_note))
    try:
        fp16 = onnx.shape_inference.infer_shapes(fp16, check_type=True, strict_mode=True)
        onnx.checker.check_model(fp16, full_check=True)
    except Exception as e:
        raise ModelError(f"fp16 conversion of {src} produced an invalid graph: {str(e)[:300]}") from None
    save_model_atomic(fp16, dst)
    report: dict[str, Any] = {"output": str(dst), "precision": "fp16", "bytes": dst.stat().st_size, **summary}
    if check:
        sets = random_inputs(meta.kind, meta) + list(inputs or [])
        ref_sess, new_sess = ort_cpu_session(src), ort_cpu_session(dst)
        reports = [
            compare_heads(run_session(ref_sess, x), run_session(new_sess, x), tolerances or FP16_TOLERANCES)
            for x in sets
        ]
        report["parity"] = merge_reports(reports)
        report["parity_inputs"] = ["x".join(str(d) for d in x.shape) for x in sets]
        bad = describe_failure(report["parity"])
        if bad:
            dst.unlink(missing_ok=True)
            raise ParityError(f"fp16 parity vs fp32 failed for {src.name}: {bad}")
    log.info("fp16: %s -> %s (%d casts, fp32 ops %s)", src.name, dst, summary["casts"], summary["fp32_ops"])
    return report
