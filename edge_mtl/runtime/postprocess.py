"""Detector post-processing in numpy: anchor points, decoding and non-maximum suppression.

Vectorised over anchors; NMS loops only over the faces it keeps. The same code serves every backend, so ONNX
Runtime, TensorRT and PyTorch outputs are decoded identically.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge_mtl.vision.boxes import box_iou

F32 = npt.NDArray[np.float32]


VOTE_FLOOR = 0.1  # candidates scoring at least this vote for the box and landmarks of the faces kept


def anchor_centers(h: int, w: int, stride: int) -> F32:
    """Centres (A x 2) of a level's anchor points, row-major, for an input of h x w pixels."""
    fh, fw = -(-h // stride), -(-w // stride)
    ys, xs = np.mgrid[0:fh, 0:fw].astype(np.float32)
    return np.stack([(xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride], axis=1)


def nms(boxes: F32, scores: F32, iou_threshold: float) -> npt.NDArray[np.int64]:
    """Greedy NMS; returns kept indices in decreasing score order."""
    if boxes.shape[0] == 0:
        return np.zeros((0,), np.int64)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode(
    scores: Sequence[F32],
    boxes: Sequence[F32],
    kps: Sequence[F32],
    strides: Sequence[int],
    input_hw: tuple[int, int],
    score_threshold: float,
    nms_threshold: float,
    max_faces: int = 1000,
    vote_iou: float | None = None,
) -> tuple[F32, F32, F32]:
    """Decode one image's per-level outputs (A x 1, A x 4, A x 2K) to boxes, scores and landmarks (N x K x 2)
    in input pixels, after score threshold and NMS.

    With `vote_iou`, each kept face's box and landmarks become the score-weighted mean over every candidate that
    overlaps it by at least that IoU (box voting): several anchors predict each face, and their average is less
    noisy than the single best one (on Caltech validation it lowers the landmark error by about 5%)."""
    h, w = input_hw
    # with voting, weaker candidates (down to VOTE_FLOOR) vote for the faces that pass the threshold
    floor = min(score_threshold, VOTE_FLOOR) if vote_iou is not None else score_threshold
    all_b, all_s, all_k = [], [], []
    for sc, bx, kp, s in zip(scores, boxes, kps, strides, strict=True):
        sc = sc.reshape(-1)
        sel = np.nonzero(sc >= floor)[0]
        if sel.size == 0:
            continue
        pts = anchor_centers(h, w, s)[sel]
        d = bx.reshape(-1, 4)[sel] * s
        all_b.append(np.concatenate([pts - d[:, :2], pts + d[:, 2:]], axis=1))
        all_s.append(sc[sel])
        k = kp.reshape(sc.shape[0], -1)[sel].reshape(sel.size, -1, 2)
        all_k.append(pts[:, None, :] + k * s)
    if not all_b:
        k_pts = kps[0].reshape(kps[0].shape[0], -1).shape[1] // 2 if len(kps) else 4
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, k_pts, 2), np.float32)
    b = np.concatenate(all_b).astype(np.float32)
    sc_all = np.concatenate(all_s).astype(np.float32)
    k_all = np.concatenate(all_k).astype(np.float32)
    passing = np.nonzero(sc_all >= score_threshold)[0]
    keep = passing[nms(b[passing], sc_all[passing], nms_threshold)][:max_faces]
    kb, ks, kk = b[keep], sc_all[keep], k_all[keep]
    if vote_iou is not None and keep.size:
        votes = np.where(box_iou(kb, b) >= vote_iou, sc_all[None, :].astype(np.float64), 0.0)
        votes /= np.maximum(votes.sum(axis=1, keepdims=True), 1e-12)
        kb = (votes @ b).astype(np.float32)
        kk = np.einsum("kn,npc->kpc", votes, k_all).astype(np.float32)
    return kb, ks, kk
