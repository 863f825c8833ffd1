"""Reading image files: one decoder for the commands, enrolment, evaluation, training and the export tools."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_mtl.errors import InputError


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """BGR uint8; grayscale and 16-bit images are converted. Not an image -> InputError naming the file."""
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise InputError(f"{path}: not a readable image")
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(float(img.max()), 1.0))
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(img)


def read_rgb(path: str) -> npt.NDArray[np.uint8]:
    """RGB uint8 for training; OSError when the file cannot be read."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read image {path}")
    return np.ascontiguousarray(img[:, :, ::-1])
