"""Reading image files: one decoder for the commands, enrolment, evaluation, training and the export tools."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_mtl.defaults import MAX_IMAGE_PIXELS as DEFAULT_MAX_PIXELS
from edge_mtl.errors import InputError
from edge_mtl.vision.image_header import header_size


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> npt.NDArray[np.uint8]:
    """BGR uint8; grayscale and 16-bit images are converted. Not an image, or one over `max_pixels` (from its header
    before decoding where the format tells: edge_mtl.vision.image_header) -> InputError naming the file."""
    size = header_size(path)
    if size is not None and size[0] * size[1] > max_pixels:
        raise InputError(_too_large(path, size, max_pixels))
    data = np.fromfile(str(path), dtype=np.uint8)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as e:  # OpenCV's own limits (CV_IO_MAX_IMAGE_PIXELS) and decoder failures
        raise InputError(f"{path}: not a readable image ({str(e).strip().splitlines()[-1][:120]})") from None
    if img is None:
        raise InputError(f"{path}: not a readable image")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise InputError(_too_large(path, (img.shape[1], img.shape[0]), max_pixels))
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(float(img.max()), 1.0))
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(img)


def _too_large(path: Path, size: tuple[int, int], max_pixels: int) -> str:
    return (f"{path}: {size[0]}x{size[1]} pixels ({size[0] * size[1] / 1e6:.0f} MP) is over images.max_pixels "
            f"({max_pixels / 1e6:g} MP); scale it down")


def read_rgb(path: str) -> npt.NDArray[np.uint8]:
    """RGB uint8 for training; OSError when the file cannot be read."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read image {path}")
    return np.ascontiguousarray(img[:, :, ::-1])
