"""Checkpoint -> ONNX with metadata, structural check and a per-head parity check against PyTorch (adding a model:
docs/architecture.md).

The exported graph is the deploy form: RepVGG branches fused into single 3x3 convolutions, BatchNorm folded by the
exporter's constant folding, heads read out (unit-norm embedding, age years and std, gender and quality
probabilities; detector scores as probabilities). Batch is dynamic for both models, height and width too for the
detector. We use the TorchScript exporter (`dynamo=False`): it needs no extra dependency (the dynamo exporter needs
onnxscript), and its opset-17 graphs load in ONNX Runtime 1.17+ and TensorRT 10.x/11.x.

Parity compares ONNX Runtime (CPU) with the *unfused* PyTorch model in eval mode, so one check covers both the
re-parameterisation and the export, on random inputs and, when given, on real preprocessed faces or frames.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge_mtl.errors import EdgeMtlError, InputError, ModelError
from edge_mtl.export_tools.onnx_utils import (
    file_sha256,
    import_onnx,
    ort_cpu_session,
    run_session,
    save_model_atomic,
    set_metadata,
)
from edge_mtl.export_tools.parity import EXPORT_TOLERANCES, Tolerance, compare_heads, describe_failure, merge_reports
from edge_mtl.models.metadata import detector_metadata, landmarks_metadata, recognizer_metadata
from edge_mtl.runtime.engine import ModelMetadata

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

OPSET = 17
KINDS = ("detector", "recognizer", "landmarks")
# MACs are reported at the detector's typical frame (480 x 640 letterboxed) and at the recognizer's crop size.
DETECTOR_MACS_HW = (480, 640)


class ParityError(EdgeMtlError):
    """The exported model disagrees with PyTorch beyond the stated tolerances (exit code 1: a bug, not input)."""


# ------------------------------------------------------------------ model construction
def build_model(kind: str, args: dict[str, Any]) -> nn.Module:
    """An untrained Detector or Recognizer from its args dict (as stored in checkpoints and metadata)."""
    if kind == "detector":
        from edge_mtl.models.detector import Detector, DetectorArgs

        return Detector(DetectorArgs.from_dict(dict(args)))
    if kind == "recognizer":
        from edge_mtl.models.recognizer import Recognizer, RecognizerArgs

        return Recognizer(RecognizerArgs.from_dict(dict(args)))
    if kind == "landmarks":
        from edge_mtl.models.landmarks import LandmarkArgs, LandmarkRefiner

        return LandmarkRefiner(LandmarkArgs.from_dict(dict(args)))
    raise InputError(f"unknown model kind {kind!r}; expected one of {KINDS}")


def deploy_module(model: nn.Module, kind: str, fuse: bool = True) -> nn.Module:
    """An eval-mode CPU copy in its export wrapper (recognizer: RepVGG fused unless `fuse` is False).

    Accepts the bare model or an export wrapper; the caller's (training) model is never modified.
    """
    from edge_mtl.models.blocks import fuse_repvgg
    from edge_mtl.models.detector import DetectorExport
    from edge_mtl.models.landmarks import LandmarkExport
    from edge_mtl.models.recognizer import RecognizerExport

    wrappers = DetectorExport | RecognizerExport | LandmarkExport
    inner = getattr(model, "model", model) if isinstance(model, wrappers) else model
    m = copy.deepcopy(inner).cpu().eval()
    if kind == "landmarks":
        return LandmarkExport(m).eval()  # type: ignore[arg-type]
    if kind == "recognizer":
        if fuse:
            fuse_repvgg(m)
        return RecognizerExport(m).eval()  # type: ignore[arg-type]
    return DetectorExport(m).eval()  # type: ignore[arg-type]


def parse_compatible(items: Sequence[str]) -> dict[str, float]:
    """`VERSION[:MARGIN]` items -> {version: margin} in the given order (margin 0 when not given)."""
    out: dict[str, float] = {}
    for item in items:
        version, sep, tail = item.rpartition(":")
        try:
            margin = float(tail) if sep else 0.0
        except ValueError:
            margin = -1.0
        version = version if sep else item
        if not version or not 0.0 <= margin < 1.0:
            raise InputError(f"--compatible-with {item!r}: expected VERSION or VERSION:MARGIN (0 <= margin < 1)")
        out.setdefault(version, margin)
    return out


def model_metadata(
    kind: str, args: dict[str, Any], version: str = "dev", provenance: str = "", precision: str = "fp32"
) -> ModelMetadata:
    args = json.loads(json.dumps(args))  # tuples -> lists, as they will read back
    if kind == "detector":
        return detector_metadata(args, version=version, provenance=provenance, precision=precision)
    if kind == "landmarks":
        return landmarks_metadata(args, version=version, provenance=provenance, precision=precision)
    return recognizer_metadata(args, version=version, provenance=provenance, precision=precision)


def _input_hw(kind: str, meta: ModelMetadata) -> tuple[int, int]:
    return DETECTOR_MACS_HW if kind == "detector" else (meta.input_size, meta.input_size)


def random_inputs(kind: str, meta: ModelMetadata, seed: int = 0) -> list[npt.NDArray[np.float32]]:
    """Inputs in the normalised range ([-1, 1]); batch sizes and (detector) shapes differ from the export dummy,
    so the parity check also proves that the dynamic axes work."""
    rng = np.random.default_rng(seed)
    if kind in ("recognizer", "landmarks"):
        s = meta.input_size
        return [rng.uniform(-1, 1, (3, 3, s, s)).astype(np.float32)]
    return [
        rng.uniform(-1, 1, (3, 3, 160, 224)).astype(np.float32),
        rng.uniform(-1, 1, (1, 3, 320, 256)).astype(np.float32),
    ]


def torch_outputs(module: nn.Module, names: Sequence[str], batch: npt.NDArray[np.float32]) -> dict[str, Any]:
    import torch

    with torch.no_grad():
        outs = module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
    return {n: o.numpy().astype(np.float32) for n, o in zip(names, outs, strict=True)}


# ------------------------------------------------------------------ export
def _torch_export(module: nn.Module, kind: str, meta: ModelMetadata, path: Path, opset: int) -> None:
    import torch

    names = list(meta.output_names)
    if kind in ("recognizer", "landmarks"):
        s = meta.input_size
        dummy = torch.randn(2, 3, s, s)
        axes: dict[str, dict[int, str]] = {"input": {0: "batch"}}
        axes.update({n: {0: "batch"} for n in names})
    else:
        dummy = torch.randn(2, 3, 256, 320)
        axes = {"input": {0: "batch", 2: "height", 3: "width"}}
        axes.update({n: {0: "batch", 1: f"anchors_{n.split('_')[1]}"} for n in names})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; we chose it on purpose
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=[meta.input_name],
            output_names=names,
            opset_version=opset,
            dynamic_axes=axes,
            do_constant_folding=True,
            dynamo=False,
        )


def _parity(
    reference: nn.Module,
    onnx_path: Path,
    meta: ModelMetadata,
    input_sets: list[tuple[str, npt.NDArray[np.float32]]],
    tolerances: dict[str, Tolerance],
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    sess = ort_cpu_session(onnx_path)
    reports, used = [], []
    for label, batch in input_sets:
        ref = torch_outputs(reference, meta.output_names, batch)
        got = run_session(sess, batch)
        reports.append(compare_heads(ref, got, tolerances))
        used.append(f"{label}:{'x'.join(str(d) for d in batch.shape)}")
    return merge_reports(reports), used


def export_module(
    model: nn.Module,
    kind: str,
    args_dict: dict[str, Any],
    output: str | Path,
    *,
    version: str = "dev",
    provenance: str = "",
    check: bool = True,
    real_inputs: npt.NDArray[np.float32] | None = None,
    compatible: Sequence[str] = (),
    opset: int = OPSET,
    tolerances: dict[str, Tolerance] | None = None,
) -> dict[str, Any]:
    """Export an in-memory Detector or Recognizer (training code calls this directly; no checkpoint needed).

    Writes `output` only when the checker and (if `check`) the parity check pass; raises ParityError otherwise.
    `real_inputs` are preprocessed N x 3 x H x W float32 arrays (faces for the recognizer, equal-size letterboxed
    frames for the detector) checked in addition to random inputs.
    """
    import torch

    onnx = import_onnx()
    if kind not in KINDS:
        raise InputError(f"unknown model kind {kind!r}; expected one of {KINDS}")
    output = Path(output)
    meta = model_metadata(kind, args_dict, version=version, provenance=provenance)
    if compatible:
        declared = parse_compatible(compatible)
        if kind != "recognizer" or version in declared:
            raise InputError("--compatible-with: names earlier recognizer versions (not this model's own)")
        meta = dataclasses.replace(meta, compatible=declared)
    deploy = deploy_module(model, kind, fuse=True)
    n_params = sum(int(p.numel()) for p in deploy.parameters())
    from edge_mtl.models.blocks import count_macs

    hw = _input_hw(kind, meta)
    macs = count_macs(deploy, (3, *hw))
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            _torch_export(deploy, kind, meta, tmp, opset)
        proto = onnx.load(str(tmp))
        proto.producer_name = "edge-mtl"
        from edge_mtl import __version__

        proto.producer_version = __version__
        proto.doc_string = f"edge-mtl {kind} {version}"
        set_metadata(proto, meta)
        save_model_atomic(proto, tmp)
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as e:
            raise ModelError(f"exported {kind} fails the ONNX checker: {e}") from None
        parity: dict[str, dict[str, Any]] = {}
        used: list[str] = []
        if check:
            sets: list[tuple[str, npt.NDArray[np.float32]]] = [
                ("random", x) for x in random_inputs(kind, meta)
            ]
            if real_inputs is not None and len(real_inputs):
                sets.append(("real", np.asarray(real_inputs, np.float32)))
            reference = deploy_module(model, kind, fuse=False)
            parity, used = _parity(reference, tmp, meta, sets, tolerances or EXPORT_TOLERANCES)
            bad = describe_failure(parity)
            if bad:
                raise ParityError(f"{kind} export parity failed (ONNX Runtime CPU vs PyTorch): {bad}")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    report = {
        "output": str(output),
        "kind": kind,
        "version": version,
        "compatible": meta.compatible,
        "bytes": output.stat().st_size,
        "sha256": file_sha256(output),
        "opset": opset,
        "macs": int(macs),
        "macs_input": [3, *hw],
        "params": n_params,
        "parity": parity,
        "parity_inputs": used,
        "checked": bool(check),
    }
    log.info(
        "exported %s to %s (%.2f GMACs at %s, %.2fM params, parity %s)",
        kind,
        output,
        macs / 1e9,
        "x".join(map(str, hw)),
        n_params / 1e6,
        "ok" if check else "skipped",
    )
    return report


# ------------------------------------------------------------------ checkpoints
def provenance_from_checkpoint(state: dict[str, Any], checkpoint: Path) -> str:
    """Training data provenance for the metadata: the sources and data paths of the resolved training config,
    plus which checkpoint (name, sha256, epoch, step) the weights came from."""
    cfg = state.get("config") or {}
    task = cfg.get("task") or {}
    data = {k: str(v) for k, v in (cfg.get("data") or {}).items() if v}
    prov: dict[str, Any] = {
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": file_sha256(checkpoint),
        "epoch": state.get("epoch"),
        "global_step": state.get("global_step"),
        "sources": list(task.get("sources") or []),
        "data": data,
    }
    for key in ("split_seed", "val_fraction", "utk_split_seed", "utk_val_fraction", "tasks"):
        if key in task:
            prov[key] = task[key]
    if state.get("averaged_from"):
        prov["averaged_from"] = [
            {"checkpoint": Path(str(a.get("checkpoint"))).name, "epoch": a.get("epoch")}
            for a in state["averaged_from"]
        ]
    cal = state.get("quality_calibration")
    if isinstance(cal, dict):
        prov["quality_calibration"] = {k: cal.get(k) for k in ("reference", "scale", "shift", "faces")}
    return json.dumps(prov, sort_keys=True)


def model_from_checkpoint(state: dict[str, Any], source: str) -> tuple[str, dict[str, Any], nn.Module]:
    """(kind, args, model with the checkpoint's weights) from a loaded checkpoint dict."""
    kind = state.get("kind")
    margs = state.get("model_args")
    if kind not in KINDS or not isinstance(margs, dict) or kind not in margs:
        raise ModelError(
            f"{source}: checkpoint kind {kind!r} with model_args {sorted(margs) if isinstance(margs, dict) else margs}"
            f" is not an edge-mtl detector, recognizer or landmarks checkpoint"
        )
    args = dict(margs[kind])
    try:
        model = build_model(kind, args)
    except TypeError as e:
        raise ModelError(f"{source}: model args do not fit this version of edge-mtl ({e})") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).splitlines()[0][:200]
        raise ModelError(f"{source}: weights do not match the model args ({first})") from None
    return kind, args, model


def export_checkpoint(
    checkpoint: Path,
    output: Path,
    version: str = "dev",
    check: bool = True,
    provenance: str | None = None,
    real_inputs: npt.NDArray[np.float32] | str | None = "auto",
    data: Path | None = None,
    compatible: Sequence[str] = (),
) -> dict[str, Any]:
    """`edge-mtl export`: rebuild the model from the checkpoint's args, load its weights, export and check.

    `real_inputs="auto"` adds a few real preprocessed inputs from the shared data (validation images only) when it
    is available; pass an array to choose them, or None for random inputs only. `check=False` (`--no-check`) skips
    the parity check; the ONNX checker always runs.
    """
    from edge_mtl.models.checkpoint import load_checkpoint

    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    kind, args, model = model_from_checkpoint(state, str(checkpoint))
    if provenance is None:
        provenance = provenance_from_checkpoint(state, checkpoint)
    real: npt.NDArray[np.float32] | None = None
    if isinstance(real_inputs, str):
        if real_inputs != "auto":
            raise InputError(f"real_inputs: expected an array, None or 'auto', got {real_inputs!r}")
        if check:
            from edge_mtl.export_tools.calibration import parity_inputs

            real = parity_inputs(kind, model_metadata(kind, args), data=data)
            if real is None:
                log.info("no shared data found: parity on random inputs only")
    else:
        real = real_inputs
    report = export_module(
        model, kind, args, output, version=version, provenance=provenance, check=check, real_inputs=real,
        compatible=compatible,
    )
    report["checkpoint"] = str(checkpoint)
    if kind == "recognizer":
        # a release step, not enforced: until measured, an unset identity.threshold uses the built-in fallback
        log.warning("%s carries no measured identity thresholds yet: stamp them with 'edge-mtl eval verification "
                    "--stamp --recognizer %s' (and again with --flip)", output, output)
    return report
