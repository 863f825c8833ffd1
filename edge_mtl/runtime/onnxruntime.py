"""ONNX Runtime backend: CPU by default, CUDA or TensorRT execution providers on request.

ONNX Runtime quietly falls back to the CPU when CUDA libraries mismatch; this backend instead checks which
provider is actually active and fails when it is not the one asked for (docs/architecture.md, adding an
inference backend).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_mtl.errors import BackendUnavailableError, ModelError
from edge_mtl.runtime.engine import ModelMetadata

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OnnxRuntimeEngine:
    """One ONNX model in an `onnxruntime.InferenceSession`."""

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        threads: int = 0,
        trt_cache: str | Path | None = None,
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        if device not in PROVIDERS:
            raise BackendUnavailableError(f"unknown onnxruntime device {device!r}; use one of {sorted(PROVIDERS)}")
        wanted = PROVIDERS[device]
        available = ort.get_available_providers()
        if wanted not in available:
            raise BackendUnavailableError(
                f"onnxruntime provider {wanted} is not available here (available: {', '.join(available)}); "
                f"install onnxruntime-gpu with matching CUDA/TensorRT libraries or use device='cpu'"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers: list[str | tuple[str, dict[str, str]]] = [wanted]
        if device == "tensorrt" and trt_cache is not None:
            providers = [
                (wanted, {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(trt_cache)}),
            ]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # ORT raises its own exception types for corrupt files
            raise ModelError(f"{path}: cannot load model ({str(e).splitlines()[0][:200]})") from None
        active = self.session.get_providers()
        if not active or active[0] != wanted:
            raise BackendUnavailableError(
                f"{path}: asked for {wanted} but onnxruntime runs {active[0] if active else 'nothing'}"
            )
        self.provider = active[0]
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.metadata = ModelMetadata.from_props(props, str(path))
        self.path = path
        self._outputs = [o.name for o in self.session.get_outputs()]
        missing = [n for n in self.metadata.output_names if n not in self._outputs]
        if missing:
            raise ModelError(f"{path}: metadata names outputs {missing} the graph does not have")
        self._input_dtype = np.float16 if "float16" in self.session.get_inputs()[0].type else np.float32
        log.info("loaded %s (%s, %s) on %s", path.name, self.metadata.kind, self.metadata.precision, self.provider)

    def run(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        x = batch.astype(self._input_dtype, copy=False)
        outs = self.session.run(self._outputs, {self.metadata.input_name: x})
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self._outputs, outs, strict=True)}
