"""Real-data calibration and evaluation inputs for INT8 quantization (recipe documented in calib/README.md).

INT8 scales are only as good as the activations they were measured on, so calibration uses what the deployed
models see: the recognizer gets aligned 112x112 crops made exactly as at runtime (the detector ONNX finds the face,
`align_faces` warps it with the 4 landmarks), the detector gets letterboxed frames. Everything is drawn with a fixed
seed from training splits only:

- recognizer: UTKFace training split (`utkface_split`, seed 0; never its validation split, never a name in
  utkface_reserved.txt) and CelebA crops; never LFW.
- detector: Caltech WebFaces training split (`split_images(names, 0.1, 0)`), plus a few evenly spaced frames of
  the shared videos.

The accuracy gate's held-out inputs come from the validation sides of the same splits (UTKFace validation, Caltech
validation), so calibration and gate never share an image. Each set carries a manifest naming every image used.
Torch-free (numpy + OpenCV + ONNX Runtime).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge_mtl.errors import InputError
from edge_mtl.paths import data_root
from edge_mtl.runtime.detector import PAD
from edge_mtl.runtime.engine import ModelMetadata, normalize
from edge_mtl.runtime.recognizer import model_fill

log = logging.getLogger(__name__)

SEED = 0
EVAL_SEED = 1
# Recognizer: aligned crops from these sources (counts before faces the detector misses are dropped).
RECOGNIZER_COUNTS = {"utkface": 192, "celeba_crops": 64}
RECOGNIZER_EVAL_COUNTS = {"utkface_val": 128}
# Detector: letterboxed frames (square canvas at the model's input size) from Caltech train images + video frames.
DETECTOR_IMAGES = 40
DETECTOR_EVAL_IMAGES = 64
VIDEO_FRAMES = {"pedestrians_1080p.mp4": 4, "selfie_portrait.mp4": 2, "cctv_overhead_no_faces.mp4": 2}
MIN_CROPS = 16
# As the recognizer's training crops (edge_mtl.data.crops): sources without face boxes (UTKFace chips, CelebA
# crops) are padded by a quarter of their long side so the detector sees context; detection at 320.
CHIP_PAD = 0.25
DETECT_SIZE = 320
DETECT_THRESHOLD = 0.3


@dataclass
class CalibrationSet:
    """Preprocessed inputs (N x 3 x H x W float32) and where each row came from."""

    inputs: npt.NDArray[np.float32]
    manifest: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def require_data(data: str | Path | None) -> Path:
    root = data_root(data)
    if root is None:
        raise InputError("no face data found: pass --data ../shared/data or set EDGE_MTL_DATA")
    return root


def read_bgr(path: str | Path) -> npt.NDArray[np.uint8] | None:
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if im is None else np.asarray(im, np.uint8)


def letterbox(image: npt.NDArray[np.uint8], input_size: int, square: bool = True) -> npt.NDArray[np.uint8]:
    """The detector's preprocessing (`FaceDetector.prepare`: long side -> input_size, zero padding to a multiple
    of 32), padded further to a square canvas when `square` so frames of any orientation batch together."""
    h, w = image.shape[:2]
    scale = input_size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    side = -(-input_size // PAD) * PAD
    ph, pw = (side, side) if square else (-(-nh // PAD) * PAD, -(-nw // PAD) * PAD)
    canvas = np.zeros((ph, pw, 3), np.uint8)
    canvas[:nh, :nw] = resized
    return canvas


def _sample(names: list[str], n: int, seed: int) -> list[str]:
    names = sorted(names)
    random.Random(seed).shuffle(names)
    return names[:n]


def reserved_utkface(root: Path) -> set[str]:
    p = root / "utkface_reserved.txt"
    return {ln.strip() for ln in p.read_text().splitlines() if ln.strip()} if p.is_file() else set()


def utkface_names(root: Path, split: str) -> list[str]:
    """UTKFace `train` or `val` names of the shared copy (seed-0 split), reserved names removed."""
    from edge_mtl.data.sources import utkface_split

    train, val = utkface_split(root / "utkface", seed=0)
    skip = reserved_utkface(root)
    return [n for n in (train if split == "train" else val) if n not in skip]


def caltech_names(root: Path, split: str) -> list[str]:
    """Caltech WebFaces `train` or `val` image names, split as the detector's training does
    (`split_images(names, 0.1, 0)` over the annotated images; names read directly, without fitting boxes)."""
    from edge_mtl.data.sources import split_images

    lines = (root / "caltech_webfaces" / "landmarks.txt").read_text().splitlines()
    names = {ln.split()[0] for ln in lines if len(ln.split()) == 9}
    train, val = split_images(names, 0.1, 0)
    return train if split == "train" else val


def celeba_names(root: Path) -> list[str]:
    lines = (root / "celeba_crops" / "meta.txt").read_text().splitlines()
    return sorted({ln.split()[0] for ln in lines if len(ln.split()) == 8})


# ------------------------------------------------------------------ recognizer crops
def _face_detector(detector_onnx: str | Path, threads: int = 0) -> Any:
    from edge_mtl.runtime.detector import FaceDetector
    from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine(detector_onnx, device="cpu", threads=threads)
    return FaceDetector(engine, input_size=DETECT_SIZE, score_threshold=DETECT_THRESHOLD)


def align_record(detector: Any, rec: Any, size: int, fill: int = 0) -> npt.NDArray[np.uint8] | None:
    """Crop one face exactly as the recognizer's training crops are made (`edge_mtl.data.crops`): pad sources
    without boxes by CHIP_PAD of their long side, detect, pick the record's face (`pick_face`: nearest the annotated
    eyes when the source has them, else the large confident central face), align with its 4 landmarks.
    None when the detector misses the face (calibration wants detector geometry, so no fallback). The padding and
    the crop beyond the image are `fill`, the recognizer's (`edge_mtl.runtime.recognizer.model_fill`)."""
    from edge_mtl.data.crops import pick_face
    from edge_mtl.vision.align import align_faces

    image = read_bgr(rec.path)
    if image is None:
        return None
    off = float(round(CHIP_PAD * max(image.shape[:2]))) if rec.box is None else 0.0
    framed = image
    if off:
        b = int(off)
        framed = np.asarray(cv2.copyMakeBorder(image, b, b, b, b, cv2.BORDER_CONSTANT, value=(fill,) * 3), np.uint8)
    det = detector.detect(framed)
    j = pick_face(det, rec, framed.shape[:2], off)
    if j is None:
        return None
    return np.asarray(align_faces(framed, det.landmarks[j : j + 1], size, fill)[0], np.uint8)


def _crops(
    detector: Any, records: list[Any], meta: ModelMetadata
) -> tuple[list[npt.NDArray[np.uint8]], list[str], int]:
    crops, manifest, missed = [], [], 0
    fill = model_fill(meta)
    for rec in records:
        crop = align_record(detector, rec, meta.input_size, fill)
        if crop is None:
            missed += 1
            continue
        crops.append(crop)
        manifest.append(rec.key)
    return crops, manifest, missed


def _utk_records(root: Path, names: list[str]) -> list[Any]:
    from edge_mtl.data.sources import FaceRecord

    return [FaceRecord("utkface", str(root / "utkface" / n), f"utkface/{n}") for n in names]


def _celeba_records(root: Path, names: list[str]) -> list[Any]:
    from edge_mtl.data.sources import celeba_crops

    by_name = {Path(r.path).name: r for r in celeba_crops(root / "celeba_crops")}
    return [by_name[n] for n in names if n in by_name]


def recognizer_calibration(
    detector_onnx: str | Path,
    meta: ModelMetadata,
    data: str | Path | None = None,
    counts: dict[str, int] | None = None,
    seed: int = SEED,
) -> CalibrationSet:
    """Aligned crops from the UTKFace training split and CelebA crops (see module docstring)."""
    root = require_data(data)
    counts = dict(RECOGNIZER_COUNTS if counts is None else counts)
    records: list[Any] = []
    if counts.get("utkface"):
        records += _utk_records(root, _sample(utkface_names(root, "train"), counts["utkface"], seed))
    if counts.get("celeba_crops"):
        records += _celeba_records(root, _sample(celeba_names(root), counts["celeba_crops"], seed))
    detector = _face_detector(detector_onnx)
    crops, manifest, missed = _crops(detector, records, meta)
    if len(crops) < MIN_CROPS:
        raise InputError(
            f"calibration: the detector found faces in only {len(crops)} of {len(records)} images "
            f"(need {MIN_CROPS}); is {detector_onnx} a trained detector?"
        )
    x = normalize(np.stack(crops), meta, bgr_input=True)
    info = {"kind": "recognizer", "seed": seed, "counts": counts, "crops": len(crops), "no_face": missed,
            "detector": Path(detector_onnx).name, "detect_size": DETECT_SIZE,
            "detect_threshold": DETECT_THRESHOLD, "pad": CHIP_PAD}
    log.info("recognizer calibration: %d crops (%d images without a face)", len(crops), missed)
    return CalibrationSet(x, manifest, info)


def recognizer_eval_set(
    detector_onnx: str | Path,
    meta: ModelMetadata,
    data: str | Path | None = None,
    n: int = RECOGNIZER_EVAL_COUNTS["utkface_val"],
    seed: int = EVAL_SEED,
) -> CalibrationSet:
    """Held-out aligned crops for the accuracy gate: the UTKFace validation split (never calibrated on)."""
    root = require_data(data)
    records = _utk_records(root, _sample(utkface_names(root, "val"), n, seed))
    crops, manifest, missed = _crops(_face_detector(detector_onnx), records, meta)
    if not crops:
        raise InputError(f"gate: the detector found no face in {len(records)} held-out images")
    x = normalize(np.stack(crops), meta, bgr_input=True)
    return CalibrationSet(x, manifest, {"kind": "recognizer", "seed": seed, "crops": len(crops), "no_face": missed})


# ------------------------------------------------------------------ detector frames
def video_frames(path: Path, count: int) -> list[tuple[int, npt.NDArray[np.uint8]]]:
    """`count` evenly spaced frames (index, BGR) of a video."""
    cap = cv2.VideoCapture(str(path))
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0 or count <= 0:
            return []
        wanted = sorted({int((i + 0.5) * total / count) for i in range(count)})
        out: list[tuple[int, npt.NDArray[np.uint8]]] = []
        idx = 0
        while wanted:
            ok, frame = cap.read()
            if not ok:
                break
            if idx == wanted[0]:
                out.append((idx, np.asarray(frame, np.uint8)))
                wanted.pop(0)
            idx += 1
        return out
    finally:
        cap.release()


def detector_calibration(
    meta: ModelMetadata,
    data: str | Path | None = None,
    n_images: int = DETECTOR_IMAGES,
    videos: dict[str, int] | None = None,
    seed: int = SEED,
    input_size: int | None = None,
) -> CalibrationSet:
    """Letterboxed frames from the Caltech WebFaces training split and the shared videos."""
    root = require_data(data)
    size = int(input_size or meta.input_size)
    frames, manifest = [], []
    for n in _sample(caltech_names(root, "train"), n_images, seed):
        im = read_bgr(root / "caltech_webfaces" / "images" / n)
        if im is not None:
            frames.append(letterbox(im, size))
            manifest.append(f"caltech_webfaces/images/{n}")
    for name, count in (VIDEO_FRAMES if videos is None else videos).items():
        for idx, frame in video_frames(root / "videos" / name, count):
            frames.append(letterbox(frame, size))
            manifest.append(f"videos/{name}#{idx}")
    if not frames:
        raise InputError(f"calibration: no readable detector images under {root}")
    x = normalize(np.stack(frames), meta, bgr_input=True)
    info = {"kind": "detector", "seed": seed, "images": n_images, "videos": videos or VIDEO_FRAMES,
            "input_size": size, "frames": len(frames)}
    return CalibrationSet(x, manifest, info)


def detector_eval_set(
    meta: ModelMetadata,
    data: str | Path | None = None,
    n: int = DETECTOR_EVAL_IMAGES,
    seed: int = EVAL_SEED,
    input_size: int | None = None,
) -> CalibrationSet:
    """Held-out letterboxed frames for the gate: the Caltech WebFaces validation split."""
    root = require_data(data)
    size = int(input_size or meta.input_size)
    frames, manifest = [], []
    for nm in _sample(caltech_names(root, "val"), n, seed):
        im = read_bgr(root / "caltech_webfaces" / "images" / nm)
        if im is not None:
            frames.append(letterbox(im, size))
            manifest.append(f"caltech_webfaces/images/{nm}")
    if not frames:
        raise InputError(f"gate: no readable held-out detector images under {root}")
    return CalibrationSet(normalize(np.stack(frames), meta, bgr_input=True), manifest, {"kind": "detector"})


# ------------------------------------------------------------------ export parity inputs
def parity_inputs(
    kind: str, meta: ModelMetadata, data: str | Path | None = None, n: int = 4
) -> npt.NDArray[np.float32] | None:
    """A few real validation inputs for the export parity check, without needing a detector: UTKFace validation
    chips resized to the crop size (roughly aligned already), or Caltech validation frames letterboxed to 320.
    None when the shared data is absent."""
    root = data_root(data)
    if root is None:
        return None
    images = []
    try:
        if kind in ("recognizer", "landmarks"):  # face crops at the model's input size
            for nm in _sample(utkface_names(root, "val"), n, EVAL_SEED):
                im = read_bgr(root / "utkface" / nm)
                if im is not None:
                    s = meta.input_size
                    images.append(cv2.resize(im, (s, s), interpolation=cv2.INTER_AREA))
        else:
            for nm in _sample(caltech_names(root, "val"), n, EVAL_SEED):
                im = read_bgr(root / "caltech_webfaces" / "images" / nm)
                if im is not None:
                    images.append(letterbox(im, 320))
    except OSError as e:
        log.warning("parity inputs: shared data unreadable (%s); using random inputs only", e)
        return None
    if not images:
        return None
    return normalize(np.stack(images), meta, bgr_input=True)
