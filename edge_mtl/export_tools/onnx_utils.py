"""Small ONNX helpers shared by export, FP16, INT8 and the TensorRT builder: metadata, hashing, atomic saves.

Torch-free; `onnx` and `onnxruntime` are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge_mtl.errors import MissingExtraError, ModelError
from edge_mtl.paths import file_sha256 as file_sha256  # re-exported for the export tools
from edge_mtl.runtime.engine import META_PREFIX, ModelMetadata

if TYPE_CHECKING:
    import onnx


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise MissingExtraError("onnx", "build") from None
    return onnx


def graph_sha256(model: onnx.ModelProto) -> str:
    """Hash of the graph alone (nodes, weights, inputs, outputs): unchanged when only metadata is rewritten, as
    `edge-mtl eval verification --stamp` does, so calibration ranges stay tied to the weights, not to the file."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def load_model(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file; a missing, truncated or foreign file is a ModelError (exit code 2)."""
    onnx = import_onnx()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError and friends for damaged files
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:160]})") from None
    if not model.graph.node:
        raise ModelError(f"{path}: ONNX graph has no nodes (truncated file?)")
    return model


def props_of(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def metadata_of(model: onnx.ModelProto, source: str = "model") -> ModelMetadata:
    return ModelMetadata.from_props(props_of(model), source)


def read_metadata(path: str | Path) -> ModelMetadata:
    return metadata_of(load_model(path), str(path))


def set_metadata(
    model: onnx.ModelProto, meta: ModelMetadata, extra: dict[str, str] | None = None, keep_extra: bool = False
) -> None:
    """Replace the model's `edge_mtl.*` metadata_props with `meta` (other props are kept). With `keep_extra`, the
    `edge_mtl.*` keys that are not `ModelMetadata` fields (such as `quantization`) are kept too: for updating a
    finished model's metadata in place."""
    fields = {META_PREFIX + f.name for f in dataclasses.fields(ModelMetadata)}
    keep = [(p.key, p.value) for p in model.metadata_props
            if not p.key.startswith(META_PREFIX) or (keep_extra and p.key not in fields)]
    new = dict(meta.to_props())
    for k, v in (extra or {}).items():
        new[META_PREFIX + k] = v
    del model.metadata_props[:]
    for k, v in [*keep, *new.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def save_model_atomic(model: onnx.ModelProto, path: str | Path) -> None:
    """Write next to the destination and rename, so a crash never leaves a half-written model behind."""
    onnx = import_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model is not a secret and the service user must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def onnx_precision(model: onnx.ModelProto) -> str:
    """What the graph itself says its compute precision is: int8 (Q/DQ nodes), fp16 (FP16 weights), else fp32.

    Used to refuse files whose metadata claims another precision than the graph (docs/acceleration.md: a TensorRT
    network is strongly typed, so the precision it builds is exactly what the ONNX holds).
    """
    onnx = import_onnx()
    ops = {n.op_type for n in model.graph.node}
    if "QuantizeLinear" in ops or "DequantizeLinear" in ops:
        return "int8"
    f16 = onnx.TensorProto.FLOAT16
    if any(t.data_type == f16 for t in model.graph.initializer):
        return "fp16"
    if any(n.op_type == "Cast" and any(a.name == "to" and a.i == f16 for a in n.attribute) for n in model.graph.node):
        return "fp16"
    return "fp32"


def ort_cpu_session(path: str | Path, threads: int = 0) -> Any:
    """A plain CPU session (parity and gate runs); errors loading the file become ModelError."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # No busy-waiting between ops: build tools run beside training jobs, where spinning threads starve everyone.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None


def run_session(sess: Any, batch: npt.NDArray[np.float32], chunk: int = 16) -> dict[str, npt.NDArray[np.float32]]:
    """Run a session over a batch in chunks (bounded memory); outputs as float32 by name."""
    name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    parts: dict[str, list[npt.NDArray[np.float32]]] = {n: [] for n in names}
    for i in range(0, len(batch), chunk):
        outs = sess.run(names, {name: np.ascontiguousarray(batch[i : i + chunk], dtype=np.float32)})
        for n, o in zip(names, outs, strict=True):
            parts[n].append(np.asarray(o, np.float32))
    return {n: np.concatenate(v, axis=0) for n, v in parts.items()}
