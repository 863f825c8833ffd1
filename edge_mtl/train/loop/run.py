"""`edge-mtl train --config FILE`: build the task named in the config and run the trainer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge_mtl.config import load_toml
from edge_mtl.errors import InputError
from edge_mtl.train.config import DetectorTrain, LandmarkTrain, TrainConfig

log = logging.getLogger(__name__)


def check_init_version(cfg: TrainConfig) -> None:
    """The deploy model a fine-tune starts from is the release its config names (`init_version`); InputError if not."""
    if cfg.init is None or cfg.init_version is None:
        return
    from edge_mtl.export_tools.onnx_utils import read_metadata

    found = read_metadata(cfg.init).version  # a missing or unreadable file: ModelError naming it
    if found != cfg.init_version:
        raise InputError(
            f"{cfg.init} is {found}, not {cfg.init_version} (init_version): check out the release this config "
            "starts from (its model card names the commit) or change init_version"
        )


def train(config_path: str | Path, resume: bool = True, max_steps: int | None = None) -> dict[str, float]:
    import torch

    from edge_mtl.train.loop.trainer import Trainer, seed_everything

    cfg = load_toml(config_path, TrainConfig)
    last = Path(cfg.out) / "last.pt"
    resuming = resume and last.exists()
    if not resuming:
        check_init_version(cfg)  # before hours of data loading
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    task: Any
    if isinstance(cfg.task, DetectorTrain):
        from edge_mtl.train.tasks.detector import DetectorTask

        task = DetectorTask(cfg)
    elif isinstance(cfg.task, LandmarkTrain):
        from edge_mtl.train.tasks.landmarks import LandmarkTask

        task = LandmarkTask(cfg)
    else:
        from edge_mtl.train.tasks.recognizer import RecognizerTask

        task = RecognizerTask(cfg)
    o = cfg.optim
    trainer = Trainer(
        task,
        task.dataset,
        task.collate,
        cfg.out,
        config=cfg.model_dump(mode="json"),
        kind=cfg.task.kind,
        epochs=o.epochs,
        batch_size=o.batch_size,
        lr=o.lr,
        weight_decay=o.weight_decay,
        optimizer=o.optimizer,
        warmup_steps=o.warmup_steps,
        grad_clip=o.grad_clip,
        workers=cfg.workers,
        seed=cfg.seed,
        checkpoint_every_s=cfg.checkpoint_every_s,
        keep_epochs=cfg.keep_epochs,
        max_steps=max_steps or o.max_steps,
        validate_every=getattr(cfg.task, "val_every", 1),
        lr_scales=o.lr_scales,
    )
    if resuming:
        trainer.resume(last)
    elif cfg.init is not None:
        trainer.init_weights(cfg.init, optimizer=cfg.init_optimizer)
    return trainer.fit()
