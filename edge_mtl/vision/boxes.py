"""Box geometry shared by the detector's post-processing, the tracker and the evaluation: one IoU."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> F64:
    """IoU matrix (N, M) between (x1, y1, x2, y2) boxes, computed in float64; 0 where either box has no area."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def iou_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> F32:
    """IoU matrix (N, M) in float32 (`box_iou`, cast)."""
    return box_iou(a, b).astype(np.float32)
