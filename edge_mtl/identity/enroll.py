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
import numpy.typing as npt

from edge_mtl.config import AppConfig
from edge_mtl.errors import InputError
from edge_mtl.events.dbfaults import db_guard
from edge_mtl.identity.gallery import Gallery
from edge_mtl.vision.align import align_faces

log = logging.getLogger(__name__)
MIN_IOD_PX = 20.0  # inter-ocular distance below this: too small to enrol
MIN_SHARPNESS = 20.0  # variance of the Laplacian of the aligned crop; below: too blurry
MIN_QUALITY = 0.15  # the recognizer's own quality score
SECOND_FACE_RATIO = 0.6  # another face at least this large relative to the main one: ambiguous
COMPETING_SCORE = 0.5  # ... and detected at least this confidently (not a partial face at the border, not clutter)


class Enroller:
    """The detector and recognizer loaded once; `embed` checks and embeds one person's images (all or nothing)."""

    def __init__(self, cfg: AppConfig) -> None:
        from edge_mtl.runtime.registry import load_detector, load_recognizer

        self.det = load_detector(cfg)
        self.rec = load_recognizer(cfg)
        self.max_pixels = cfg.images.max_pixels

    @property
    def model(self) -> str:
        return self.rec.meta.version

    def embed(self, images: Sequence[Path]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(embeddings N x D, qualities N) of the images' faces; InputError naming the first unusable file."""
        from edge_mtl.data.images import read_image

        if not images:
            raise InputError("enrol: give at least one image")
        det, rec = self.det, self.rec
        crops = []
        for p in images:
            p = Path(p)
            if not p.is_file():
                raise InputError(f"{p}: no such file")
            img = read_image(p, self.max_pixels)
            d = det.detect(img)
            if len(d) == 0:
                raise InputError(f"{p}: no face found")
            areas = (d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1])
            order = np.argsort(-areas)
            rivals = [
                j for j in order[1:]
                if areas[j] >= SECOND_FACE_RATIO * areas[order[0]] and d.scores[j] >= COMPETING_SCORE
            ]
            if rivals:
                raise InputError(f"{p}: {len(rivals) + 1} faces found; enrol from images with one person")
            i = int(order[0])
            iod = float(np.linalg.norm(d.landmarks[i, 1] - d.landmarks[i, 0]))
            if iod < MIN_IOD_PX:
                raise InputError(f"{p}: face too small (eyes {iod:.0f} px apart, need {MIN_IOD_PX:.0f})")
            crop = align_faces(img, d.landmarks[i : i + 1], rec.size, rec.fill)[0]
            sharp = float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())
            if sharp < MIN_SHARPNESS:
                raise InputError(f"{p}: face too blurry (sharpness {sharp:.0f}, need {MIN_SHARPNESS:.0f})")
            crops.append(crop)
        res = rec.analyze(np.stack(crops))
        for p, q in zip(images, res.quality, strict=True):
            if q < MIN_QUALITY:
                raise InputError(f"{p}: face quality {q:.2f} too low to enrol (need {MIN_QUALITY})")
        return res.embeddings, res.quality


def enroll_images(
    gallery_path: str | Path, name: str, images: Sequence[Path], cfg: AppConfig, replace: bool = False
) -> dict[str, Any]:
    if not images:
        raise InputError("enrol: give at least one image")
    enroller = Enroller(cfg)
    emb, quality = enroller.embed(images)
    with db_guard(gallery_path, "gallery"), Gallery(gallery_path) as g:
        total = g.add(name, emb, [float(q) for q in quality], [str(Path(p).absolute()) for p in images],
                      model=enroller.model, replace=replace)
    return {"name": name, "images": len(images), "total": total,
            "quality": [round(float(q), 3) for q in quality]}


def reenroll(gallery_path: str | Path, cfg: AppConfig, names: Sequence[str] = ()) -> dict[str, Any]:
    """After a recognizer upgrade: embed again, with the loaded recognizer, the images each person was enrolled from
    (their paths are in the gallery; the images themselves never are), for everyone (or `names`) who has no
    embedding of this recognizer yet. The old version's rows stay (a rollback keeps working; the daemon matches
    only its own model's rows). One person's failure (a moved or deleted image) does not stop the others."""
    enroller = Enroller(cfg)
    done: list[str] = []
    failed: dict[str, str] = {}
    with db_guard(gallery_path, "gallery"), Gallery(gallery_path, create=False) as g:
        todo = g.sources_to_reembed(enroller.model, list(names))
        for name, paths in todo.items():
            if not paths:
                failed[name] = "no image paths recorded"
                continue
            try:
                emb, quality = enroller.embed([Path(p) for p in paths])
            except InputError as e:
                failed[name] = str(e)
                continue
            g.add(name, emb, [float(q) for q in quality], list(paths), model=enroller.model)
            done.append(name)
            log.info("re-enrolled %s from %d image(s)", name, len(paths))
    return {"model": enroller.model, "reenrolled": done, "failed": failed}
