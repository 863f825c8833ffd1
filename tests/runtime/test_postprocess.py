"""Detector post-processing against an obviously correct loop implementation, and the anchor layout shared with
training (a mismatch there would silently break the detector)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_mtl.runtime.postprocess import anchor_centers, decode, nms

STRIDES = (8, 16, 32)


# ------------------------------------------------------------------ reference, one anchor at a time
def ref_iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    return inter / max(area - inter, 1e-9)


def ref_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep: list[int] = []
    for i in order:
        if all(ref_iou(boxes[i], boxes[j]) <= thr for j in keep):
            keep.append(i)
    return keep


def ref_decode(scores, boxes, kps, strides, hw, score_thr, nms_thr, max_faces=1000):  # type: ignore[no-untyped-def]
    _, w = hw
    cand_b, cand_s, cand_k = [], [], []
    for sc, bx, kp, s in zip(scores, boxes, kps, strides, strict=True):
        fw = -(-w // s)
        for a in range(sc.shape[0]):
            if sc[a, 0] < score_thr:
                continue
            cx, cy = (a % fw + 0.5) * s, (a // fw + 0.5) * s
            left, top, right, bottom = bx[a] * s
            cand_b.append([cx - left, cy - top, cx + right, cy + bottom])
            cand_s.append(sc[a, 0])
            cand_k.append([[cx + kp[a, 2 * i] * s, cy + kp[a, 2 * i + 1] * s] for i in range(kp.shape[1] // 2)])
    if not cand_b:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4, 2))
    b, sc_all, k = np.array(cand_b), np.array(cand_s), np.array(cand_k)
    keep = ref_nms(b, sc_all, nms_thr)[:max_faces]
    return b[keep], sc_all[keep], k[keep]


def _random_outputs(rng: np.random.Generator, h: int, w: int, points: int = 4, face_rate: float = 0.05):  # type: ignore[no-untyped-def]
    scores, boxes, kps = [], [], []
    for s in STRIDES:
        a = (-(-h // s)) * (-(-w // s))
        sc = rng.uniform(0, 1, (a, 1)) * (rng.uniform(0, 1, (a, 1)) < face_rate * 4)
        scores.append(sc.astype(np.float32))
        boxes.append(rng.uniform(0.2, 4.0, (a, 4)).astype(np.float32))
        kps.append(rng.normal(0, 1.5, (a, 2 * points)).astype(np.float32))
    return scores, boxes, kps


@pytest.mark.parametrize("seed", range(6))
def test_decode_matches_loop_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = [(96, 128), (64, 64), (160, 96), (100, 70), (48, 80), (224, 160)][seed]
    points = 5 if seed % 2 else 4
    scores, boxes, kps = _random_outputs(rng, h, w, points)
    score_thr, nms_thr = float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.2, 0.6))
    b, s, k = decode(scores, boxes, kps, STRIDES, (h, w), score_thr, nms_thr)
    rb, rs, rk = ref_decode(scores, boxes, kps, STRIDES, (h, w), score_thr, nms_thr)
    assert len(rs) > 3, "the random case should keep several faces"
    assert b.dtype == s.dtype == k.dtype == np.float32
    assert k.shape == (len(rs), points, 2)
    np.testing.assert_allclose(s, rs, rtol=1e-6)
    np.testing.assert_allclose(b, rb, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(k, rk, rtol=1e-5, atol=1e-3)
    # max_faces keeps the best
    b2, s2, _ = decode(scores, boxes, kps, STRIDES, (h, w), score_thr, nms_thr, max_faces=2)
    np.testing.assert_allclose(s2, rs[:2], rtol=1e-6)
    assert b2.shape == (2, 4)


def test_decode_nothing_above_threshold() -> None:
    rng = np.random.default_rng(0)
    scores, boxes, kps = _random_outputs(rng, 64, 96, points=5)
    scores = [np.zeros_like(x) for x in scores]
    b, s, k = decode(scores, boxes, kps, STRIDES, (64, 96), 0.5, 0.4)
    assert b.shape == (0, 4) and s.shape == (0,) and k.shape == (0, 5, 2)


def test_decode_batched_level_shapes_accepted() -> None:
    """ONNX outputs of one image are (A, 1), (A, 4), (A, 2K); flat score vectors decode the same."""
    rng = np.random.default_rng(7)
    scores, boxes, kps = _random_outputs(rng, 64, 64)
    a = decode(scores, boxes, kps, STRIDES, (64, 64), 0.4, 0.4)
    b = decode([x.reshape(-1) for x in scores], boxes, kps, STRIDES, (64, 64), 0.4, 0.4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = 60
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(5, 40, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    thr = [0.1, 0.3, 0.5, 0.7, 0.9][seed]
    keep = nms(boxes, scores, thr)
    assert keep.dtype == np.int64
    assert keep.tolist() == ref_nms(boxes, scores, thr)


def test_nms_known_case() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # box 3 wins, box 0 is identical (IoU 1), box 1 overlaps 81/119 = 0.68, box 2 is apart
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms(boxes, scores, 0.7).tolist() == [3, 1, 2]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).shape == (0,)


@pytest.mark.parametrize(("h", "w"), [(64, 96), (100, 70), (640, 480), (33, 65)])
def test_anchor_centers_match_training_anchor_points(h: int, w: int) -> None:
    torch = pytest.importorskip("torch")
    from edge_mtl.models.detector import STRIDES as MODEL_STRIDES
    from edge_mtl.train.losses.detector import anchor_points

    assert tuple(MODEL_STRIDES) == STRIDES
    pts, strides = anchor_points(h, w, torch.device("cpu"))
    ours = np.concatenate([anchor_centers(h, w, s) for s in STRIDES])
    np.testing.assert_array_equal(ours, pts.numpy())
    np.testing.assert_array_equal(np.concatenate([np.full(len(anchor_centers(h, w, s)), s) for s in STRIDES]),
                                  strides.numpy())


def test_anchor_centers_order_known() -> None:
    c = anchor_centers(16, 24, 8)  # 2 rows x 3 columns, row-major
    np.testing.assert_array_equal(c, [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]])
    assert anchor_centers(17, 24, 8).shape == (9, 2)  # partial rows count


@pytest.mark.parametrize(("h", "w"), [(64, 96), (100, 70)])
def test_anchor_count_and_order_match_the_network(h: int, w: int) -> None:
    """The network's per-level outputs flatten its ceil(h/s) x ceil(w/s) score maps row-major, like the centres."""
    torch = pytest.importorskip("torch")
    from edge_mtl.models.detector import Detector, DetectorArgs

    torch.manual_seed(0)
    model = Detector(DetectorArgs(widths=(8, 8, 8, 8, 8), depths=(1, 1, 1, 1), neck=8, head_convs=1)).eval()
    maps: list[torch.Tensor] = []
    model.cls.register_forward_hook(lambda _m, _i, out: maps.append(out.detach().clone()))
    with torch.no_grad():
        outs = model(torch.randn(1, 3, h, w))
    assert len(maps) == len(STRIDES)
    for (cls, _, _), m, s in zip(outs, maps, STRIDES, strict=True):
        fh, fw = -(-h // s), -(-w // s)
        assert tuple(m.shape[-2:]) == (fh, fw)
        assert cls.shape[1] == len(anchor_centers(h, w, s)) == fh * fw
        centres = anchor_centers(h, w, s)
        for a in (0, 1, fw, cls.shape[1] - 1):  # anchor a sits at map cell (y, x) = (a // fw, a % fw)
            y, x = a // fw, a % fw
            assert float(cls[0, a, 0]) == float(m[0, 0, y, x])
            np.testing.assert_array_equal(centres[a], [(x + 0.5) * s, (y + 0.5) * s])


def test_vote_averages_overlapping_candidates() -> None:
    """Box voting: the kept face becomes the score-weighted mean of the candidates overlapping it."""
    from edge_mtl.runtime.postprocess import decode

    # one level of stride 8 on a 16x16 input: 4 anchors at (4,4), (12,4), (4,12), (12,12)
    scores = np.array([[0.9], [0.3], [0.0], [0.0]], np.float32)
    # anchor 0 predicts a box 4 px around (4,4); anchor 1 predicts the same box seen from (12,4)
    boxes = np.array([[0.5, 0.5, 0.5, 0.5], [1.5, 0.5, -0.5, 0.5], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    kps = np.zeros((4, 8), np.float32)
    kps[0] = [0.0, 0.0] * 4  # landmarks at the anchor (4,4)
    kps[1] = [-0.75, 0.0] * 4  # landmarks at (6,4): 2 px to the right of anchor 0's
    b0, s0, k0 = decode([scores], [boxes], [kps], [8], (16, 16), 0.5, 0.4)
    b1, s1, k1 = decode([scores], [boxes], [kps], [8], (16, 16), 0.5, 0.4, vote_iou=0.5)
    np.testing.assert_allclose(k0[0, :, 0], 4.0)
    # anchor 1 (score 0.3) is below the score threshold but overlaps the kept face: it still votes
    np.testing.assert_allclose(k1[0, :, 0], (0.9 * 4.0 + 0.3 * 6.0) / 1.2, rtol=1e-5)
    np.testing.assert_allclose(b1, b0, atol=1e-5)
    assert s1[0] == s0[0]
