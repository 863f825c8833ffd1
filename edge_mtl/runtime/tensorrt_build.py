"""Compile an ONNX model into a TensorRT engine, strongly typed, cached per GPU and TensorRT version
(docs/acceleration.md).

TensorRT 10.12 deprecated and 11 removed the FP16/INT8 builder flags (and 10.1/11 the implicit INT8 calibrators),
so the network is created STRONGLY_TYPED and the precision comes from the ONNX itself: an FP16 ONNX
(`edge_mtl.export_tools.fp16`) or a Q/DQ INT8 ONNX (`edge_mtl.export_tools.quantize`). No precision flag is ever
set; the same code builds on TensorRT 10.x (JetPack 6 ships 10.3) and 11.x.

Precision is verified twice, because a mislabelled model would otherwise build as FP32 without complaint:
1. after parsing, on the network: Quantize/Dequantize layers mean int8, FP16 tensors mean fp16, neither fp32;
   it must equal the ONNX metadata's precision;
2. after building, with the engine inspector (ProfilingVerbosity.DETAILED): the input formats of the weighted layers
   (convolutions, GEMMs) must be Int8 for an int8 model, FP16 for fp16, neither for fp32
   (`engine_cache.check_engine_precision`).

TensorRT's log goes to Python logging (logger `edge_mtl.runtime.tensorrt_build.trt`). The timing cache is kept in the
cache folder per GPU architecture and TensorRT version, so rebuilds after a model change are fast.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from edge_mtl.errors import BackendUnavailableError, EdgeMtlError, MissingExtraError, ModelError
from edge_mtl.paths import file_sha256
from edge_mtl.runtime.engine import ModelMetadata
from edge_mtl.runtime.engine_cache import (
    BuildTarget,
    CacheEntry,
    Profile,
    cache_key,
    check_engine_precision,
    check_network_precision,
    engine_paths,
    make_profile,
    now_iso,
    read_entry,
    summarize_layers,
    trt_log_level,
    write_entry,
)

log = logging.getLogger(__name__)
trt_log = logging.getLogger(__name__ + ".trt")


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise MissingExtraError("tensorrt", "tensorrt") from None
    return tensorrt


def import_cudart() -> Any:
    """cuda-python's runtime API: `cuda.bindings.runtime` (cuda-python >= 12.6) or `cuda.cudart` (older)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise MissingExtraError("cuda-python", "tensorrt") from None
    return cudart


def cuda_check(cudart: Any, result: Any, what: str) -> Any:
    """cuda-python returns (error, *values): raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    code: Any = getattr(err, "value", err)
    if int(code) != 0:  # cudaSuccess is 0 (an IntEnum member, or a plain int)
        name = getattr(err, "name", str(err))
        raise BackendUnavailableError(f"CUDA {what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def make_logger(trt: Any) -> Any:
    """A TensorRT ILogger that forwards to Python logging (Frigate-style bridge)."""

    class LoggingBridge(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = trt_log_level(getattr(severity, "name", str(severity)))
            if trt_log.isEnabledFor(level):
                trt_log.log(level, "%s", msg)

    return LoggingBridge()


def current_target(device: int = 0) -> BuildTarget:
    """This box's GPU compute capability and TensorRT version."""
    trt = import_tensorrt()
    cudart = import_cudart()
    props = cuda_check(cudart, cudart.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})")
    name = props.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return BuildTarget((int(props.major), int(props.minor)), str(trt.__version__), str(name))


def read_onnx_metadata(path: Path) -> ModelMetadata:
    """Metadata from the ONNX file, through ONNX Runtime (a core dependency; the runtime path needs no `onnx`)."""
    import onnxruntime as ort

    if not Path(path).is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(f"{path}: cannot read the model ({str(e).splitlines()[0][:200]})") from None
    return ModelMetadata.from_props(dict(sess.get_modelmeta().custom_metadata_map), str(path))


def _network_census(trt: Any, network: Any) -> tuple[int, int]:
    """(Quantize/Dequantize layers, FP16 tensors) of a parsed, strongly typed network."""
    qdq_types = {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE}
    qdq = half = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in qdq_types:
            qdq += 1
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype == trt.DataType.HALF:
                half += 1
    return qdq, half


def _engine_layers(trt: Any, engine: Any) -> dict[str, Any]:
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        info = json.loads(text)
    except ValueError:
        return {"formats_seen": 0}
    return summarize_layers(info)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_engine(
    onnx_path: str | Path,
    cache_dir: str | Path,
    max_batch: int | None = None,
    workspace_mb: int = 1024,
    *,
    max_side: int | None = None,
    opt_batch: int | None = None,
    force: bool = False,
    device: int = 0,
) -> Path:
    """Return the engine for `onnx_path` on this box, building it (and its cache entry) when missing or stale.

    `max_batch=None` uses the kind's default (recognizer 32, detector 4); see `engine_cache.make_profile`.
    """
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: no such model file")
    meta = read_onnx_metadata(onnx_path)
    target = current_target(device)
    profile = make_profile(meta, max_batch, opt_batch=opt_batch, max_side=max_side)
    sha = file_sha256(onnx_path)
    key = cache_key(sha, target, meta.precision, profile)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    plan, entry_path = engine_paths(cache_dir, onnx_path.stem, key)
    if not force and plan.is_file() and entry_path.is_file():
        try:
            entry = read_entry(entry_path)
            if entry.key == key:
                log.info("engine cache hit: %s (%s, %s)", plan, meta.precision, target.describe())
                return plan
        except ModelError as e:
            log.warning("rebuilding: %s", e)
    log.info("building TensorRT engine for %s (%s, %s, profile %s)", onnx_path.name, meta.precision,
             target.describe(), profile.describe())
    t0 = time.monotonic()
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    # TensorRT 10: opt in to strong typing; 11: always strongly typed (the flag is kept, ignored, maybe dropped later)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(1 << int(strongly_typed) if strongly_typed is not None else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{onnx_path}: TensorRT cannot parse it: {errors[:500]}")
    qdq, half = _network_census(trt, network)
    check_network_precision(meta.precision, qdq, half, str(onnx_path))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    timing_path = cache_dir / f"timing-{target.arch}-trt{target.tensorrt}.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(profile.input_name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(trt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeMtlError(
            f"TensorRT failed to build {onnx_path.name} (see the edge_mtl.runtime.tensorrt_build.trt log)")
    data = bytes(memoryview(serialized))
    _atomic_write(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise EdgeMtlError(f"TensorRT built {onnx_path.name} but cannot deserialize the result")
    layers = _engine_layers(trt, engine)
    layers["engine_check"] = check_engine_precision(meta.precision, layers, str(onnx_path))
    layers["network_qdq_layers"], layers["network_fp16_tensors"] = qdq, half
    _atomic_write(plan, data)
    entry = CacheEntry(
        key=key,
        model_sha256=sha,
        model_path=str(onnx_path.resolve()),
        kind=meta.kind,
        precision=meta.precision,
        compute_capability=target.compute_capability,
        gpu_name=target.gpu_name,
        tensorrt=target.tensorrt,
        profile=profile,
        metadata=meta.to_props(),
        built_at=now_iso(),
        build_seconds=round(time.monotonic() - t0, 2),
        layers=layers,
    )
    write_entry(entry_path, entry)
    log.info("built %s in %.1f s (%d bytes)", plan, entry.build_seconds, len(data))
    return plan


def profile_for(onnx_path: str | Path, max_batch: int | None, max_side: int | None = None) -> Profile:
    """The profile `build_engine` would use for this model (no TensorRT needed)."""
    return make_profile(read_onnx_metadata(Path(onnx_path)), max_batch, max_side=max_side)
