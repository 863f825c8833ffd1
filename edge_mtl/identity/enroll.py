"""Enrolment: images of one person -> quality-gated embeddings in the gallery, all or nothing.

Every image must show exactly one usable face: a file that is not an image, has no face, several comparable
faces (another face at least 0.6x the largest one's area, detected with score >= 0.5: a low-score box such as a
partial face at the image border does not count), a face too small or too blurry is rejected with a one-line error
naming the file, and nothing is written. The largest face is the one enrolled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_mtl.config import AppConfig
from edge_mtl.errors import InputError
from edge_mtl.identity.gallery import Gallery
from edge_mtl.vision.align import align_faces

log = logging.getLogger(__name__)
MIN_IOD_PX = 20.0  # inter-ocular distance below this: too small to enrol
MIN_SHARPNESS = 20.0  # variance of the Laplacian of the aligned crop; below: too blurry
MIN_QUALITY = 0.15  # the recognizer's own quality score
SECOND_FACE_RATIO = 0.6  # another face at least this large relative to the main one: ambiguous
COMPETING_SCORE = 0.5  # ... and detected at least this confidently (not a partial face at the border, not clutter)


def enroll_images(
    gallery_path: str | Path, name: str, images: Sequence[Path], cfg: AppConfig, replace: bool = False
) -> dict[str, Any]:
    from edge_mtl.analyze import read_image
    from edge_mtl.models_registry import load_detector, load_recognizer

    if not images:
        raise InputError("enrol: give at least one image")
    det = load_detector(cfg)
    rec = load_recognizer(cfg)
    crops = []
    for p in images:
        p = Path(p)
        if not p.is_file():
            raise InputError(f"{p}: no such file")
        img = read_image(p)
        d = det.detect(img)
        if len(d) == 0:
            raise InputError(f"{p}: no face found")
        areas = (d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1])
        order = np.argsort(-areas)
        rivals = [
            j for j in order[1:] if areas[j] >= SECOND_FACE_RATIO * areas[order[0]] and d.scores[j] >= COMPETING_SCORE
        ]
        if rivals:
            raise InputError(f"{p}: {len(rivals) + 1} faces found; enrol from images with one person")
        i = int(order[0])
        iod = float(np.linalg.norm(d.landmarks[i, 1] - d.landmarks[i, 0]))
        if iod < MIN_IOD_PX:
            raise InputError(f"{p}: face too small (eyes {iod:.0f} px apart, need {MIN_IOD_PX:.0f})")
        crop = align_faces(img, d.landmarks[i : i + 1], rec.size)[0]
        sharp = float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())
        if sharp < MIN_SHARPNESS:
            raise InputError(f"{p}: face too blurry (sharpness {sharp:.0f}, need {MIN_SHARPNESS:.0f})")
        crops.append(crop)
    res = rec.analyze(np.stack(crops))
    for p, q in zip(images, res.quality, strict=True):
        if q < MIN_QUALITY:
            raise InputError(f"{p}: face quality {q:.2f} too low to enrol (need {MIN_QUALITY})")
    with Gallery(gallery_path) as g:
        total = g.add(
            name,
            res.embeddings,
            [float(q) for q in res.quality],
            [str(p) for p in images],
            model=rec.meta.version,
            replace=replace,
        )
    return {"name": name, "images": len(images), "total": total,
            "quality": [round(float(q), 3) for q in res.quality]}
