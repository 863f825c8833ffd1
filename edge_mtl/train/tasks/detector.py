"""The detector training task: data from Caltech WebFaces (+ optional WIDER subset and MaskON), ATSS + QFL +
GIoU + landmark loss, validation on a seeded held-out split of Caltech images."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_mtl.data import sources as S
from edge_mtl.data.images import read_rgb
from edge_mtl.data.sources import DetImage, to_det_images
from edge_mtl.errors import InputError
from edge_mtl.eval.detection import GroundTruth, evaluate
from edge_mtl.models.detector import Detector, DetectorArgs, DetectorExport
from edge_mtl.models.metadata import DET_MEAN, DET_STD, detector_metadata
from edge_mtl.paths import data_root
from edge_mtl.runtime.detector import FaceDetector
from edge_mtl.runtime.torch_engine import TorchEngine
from edge_mtl.train.config import DetectorTrain, TrainConfig
from edge_mtl.train.data.detector import DetectionDataset, collate
from edge_mtl.train.losses.detector import detection_loss

log = logging.getLogger(__name__)

def caltech_split(root: Path, val_fraction: float, seed: int) -> tuple[list[DetImage], list[DetImage]]:
    by_image = S.caltech(root / "caltech_webfaces")
    train_names, val_names = S.split_images(by_image, val_fraction, seed)
    return (
        to_det_images({n: by_image[n] for n in train_names}),
        to_det_images({n: by_image[n] for n in val_names}),
    )


class DetectorTask:
    main_metric = "ap50"
    higher_is_better = True

    def __init__(self, cfg: TrainConfig) -> None:
        assert isinstance(cfg.task, DetectorTrain)
        self.cfg = cfg
        t = cfg.task
        self.args = DetectorArgs(
            widths=t.model.widths, depths=t.model.depths, neck=t.model.neck, head_convs=t.model.head_convs
        )
        self.model = Detector(self.args)
        root = data_root(cfg.data.shared)
        if root is None:
            raise InputError("detector training needs ../shared/data (set data.shared or EDGE_MTL_DATA)")
        train, self.val = caltech_split(root, t.val_fraction, t.split_seed)
        if t.val_limit:
            self.val = self.val[: t.val_limit]
        if "wider" in t.sources and cfg.data.wider_images and cfg.data.wider_labels:
            train += to_det_images(S.wider_yolo(cfg.data.wider_images, cfg.data.wider_labels))
        if "maskon" in t.sources and cfg.data.maskon_images and cfg.data.maskon_annotations:
            train += to_det_images(S.maskon_voc(cfg.data.maskon_images, cfg.data.maskon_annotations))
        log.info("detector data: %d training images, %d validation images", len(train), len(self.val))
        self.dataset = DetectionDataset(train, size=t.size, train=True, seed=cfg.seed, scales=t.crop_scales)
        self.collate = collate
        self._mean = torch.tensor(DET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(DET_STD).view(1, 3, 1, 1)

    def train_modules(self) -> nn.Module:
        return self.model

    def on_epoch_start(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def training_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x = (batch["image"].float() - self._mean) / self._std
        out = self.model(x)
        t = self.cfg.task
        assert isinstance(t, DetectorTrain)
        return detection_loss(
            out,
            batch["boxes"],
            batch["landmarks"],
            batch["ignore"],
            (x.shape[2], x.shape[3]),
            t.loss_weights,
            t.score_target_power,
        )

    def detector(self, score_threshold: float = 0.02) -> FaceDetector:
        t = self.cfg.task
        assert isinstance(t, DetectorTrain)
        engine = TorchEngine(DetectorExport(self.model), detector_metadata(self.args.to_dict()))
        return FaceDetector(engine, input_size=t.val_size, score_threshold=score_threshold)

    def validate(self) -> dict[str, float]:
        det = self.detector()
        preds, gts = [], []
        for item in self.val:
            rgb = read_rgb(item.path)
            preds.append(det.detect(np.ascontiguousarray(rgb[:, :, ::-1])))
            gts.append(GroundTruth(item.boxes, item.landmarks))
        self.model.train()
        return evaluate(preds, gts, score_threshold=0.5)

    def model_args(self) -> dict[str, Any]:
        return {"detector": self.args.to_dict()}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        return None
