"""Tight crops against the same faces with context, with and without the detector's bordered retry.

For each image two versions: **tight**, where the face fills the image, and **context**, the same face with room
around it. UTKFace validation (`utkface_split`, 15%, seed 0): tight is the 200x200 chip as stored, context the
chip inside a border of a quarter of its side on every side (mid grey). LFW View 2: context is the 250x250
deep-funneled image as stored, tight its square cut-out around the face box the detector finds on it (as an ID
photo or another program's face crop would be). Each version goes through the runtime path of `edge-mtl
analyze` (detector with its landmark refiner, alignment, recognizer; the face `edge-mtl eval` takes, or with
`--select largest` the largest), once with
the bordered retry off (`detector.pad_retry.pad = 0`) and once with the shipped setting (`edge_mtl.vision.anycrop`).

Reported: UTKFace gender accuracy and age MAE (all faces; an image without a face counts as a wrong gender and
is left out of the MAE, counted), LFW View 2 10-fold accuracy, and on LFW how often the two versions' gender
decisions agree and how far their ages are apart.

Usage: python benchmarks/any_crop.py [--data ../shared/data] [--utk-limit N] [--lfw-pairs N] [--skip-utkface]
    [--skip-lfw] [--select central|largest] [--fill 0-255] [--recognizer FILE.onnx] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_mtl.config import AppConfig
from edge_mtl.data import sources as S
from edge_mtl.data.images import read_image
from edge_mtl.eval.suites import central_face
from edge_mtl.eval.verification import read_pairs, ten_fold_accuracy
from edge_mtl.paths import data_root
from edge_mtl.runtime.detector import FaceDetector
from edge_mtl.runtime.recognizer import FaceRecognizer
from edge_mtl.runtime.registry import load_detector, load_recognizer, open_recognizer
from edge_mtl.types import Detections
from edge_mtl.vision.align import align_faces
from edge_mtl.vision.anycrop import PadRetry, cut_at_box, detect_with_retry

log = logging.getLogger("any_crop")
CONTEXT_BORDER = 0.25  # UTKFace context version: grey border, share of the chip's side on every side


def with_context(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    off = round(CONTEXT_BORDER * max(img.shape[:2]))
    return cv2.copyMakeBorder(img, off, off, off, off, cv2.BORDER_CONSTANT, value=(128, 128, 128))


def pick(det: Detections, shape: tuple[int, ...], select: str) -> int:
    """The face an image is about: `central` as `edge-mtl eval` takes it (large, confident, near the centre), or
    the `largest` box."""
    if select == "central":
        j = central_face(det, shape)
        assert j is not None
        return j
    wh = det.boxes[:, 2:] - det.boxes[:, :2]
    return int(np.argmax(wh[:, 0] * wh[:, 1]))


def tight_cut(img: npt.NDArray[np.uint8], det: Detections, select: str) -> npt.NDArray[np.uint8] | None:
    """The square around the picked face's box (`edge_mtl.vision.anycrop.cut_at_box`)."""
    if len(det) == 0:
        return None
    return cut_at_box(img, det.boxes[pick(det, img.shape, select)])


class Analyzer:
    """The largest face of each image, with and without the retry; first detections shared by both."""

    def __init__(self, det: FaceDetector, rec: FaceRecognizer, retry: PadRetry, select: str, fill: int = 0) -> None:
        self.det, self.rec, self.retry, self.select, self.fill = det, rec, retry, select, fill
        det.pad_retry = None  # the retry is applied here, from the same first detections
        self.retried = 0

    def crops(
        self, images: list[npt.NDArray[np.uint8]]
    ) -> dict[str, tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]]:
        out: dict[str, list[Any]] = {"off": [], "on": []}
        found: dict[str, list[bool]] = {"off": [], "on": []}
        for img in images:
            first = self.det.detect(img)
            again = detect_with_retry(lambda im: self.det.detect(im), img, first, self.retry, still=True)
            self.retried += again is not first
            for key, d in (("off", first), ("on", again)):
                if len(d):
                    j = pick(d, img.shape, self.select)
                    out[key].append(align_faces(img, d.landmarks[j : j + 1], self.rec.size, self.fill)[0])
                    found[key].append(True)
                else:
                    out[key].append(np.zeros((self.rec.size, self.rec.size, 3), np.uint8))
                    found[key].append(False)
        return {k: (np.stack(out[k]), np.array(found[k])) for k in out}


def utkface_part(root: Path, an: Analyzer, limit: int) -> dict[str, Any]:
    _, names = S.utkface_split(root / "utkface")
    names = names[::max(1, len(names) // limit)][:limit] if limit else names
    labels = [S.parse_utkface_name(n) for n in names]
    age = np.array([lb[0] for lb in labels if lb], np.float64)
    gender = np.array([lb[1] for lb in labels if lb], np.int64)
    tight = [read_image(root / "utkface" / n) for n in names]
    res: dict[str, Any] = {"images": len(names)}
    for version, imgs in (("tight", tight), ("context", [with_context(i) for i in tight])):
        for retry, (crops, found) in an.crops(imgs).items():
            a = an.rec.analyze(crops)
            right = ((a.female_prob >= 0.5).astype(np.int64) == gender) & found
            res[f"{version}_retry_{retry}"] = {
                "gender_accuracy": round(float(right.mean()), 4),
                "age_mae": round(float(np.abs(a.age_years[found] - age[found]).mean()), 3),
                "without_face": int((~found).sum()),
            }
    for retry in ("off", "on"):
        t, c = res[f"tight_retry_{retry}"], res[f"context_retry_{retry}"]
        res[f"gap_retry_{retry}"] = {"gender_points": round(100 * (c["gender_accuracy"] - t["gender_accuracy"]), 2),
                                     "age_mae_years": round(t["age_mae"] - c["age_mae"], 3)}
    return res


def lfw_part(root: Path, an: Analyzer, limit: int) -> dict[str, Any]:
    pairs = read_pairs(root / "lfw" / "pairs.txt")
    if limit:  # the first pairs of each fold, both classes alike
        per = {}
        for p in pairs:
            per.setdefault((p.fold, p.same), []).append(p)
        pairs = [p for v in per.values() for p in v[: max(1, limit // 20)]]
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})
    base = root / "lfw" / "images_deepfunneled"
    context = [read_image(base / n) for n in names]
    saved, an.det.pad_retry = an.det.pad_retry, None
    tight = []
    cut_missing = 0
    for img in context:
        t = tight_cut(img, an.det.detect(img), an.select)
        cut_missing += t is None
        tight.append(t if t is not None else img)
    an.det.pad_retry = saved
    idx = {n: i for i, n in enumerate(names)}
    ia, ib = np.array([idx[p.a] for p in pairs]), np.array([idx[p.b] for p in pairs])
    same, folds = np.array([p.same for p in pairs]), np.array([p.fold for p in pairs])
    res: dict[str, Any] = {"pairs": len(pairs), "images": len(names), "images_not_cut": cut_missing,
                           "tight_side_px_median": float(np.median([t.shape[0] for t in tight]))}
    outs: dict[str, Any] = {}
    for version, imgs in (("tight", tight), ("context", context)):
        for retry, (crops, found) in an.crops(imgs).items():
            a = an.rec.analyze(crops)
            outs[(version, retry)] = a
            sims = (a.embeddings[ia] * a.embeddings[ib]).sum(1).astype(np.float64)
            res[f"{version}_retry_{retry}"] = {"view2_accuracy": ten_fold_accuracy(sims, same, folds)["accuracy"],
                                               "without_face": int((~found).sum())}
    for retry in ("off", "on"):
        t, c = outs[("tight", retry)], outs[("context", retry)]
        res[f"tight_vs_context_retry_{retry}"] = {
            "gender_agreement": round(float(((t.female_prob >= 0.5) == (c.female_prob >= 0.5)).mean()), 4),
            "age_mean_abs_diff_years": round(float(np.abs(t.age_years - c.age_years).mean()), 3),
            "embedding_cosine_mean": round(float((t.embeddings * c.embeddings).sum(1).mean()), 4),
        }
    return res


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="../shared/data (default: $EDGE_MTL_DATA)")
    p.add_argument("--utk-limit", type=int, default=0, help="UTKFace validation images, evenly spaced (0: all)")
    p.add_argument("--lfw-pairs", type=int, default=0, help="LFW View 2 pairs, spread over folds (0: all 6,000)")
    p.add_argument("--skip-lfw", action="store_true")
    p.add_argument("--skip-utkface", action="store_true")
    p.add_argument("--select", choices=["central", "largest"], default="central",
                   help="which face of an image is analysed (central: as edge-mtl eval takes it)")
    p.add_argument("--fill", type=int, choices=range(256), metavar="0-255",
                   help="grey level where an aligned crop reaches beyond its image (default: the recognizer's own, "
                        "as the runtime aligns; another measures that fill, benchmarks/tight_diagnosis.py)")
    p.add_argument("--recognizer", type=Path, help="a recognizer file (default: the shipped one, as configured)")
    p.add_argument("--out", type=Path, help="also write the result here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = data_root(a.data)
    if root is None:
        p.error("needs ../shared/data (--data or EDGE_MTL_DATA)")
    cfg = AppConfig()
    retry = PadRetry(**cfg.detector.pad_retry.model_dump())
    rec = load_recognizer(cfg) if a.recognizer is None else open_recognizer(a.recognizer)
    an = Analyzer(load_detector(cfg), rec, retry, a.select, rec.fill if a.fill is None else a.fill)
    t0 = time.time()
    out: dict[str, Any] = {"retry": retry.__dict__, "select": a.select, "fill": an.fill,
                           "models": {"detector": an.det.meta.version, "recognizer": an.rec.meta.version}}
    if not a.skip_utkface:
        out["utkface_val"] = utkface_part(root, an, a.utk_limit)
        log.info("utkface: %s", json.dumps(out["utkface_val"]))
    if not a.skip_lfw:
        out["lfw_view2"] = lfw_part(root, an, a.lfw_pairs)
    out["retried_images"] = an.retried
    out["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(out, indent=1)
    sys.stdout.write(text + "\n")
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
