"""The project's PyTorch modules with the weights of a shipped ONNX file, for the torch backend without a checkpoint.

The torch backend (`edge_mtl.runtime.torch_engine.TorchEngine`) runs the model classes of `edge_mtl.models` in their
export wrappers; `edge_mtl.models.torch_backend` builds them from a training checkpoint (.pt). Checkpoints stay on
the machine that trained them, while the ONNX files in export/ travel with the code. This module rebuilds the same
deploy module from an ONNX file alone: the architecture from the file's metadata (`edge_mtl.args`), the weights
from its initializers.

The exporter keeps the names of parameters it does not fold (`model.heads.age.0.weight`) and gives folded ones
generated names (a Conv2d followed by BatchNorm becomes one Conv with bias, `onnx::Conv_511`). So:

1. initializers named like a state-dict entry are copied by name;
2. the remaining Conv, Gemm and MatMul nodes, in graph order, are paired with the Conv2d and Linear calls of one
   forward pass, in call order (forward hooks). The TorchScript exporter writes nodes in call order, and the pairs
   are checked by shape, so a mismatch is an error, not a silent misload;
3. a folded convolution goes into the module's Conv2d, and its bias into the BatchNorm that consumes the conv's
   output, set to the identity plus that bias (weight 1, mean 0, variance 1 - eps).

`load_torch_module` then runs both on the same inputs and refuses the result unless it matches ONNX Runtime within
`EXPORT_TOLERANCES` (the tolerances `edge-mtl export` holds the ONNX file to).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_mtl.errors import EdgeMtlError, ModelError
from edge_mtl.export_tools.onnx_utils import load_model, metadata_of, ort_cpu_session, run_session
from edge_mtl.export_tools.parity import EXPORT_TOLERANCES, compare_heads, describe_failure, merge_reports
from edge_mtl.runtime.engine import ModelMetadata

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


class WeightLoadError(EdgeMtlError):
    """The ONNX file's weights do not fit the module its metadata describes."""


def _init_arrays(model: Any) -> dict[str, np.ndarray[Any, Any]]:
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:  # constants written as nodes count as initializers, and so do their aliases
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
        elif n.op_type == "Identity" and n.input[0] in out:  # a shared layer's weights on its 2nd and 3rd call
            out[n.output[0]] = out[n.input[0]]
    return out


def _dummy_input(meta: ModelMetadata) -> Any:
    import torch

    if meta.kind == "detector":
        return torch.zeros(1, 3, 256, 320)
    return torch.zeros(2, 3, meta.input_size, meta.input_size)


def _calls(module: nn.Module, meta: ModelMetadata) -> list[tuple[str, nn.Module, str | None]]:
    """(kind, module, consuming BatchNorm's name) for every Conv2d / Linear call of one forward pass, in order."""
    import torch
    from torch import nn

    names = {id(m): n for n, m in module.named_modules()}
    order: list[tuple[str, nn.Module, Any]] = []
    bn_inputs: dict[int, str] = {}
    hooks = []

    def on_call(m: nn.Module, inp: tuple[Any, ...], out: Any) -> None:
        if isinstance(m, nn.Conv2d | nn.Linear):
            order.append(("conv" if isinstance(m, nn.Conv2d) else "linear", m, out))
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            bn_inputs[id(inp[0])] = names[id(m)]

    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear | nn.BatchNorm1d | nn.BatchNorm2d):
            hooks.append(m.register_forward_hook(on_call))
    try:
        with torch.no_grad():
            module(_dummy_input(meta))
    finally:
        for h in hooks:
            h.remove()
    return [(k, m, bn_inputs.get(id(out))) for k, m, out in order]


def build_deploy_module(meta: ModelMetadata) -> nn.Module:
    """The untrained deploy module (export wrapper, RepVGG fused) the metadata's `args` describe."""
    from edge_mtl.export_tools.export import build_model, deploy_module

    if meta.kind not in ("detector", "recognizer", "landmarks"):
        raise ModelError(f"unknown model kind {meta.kind!r}")
    return deploy_module(build_model(meta.kind, meta.args), meta.kind)


def torch_module_from_onnx(path: str | Path) -> tuple[nn.Module, ModelMetadata]:
    """The deploy module of `path`'s kind and args carrying `path`'s weights (eval mode, CPU, float32)."""
    import torch

    path = Path(path)
    model = load_model(path)
    meta = metadata_of(model, str(path))
    if meta.precision != "fp32":
        raise ModelError(f"{path}: the torch backend takes the FP32 file, this one is {meta.precision}")
    module = build_deploy_module(meta)
    state = module.state_dict()
    arrays = _init_arrays(model)
    assigned: dict[str, np.ndarray[Any, Any]] = {}

    def put(key: str, value: np.ndarray[Any, Any]) -> None:
        if key not in state:
            raise WeightLoadError(f"{path}: module has no parameter {key}")
        if tuple(state[key].shape) != tuple(value.shape):
            raise WeightLoadError(f"{path}: {key} is {list(state[key].shape)} in the module, "
                                  f"{list(value.shape)} in the file")
        if key in assigned and not np.array_equal(assigned[key], value):
            raise WeightLoadError(f"{path}: {key} is called twice with different weights in the file")
        assigned[key] = value
        state[key] = torch.from_numpy(np.array(value, np.float32))

    for name, value in arrays.items():
        if name in state:
            put(name, value)
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    calls = _calls(module, meta)
    if len(nodes) != len(calls):
        raise WeightLoadError(f"{path}: {len(nodes)} Conv/Gemm/MatMul nodes in the file, "
                              f"{len(calls)} Conv2d/Linear calls in the {meta.kind} module")
    prefix = {id(m): n for n, m in module.named_modules()}
    for node, (kind, mod, bn) in zip(nodes, calls, strict=True):
        mname = prefix[id(mod)]
        w_name = node.input[1]
        if f"{mname}.weight" == w_name:
            continue  # copied by name above (its bias too)
        if w_name not in arrays:
            raise WeightLoadError(f"{path}: node {node.name} takes its weight from a computed tensor {w_name}")
        w = arrays[w_name]
        b = arrays.get(node.input[2]) if len(node.input) > 2 else None
        if (kind == "conv") != (node.op_type == "Conv"):
            raise WeightLoadError(f"{path}: node {node.name} ({node.op_type}) meets {mname} ({kind}) in call order")
        transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        if kind == "linear" and not transposed:  # MatMul and Gemm without transB hold in x out
            w = w.T
        put(f"{mname}.weight", w)
        if b is None:
            continue
        if f"{mname}.bias" in state:
            put(f"{mname}.bias", b)
        elif bn is not None:  # folded BatchNorm: identity plus the folded bias
            eps = float(dict(module.named_modules())[bn].eps)
            put(f"{bn}.weight", np.ones_like(b))
            put(f"{bn}.bias", b)
            put(f"{bn}.running_mean", np.zeros_like(b))
            put(f"{bn}.running_var", np.full_like(b, 1.0 - eps))
        else:
            raise WeightLoadError(f"{path}: node {node.name} has a bias but {mname} has neither bias nor BatchNorm")
    trainable = {k for k, v in state.items() if v.is_floating_point()}
    missing = sorted(trainable - set(assigned))
    if missing:
        raise WeightLoadError(f"{path}: no weights in the file for {missing[:4]} ({len(missing)} tensors)")
    module.load_state_dict(state)
    return module.eval(), meta


def check_against_onnx(
    module: nn.Module, path: str | Path, meta: ModelMetadata, inputs: list[np.ndarray[Any, Any]]
) -> dict[str, dict[str, Any]]:
    """Per-head comparison of the module (torch, CPU, FP32) with ONNX Runtime on `path`; raises on a mismatch."""
    from edge_mtl.export_tools.export import torch_outputs

    sess = ort_cpu_session(path)
    reports = [compare_heads(run_session(sess, x), torch_outputs(module, meta.output_names, x), EXPORT_TOLERANCES)
               for x in inputs]
    merged = merge_reports(reports)
    bad = describe_failure(merged)
    if bad:
        raise WeightLoadError(f"{path}: torch module with the file's weights disagrees with ONNX Runtime: {bad}")
    return merged


def load_torch_module(path: str | Path) -> tuple[nn.Module, ModelMetadata, dict[str, dict[str, Any]]]:
    """`torch_module_from_onnx` checked against ONNX Runtime on the export parity check's random inputs."""
    from edge_mtl.export_tools.export import random_inputs

    module, meta = torch_module_from_onnx(path)
    report = check_against_onnx(module, path, meta, random_inputs(meta.kind, meta))
    log.info("%s: torch module loaded from the ONNX weights (max |diff| vs ONNX Runtime %.2g)", Path(path).name,
             max((e["max_abs"] for e in report.values()), default=0.0))
    return module, meta, report
