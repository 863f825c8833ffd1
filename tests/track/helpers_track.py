"""Builders of synthetic detections for the tracker tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_mtl.types import Detections


def box(cx: float, cy: float, w: float = 60.0, h: float = 70.0) -> list[float]:
    """(x1, y1, x2, y2) around a centre."""
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def dets(boxes: Sequence[Sequence[float]], scores: Sequence[float] | float = 0.9, points: int = 4) -> Detections:
    """Detections with the given boxes and scores; landmarks encode the row so tests can check det_index."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = b.shape[0]
    s = np.full(n, scores, np.float32) if np.isscalar(scores) else np.asarray(scores, np.float32)
    lm = np.zeros((n, points, 2), np.float32)
    lm[:, :, 0] = np.arange(n, dtype=np.float32)[:, None]
    return Detections(b, s, lm)
