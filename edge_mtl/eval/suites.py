"""Evaluation suites (verification, attributes, detection): accuracy through the runtime path (detector, alignment,
recognizer, exactly as the daemon runs them) on ../shared/data. `edge-mtl eval` is their command."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge_mtl import defaults as D
from edge_mtl.config import AppConfig
from edge_mtl.errors import InputError
from edge_mtl.identity.scorenorm import ScoreNorm
from edge_mtl.paths import data_root
from edge_mtl.runtime.detector import FaceDetector
from edge_mtl.runtime.recognizer import FaceRecognizer
from edge_mtl.types import Detections, FaceAnalysis
from edge_mtl.vision.align import align_faces

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    """One evaluation: which suite, on which data, and its suite-specific settings."""

    what: str  # verification, attributes or detection
    data: Path | None = None  # default: $EDGE_MTL_DATA or ../shared/data
    limit: int = 0  # at most this many pairs / images (0: all)
    split: str = "val"  # attributes: val, all, reserved or a folder; detection: val
    utkface_full: Path | None = None  # attributes --split reserved: folder of the full UTKFace
    pairs: str = "pairs.txt"  # verification: LFW pairs file
    video: Path | None = None  # detection: video for false detections per frame
    quality_bins: int = 0  # verification: error by pair-quality bins (0: none)
    stamp: bool = False  # verification: write the measured thresholds into the recognizer file
    every_pair: bool = False  # verification: also TAR at low FAR over every pair of all LFW images
    fairface: Path | None = None  # attributes --split fairface: the fairface/ folder with ground_truth.json


def _root(opts: EvalOptions) -> Path:
    root = data_root(opts.data)
    if root is None:
        raise InputError("no data folder: pass --data ../shared/data or set EDGE_MTL_DATA")
    return root


def central_face(det: Detections, shape: tuple[int, ...]) -> int | None:
    """The face a face-centred photo is about: large, confident and near the centre."""
    if len(det) == 0:
        return None
    h, w = shape[:2]
    bc = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2
    size = np.sqrt(np.prod(np.clip(det.boxes[:, 2:] - det.boxes[:, :2], 1, None), axis=1))
    dist = np.linalg.norm(bc - np.array([w / 2, h / 2]), axis=1)
    return int(np.argmax(det.scores * size / (1.0 + dist / size)))


def crops_for_images(
    paths: list[Path], det: FaceDetector, size: int, pad: float = 0.0, found_out: list[bool] | None = None,
    fill: int = 0,
) -> tuple[npt.NDArray[np.uint8], int, float]:
    """Aligned crop of the central face of each image; images without a detection use the median landmarks of the
    others (counted). Returns crops, the number of fallbacks and the mean detection time per image (s); `found_out`,
    when given, receives whether each image's face was detected. `pad` and the crop beyond the image are `fill`
    (the recognizer's, `FaceRecognizer.fill`)."""
    from edge_mtl.data.images import read_image

    crops = np.zeros((len(paths), size, size, 3), np.uint8)
    lms: list[npt.NDArray[np.float32] | None] = []
    imgs_shape = []
    t_det = 0.0
    for i, p in enumerate(paths):
        img = read_image(p)
        off = round(pad * max(img.shape[:2]))
        if off:
            img = cv2.copyMakeBorder(img, off, off, off, off, cv2.BORDER_CONSTANT, value=(fill, fill, fill))
        t = time.perf_counter()
        d = det.detect(img)
        t_det += time.perf_counter() - t
        j = central_face(d, img.shape)
        imgs_shape.append(img.shape[:2])
        if j is None:
            lms.append(None)
            continue
        lms.append(d.landmarks[j])
        crops[i] = align_faces(img, d.landmarks[j : j + 1], size, fill)[0]
    found = [(lm / np.array([s[1], s[0]])) for lm, s in zip(lms, imgs_shape, strict=True) if lm is not None]
    missing = [i for i, lm in enumerate(lms) if lm is None]
    if found_out is not None:
        found_out[:] = [lm is not None for lm in lms]
    if missing:
        med = np.median(np.stack(found), axis=0) if found else None
        for i in missing:
            if med is None:
                continue
            img = read_image(paths[i])
            off = round(pad * max(img.shape[:2]))
            if off:
                img = cv2.copyMakeBorder(img, off, off, off, off, cv2.BORDER_CONSTANT, value=(fill, fill, fill))
            lm = (med * np.array([img.shape[1], img.shape[0]])).astype(np.float32)
            crops[i] = align_faces(img, lm[None], size, fill)[0]
    return crops, len(missing), t_det / max(len(paths), 1)


def _models(det: FaceDetector, rec: FaceRecognizer) -> dict[str, Any]:
    """Which models (and how run) produced a result."""
    return {"detector": det.meta.version, "recognizer": rec.meta.version, "recognizer_precision": rec.meta.precision,
            "recognizer_flip": rec.flip}


def eval_verification(opts: EvalOptions, cfg: AppConfig) -> dict[str, Any]:
    from edge_mtl.eval.verification import error_by_quality, read_pairs, verification_metrics
    from edge_mtl.identity.scorenorm import pair_scores
    from edge_mtl.runtime.registry import load_detector, load_recognizer

    root = _root(opts)
    pairs_file = root / "lfw" / opts.pairs
    if not pairs_file.is_file():
        raise InputError(f"--pairs: no {pairs_file} (LFW pairs files: pairs.txt, pairsDevTrain.txt, pairsDevTest.txt)")
    pairs = read_pairs(pairs_file)
    if opts.limit:
        # keep whole folds balanced: take the first `limit` pairs of each class
        same = [p for p in pairs if p.same][: opts.limit // 2]
        diff = [p for p in pairs if not p.same][: opts.limit // 2]
        pairs = same + diff
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})
    base = root / "lfw" / "images_deepfunneled"
    listed = len(names)
    if opts.every_pair and not opts.limit:  # every LFW image, the listed ones first
        others = sorted({str(f.relative_to(base)) for f in base.rglob("*.jpg")} - set(names))
        names = names + others
    det, rec = load_detector(cfg), load_recognizer(cfg)
    t0 = time.time()
    crops, missing, t_det = crops_for_images([base / n for n in names], det, rec.size, fill=rec.fill)
    t = time.perf_counter()
    res = rec.analyze(crops)
    t_rec = (time.perf_counter() - t) / max(len(names), 1)
    idx = {n: i for i, n in enumerate(names)}
    a = np.array([idx[p.a] for p in pairs])
    b = np.array([idx[p.b] for p in pairs])
    sims = pair_scores(res.embeddings, a, b, rec.score_norm)  # as the runtime matches (a cohort, if the file has one)
    same_arr = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    out: dict[str, Any] = {"pairs_file": opts.pairs,
                           **verification_metrics(sims, same_arr, folds, fars=(1e-4, 1e-3, 1e-2))}
    out["images"] = listed
    out["score_norm"] = _score_norm_figures(rec.score_norm)
    if opts.every_pair:
        from edge_mtl.eval.every_pair import every_pair_tar

        out["every_pair"] = every_pair_tar(res.embeddings, [n.split("/")[0] for n in names], norm=rec.score_norm)
    out["images_without_face"] = missing
    out["ms_per_image_detect"] = round(1000 * t_det, 2)
    out["ms_per_face_recognize"] = round(1000 * t_rec, 2)
    out["seconds"] = round(time.time() - t0, 1)
    if opts.quality_bins:
        pq = np.minimum(res.quality[a], res.quality[b]).astype(np.float64)
        out["error_by_pair_quality"] = error_by_quality(sims, same_arr, pq, opts.quality_bins, out["threshold"])
    out["models"] = _models(det, rec)
    if opts.stamp:
        out["stamped"] = stamp_operating_points(opts, cfg, rec, out)
    return out


def _score_norm_figures(norm: ScoreNorm | None) -> dict[str, Any] | None:
    """How the scores were made, for the result: None for plain cosine, else the cohort's size and `top`."""
    return None if norm is None else {"cohort": int(norm.cohort.shape[0]), "top": norm.top}


def check_stamp_args(opts: EvalOptions, cfg: AppConfig) -> None:
    """What `--stamp` needs, checked before the evaluation runs (not after minutes of it)."""
    if opts.what != "verification":
        raise InputError("--stamp goes with 'eval verification' (it writes the measured identity thresholds)")
    if opts.limit or opts.pairs != "pairs.txt":
        raise InputError("--stamp needs the whole of LFW View 2 (pairs.txt, no --limit)")
    if cfg.recognizer.backend.type != "onnxruntime":
        raise InputError("--stamp writes into an ONNX file: run it with the onnxruntime backend")


def stamp_operating_points(
    opts: EvalOptions, cfg: AppConfig, rec: FaceRecognizer, result: dict[str, Any]
) -> dict[str, Any]:
    """Write the thresholds just measured into the recognizer file's metadata (`operating_points`), where an unset
    `identity.threshold` finds them. Only a full View 2 run of an ONNX file counts."""
    import dataclasses
    import datetime

    from edge_mtl.export_tools.onnx_utils import load_model, metadata_of, save_model_atomic, set_metadata
    from edge_mtl.runtime.engine import far_key
    from edge_mtl.runtime.registry import model_path

    check_stamp_args(opts, cfg)
    r = cfg.recognizer
    path = model_path(r.model, "recognizer.onnx", r.backend.precision)
    model = load_model(path)
    meta = metadata_of(model, str(path))
    if (meta.version, meta.precision, meta.score_cohort) != (rec.meta.version, rec.meta.precision,
                                                             rec.meta.score_cohort):
        raise InputError(f"{path} is not the model just evaluated")
    mode = "flip" if rec.flip else "plain"
    points = {far_key(far): float(result[f"threshold_at_far_{far:g}"]) for far in D.IDENTITY_FALSE_ACCEPT_RATES}
    if not all(np.isfinite(v) for v in points.values()):
        raise InputError(f"no finite threshold to stamp: {points}")
    merged = {**meta.operating_points, mode: points}
    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    normed = ", scores normalised against its cohort" if rec.score_norm is not None else ""
    source = (f"LFW View 2, {int(result['pairs'])} pairs{normed}, "
              f"detector {result['models']['detector']}, {day} (edge-mtl eval verification --stamp)")
    set_metadata(model, dataclasses.replace(meta, operating_points=merged, operating_points_source=source),
                 keep_extra=True)
    try:
        save_model_atomic(model, path)
    except OSError as e:
        raise InputError(f"{path}: cannot write the measured thresholds into it ({e.strerror or e}); measured: "
                         f"{mode} {points}") from None
    log.info("%s: stamped %s identity thresholds %s", path, mode, points)
    return {"path": str(path), "mode": mode, "operating_points": points}


def reserved_utkface(root: Path, full: Path | None) -> tuple[Path, list[str]]:
    """The held-out UTKFace images (`utkface_reserved.txt` of the data folder: never trained or tuned on; the set
    the peers' figures are measured on) inside a copy of the full UTKFace; every one must be there."""
    from edge_mtl.data import sources as S

    listing = root / "utkface_reserved.txt"
    if not listing.is_file():
        raise InputError(f"--split reserved: no {listing}")
    if full is None or not Path(full).is_dir():
        raise InputError("--split reserved: needs --utkface-full DIR, a folder of the full UTKFace chips "
                         "(e.g. data/UTKFace/unlabeled of mattans/AgeProgression)")
    names = [n for n in listing.read_text().split() if n]
    absent = [n for n in names if not (Path(full) / n).is_file()]
    if absent:
        raise InputError(f"--utkface-full: {len(absent)} of the {len(names)} reserved images are not in {full} "
                         f"(first: {absent[0]})")
    bad = [n for n in names if S.parse_utkface_name(n) is None]
    if bad:
        raise InputError(f"{listing}: {len(bad)} names are not AGE_GENDER_RACE_DATE (first: {bad[0]!r})")
    return Path(full), names


def eval_attributes(opts: EvalOptions, cfg: AppConfig) -> dict[str, Any]:
    from edge_mtl.data import sources as S
    from edge_mtl.eval.attributes import attribute_metrics
    from edge_mtl.runtime.registry import load_detector, load_recognizer

    if opts.split == "fairface":
        return eval_fairface(opts, cfg)
    root = _root(opts)
    folder = root / "utkface"
    if opts.split == "val":
        _, names = S.utkface_split(folder)
    elif opts.split == "all":
        names = [Path(r.path).name for r in S.utkface(folder)]
    elif opts.split == "reserved":
        folder, names = reserved_utkface(root, opts.utkface_full)
    else:  # a folder of UTKFace-named images (e.g. a held-out set)
        folder = Path(opts.split)
        if not folder.is_dir():
            raise InputError(f"--split: expected 'val', 'all' or a folder of UTKFace images, got {opts.split}")
        names = [Path(r.path).name for r in S.utkface(folder)]
    if opts.limit:
        names = names[: opts.limit]
    labels = [S.parse_utkface_name(n) for n in names]
    det, rec = load_detector(cfg), load_recognizer(cfg)
    t0 = time.time()
    # UTKFace chips are tight crops: pad them so the detector sees the whole head, as a frame would show it.
    found: list[bool] = []
    crops, missing, _ = crops_for_images([folder / n for n in names], det, rec.size, pad=0.25, found_out=found,
                                       fill=rec.fill)
    res = rec.analyze(crops)
    out = attribute_metrics(
        [lb[0] for lb in labels if lb], res.age_years, [lb[1] for lb in labels if lb], res.female_prob, res.age_std,
        res.quality,
    )
    out.update(utkface_populations(names, labels, res, found, cfg))
    out["split"] = opts.split
    out["images_without_face"] = missing
    out["seconds"] = round(time.time() - t0, 1)
    out["models"] = _models(det, rec)
    return out


def utkface_populations(names: list[str], labels: list[tuple[int, int] | None], res: FaceAnalysis,
                        found: list[bool], cfg: AppConfig) -> dict[str, Any]:
    """`by_race` and `by_race_and_age` (edge_mtl.eval.populations) of a UTKFace evaluation."""
    from edge_mtl.eval.populations import labelled_mask, race_age_table, utkface_race

    a = cfg.attributes
    lab = labelled_mask(res.female_prob, res.age_years, found, a.gender_min_confidence, a.gender_min_age)
    race = [utkface_race(n) for n in names]
    return dict(race_age_table([-1 if r is None else r for r in race], [lb[0] if lb else -1 for lb in labels],
                               [lb[1] if lb else -1 for lb in labels], res.female_prob, res.age_years, found, lab))


def eval_fairface(opts: EvalOptions, cfg: AppConfig) -> dict[str, Any]:
    """FairFace-540 through the runtime path of `edge-mtl analyze` (no border added, the central face)."""
    from edge_mtl.eval.fairface import read_fairface
    from edge_mtl.eval.populations import fairface_table, labelled_mask
    from edge_mtl.runtime.registry import load_detector, load_recognizer

    items = read_fairface(opts.fairface)
    if opts.limit:
        items = items[: opts.limit]
    det, rec = load_detector(cfg), load_recognizer(cfg)
    t0 = time.time()
    found: list[bool] = []
    crops, missing, _ = crops_for_images([it.path for it in items], det, rec.size, found_out=found, fill=rec.fill)
    res = rec.analyze(crops)
    a = cfg.attributes
    lab = labelled_mask(res.female_prob, res.age_years, found, a.gender_min_confidence, a.gender_min_age)
    out: dict[str, Any] = {"split": "fairface", "images": len(items), "images_without_face": missing}
    out.update(fairface_table([it.gender for it in items], [it.age_bin for it in items], res.female_prob,
                              res.age_years, found, lab))
    out["gender_floors"] = {"min_confidence": a.gender_min_confidence, "min_age": a.gender_min_age}
    out["seconds"] = round(time.time() - t0, 1)
    out["models"] = _models(det, rec)
    return out


def eval_detection(opts: EvalOptions, cfg: AppConfig) -> dict[str, Any]:
    from edge_mtl.data import sources as S
    from edge_mtl.data.sources import to_det_images
    from edge_mtl.eval.detection import GroundTruth, evaluate, false_detections_per_frame
    from edge_mtl.runtime.registry import load_detector

    if opts.video is not None and not Path(opts.video).is_file():
        raise InputError(f"--video: no such file: {opts.video}")
    root = _root(opts)
    by_image = S.caltech(root / "caltech_webfaces")
    _, val = S.split_images(by_image, 0.1, 0)
    if opts.limit:
        val = val[: opts.limit]
    items = to_det_images({n: by_image[n] for n in val})
    det = load_detector(cfg)
    thr = det.score_threshold
    det.score_threshold = min(0.05, thr)  # AP needs low-score detections too; recall/precision use `thr`
    preds, gts, times = [], [], []
    from edge_mtl.data.images import read_image

    for it in items:
        img = read_image(Path(it.path))
        t = time.perf_counter()
        preds.append(det.detect(img))
        times.append(time.perf_counter() - t)
        gts.append(GroundTruth(it.boxes, it.landmarks))
    out: dict[str, Any] = {"split": "caltech val (10%, seed 0)", "images": len(items),
                           "score_threshold": thr, "input_size": det.input_size,
                           **evaluate(preds, gts, score_threshold=thr)}
    out["ms_per_image"] = round(1000 * float(np.median(times)), 2)
    det.score_threshold = thr
    video = opts.video or root / "videos" / "cctv_overhead_no_faces.mp4"
    if Path(video).exists():
        cap = cv2.VideoCapture(str(video))

        def frames() -> Any:
            n = 0
            while True:
                ok, f = cap.read()
                if not ok or (opts.limit and n >= opts.limit):
                    break
                n += 1
                yield f

        out["false_detections"] = {"video": Path(video).name, **false_detections_per_frame(det.detect, frames())}
        cap.release()
    return out


def run(opts: EvalOptions, cfg: AppConfig) -> dict[str, Any]:
    if opts.stamp:
        check_stamp_args(opts, cfg)
    if opts.what == "verification":
        return eval_verification(opts, cfg)
    if opts.what == "attributes":
        return eval_attributes(opts, cfg)
    return eval_detection(opts, cfg)
