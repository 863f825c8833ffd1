"""Detection training data: images with face boxes, landmarks where annotated, and camera-like augmentation."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from edge_mtl.data.images import read_rgb
from edge_mtl.data.sources import DetImage
from edge_mtl.train.data import augment as A

log = logging.getLogger(__name__)
MIN_FACE = 6.0  # px after resize: smaller faces become "ignore" regions, neither positive nor negative


class DetectionDataset(Dataset[dict[str, torch.Tensor]]):
    """Random square crops of `size` with flips and photometric augmentation (train) or none (eval)."""

    def __init__(
        self,
        images: Sequence[DetImage],
        size: int = 320,
        train: bool = True,
        seed: int = 0,
        scales: tuple[float, float] = (0.3, 1.6),
    ) -> None:
        self.images = list(images)
        self.scales = scales
        self.size = size
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        cv2.setNumThreads(1)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        item = self.images[i]
        img = read_rgb(item.path)
        boxes, lms = item.boxes.copy(), item.landmarks.copy()
        if self.train:
            img, boxes, lms, keep = A.random_square_crop(img, boxes, lms, self.size, rng, self.scales)
            boxes, lms = boxes[keep], lms[keep]
            if rng.random() < 0.5:
                img, boxes, lms = A.hflip(img, boxes, lms)
            img = A.photometric(img, rng)
        else:
            h, w = img.shape[:2]
            s = self.size / max(h, w)
            img = cv2.resize(img, (round(w * s), round(h * s)))
            pad = np.zeros((self.size, self.size, 3), np.uint8)
            pad[: img.shape[0], : img.shape[1]] = img
            img = pad
            boxes, lms = boxes * s, lms * s
        wh = boxes[:, 2:] - boxes[:, :2]
        ignore = wh.min(axis=1) < MIN_FACE if len(boxes) else np.zeros((0,), bool)
        return {
            "image": torch.from_numpy(img).permute(2, 0, 1).contiguous(),
            "boxes": torch.from_numpy(boxes.astype(np.float32)),
            "landmarks": torch.from_numpy(lms.astype(np.float32)),
            "ignore": torch.from_numpy(ignore),
        }


def collate(batch: list[dict[str, torch.Tensor]]) -> dict[str, object]:
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "boxes": [b["boxes"] for b in batch],
        "landmarks": [b["landmarks"] for b in batch],
        "ignore": [b["ignore"] for b in batch],
    }
