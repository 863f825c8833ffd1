"""Tiny randomly initialised detector and recognizer exported to ONNX with real metadata, for tests that need a
model file (CLI, runtime) but not a trained one. Imported by tests; needs torch and onnx (callers importorskip)."""

from __future__ import annotations

from pathlib import Path

TINY_DETECTOR = {"widths": (8, 8, 8, 8, 8), "depths": (1, 1, 1, 1), "neck": 8, "head_convs": 1}
TINY_RECOGNIZER = {"widths": (8, 8, 8, 8), "depths": (1, 1, 1, 1), "embedding_dim": 16, "embedding_hidden": 16}


def export_tiny_detector(path: Path, seed: int = 0, score_bias: float | None = None) -> Path:
    """A random detector; `score_bias` sets the score logit bias (0 gives scores near 0.5, so it 'detects')."""
    import torch

    from edge_mtl.export_tools.export import export_module
    from edge_mtl.models.detector import Detector, DetectorArgs

    torch.manual_seed(seed)
    args = DetectorArgs(**TINY_DETECTOR)  # type: ignore[arg-type]
    model = Detector(args).eval()
    if score_bias is not None:
        with torch.no_grad():
            model.cls.bias.fill_(score_bias)
    export_module(model, "detector", args.to_dict(), path, version="tiny-test", check=False)
    return path


def export_tiny_recognizer(path: Path, seed: int = 0, fill: int = 0) -> Path:
    import torch

    from edge_mtl.export_tools.export import export_module
    from edge_mtl.models.recognizer import Recognizer, RecognizerArgs

    torch.manual_seed(seed)
    args = RecognizerArgs(**TINY_RECOGNIZER, fill=fill)  # type: ignore[arg-type]
    export_module(Recognizer(args).eval(), "recognizer", args.to_dict(), path, version="tiny-test", check=False)
    return path
