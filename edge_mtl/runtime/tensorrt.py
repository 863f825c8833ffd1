"""TensorRT backend: a serialized engine behind the `Engine` protocol (TensorRT 10.x / 11.x, cuda-python).

Give it the ONNX (the engine is looked up in, or built into, the cache for this GPU and TensorRT version) or a
`.plan` from the cache (its JSON entry says what it was built for; a plan built elsewhere is rebuilt from its ONNX
when that is at hand, otherwise refused with a message naming both boxes). Inference uses the name-based API of
TensorRT 10 (`set_input_shape`, `set_tensor_address`, `execute_async_v3`) on a private CUDA stream, with device
buffers that grow to the largest batch seen. Model metadata comes from the cache entry, which copies it from the
ONNX, so preprocessing is never guessed. Missing `tensorrt` or `cuda-python` is a MissingExtraError naming the
`tensorrt` extra; nothing falls back to another backend.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_mtl.errors import ModelError
from edge_mtl.runtime.engine_cache import (
    BuildTarget,
    CacheEntry,
    check_entry,
    check_shape,
    entry_path_for,
    mismatch,
    read_entry,
)

log = logging.getLogger(__name__)

PLAN_SUFFIXES = (".plan", ".engine", ".trt")


def resolve_engine(
    model: Path,
    cache_dir: Path | None,
    *,
    max_batch: int | None,
    workspace_mb: int,
    max_side: int | None,
    rebuild: bool,
    device: int,
    target: BuildTarget | None = None,
) -> tuple[Path, CacheEntry]:
    """(plan, entry) usable on this box: cached, rebuilt, or a ModelError explaining why neither.

    `target` describes this box (default: asked from TensorRT and CUDA for `device`).
    """
    from edge_mtl.runtime.tensorrt_build import build_engine, current_target

    if not model.is_file():
        raise ModelError(f"{model}: no such model or engine file")
    if model.suffix.lower() == ".onnx":
        plan = build_engine(model, cache_dir or model.parent / "engines", max_batch, workspace_mb,
                            max_side=max_side, device=device)
        return plan, read_entry(entry_path_for(plan))
    if model.suffix.lower() not in PLAN_SUFFIXES:
        raise ModelError(f"{model}: expected an .onnx model or a TensorRT engine ({', '.join(PLAN_SUFFIXES)})")
    entry_file = entry_path_for(model)
    if not entry_file.is_file():
        raise ModelError(
            f"{model}: no cache entry {entry_file.name} next to the engine, so its GPU, TensorRT version and "
            f"metadata are unknown; build it with `edge-mtl build-engine MODEL.onnx`"
        )
    entry = read_entry(entry_file)
    target = target or current_target(device)
    why = mismatch(entry, target)
    if why is None:
        return model, entry
    onnx = Path(entry.model_path)
    if rebuild and onnx.is_file():
        from edge_mtl.paths import file_sha256

        if file_sha256(onnx) == entry.model_sha256:
            log.warning("%s: %s; rebuilding from %s", model, why, onnx)
            plan = build_engine(onnx, cache_dir or model.parent, entry.profile.max[0], workspace_mb,
                                max_side=max_side if max_side else entry.profile.max[3], device=device)
            return plan, read_entry(entry_path_for(plan))
        log.warning("%s: %s, and %s changed since it was built", model, why, onnx)
    check_entry(entry, target, model)  # raises with the rebuild hint
    raise AssertionError("unreachable")  # pragma: no cover


def _handle(stream: Any) -> int:
    """The raw cudaStream_t value TensorRT's Python API takes (cuda-python objects expose it as int or getPtr)."""
    try:
        return int(stream)
    except TypeError:
        return int(stream.getPtr())


class TensorRTEngine:
    """One TensorRT engine with its execution context, CUDA stream and device buffers."""

    def __init__(
        self,
        model: str | Path,
        cache_dir: str | Path | None = None,
        *,
        max_batch: int | None = None,
        workspace_mb: int = 1024,
        max_side: int | None = None,
        rebuild: bool = True,
        device: int = 0,
    ) -> None:
        from edge_mtl.runtime.tensorrt_build import cuda_check, import_cudart, import_tensorrt, make_logger

        trt = import_tensorrt()
        cudart = import_cudart()
        self._trt, self._cudart, self._check = trt, cudart, cuda_check
        cuda_check(cudart, cudart.cudaSetDevice(device), f"cudaSetDevice({device})")
        plan, entry = resolve_engine(
            Path(model),
            Path(cache_dir) if cache_dir is not None else None,
            max_batch=max_batch,
            workspace_mb=workspace_mb,
            max_side=max_side,
            rebuild=rebuild,
            device=device,
        )
        self.plan, self.entry = plan, entry
        self.metadata = entry.model_metadata
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self._engine is None:
            raise ModelError(f"{plan}: TensorRT {trt.__version__} cannot deserialize this engine (damaged file?)")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ModelError(f"{plan}: cannot create an execution context (out of GPU memory?)")
        self._stream = cuda_check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._dtypes: dict[str, Any] = {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            self._dtypes[name] = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._inputs.append(name)
            else:
                self._outputs.append(name)
        if self._inputs != [self.metadata.input_name]:
            raise ModelError(f"{plan}: engine inputs {self._inputs}, metadata expects [{self.metadata.input_name}]")
        missing = [n for n in self.metadata.output_names if n not in self._outputs]
        if missing:
            raise ModelError(f"{plan}: metadata names outputs {missing} the engine does not have")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)
        self._lock = threading.Lock()
        self.provider = f"tensorrt-{trt.__version__}"
        log.info("loaded %s (%s, %s) with %s on %s", plan.name, self.metadata.kind, entry.precision,
                 self.provider, entry.target.arch)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, cap = self._buffers.get(name, (0, 0))
        if nbytes > cap:
            if ptr:
                self._check(self._cudart, self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(self._check(self._cudart, self._cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        cudart, check = self._cudart, self._check
        name = self._inputs[0]
        x = np.ascontiguousarray(batch, dtype=self._dtypes[name])
        check_shape(self.entry.profile, x.shape, str(self.plan))
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        stream = self._stream
        with self._lock:
            if not self._context.set_input_shape(name, tuple(x.shape)):
                raise ModelError(f"{self.plan}: TensorRT rejected input shape {x.shape}")
            ptr = self._buffer(name, max(x.nbytes, 1))
            check(cudart, cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, h2d, stream), "cudaMemcpyAsync")
            self._context.set_tensor_address(name, ptr)
            host: dict[str, npt.NDArray[Any]] = {}
            for out in self._outputs:
                shape = tuple(self._context.get_tensor_shape(out))
                arr = np.empty(shape, dtype=self._dtypes[out])
                host[out] = arr
                self._context.set_tensor_address(out, self._buffer(out, max(arr.nbytes, 1)))
            if not self._context.execute_async_v3(_handle(stream)):
                raise ModelError(f"{self.plan}: TensorRT execution failed (see the log)")
            for out, arr in host.items():
                dptr = self._buffers[out][0]
                check(cudart, cudart.cudaMemcpyAsync(arr.ctypes.data, dptr, arr.nbytes, d2h, stream),
                      "cudaMemcpyAsync")
            check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return {n: np.asarray(a, np.float32) for n, a in host.items()}

    def close(self) -> None:
        """Free device buffers and the stream (idempotent)."""
        cudart, check = self._cudart, self._check
        with self._lock:
            for ptr, _ in self._buffers.values():
                check(cudart, cudart.cudaFree(ptr), "cudaFree")
            self._buffers.clear()
            if self._stream is not None:
                check(cudart, cudart.cudaStreamDestroy(self._stream), "cudaStreamDestroy")
                self._stream = None

    def __enter__(self) -> TensorRTEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
