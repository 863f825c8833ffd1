"""The `torch` inference backend: a training checkpoint (.pt) run with the model's export wrapper.

It needs the model definitions, so it lives here and not in the runtime path; the runtime's registry finds it
through the `edge_mtl.backends` entry point (pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

from edge_mtl.config import BackendConfig
from edge_mtl.errors import InputError, MissingExtraError
from edge_mtl.runtime.engine import Engine


def load_engine(path: Path, backend: BackendConfig) -> Engine:
    """The torch backend runs a training checkpoint (.pt) with the model's export wrapper."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise MissingExtraError("torch", "train") from e
    if path.suffix != ".pt":
        raise InputError(f"{path}: the torch backend needs a training checkpoint (.pt), not {path.suffix}")
    from edge_mtl.models.checkpoint import load_checkpoint
    from edge_mtl.models.metadata import detector_metadata, recognizer_metadata
    from edge_mtl.runtime.torch_engine import TorchEngine

    st = load_checkpoint(path)
    device = "cuda" if backend.device in ("cuda", "tensorrt") else "cpu"
    half = backend.precision == "fp16"
    if "detector" in st["model_args"]:
        from edge_mtl.models.detector import Detector, DetectorArgs, DetectorExport

        dargs = DetectorArgs.from_dict(st["model_args"]["detector"])
        dm = Detector(dargs)
        dm.load_state_dict(st["model"])
        return TorchEngine(DetectorExport(dm), detector_metadata(dargs.to_dict()), device, half)
    from edge_mtl.models.recognizer import Recognizer, RecognizerArgs, RecognizerExport, deploy_copy

    rargs = RecognizerArgs.from_dict(st["model_args"]["recognizer"])
    rm = Recognizer(rargs)
    rm.load_state_dict(st["model"])
    return TorchEngine(RecognizerExport(deploy_copy(rm)), recognizer_metadata(rargs.to_dict()), device, half)
