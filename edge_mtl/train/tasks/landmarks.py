"""Training the landmark refiner on Caltech WebFaces' four annotated points.

Each sample starts from the annotation disturbed the way a detector errs (per-point noise plus a random rotation,
scale and shift of the whole set, between `noise_min` and `noise_max` of the inter-ocular distance), aligns the
face with those points exactly as runtime does, and learns the offsets that take the template back to the true
points. Validation runs the real detector, then the refiner, on the held-out Caltech images (the detector's split).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from edge_mtl.data import sources as S
from edge_mtl.errors import InputError
from edge_mtl.eval.detection import GroundTruth, evaluate
from edge_mtl.models.landmarks import LandmarkArgs, LandmarkExport, LandmarkRefiner
from edge_mtl.models.metadata import DET_MEAN, DET_STD, landmarks_metadata
from edge_mtl.paths import data_root
from edge_mtl.runtime.landmarks import LandmarkRefiner as RuntimeRefiner
from edge_mtl.runtime.torch_engine import TorchEngine
from edge_mtl.train.config import LandmarkTrain, TrainConfig
from edge_mtl.train.data import augment as A
from edge_mtl.vision.align import align_matrix, template

log = logging.getLogger(__name__)


def jitter(gt: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """Detector-like error on 4 points: a similarity perturbation of the set plus per-point noise."""
    iod = max(float(np.linalg.norm(gt[1] - gt[0])), 1.0)
    level = rng.uniform(lo, hi) * iod
    c = gt.mean(0)
    ang = np.deg2rad(rng.normal(0, 6.0))
    sc = 1.0 + rng.normal(0, 0.06)
    rot = sc * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    shift = rng.normal(0, 0.6 * level, 2)
    pts = (gt - c) @ rot.T + c + shift
    return (pts + rng.normal(0, 0.7 * level, gt.shape)).astype(np.float32)


class LandmarkDataset(Dataset[dict[str, torch.Tensor]]):
    def __init__(self, faces: list[S.FaceRecord], args: LandmarkArgs, lo: float, hi: float, seed: int = 0) -> None:
        self.faces, self.args, self.lo, self.hi, self.seed = faces, args, lo, hi, seed
        self.epoch = 0
        self.tpl = template(args.points, args.size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        cv2.setNumThreads(1)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        rec = self.faces[i]
        img = cv2.imread(rec.path, cv2.IMREAD_COLOR)
        assert rec.landmarks is not None and img is not None
        gt = rec.landmarks.astype(np.float32)
        if rng.random() < 0.5:  # mirror the image and the points (pixel-index convention, left/right swapped)
            img = np.ascontiguousarray(img[:, ::-1])
            gt = gt.copy()
            gt[:, 0] = (img.shape[1] - 1) - gt[:, 0]
            gt = gt[A.FLIP_ORDER[len(gt)]]
        init = jitter(gt, rng, self.lo, self.hi)
        s = self.args.size
        m = align_matrix(init, s)
        crop = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        crop = A.photometric(crop, rng)
        target = (gt @ m[:, :2].T + m[:, 2] - self.tpl) / s
        rgb = np.ascontiguousarray(crop[:, :, ::-1])
        return {"image": torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),
                "target": torch.from_numpy(target.reshape(-1).astype(np.float32))}


class LandmarkTask:
    main_metric = "nme_iod_ge10"
    higher_is_better = False

    def __init__(self, cfg: TrainConfig) -> None:
        assert isinstance(cfg.task, LandmarkTrain)
        self.cfg, t = cfg, cfg.task
        self.t = t
        root = data_root(cfg.data.shared)
        if root is None:
            raise InputError("landmark training needs ../shared/data (set data.shared or EDGE_MTL_DATA)")
        by_image = S.caltech(root / "caltech_webfaces")
        train_names, val_names = S.split_images(by_image, t.val_fraction, t.split_seed)
        faces = [r for n in train_names for r in by_image[n]
                 if r.landmarks is not None and np.linalg.norm(r.landmarks[1] - r.landmarks[0]) >= t.min_iod]
        self.args = LandmarkArgs(size=t.model.size, widths=t.model.widths)
        self.model = LandmarkRefiner(self.args)
        self.dataset = LandmarkDataset(faces, self.args, t.noise_min, t.noise_max, cfg.seed)
        self.collate = None
        from edge_mtl.data.sources import to_det_images

        self.val = to_det_images({n: by_image[n] for n in val_names})
        self._mean = torch.tensor(DET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(DET_STD).view(1, 3, 1, 1)
        log.info("landmark refiner: %d training faces, %d validation images", len(faces), len(self.val))

    def train_modules(self) -> nn.Module:
        return self.model

    def on_epoch_start(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def training_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x = (batch["image"].float() - self._mean) / self._std
        pred = self.model(x)
        loss = F.smooth_l1_loss(pred, batch["target"], beta=0.01)
        return {"loss": loss}

    def validate(self) -> dict[str, float]:
        if self.t.detector is None:
            return {}
        from edge_mtl.runtime.detector import FaceDetector
        from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine

        engine = TorchEngine(LandmarkExport(self.model), landmarks_metadata(self.args.to_dict()))
        det = FaceDetector(OnnxRuntimeEngine(Path(self.t.detector)), input_size=640, score_threshold=0.4)
        base_p, ref_p, gts = [], [], []
        for it in self.val:
            img = cv2.imread(it.path, cv2.IMREAD_COLOR)
            if img is None:
                raise InputError(f"{it.path}: not a readable image")
            det.refiner = None
            d = det.detect(img)
            base_p.append(d)
            refined = RuntimeRefiner(engine, self.t.iterations).refine(img, d.landmarks)
            ref_p.append(type(d)(d.boxes, d.scores, refined))
            gts.append(GroundTruth(it.boxes, it.landmarks))
        self.model.train()
        b = evaluate(base_p, gts, 0.4)
        r = evaluate(ref_p, gts, 0.4)
        return {"nme_iod_ge10": r["nme_iod_ge10"], "nme_median_iod_ge10": r["nme_median_iod_ge10"],
                "detector_nme_iod_ge10": b["nme_iod_ge10"], "nme": r["nme"], "detector_nme": b["nme"]}

    def model_args(self) -> dict[str, Any]:
        return {"landmarks": self.args.to_dict()}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        return None
