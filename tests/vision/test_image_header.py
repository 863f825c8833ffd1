"""The size of an image from its header (to refuse huge images before decoding): every format OpenCV writes here,
checked against the decoded image."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mtl.vision.image_header import header_size


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tif", ".ppm", ".pgm"])
@pytest.mark.parametrize(("w", "h"), [(37, 21), (640, 480)])
def test_header_size_matches_the_decoded_image(tmp_path: Path, ext: str, w: int, h: int) -> None:
    img = np.random.default_rng(w).integers(0, 256, (h, w, 3), np.uint8)
    path = tmp_path / f"x{ext}"
    if not cv2.imwrite(str(path), img[:, :, 0] if ext == ".pgm" else img):
        pytest.skip(f"OpenCV cannot write {ext} here")
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert header_size(path) == (decoded.shape[1], decoded.shape[0]) == (w, h)


def test_unknown_or_truncated_headers_give_none(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello world")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00")
    for name in ("a.txt", "b.png", "c.jpg", "missing.png"):
        assert header_size(tmp_path / name) is None
