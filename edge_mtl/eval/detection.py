"""Detection metrics: recall by face size, precision, AP at IoU 0.5, landmark error, false detections per frame.

Face size is measured by inter-ocular distance (IOD) of the annotation: under 10 px, 10-30 px, over 30 px.
Matching is greedy by score at IoU >= 0.5, one prediction per annotated face (the PASCAL VOC rule).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_mtl.types import Detections
from edge_mtl.vision.boxes import iou_matrix

F32 = npt.NDArray[np.float32]
BANDS: tuple[tuple[str, float, float], ...] = (
    ("iod_lt10", 0.0, 10.0),
    ("iod_10_30", 10.0, 30.0),
    ("iod_gt30", 30.0, float("inf")),
)


@dataclass
class GroundTruth:
    boxes: F32  # G x 4
    landmarks: F32  # G x K x 2 (NaN where not annotated)



def match(pred_boxes: F32, pred_scores: F32, gt_boxes: F32, iou_thr: float = 0.5) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.bool_]
]:
    """Greedy by score: for each prediction the index of the face it matched (-1 if none); and per face whether
    any prediction matched it."""
    order = np.argsort(-pred_scores, kind="stable")
    ious = iou_matrix(pred_boxes, gt_boxes)
    taken = np.zeros(gt_boxes.shape[0], bool)
    assign = np.full(pred_boxes.shape[0], -1, np.int64)
    for p in order:
        if gt_boxes.shape[0] == 0:
            break
        cand = np.where(taken, -1.0, ious[p])
        g = int(np.argmax(cand))
        if cand[g] >= iou_thr:
            taken[g] = True
            assign[p] = g
    return assign, taken


def average_precision(scores: npt.NDArray[np.float64], tp: npt.NDArray[np.bool_], n_gt: int) -> float:
    """All-point interpolated AP (VOC 2010+)."""
    if n_gt == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp_c = np.cumsum(tp[order])
    fp_c = np.cumsum(~tp[order])
    rec = tp_c / n_gt
    prec = tp_c / np.maximum(tp_c + fp_c, 1)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[1.0], prec, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]).sum())


def iod(landmarks: F32) -> npt.NDArray[np.float64]:
    """Inter-ocular distance per face (points 0 and 1 are the eyes); NaN where not annotated."""
    return np.linalg.norm(landmarks[:, 0] - landmarks[:, 1], axis=-1).astype(np.float64)


def evaluate(
    predictions: Sequence[Detections],
    truths: Sequence[GroundTruth],
    score_threshold: float,
    iou_thr: float = 0.5,
) -> dict[str, float]:
    """Recall per IOD band and overall (at `score_threshold`), precision, AP@0.5 (over all scores), NME."""
    all_scores, all_tp = [], []
    n_gt = 0
    band_hit = {b: 0 for b, _, _ in BANDS}
    band_n = {b: 0 for b, _, _ in BANDS}
    tp_thr = fp_thr = 0
    nme: list[float] = []
    nme_iod: list[float] = []
    for det, gt in zip(predictions, truths, strict=True):
        n_gt += gt.boxes.shape[0]
        assign, _ = match(det.boxes, det.scores, gt.boxes, iou_thr)
        all_scores.append(det.scores.astype(np.float64))
        all_tp.append(assign >= 0)
        keep = det.scores >= score_threshold
        assign_t, hit = match(det.boxes[keep], det.scores[keep], gt.boxes, iou_thr)
        tp_thr += int((assign_t >= 0).sum())
        fp_thr += int((assign_t < 0).sum())
        d = iod(gt.landmarks)
        for b, lo, hi in BANDS:
            inb = (d >= lo) & (d < hi)
            band_n[b] += int(inb.sum())
            band_hit[b] += int((hit & inb).sum())
        lms = det.landmarks[keep]
        for p, g in enumerate(assign_t):
            if g < 0 or not np.isfinite(gt.landmarks[g]).all() or lms.shape[1] != gt.landmarks.shape[1]:
                continue
            err = np.linalg.norm(lms[p] - gt.landmarks[g], axis=-1).mean()
            nme.append(err / max(d[g], 1e-6))
            nme_iod.append(float(d[g]))
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    tps = np.concatenate(all_tp) if all_tp else np.zeros(0, bool)
    res: dict[str, float] = {
        "faces": float(n_gt),
        "ap50": round(average_precision(scores, tps, n_gt), 4),
        "recall": round(tp_thr / max(n_gt, 1), 4),
        "precision": round(tp_thr / max(tp_thr + fp_thr, 1), 4),
        "false_positives": float(fp_thr),
        "nme": round(float(np.mean(nme)), 4) if nme else float("nan"),
        "nme_median": round(float(np.median(nme)), 4) if nme else float("nan"),
    }
    # Landmark error on the faces alignment is done for (IOD >= 10 px): a 1 px error on a 6 px face is 17%.
    big = [e for e, i in zip(nme, nme_iod, strict=True) if i >= 10.0]
    res["nme_iod_ge10"] = round(float(np.mean(big)), 4) if big else float("nan")
    res["nme_median_iod_ge10"] = round(float(np.median(big)), 4) if big else float("nan")
    for b, _, _ in BANDS:
        res[f"recall_{b}"] = round(band_hit[b] / band_n[b], 4) if band_n[b] else float("nan")
        res[f"faces_{b}"] = float(band_n[b])
    hits10 = band_hit["iod_10_30"] + band_hit["iod_gt30"]
    n10 = band_n["iod_10_30"] + band_n["iod_gt30"]
    res["recall_iod_ge10"] = round(hits10 / n10, 4) if n10 else float("nan")
    return res


def false_detections_per_frame(
    detect: Callable[[npt.NDArray[np.uint8]], Detections], frames: Iterable[npt.NDArray[np.uint8]]
) -> dict[str, float]:
    """Detections per frame on a video with (almost) no visible faces: every detection counts as false."""
    n = dets = 0
    worst = 0
    for f in frames:
        k = len(detect(f))
        dets += k
        worst = max(worst, k)
        n += 1
    return {"frames": float(n), "detections": float(dets), "per_frame": round(dets / max(n, 1), 4),
            "max_in_frame": float(worst)}
