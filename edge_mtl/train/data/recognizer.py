"""Recognizer training data: cached aligned crops with partial labels, and augmentation that imitates what a
camera does to a face (pose/landmark jitter, low resolution, blur, compression, low light, occlusion).

Each sample records how strongly it was degraded; the quality head learns from how far the degraded crop's
embedding drifts from its identity's reference, not from this number, but it is logged for analysis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from edge_mtl.train.data import augment as A
from edge_mtl.vision.align import refill
from edge_mtl.vision.anycrop import square_window

NO_TEACHER = np.full((128,), np.nan, np.float32)


@dataclass
class RecSample:
    """Where a face's crop is and its labels (-1 / NaN: not labelled)."""

    source: int  # index into the list of crop arrays
    row: int
    identity: int = -1
    age: float = -1.0
    gender: int = -1
    teacher: int = -1  # row in the teacher matrix
    gender_soft: float = float("nan")  # a gender teacher's P(female), for faces without a gender label


#: Where a face cut out at its box lands in the aligned 112x112 crop, measured on 80 LFW photos cut at the box the
#: detector found and aligned by the runtime path (`python benchmarks/tight_geometry.py`,
#: benchmarks/results/tight_geometry_lfw80.json): the part kept is a square of side 86-101 px (5th-95th percentile;
#: median 91) centred at x 55-57.5, y 61.5-64.5: the face box rule's square (side 88 at (56, 62)) give or take a
#: few pixels.
TIGHT_SIDE = (85.0, 99.0)
TIGHT_CENTRE = ((55.0, 58.0), (61.0, 65.0))


def tight_cut(img: npt.NDArray[np.uint8], rng: np.random.Generator, fill: int = 0) -> npt.NDArray[np.uint8]:
    """An aligned crop as it comes out of a photo cut at its face box (an ID photo, a face cropped by another
    program): `fill` (the model's, black by default) outside a square drawn from the measured spread (`TIGHT_SIDE`,
    `TIGHT_CENTRE`).

    Such a photo holds nothing beyond the box, and alignment fills the rest of the crop with black; the shipped
    models lose about 2 points of LFW View 2 accuracy on such cut-outs (`benchmarks/any_crop.py`)."""
    k = img.shape[1] / 112.0
    side = float(rng.uniform(*TIGHT_SIDE)) * k
    cx = float(rng.uniform(*TIGHT_CENTRE[0])) * k
    cy = float(rng.uniform(*TIGHT_CENTRE[1])) * k
    x0, y0, x1, y1 = square_window(cx, cy, side, img.shape)
    out = np.full_like(img, fill)
    out[y0:y1, x0:x1] = img[y0:y1, x0:x1]
    return out


def degrade(
    img: npt.NDArray[np.uint8], rng: np.random.Generator, strength: float, fill: int = 0
) -> tuple[npt.NDArray[np.uint8], float]:
    """Camera-like degradation of an aligned crop; returns the crop and a severity in [0, 1]. What the geometric
    jitter brings in from beyond the crop is `fill`, the model's."""
    sev = 0.0
    h, w = img.shape[:2]
    # small geometric jitter: landmark noise of a real detector
    if rng.random() < 0.7 * strength:
        ang = rng.normal(0, 4)
        sc = 1 + rng.normal(0, 0.04)
        tx, ty = rng.normal(0, 2, size=2)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, sc)
        m[:, 2] += (tx, ty)
        img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(fill, fill, fill))
    # low resolution: faces far from the camera
    if rng.random() < 0.35 * strength:
        side = int(rng.integers(14, 56))
        small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        sev += (56 - side) / 42
    if rng.random() < 0.15 * strength:
        img = A.blur(img, rng)
        sev += 0.3
    if rng.random() < 0.3 * strength:
        img = A.jpeg(img, rng)
        sev += 0.1
    if rng.random() < 0.08 * strength:
        img = A.low_light(img, rng)
        sev += 0.3
    # occlusion: a random rectangle (sunglasses, masks, hands)
    if rng.random() < 0.1 * strength:
        ow, oh = int(rng.integers(20, 70)), int(rng.integers(15, 50))
        x0, y0 = int(rng.integers(0, w - ow)), int(rng.integers(0, h - oh))
        img = img.copy()
        img[y0 : y0 + oh, x0 : x0 + ow] = rng.integers(0, 255, size=3, dtype=np.uint8)
        sev += 0.4
    if rng.random() < 0.6 * strength:
        img = A.color_jitter(img, rng, 0.25)
    if rng.random() < 0.05 * strength:
        img = A.grayscale(img)
    return img, min(sev, 1.0)


class RecognizerDataset(Dataset[dict[str, torch.Tensor]]):
    def __init__(
        self,
        crops: Sequence[str | Path],
        samples: Sequence[RecSample],
        teacher: npt.NDArray[np.float32] | None,
        train: bool = True,
        seed: int = 0,
        strength: float = 1.0,
        wild_p: float = 0.0,
        tight_p: float = 0.0,
        fill: int = 0,
        geometry: Sequence[tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]] | None = None,
    ) -> None:
        self.crop_paths = [str(c) for c in crops]
        self._crops: list[npt.NDArray[np.uint8]] | None = None  # opened lazily in each worker process
        self.samples = list(samples)
        self.teacher = teacher
        self.train = train
        self.seed = seed
        self.strength = strength
        self.wild_p = wild_p  # edge_mtl.train.data.rebalance.wild: colour casts, yaw
        self.tight_p = tight_p  # tight_cut: a face cut out at its box
        # the model's fill beyond the image (RecognizerArgs.fill); with another than black, each crop source's
        # landmarks and image sizes (CropSet) to serve its crops with it (vision.align.refill)
        if fill and (geometry is None or len(geometry) != len(self.crop_paths)):
            raise ValueError("RecognizerDataset: a fill other than 0 needs the landmarks and sizes of every source")
        self.fill = fill
        self.geometry = list(geometry) if fill and geometry is not None else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_crops"] = None  # never pickle the memory maps into worker processes
        return state

    @property
    def crops(self) -> list[npt.NDArray[np.uint8]]:
        if self._crops is None:
            self._crops = [np.load(p, mmap_mode="r") for p in self.crop_paths]
        return self._crops

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        cv2.setNumThreads(1)
        s = self.samples[i]
        img = np.asarray(self.crops[s.source][s.row])  # BGR
        if self.geometry is not None:
            lms, sizes = self.geometry[s.source]
            img = refill(img, lms[s.row], (int(sizes[s.row, 0]), int(sizes[s.row, 1])), self.fill)
        sev = 0.0
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            if rng.random() < 0.5:
                img = np.ascontiguousarray(img[:, ::-1])
            if self.tight_p and rng.random() < self.tight_p:  # no draw when off: earlier recipes train as before
                img = tight_cut(img, rng, self.fill)
            img, sev = degrade(np.ascontiguousarray(img), rng, self.strength, self.fill)
            if self.wild_p:
                from edge_mtl.train.data.rebalance import wild

                img = wild(img, rng, self.wild_p, self.fill)
        rgb = np.ascontiguousarray(img[:, :, ::-1])
        t = self.teacher[s.teacher] if (self.teacher is not None and s.teacher >= 0) else NO_TEACHER
        return {
            "image": torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),
            "identity": torch.tensor(s.identity, dtype=torch.long),
            "age": torch.tensor(s.age, dtype=torch.float32),
            "gender": torch.tensor(s.gender, dtype=torch.long),
            "gender_soft": torch.tensor(s.gender_soft, dtype=torch.float32),
            "teacher": torch.from_numpy(np.asarray(t, np.float32)),
            "severity": torch.tensor(sev, dtype=torch.float32),
        }
