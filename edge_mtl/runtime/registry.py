"""From configuration to loaded models: which file, which backend plugin, which precision.

Backends are plugins chosen by `type` (onnxruntime, tensorrt, torch); a missing optional dependency is an error
naming the extra to install. The shipped defaults live in export/; a precision other than fp32 selects the
matching variant (`detector.int8.onnx`, `recognizer.fp16.onnx`) next to the configured model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_mtl.config import AppConfig, BackendConfig
from edge_mtl.defaults import detector_score_threshold
from edge_mtl.errors import InputError, MissingExtraError, ModelError
from edge_mtl.paths import default_model
from edge_mtl.runtime.detector import FaceDetector
from edge_mtl.runtime.engine import Engine, ModelMetadata
from edge_mtl.runtime.landmarks import LandmarkRefiner
from edge_mtl.runtime.recognizer import FaceRecognizer

log = logging.getLogger(__name__)

#: Entry point group of the backends outside the runtime path (pyproject.toml names the torch backend there).
BACKEND_PLUGINS = "edge_mtl.backends"


def model_path(configured: Path | None, default_name: str, precision: str) -> Path:
    base = configured or default_model(default_name)
    if precision != "fp32" and ".fp16." not in base.name and ".int8." not in base.name:
        cand = base.with_name(base.name.replace(".onnx", f".{precision}.onnx"))
        if not cand.exists():
            raise InputError(f"no {precision} variant {cand}: create it with 'edge-mtl quantize {base} "
                             f"-o {cand} --precision {precision}'")
        return cand
    if not base.exists():
        raise InputError(f"{base}: no such model file")
    return base


def load_engine(path: Path, backend: BackendConfig) -> Engine:
    if backend.type == "onnxruntime":
        try:
            from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine
        except ImportError as e:  # pragma: no cover
            raise MissingExtraError("onnxruntime", "runtime") from e
        return OnnxRuntimeEngine(path, device=backend.device, threads=backend.threads, spin=backend.spin,
                                 trt_cache=backend.engine_cache)
    if backend.type == "tensorrt":
        from edge_mtl.runtime.tensorrt import TensorRTEngine

        return TensorRTEngine(path, cache_dir=backend.engine_cache or path.parent / "engines")
    if backend.type == "torch":
        return backend_plugin("torch")(path, backend)
    raise InputError(f"unknown backend {backend.type!r}")


def backend_plugin(name: str) -> Callable[[Path, BackendConfig], Engine]:
    """A backend that lives outside the runtime path (the torch backend runs training checkpoints and so needs the
    model definitions): found through the `edge_mtl.backends` entry points, so the runtime never imports it."""
    from importlib.metadata import entry_points

    found = list(entry_points(group=BACKEND_PLUGINS, name=name))
    if not found:
        raise InputError(f"backend {name!r}: no such plugin installed (entry point group {BACKEND_PLUGINS}; "
                         "reinstall edge-mtl: pip install -e .)")
    loader: Callable[[Path, BackendConfig], Engine] = found[0].load()
    return loader


def load_refiner(cfg: AppConfig) -> LandmarkRefiner | None:
    """The landmark refiner: configured, else the shipped one when present; always FP32 on ONNX Runtime (it is
    tiny, and alignment precision is what it is for)."""
    d = cfg.detector
    if d.refine_iterations == 0:
        return None
    path = d.landmarks or default_model("landmarks.onnx")
    if d.landmarks is None and not path.exists():
        log.warning("no landmark refiner at %s: aligning with the detector's own landmarks", path)
        return None
    backend = BackendConfig(type="onnxruntime", device=d.backend.device if d.backend.type == "onnxruntime" else "cpu",
                            threads=d.backend.threads, spin=d.backend.spin)
    path = model_path(path, "landmarks.onnx", "fp32")
    engine = load_engine(path, backend)
    with _naming(path):
        return LandmarkRefiner(engine, d.refine_iterations)


def load_detector(cfg: AppConfig) -> FaceDetector:
    d = cfg.detector
    path = model_path(d.model, "detector.onnx", d.backend.precision if d.backend.type == "onnxruntime" else "fp32")
    engine = load_engine(path, d.backend)
    score = d.score_threshold if d.score_threshold is not None else detector_score_threshold(d.backend.precision)
    from edge_mtl.vision.anycrop import PadRetry

    refiner = load_refiner(cfg)
    with _naming(path):
        return FaceDetector(engine, d.input_size, score, d.nms_threshold, d.min_face, refiner=refiner,
                            pad_retry=PadRetry(**d.pad_retry.model_dump()))


def load_recognizer(cfg: AppConfig) -> FaceRecognizer:
    r = cfg.recognizer
    path = model_path(r.model, "recognizer.onnx", r.backend.precision if r.backend.type == "onnxruntime" else "fp32")
    return open_recognizer(path, r.backend, r.max_batch, r.flip)


def open_recognizer(
    path: Path, backend: BackendConfig | None = None, max_batch: int = 256, flip: bool = False
) -> FaceRecognizer:
    """A recognizer model file on a backend (default: ONNX Runtime on the CPU), outside the daemon's config."""
    engine = load_engine(Path(path), backend or BackendConfig())
    with _naming(path):
        return FaceRecognizer(engine, max_batch, flip)


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """A model refused for its kind or metadata: the one line names the file (a wrong file given by flag)."""
    try:
        yield
    except ModelError as e:
        if str(path) in str(e):
            raise
        raise ModelError(f"{path}: {e}") from None


def check_models(cfg: AppConfig) -> dict[str, ModelMetadata]:
    """Fail (exit 2) when a configured model file is missing or is not an edge-mtl model of the right kind; else
    the metadata of each checked model, by kind (models on other backends are checked when loaded)."""
    found: dict[str, ModelMetadata] = {}
    for section, name, kind in ((cfg.detector, "detector.onnx", "detector"),
                                (cfg.recognizer, "recognizer.onnx", "recognizer")):
        if section.backend.type != "onnxruntime":
            continue
        path = model_path(section.model, name, section.backend.precision)
        try:
            import onnxruntime as ort

            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            props = dict(sess.get_modelmeta().custom_metadata_map)
        except Exception as e:
            raise ModelError(f"{path}: cannot load model ({str(e).splitlines()[0][:160]})") from None
        meta = ModelMetadata.from_props(props, str(path))
        if meta.kind != kind:
            raise ModelError(f"{path}: expected a {kind} model, got a {meta.kind!r} model")
        found[kind] = meta
    if cfg.detector.refine_iterations:
        load_refiner(cfg)  # a configured refiner must load and be a landmarks model
    return found
