"""A cache of aligned 112x112 training crops, made with the project's own detector and alignment.

Training and runtime crop faces through the same code (`FaceDetector` + `align_faces`), so the recognizer is
trained on the geometry it will see. Each source is cached once as a uint8 memmap (N x 112 x 112 x 3, BGR, like
runtime frames) with a JSON index recording, per face, how its landmarks were obtained:
"detected" (our detector), "annotated" (the dataset's own 4 points, where the detector missed an annotated face),
"canonical" (pre-aligned sources where the detector found nothing: the source's median landmarks), or "missing" (no
image, or a face annotated by its box in a photo that the detector does not find), the landmarks it was aligned
with and the size of the image they refer to (`sizes`; a cut source's: its cut-out's). The crops are stored with
black beyond their images, as every model up to recognizer-1.6 was trained; `CropSet.rendered` serves them with
another fill (`RecognizerArgs.fill`) from those two.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_mtl.data.sources import FaceRecord
from edge_mtl.errors import InputError
from edge_mtl.runtime.detector import FaceDetector
from edge_mtl.types import Detections
from edge_mtl.vision.align import align_faces, refill
from edge_mtl.vision.anycrop import cut_at_box
from edge_mtl.vision.boxes import iou_matrix

log = logging.getLogger(__name__)
SIZE = 112


@dataclass
class CropSet:
    """A cached source: crops (memmap) and per-face keys and status."""

    images: npt.NDArray[np.uint8]
    keys: list[str]
    status: list[str]
    path: Path
    # N x 4 x 2 in source-image pixels (a cut source: the cut-out's), the ones each crop used
    landmarks: npt.NDArray[np.float32] | None = None
    # N x 2: width and height of the image those landmarks refer to (0 for a missing face); None for a cache built
    # before they were kept (a cut source's must be rebuilt; others get them from their files, `add_sizes`)
    sizes: npt.NDArray[np.int32] | None = None

    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}

    def present(self) -> list[int]:
        """Rows that hold a face (every status but "missing")."""
        return [i for i, st in enumerate(self.status) if st != "missing"]

    def rendered(self, fill: int, rows: Sequence[int] | npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.uint8]:
        """The crops (all, or `rows`) as alignment with `fill` beyond their images makes them (the recognizer's
        `fill`; 0: as stored)."""
        picked = np.arange(len(self.keys)) if rows is None else np.asarray(rows, np.int64)
        if fill == 0:  # as stored: all of them without a copy
            return np.asarray(self.images if rows is None else self.images[picked])
        out = np.array(self.images[picked])
        if self.sizes is None or self.landmarks is None:
            raise InputError(f"{self.path}: built before the crop cache kept image sizes (edge_mtl.data.crops."
                             "add_sizes, or remove it to rebuild)")
        for k, i in enumerate(picked):
            if self.status[i] != "missing":
                out[k] = refill(out[k], self.landmarks[i], (int(self.sizes[i, 0]), int(self.sizes[i, 1])), fill)
        return out


def pick_face(det: Detections, rec: FaceRecord, shape: tuple[int, int], offset: float) -> int | None:
    """Which detection is the record's face: by box overlap when the source annotates boxes, by eye distance to the
    annotated eyes when it has landmarks, else the large, confident face nearest the image centre."""
    if len(det) == 0:
        return None
    if rec.box is not None:
        ious = iou_matrix(rec.box[None].astype(np.float32) + offset, det.boxes)[0]
        i = int(np.argmax(ious))
        return i if ious[i] >= 0.3 else None
    if rec.landmarks is not None:
        ann = rec.landmarks[:2] + offset
        d = np.linalg.norm(det.landmarks[:, :2] - ann[None], axis=-1).mean(-1)
        iod = max(float(np.linalg.norm(ann[1] - ann[0])), 1.0)
        i = int(np.argmin(d))
        return i if d[i] < 0.5 * iod else None
    h, w = shape
    c = np.array([w / 2, h / 2], np.float32)
    bc = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2
    size = np.sqrt(np.prod(det.boxes[:, 2:] - det.boxes[:, :2], axis=1).clip(1))
    dist = np.linalg.norm(bc - c, axis=1)
    score = det.scores * size / (1.0 + dist / size)
    i = int(np.argmax(score))
    return i if dist[i] < 0.35 * max(h, w) else None


def read_bgr(path: str) -> npt.NDArray[np.uint8] | None:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    return img


def cache_source(
    records: Sequence[FaceRecord],
    detector: FaceDetector,
    out_dir: str | Path,
    name: str,
    pad: float = 0.25,
    cut: bool = False,
) -> CropSet:
    """Detect, align and store every record's face under `out_dir/name.{u8,json}` (skipped if complete).

    With `cut`, each face is first cut out of its image at the box the detector finds for it
    (`edge_mtl.vision.anycrop.cut_at_box`), as an ID photo or a tight crop shows it, and then detected and aligned
    in that cut-out: the tight version of a source with context (a face not found in the full image is missing)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_p, index_p = out_dir / f"{name}.u8", out_dir / f"{name}.json"
    if index_p.exists():
        return load_source(out_dir, name)
    n = len(records)
    tmp = out_dir / f"{name}.u8.tmp"
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, SIZE, SIZE, 3))
    status: list[str] = []
    lms_used = np.zeros((n, 4, 2), np.float32)
    sizes = np.zeros((n, 2), np.int32)
    pending: list[int] = []
    t0 = time.time()
    for i, rec in enumerate(records):
        img = read_bgr(rec.path)
        if img is None:
            status.append("missing")
            continue
        if cut:
            first = detector.detect(img)
            j = pick_face(first, rec, img.shape[:2], 0.0)
            if j is None:
                status.append("missing")
                continue
            img = cut_at_box(img, first.boxes[j])
            rec = replace(rec, box=None, landmarks=None)  # the face is the cut-out's: its own geometry is gone
        h, w = img.shape[:2]
        sizes[i] = (w, h)
        off = float(round(pad * max(h, w))) if rec.box is None else 0.0
        src = cv2.copyMakeBorder(img, int(off), int(off), int(off), int(off), cv2.BORDER_CONSTANT, value=(0, 0, 0)) \
            if off else img
        det = detector.detect(src)
        j = pick_face(det, rec, src.shape[:2], off)
        if j is not None:
            lm = det.landmarks[j]
            status.append("detected")
        elif rec.landmarks is not None and rec.landmarks.shape == (4, 2):
            lm = rec.landmarks + off
            status.append("annotated")
        elif rec.box is not None or cut:  # a face in a photo, not a pre-aligned chip: nothing to fall back on
            status.append("missing")
            continue
        else:
            status.append("canonical")
            pending.append(i)
            mm[i] = 0
            continue
        mm[i] = align_faces(src, lm[None])[0]
        lms_used[i] = lm - off
        if (i + 1) % 5000 == 0:
            log.info("%s: %d/%d faces (%.0f/s)", name, i + 1, n, (i + 1) / (time.time() - t0))
    # Pre-aligned sources: faces the detector missed get the source's median landmarks (relative to image size).
    det_idx = [i for i, s in enumerate(status) if s == "detected"]
    if pending and det_idx:
        rel = []
        for i in det_idx[:5000]:
            img = read_bgr(records[i].path)
            if img is not None:
                rel.append(lms_used[i] / np.array([img.shape[1], img.shape[0]], np.float32))
        med = np.median(np.stack(rel), axis=0)
        for i in pending:
            img = read_bgr(records[i].path)
            if img is None:
                status[i] = "missing"
                continue
            lm = med * np.array([img.shape[1], img.shape[0]], np.float32)
            mm[i] = align_faces(img, lm[None])[0]
            lms_used[i] = lm
            sizes[i] = (img.shape[1], img.shape[0])
    elif pending:
        for i in pending:
            status[i] = "missing"
    mm.flush()
    del mm
    os.replace(tmp, data_p)
    counts = {s: status.count(s) for s in sorted(set(status))}
    index_p.write_text(json.dumps({"keys": [r.key for r in records], "status": status, "counts": counts,
                                   "landmarks": lms_used.round(2).tolist(), "sizes": sizes.tolist(), "cut": cut}))
    log.info("%s: cached %d faces in %.0fs: %s", name, n, time.time() - t0, counts)
    return load_source(out_dir, name)


def ensure_source(records: Sequence[FaceRecord], detector: Callable[[], FaceDetector], out_dir: str | Path,
                  name: str, what: str, cut: bool = False, sizes: bool = False) -> CropSet:
    """The crop cache `name` of exactly `records`: built with `detector()` (called only then) when absent; an
    InputError when one of that name holds other faces (from other records, `what` names them for the message).
    With `sizes`, one built before image sizes were kept gets them (`add_sizes`), so that `CropSet.rendered` can
    serve any fill; a cut one must be rebuilt for that."""
    out_dir = Path(out_dir)
    if not (out_dir / f"{name}.json").exists():
        return cache_source(records, detector(), out_dir, name, cut=cut)
    cs = load_source(out_dir, name)
    if cs.keys != [r.key for r in records]:
        raise InputError(f"{out_dir}/{name} holds other faces than {what}: remove it to rebuild")
    return add_sizes(records, out_dir, name) if sizes and cs.sizes is None and not cut else cs


def load_source(out_dir: str | Path, name: str) -> CropSet:
    """A cached source; InputError when `out_dir` has none called `name` (a recognizer training run builds it)."""
    out_dir = Path(out_dir)
    if not (out_dir / f"{name}.json").exists():
        raise InputError(f"{out_dir}: no crop cache for {name} (a recognizer training run builds it)")
    meta = json.loads((out_dir / f"{name}.json").read_text())
    images = np.load(out_dir / f"{name}.u8", mmap_mode="r")
    lms = np.asarray(meta["landmarks"], np.float32) if meta.get("landmarks") else None
    sizes = np.asarray(meta["sizes"], np.int32).reshape(-1, 2) if "sizes" in meta else None
    return CropSet(images, list(meta["keys"]), list(meta["status"]), out_dir / f"{name}.u8", lms, sizes)


def add_sizes(records: Sequence[FaceRecord], out_dir: str | Path, name: str, cut: bool = False) -> CropSet:
    """Give a cache built before image sizes were kept its `sizes`, from its records' files decoded as the cache
    decoded them (EXIF orientation applied; about 3 ms a face). Only a model with another fill than black needs
    them (`CropSet.rendered`). Not for a cut source, whose sizes are its cut-outs': rebuild one of those."""
    out_dir = Path(out_dir)
    index_p = out_dir / f"{name}.json"
    meta = json.loads(index_p.read_text())
    if "sizes" in meta:
        return load_source(out_dir, name)
    if cut or meta.get("cut"):
        raise InputError(f"{out_dir}/{name}: a cut source built before image sizes were kept: remove it to rebuild")
    if meta["keys"] != [r.key for r in records]:
        raise InputError(f"{out_dir}/{name} holds other faces than its records: remove it to rebuild")
    sizes = []
    for r, st in zip(records, meta["status"], strict=True):
        img = read_bgr(r.path) if st != "missing" else None
        sizes.append([0, 0] if img is None else [img.shape[1], img.shape[0]])
    meta["sizes"] = sizes
    tmp = index_p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, index_p)
    log.info("%s: image sizes of %d faces added to the crop cache", name, len(sizes))
    return load_source(out_dir, name)
