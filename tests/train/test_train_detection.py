"""Detector training pieces: ATSS assignment by face size, GIoU, the joint loss, flip augmentation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_mtl.models.detector import STRIDES, Detector, DetectorArgs  # noqa: E402
from edge_mtl.train.data.augment import hflip, photometric, random_square_crop  # noqa: E402
from edge_mtl.train.losses.detector import (  # noqa: E402
    anchor_points,
    atss_assign,
    box_iou,
    decode_boxes,
    detection_loss,
    giou_loss,
)

H = W = 320


def _assign(gt: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pts, strides = anchor_points(H, W, torch.device("cpu"))
    sizes = [-(-H // s) * -(-W // s) for s in STRIDES]
    assigned, _ious = atss_assign(pts, strides, torch.tensor(gt), sizes)
    return assigned, strides, pts


def test_atss_big_face_coarse_levels_small_face_fine_level() -> None:
    big = [40.0, 40.0, 200.0, 200.0]  # 160 px
    small = [250.0, 250.0, 266.0, 266.0]  # 16 px
    assigned, strides, pts = _assign([big, small])
    big_strides = set(strides[assigned == 0].tolist())
    small_strides = set(strides[assigned == 1].tolist())
    assert big_strides and big_strides <= {16.0, 32.0} and 32.0 in big_strides
    assert small_strides == {8.0}
    for g, box in enumerate((big, small)):
        p = pts[assigned == g]
        assert ((p[:, 0] > box[0]) & (p[:, 0] < box[2]) & (p[:, 1] > box[1]) & (p[:, 1] < box[3])).all()


def test_atss_no_faces_and_each_point_one_face() -> None:
    assigned, _, _ = _assign([])
    assert (assigned == -1).all()
    # two overlapping faces: a point is claimed by at most one, the one it overlaps most
    assigned, _, _ = _assign([[100.0, 100.0, 180.0, 180.0], [120.0, 100.0, 200.0, 180.0]])
    assert set(assigned.unique().tolist()) == {-1, 0, 1}


def test_giou_loss_known_values() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 9.0, 8.0]])
    assert torch.allclose(giou_loss(a, a), torch.zeros(2), atol=1e-6)
    # overlap 1, union 7, enclosing 9: GIoU = 1/7 - 2/9
    got = giou_loss(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]]))
    assert float(got) == pytest.approx(1 - (1 / 7 - 2 / 9), rel=1e-5)
    # disjoint boxes: loss above 1 and still a gradient pulling them together
    p = torch.tensor([[0.0, 0.0, 1.0, 1.0]], requires_grad=True)
    loss = giou_loss(p, torch.tensor([[3.0, 0.0, 4.0, 1.0]]))
    assert float(loss.detach()) > 1
    loss.sum().backward()
    assert p.grad is not None and float(p.grad[0, 2]) < 0  # moving the right edge right lowers the loss
    assert torch.allclose(box_iou(a, a).diagonal(), torch.ones(2))


def test_decode_boxes_in_stride_units() -> None:
    pts = torch.tensor([[12.0, 20.0]])
    b = decode_boxes(pts, torch.tensor([8.0]), torch.tensor([[1.0, 0.5, 2.0, 1.5]]))
    assert b.tolist() == [[4.0, 16.0, 28.0, 32.0]]


def test_detection_loss_runs_and_learns_positives() -> None:
    torch.manual_seed(0)
    model = Detector(DetectorArgs(widths=(8, 8, 8, 8, 8), depths=(1, 1, 1, 1), neck=8, head_convs=1))
    x = torch.randn(2, 3, 128, 128)
    boxes = [torch.tensor([[30.0, 30.0, 90.0, 90.0]]), torch.zeros((0, 4))]
    lms = [torch.tensor([[[45.0, 50.0], [75.0, 50.0], [60.0, 62.0], [60.0, 78.0]]]), torch.zeros((0, 4, 2))]
    ign = [torch.zeros(1, dtype=torch.bool), torch.zeros(0, dtype=torch.bool)]
    out = detection_loss(model(x), boxes, lms, ign, (128, 128))
    assert set(out) == {"loss", "loss_cls", "loss_box", "loss_kps", "num_pos"}
    assert torch.isfinite(out["loss"]) and float(out["num_pos"]) > 0
    assert float(out["loss_box"]) > 0 and float(out["loss_kps"]) > 0
    out["loss"].backward()
    assert model.box.weight.grad is not None and model.box.weight.grad.abs().sum() > 0
    # no faces at all: only the classification term, and box/landmark losses are exactly zero
    model.zero_grad()
    none = detection_loss(model(x), [torch.zeros((0, 4))] * 2, [torch.zeros((0, 4, 2))] * 2,
                          [torch.zeros(0, dtype=torch.bool)] * 2, (128, 128))
    assert float(none["loss_box"]) == 0 and float(none["loss_kps"]) == 0 and float(none["num_pos"]) == 0
    assert float(none["loss"].detach()) > 0


def test_score_target_power_is_applied_to_the_iou_target() -> None:
    """Reference check: loss_cls equals the quality focal loss against IoU**p recomputed by hand."""
    torch.manual_seed(0)
    model = Detector(DetectorArgs(widths=(8, 8, 8, 8, 8), depths=(1, 1, 1, 1), neck=8, head_convs=1))
    outs = model(torch.randn(1, 3, 128, 128))
    gt = torch.tensor([[30.0, 30.0, 90.0, 90.0]])
    args = ([gt], [torch.full((1, 4, 2), float("nan"))], [torch.zeros(1, dtype=torch.bool)], (128, 128))
    cls = torch.cat([o[0] for o in outs], dim=1)[0, :, 0].detach()
    box = torch.cat([o[1] for o in outs], dim=1)[0].detach()
    pts, strides = anchor_points(128, 128, torch.device("cpu"))
    assigned, _ = atss_assign(pts, strides, gt, [(-(-128 // s)) ** 2 for s in STRIDES])
    pos = assigned >= 0
    iou = box_iou(decode_boxes(pts[pos], strides[pos], box[pos]), gt[assigned[pos]]).diagonal().clamp(min=0.01)
    got = {}
    for p in (1.0, 0.5):
        target = torch.zeros_like(cls)
        target[pos] = iou**p
        q = cls.sigmoid()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(cls, target, reduction="none")
        want = float((bce * (target - q).abs() ** 2).sum() / pos.sum())
        got[p] = float(detection_loss(outs, *args, target_power=p)["loss_cls"])
        assert got[p] == pytest.approx(want, rel=1e-4)
    assert got[1.0] != pytest.approx(got[0.5], rel=1e-3)


# ------------------------------------------------------------------ augmentation
def test_hflip_swaps_left_and_right() -> None:
    img = np.zeros((6, 10, 3), np.uint8)
    img[:, 0] = 255  # left column white
    boxes = np.array([[1.0, 2.0, 4.0, 6.0]], np.float32)
    lms = np.array([[[2.0, 3.0], [7.0, 3.5], [4.5, 5.0], [4.5, 5.5]]], np.float32)
    fimg, fb, fl = hflip(img, boxes, lms)
    assert (fimg[:, -1] == 255).all() and (fimg[:, 0] == 0).all()
    # pixel-index coordinates: column x goes to column (w - 1) - x, so a point on the white column 0 lands on
    # the white column 9 (a w - x mirror would put every flipped target one pixel off)
    np.testing.assert_array_equal(fb, [[5.0, 2.0, 8.0, 6.0]])
    # mirrored: old right eye (7) lands at 2 and is now the left eye (smaller x)
    np.testing.assert_array_equal(fl, [[[2.0, 3.5], [7.0, 3.0], [4.5, 5.0], [4.5, 5.5]]])
    on_white = np.array([[[0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [0.0, 4.0]]], np.float32)
    _, _, fw = hflip(img, boxes, on_white)
    assert (fimg[fw[0, :, 1].astype(int), fw[0, :, 0].astype(int)] == 255).all()
    assert (fl[:, 0, 0] < fl[:, 1, 0]).all()
    # flipping twice is the identity; inputs are not modified
    img2, b2, l2 = hflip(fimg, fb, fl)
    np.testing.assert_array_equal(img2, img)
    np.testing.assert_array_equal(b2, boxes)
    np.testing.assert_array_equal(l2, lms)
    five = np.array([[[2, 3], [7, 3], [4, 5], [3, 7], [6, 7.5]]], np.float32)
    _, _, f5 = hflip(img, boxes, five)
    np.testing.assert_array_equal(f5, [[[2, 3], [7, 3], [5, 5], [3, 7.5], [6, 7]]])
    _, fb0, fl0 = hflip(img, np.zeros((0, 4), np.float32), np.zeros((0, 4, 2), np.float32))
    assert fb0.shape == (0, 4) and fl0.shape == (0, 4, 2)


def test_random_square_crop_moves_geometry_with_pixels() -> None:
    img = np.zeros((200, 300, 3), np.uint8)
    img[80:120, 100:140] = 255  # a white 'face'
    boxes = np.array([[100.0, 80.0, 140.0, 120.0]], np.float32)
    lms = np.array([[[110.0, 95.0], [130.0, 95.0], [120.0, 105.0], [120.0, 112.0]]], np.float32)
    kept = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        out, b, lm, keep = random_square_crop(img, boxes, lms, 96, rng)
        assert out.shape == (96, 96, 3) and out.dtype == np.uint8
        if keep[0]:
            kept += 1
            x1, y1, x2, y2 = b[0]
            cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
            assert out[cy, cx].min() > 200, "the box centre is still on the white square"
            assert (lm[0, :, 0] > x1).all() and (lm[0, :, 0] < x2).all()
        again = random_square_crop(img, boxes, lms, 96, np.random.default_rng(seed))
        np.testing.assert_array_equal(again[0], out)
    assert kept >= 4, "crops are retried until they contain the face"


def test_photometric_keeps_shape_and_type() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    for _ in range(20):
        out = photometric(img, rng)
        assert out.shape == img.shape and out.dtype == np.uint8
