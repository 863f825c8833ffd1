"""Helpers for the build tests: small randomly initialised models and synthetic face-like inputs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from edge_mtl.models.detector import Detector, DetectorArgs
from edge_mtl.models.recognizer import Recognizer, RecognizerArgs

REC_ARGS = RecognizerArgs(widths=(8, 16, 24, 32), depths=(1, 2, 1, 1), embedding_dim=32, embedding_hidden=48)
DET_ARGS = DetectorArgs(widths=(8, 16, 24, 32, 48), depths=(1, 1, 1, 1), neck=16, head_convs=1)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def randomize_bn(model: Any, seed: int) -> Any:
    """Give BatchNorm layers non-trivial statistics, as a trained model has (otherwise fusion is a no-op test)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model


def make_recognizer(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return randomize_bn(Recognizer(REC_ARGS), seed).eval()


def make_detector(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return randomize_bn(Detector(DET_ARGS), seed).eval()


def faces_like(n: int, size: int = 112, seed: int = 0) -> np.ndarray:
    """Synthetic 'faces' in the normalised input range: smooth blobs plus noise, so activations vary like images."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        cx, cy, s = r.uniform(0.3, 0.7), r.uniform(0.3, 0.7), r.uniform(0.1, 0.3)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
        for c in range(3):
            out[i, c] = np.clip(blob * r.uniform(0.5, 1.5) - 0.5 + r.normal(0, 0.1, (size, size)), -1, 1)
    return out
