"""Still images: `edge-mtl detect` and `edge-mtl analyze` (one JSON line per image)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_mtl.config import AppConfig
from edge_mtl.data.images import DEFAULT_MAX_PIXELS, read_image
from edge_mtl.errors import InputError
from edge_mtl.runtime.registry import load_detector, load_recognizer
from edge_mtl.vision.align import align_faces

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


def iter_images(paths: Sequence[Path]) -> Iterator[Path]:
    """Files as given, and image files inside folders (sorted, recursive). A missing path is an input error."""
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    yield f
        elif p.is_file():
            yield p
        else:
            raise InputError(f"{p}: no such file or folder")


def _r(v: float) -> float:
    return round(float(v), 2)


def _faces_json(det: Any) -> list[dict[str, Any]]:
    return [
        {
            "box": [_r(v) for v in det.boxes[i]],
            "score": round(float(det.scores[i]), 4),
            "landmarks": [[_r(x), _r(y)] for x, y in det.landmarks[i]],
        }
        for i in range(len(det))
    ]


def _readable(
    paths: Sequence[Path], errors: list[str] | None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[tuple[Path, npt.NDArray[np.uint8]]]:
    """Images that decode; unreadable ones go to `errors` (the caller exits 2 at the end) or raise."""
    for p in iter_images(paths):
        try:
            yield p, read_image(p, max_pixels)
        except InputError as e:
            if errors is None:
                raise
            log.error("%s", e)
            errors.append(str(e))


def detect_paths(
    paths: Sequence[Path], cfg: AppConfig, errors: list[str] | None = None
) -> Iterator[dict[str, Any]]:
    det = load_detector(cfg)
    for p, img in _readable(paths, errors, cfg.images.max_pixels):
        yield {"image": str(p), "faces": _faces_json(det.detect(img))}


def analyze_paths(
    paths: Sequence[Path], cfg: AppConfig, with_embedding: bool = True, errors: list[str] | None = None
) -> Iterator[dict[str, Any]]:
    det = load_detector(cfg)
    rec = load_recognizer(cfg)
    for p, img in _readable(paths, errors, cfg.images.max_pixels):
        d = det.detect(img)
        faces = _faces_json(d)
        if len(d):
            a = rec.analyze(align_faces(img, d.landmarks, rec.size, rec.fill))
            for i, f in enumerate(faces):
                if with_embedding:
                    f["embedding"] = [round(float(v), 5) for v in a.embeddings[i]]
                f["age"] = a.age(i)
                f["gender"] = a.gender(i, cfg.attributes.gender_min_confidence, cfg.attributes.gender_min_age)
                f["quality"] = round(float(a.quality[i]), 4)
        yield {"image": str(p), "faces": faces}
