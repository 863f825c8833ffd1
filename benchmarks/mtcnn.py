"""MTCNN face detection (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", IEEE SPL 2016), written for this benchmark from the paper's description.

Only the pretrained weights come from elsewhere: the state dicts `pnet.pt`, `rnet.pt`, `onet.pt` shipped inside
the `facenet-pytorch` wheel (MIT), read straight from the wheel (a zip), so the package itself is never installed.
The layer layout below is the one the paper describes and the state-dict shapes confirm:

- P-Net (fully convolutional, 12x12 receptive field, stride 2): conv3x3(10) PReLU maxpool2/2, conv3x3(16) PReLU,
  conv3x3(32) PReLU, then 1x1 convolutions to 2 (face / not face) and 4 (box offsets).
- R-Net (24x24 input): conv3x3(28) PReLU maxpool3/2, conv3x3(48) PReLU maxpool3/2, conv2x2(64) PReLU,
  fc(128) PReLU, fc 2 and fc 4.
- O-Net (48x48 input): conv3x3(32) PReLU maxpool3/2, conv3x3(64) PReLU maxpool3/2, conv3x3(64) PReLU maxpool2/2,
  conv2x2(128) PReLU, fc(256) PReLU, fc 2, fc 4 and fc 10 (five landmarks).

Pooling rounds up (the weights were trained in Caffe, whose pooling output size is ceil-based), and the fully
connected layers read their input flattened in (width, height, channel) order, the layout of the converted weights
(checked against annotated faces with `mtcnn_layout_check.py`; the other orders lose faces and landmarks).
Input pixels are RGB, scaled as (x - 127.5) / 128. Box offsets are fractions of the box's width and height;
landmarks are the five x fractions followed by the five y fractions of the O-Net input box.

Inference (the paper, section II.A): an image pyramid (first scale 12 / min_face, then times `factor`) through
P-Net, candidate windows kept above threshold 1, NMS per scale and across scales, box regression, windows made
square; R-Net on 24x24 crops (threshold 2, NMS, regression, square); O-Net on 48x48 crops (threshold 3,
regression, landmarks, NMS by intersection over the smaller box).
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch import nn

F32 = npt.NDArray[np.float32]
WEIGHT_FILES = {"pnet": "facenet_pytorch/data/pnet.pt", "rnet": "facenet_pytorch/data/rnet.pt",
                "onet": "facenet_pytorch/data/onet.pt"}


class PNet(nn.Module):
    """Proposal network: fully convolutional, one 12x12 window per output cell (stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> N x (W*H*C), the order the converted fully connected weights expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class RNet(nn.Module):
    """Refinement network on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = nn.functional.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten_whc(self.prelu3(self.conv3(x)))))
        return torch.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output network on 48x48 crops: score, box offsets and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = nn.functional.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = nn.functional.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_whc(self.prelu4(self.conv4(x)))))
        return torch.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def load_networks(wheel: str | Path) -> tuple[PNet, RNet, ONet]:
    """The three networks with the pretrained weights read from the facenet-pytorch wheel (a zip file)."""
    nets = (PNet(), RNet(), ONet())
    with zipfile.ZipFile(wheel) as z:
        for net, key in zip(nets, ("pnet", "rnet", "onet"), strict=True):
            state = torch.load(io.BytesIO(z.read(WEIGHT_FILES[key])), map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
            net.eval()
    return nets


def nms(boxes: F32, scores: F32, thr: float, mode: str = "union") -> npt.NDArray[np.int64]:
    """Greedy non-maximum suppression; `mode="min"` divides the overlap by the smaller box (MTCNN's last stage)."""
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-9) <= thr]
    return np.asarray(keep, np.int64)


def _regress(boxes: F32, reg: F32) -> F32:
    wh = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    return (boxes + reg * wh).astype(np.float32)


def _square(boxes: F32) -> F32:
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(axis=1, keepdims=True) / 2
    return np.concatenate([c - half, c + half], axis=1).astype(np.float32)


def _crops(image: npt.NDArray[np.uint8], boxes: F32, size: int) -> npt.NDArray[np.uint8]:
    """Each box cut from the image (zero outside it) and resized to size x size."""
    h, w = image.shape[:2]
    out = np.zeros((boxes.shape[0], size, size, 3), np.uint8)
    for k, (x1f, y1f, x2f, y2f) in enumerate(boxes):
        x1, y1, x2, y2 = math.floor(x1f), math.floor(y1f), math.ceil(x2f), math.ceil(y2f)
        bw, bh = x2 - x1, y2 - y1
        if bw < 1 or bh < 1:
            continue
        patch = np.zeros((bh, bw, 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
        interp = cv2.INTER_AREA if bw > size else cv2.INTER_LINEAR
        out[k] = cv2.resize(patch, (size, size), interpolation=interp)
    return out


def _to_tensor(batch: npt.NDArray[np.uint8]) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()
    return (x - 127.5) * 0.0078125


@dataclass
class MtcnnResult:
    boxes: F32  # N x 4, x1 y1 x2 y2
    scores: F32  # N, O-Net face probability
    landmarks: F32  # N x 5 x 2: left eye, right eye, nose, left mouth corner, right mouth corner


class MTCNN:
    """The three-stage cascade on one RGB image. Settings default to the paper's / common ones."""

    def __init__(
        self,
        wheel: str | Path,
        min_face: float = 20.0,
        factor: float = 0.709,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7),
    ) -> None:
        self.pnet, self.rnet, self.onet = load_networks(wheel)
        self.min_face = min_face
        self.factor = factor
        self.thresholds = thresholds
        self.nms_thresholds = nms_thresholds  # P-Net per scale, P-Net across scales, R-Net, O-Net (min)

    def scales(self, h: int, w: int) -> list[float]:
        m = 12.0 / self.min_face
        side = min(h, w) * m
        out: list[float] = []
        while side >= 12.0:
            out.append(m * self.factor ** len(out))
            side *= self.factor
        return out

    @torch.inference_mode()
    def detect(self, rgb: npt.NDArray[np.uint8]) -> MtcnnResult:
        h, w = rgb.shape[:2]
        empty = MtcnnResult(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        t1, t2, t3 = self.thresholds
        # stage 1: P-Net over the pyramid
        cands = []
        for s in self.scales(h, w):
            hs, ws = math.ceil(h * s), math.ceil(w * s)
            im = cv2.resize(rgb, (ws, hs), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            prob, reg = self.pnet(_to_tensor(im[None]))
            p = prob[0].numpy()
            ys, xs = np.nonzero(p >= t1)
            if ys.size == 0:
                continue
            boxes = np.stack([2 * xs, 2 * ys, 2 * xs + 12, 2 * ys + 12], axis=1).astype(np.float32) / s
            sc = p[ys, xs].astype(np.float32)
            rg = reg[0].numpy()[:, ys, xs].T.astype(np.float32)
            k = nms(boxes, sc, self.nms_thresholds[0])
            cands.append((boxes[k], sc[k], rg[k]))
        if not cands:
            return empty
        boxes = np.concatenate([c[0] for c in cands])
        sc = np.concatenate([c[1] for c in cands])
        rg = np.concatenate([c[2] for c in cands])
        k = nms(boxes, sc, self.nms_thresholds[1])
        boxes = _square(_regress(boxes[k], rg[k]))
        # stage 2: R-Net
        prob, reg = self.rnet(_to_tensor(_crops(rgb, boxes, 24)))
        p = prob.numpy()
        keep = p >= t2
        if not keep.any():
            return empty
        boxes, sc, rg = boxes[keep], p[keep].astype(np.float32), reg.numpy()[keep].astype(np.float32)
        k = nms(boxes, sc, self.nms_thresholds[2])
        boxes = _square(_regress(boxes[k], rg[k]))
        # stage 3: O-Net
        prob, reg, lm = self.onet(_to_tensor(_crops(rgb, boxes, 48)))
        p = prob.numpy()
        keep = p >= t3
        if not keep.any():
            return empty
        boxes, sc = boxes[keep], p[keep].astype(np.float32)
        rg, lm_n = reg.numpy()[keep].astype(np.float32), lm.numpy()[keep].astype(np.float32)
        wh = boxes[:, 2:] - boxes[:, :2]
        pts = np.stack([boxes[:, None, 0] + wh[:, None, 0] * lm_n[:, :5],
                        boxes[:, None, 1] + wh[:, None, 1] * lm_n[:, 5:]], axis=2).astype(np.float32)
        boxes = _regress(boxes, rg)
        k = nms(boxes, sc, self.nms_thresholds[3], mode="min")
        return MtcnnResult(boxes[k], sc[k], pts[k])
