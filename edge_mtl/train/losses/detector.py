"""Detection losses: ATSS assignment, quality focal loss, GIoU box loss, smooth-L1 landmarks.

ATSS (Zhang et al. 2020) picks, per face and level, the k anchor points nearest the face centre and keeps those
whose IoU with the face beats mean + std of the candidates: the threshold adapts to face size, which matters for
the tiny faces that dominate camera footage. The classification target of a positive is the IoU of its
predicted box (quality focal loss, Li et al. 2020), so the score ranks well-localised faces first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edge_mtl.models.detector import STRIDES

ANCHOR_SCALE = 4.0  # an anchor point of stride s stands for a square of side 4s during assignment


def anchor_points(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres (A x 2, pixels) and their strides (A,) for an input of h x w, levels concatenated."""
    pts, strides = [], []
    for s in STRIDES:
        fh, fw = -(-h // s), -(-w // s)
        ys, xs = torch.meshgrid(
            torch.arange(fh, device=device, dtype=torch.float32),
            torch.arange(fw, device=device, dtype=torch.float32),
            indexing="ij",
        )
        pts.append(torch.stack([(xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s], dim=1))
        strides.append(torch.full((fh * fw,), float(s), device=device))
    return torch.cat(pts), torch.cat(strides)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of boxes a (N x 4) and b (M x 4), x1y1x2y2."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-6)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - GIoU, elementwise over matched rows."""
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    ap = (pred[:, 2:] - pred[:, :2]).clamp(min=0).prod(-1)
    at = (target[:, 2:] - target[:, :2]).clamp(min=0).prod(-1)
    union = (ap + at - inter).clamp(min=1e-6)
    iou = inter / union
    elt = torch.min(pred[:, :2], target[:, :2])
    erb = torch.max(pred[:, 2:], target[:, 2:])
    enclose = (erb - elt).clamp(min=0).prod(-1).clamp(min=1e-6)
    return 1 - (iou - (enclose - union) / enclose)


def decode_boxes(points: torch.Tensor, strides: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Distances (l, t, r, b) in stride units -> boxes in pixels."""
    d = dist * strides[:, None]
    return torch.cat([points - d[:, :2], points + d[:, 2:]], dim=1)


@torch.no_grad()
def atss_assign(
    points: torch.Tensor,
    strides: torch.Tensor,
    gt: torch.Tensor,
    level_sizes: list[int],
    topk: int = 9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For A anchor points and G faces: (assigned face index per point or -1, IoU of that pairing)."""
    a = points.shape[0]
    assigned = torch.full((a,), -1, dtype=torch.long, device=points.device)
    if gt.shape[0] == 0:
        return assigned, torch.zeros(a, device=points.device)
    half = strides[:, None] * ANCHOR_SCALE / 2
    anchors = torch.cat([points - half, points + half], dim=1)
    ious = box_iou(anchors, gt)  # A x G
    gc = (gt[:, :2] + gt[:, 2:]) / 2
    dist = torch.cdist(points, gc)  # A x G
    cands = []
    start = 0
    for n in level_sizes:
        k = min(topk, n)
        _, idx = dist[start : start + n].topk(k, dim=0, largest=False)
        cands.append(idx + start)
        start += n
    cand = torch.cat(cands, dim=0)  # C x G
    cand_iou = ious.gather(0, cand)
    thr = cand_iou.mean(0) + cand_iou.std(0)
    is_pos = cand_iou >= thr[None, :]
    px = points[cand, 0]
    py = points[cand, 1]
    inside = (px > gt[None, :, 0]) & (px < gt[None, :, 2]) & (py > gt[None, :, 1]) & (py < gt[None, :, 3])
    is_pos &= inside
    # Resolve points claimed by several faces by highest IoU.
    masked = torch.full_like(ious, -1.0)
    g_idx = torch.arange(gt.shape[0], device=points.device)[None, :].expand_as(cand)
    masked[cand[is_pos], g_idx[is_pos]] = ious[cand[is_pos], g_idx[is_pos]]
    best_iou, best_g = masked.max(dim=1)
    pos = best_iou >= 0
    assigned[pos] = best_g[pos]
    return assigned, best_iou.clamp(min=0)


def quality_focal_loss(logits: torch.Tensor, target: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """QFL: BCE against a soft target (IoU for positives, 0 for negatives), modulated by |target - p|^beta."""
    p = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return bce * (target - p).abs().pow(beta)


def detection_loss(
    outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    gt_boxes: list[torch.Tensor],
    gt_landmarks: list[torch.Tensor],
    gt_ignore: list[torch.Tensor],
    image_hw: tuple[int, int],
    weights: tuple[float, float, float] = (1.0, 2.0, 0.2),
    target_power: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Joint loss over a batch; returns {"loss", "loss_cls", "loss_box", "loss_kps", "num_pos"}.

    A positive's score target is IoU**target_power (1: plain quality focal loss)."""
    cls = torch.cat([o[0] for o in outputs], dim=1)[..., 0]  # B x A
    box = torch.cat([o[1] for o in outputs], dim=1)  # B x A x 4
    kps = torch.cat([o[2] for o in outputs], dim=1)  # B x A x 2K
    device = cls.device
    h, w = image_hw
    points, strides = anchor_points(h, w, device)
    level_sizes = [-(-h // s) * -(-w // s) for s in STRIDES]
    k = kps.shape[-1] // 2
    l_cls, l_box, l_kps = [], [], []
    n_pos = 0.0
    n_kps = 0.0
    for b in range(cls.shape[0]):
        gt = gt_boxes[b].to(device)
        ign = gt_ignore[b].to(device)
        lm = gt_landmarks[b].to(device)
        valid = gt[~ign]
        vlm = lm[~ign]
        assigned, _ = atss_assign(points, strides, valid, level_sizes)
        pos = assigned >= 0
        target = torch.zeros_like(cls[b])
        weight = torch.ones_like(cls[b])
        if ign.any():  # points inside tiny (ignored) faces are neither positives nor negatives
            ib = gt[ign]
            inside = (
                (points[:, None, 0] > ib[None, :, 0])
                & (points[:, None, 0] < ib[None, :, 2])
                & (points[:, None, 1] > ib[None, :, 1])
                & (points[:, None, 1] < ib[None, :, 3])
            ).any(1)
            weight[inside & ~pos] = 0.0
        if pos.any():
            pb = decode_boxes(points[pos], strides[pos], box[b][pos])
            tb = valid[assigned[pos]]
            iou = box_iou(pb.detach(), tb).diagonal() if pb.shape[0] else pb.new_zeros(0)
            target[pos] = iou.clamp(min=0.01) ** target_power
            l_box.append(giou_loss(pb, tb).sum())
            tl = vlm[assigned[pos]]  # P x K x 2
            has = ~torch.isnan(tl).any(dim=(1, 2))
            if has.any():
                off = (tl[has] - points[pos][has][:, None, :]) / strides[pos][has][:, None, None]
                pred = kps[b][pos][has].reshape(-1, k, 2)
                l_kps.append(F.smooth_l1_loss(pred, off, beta=1.0 / 9, reduction="sum") / (2 * k))
                n_kps += float(has.sum())
            n_pos += float(pos.sum())
        l_cls.append((quality_focal_loss(cls[b], target) * weight).sum())
    denom = max(n_pos, 1.0)
    loss_cls = torch.stack(l_cls).sum() / denom
    loss_box = torch.stack(l_box).sum() / denom if l_box else cls.sum() * 0
    loss_kps = torch.stack(l_kps).sum() / max(n_kps, 1.0) if l_kps else cls.sum() * 0
    wc, wb, wk = weights
    total = wc * loss_cls + wb * loss_box + wk * loss_kps
    return {
        "loss": total,
        "loss_cls": loss_cls.detach(),
        "loss_box": loss_box.detach(),
        "loss_kps": loss_kps.detach(),
        "num_pos": torch.tensor(n_pos / cls.shape[0]),
    }
