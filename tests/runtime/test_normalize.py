"""`runtime.engine.normalize` writes one plane per channel (docs/performance.md): the values must be exactly those
of the plain expression (x - mean) / std, transposed to NCHW, for BGR and RGB models and any batch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge_mtl.config import AppConfig
from edge_mtl.runtime.engine import normalize
from edge_mtl.runtime.registry import load_detector, load_recognizer


def reference(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], swap: bool) -> np.ndarray:
    x = images[..., ::-1] if swap else images
    xf = (x.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(xf.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("which", ["detector", "recognizer"])
@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_same_values_as_the_plain_expression(which: str, color: str) -> None:
    cfg = AppConfig()
    meta = (load_detector(cfg) if which == "detector" else load_recognizer(cfg)).meta
    meta = dataclasses.replace(meta, color=color, mean=(120.5, 127.5, 101.0), std=(57.0, 128.0, 63.5))
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (3, 48, 40, 3), dtype=np.uint8)
    out = normalize(images, meta, bgr_input=True)
    assert out.dtype == np.float32 and out.shape == (3, 3, 48, 40) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, reference(images, meta.mean, meta.std, swap=color != "BGR"))
    # input given as RGB: no swap for an RGB model
    rgb = normalize(images, meta, bgr_input=False)
    np.testing.assert_array_equal(rgb, reference(images, meta.mean, meta.std, swap=color == "BGR"))
