"""A small, explicit training loop: seeded, resumable mid-epoch, per-task metrics logged every epoch.

A task object owns the model, its losses and its validation; the trainer owns the loop, the optimiser, the
schedule, checkpoints and logging. The loop stops on a non-finite loss instead of training on garbage.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from edge_mtl.errors import InputError, ModelError
from edge_mtl.models.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


class TrainTask(Protocol):
    """What the trainer needs from a task (detector or multi-task recognizer)."""

    model: nn.Module
    main_metric: str  # key of validate()'s result to select the best checkpoint by
    higher_is_better: bool

    def train_modules(self) -> nn.Module: ...

    def training_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]: ...

    def validate(self) -> dict[str, float]: ...

    def model_args(self) -> dict[str, Any]: ...

    def extra_state(self) -> dict[str, Any]: ...

    def load_extra_state(self, state: dict[str, Any]) -> None: ...

    def on_epoch_start(self, epoch: int) -> None: ...


class EpochSampler(Sampler[int]):
    """A permutation seeded by (seed, epoch), started at `start`: what makes mid-epoch resume exact."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self.epoch, self.start = 0, 0

    def set(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return self.n - self.start


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(modules: nn.Module, weight_decay: float, lr_scales: dict[str, float]) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the trainable parameters of `modules` split by weight decay (none on
    biases and norms) and by learning-rate multiplier (`lr_scale`, from the longest prefix of `lr_scales` that
    matches the parameter's name; 1 where none does). A prefix that names no trainable parameter is an error."""
    def scale_of(name: str) -> tuple[str, float]:
        hits = [k for k in lr_scales if name == k or name.startswith(k + ".")]
        if not hits:
            return "", 1.0
        k = max(hits, key=len)
        return k, lr_scales[k]

    buckets: dict[tuple[float, bool], list[nn.Parameter]] = {}
    used: set[str] = set()
    for name, p in modules.named_parameters():
        if not p.requires_grad:
            continue
        k, scale = scale_of(name)
        if k:
            used.add(k)
        buckets.setdefault((scale, p.ndim > 1), []).append(p)
    unused = sorted(set(lr_scales) - used)
    if unused:
        raise InputError(f"optim.lr_scales: {', '.join(unused)} names no trained parameter")
    order = sorted(buckets, key=lambda k: (k[0] != 1.0, k[0], not k[1]))  # unscaled first, decayed before not
    return [{"params": buckets[k], "weight_decay": weight_decay if k[1] else 0.0, "lr_scale": k[0]} for k in order]


def lr_at(step: int, total: int, warmup: int, base: float, final_ratio: float = 0.01) -> float:
    """Linear warm-up, then cosine decay to final_ratio x base."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class Trainer:
    def __init__(
        self,
        task: TrainTask,
        dataset: Dataset[Any],
        collate: Any,
        out_dir: str | Path,
        *,
        config: dict[str, Any],
        kind: str,
        epochs: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        optimizer: str = "adamw",
        warmup_steps: int = 200,
        grad_clip: float = 10.0,
        workers: int = 1,
        seed: int = 0,
        checkpoint_every_s: float = 600.0,
        keep_epochs: int = 0,
        max_steps: int | None = None,
        validate_every: int = 1,
        lr_scales: dict[str, float] | None = None,
    ) -> None:
        self.task, self.dataset, self.collate = task, dataset, collate
        self.out = Path(out_dir)
        self.config, self.kind = config, kind
        self.epochs, self.batch_size = epochs, batch_size
        self.base_lr, self.grad_clip = lr, grad_clip
        self.workers, self.seed = workers, seed
        self.checkpoint_every_s = checkpoint_every_s
        self.keep_epochs = keep_epochs
        self.max_steps = max_steps
        self.validate_every = validate_every
        self.steps_per_epoch = len(dataset) // batch_size  # type: ignore[arg-type]
        self.total_steps = self.steps_per_epoch * epochs
        self.warmup = min(warmup_steps, max(1, self.total_steps // 10))
        groups = param_groups(task.train_modules(), weight_decay, lr_scales or {})
        self.opt: torch.optim.Optimizer
        if optimizer == "sgd":
            self.opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
        else:
            self.opt = torch.optim.AdamW(groups, lr=lr)
        self.sampler = EpochSampler(len(dataset), seed)  # type: ignore[arg-type]
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best: float | None = None
        self.init_source: str | None = None  # what init_weights loaded: validated before the first step

    # ------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.task.model.state_dict(),
            "task": self.task.extra_state(),
            "optimizer": self.opt.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best": self.best,
            "best_metric": self.task.main_metric,
            "model_args": self.task.model_args(),
            "config": self.config,
            "torch_rng": torch.get_rng_state(),
        }

    def resume(self, path: str | Path) -> None:
        st = load_checkpoint(path)
        if "optimizer" not in st:
            raise ModelError(
                f"{path}: no optimizer state (an averaged checkpoint?): a run cannot resume from it; "
                f"start a new run with init = \"{path}\""
            )
        self.task.model.load_state_dict(st["model"])
        self.task.load_extra_state(st.get("task", {}))
        self.opt.load_state_dict(st["optimizer"])
        self.epoch, self.step_in_epoch = int(st["epoch"]), int(st["step_in_epoch"])
        self.global_step, self.best = int(st["global_step"]), st.get("best")
        if self.best is not None and st.get("best_metric", self.task.main_metric) != self.task.main_metric:
            # best.pt was chosen by a metric this version no longer selects by: the next validation sets it anew
            log.info("%s: its best.pt was chosen by %s; this version selects by %s, from the next validation",
                     path, st["best_metric"], self.task.main_metric)
            self.best = None
        if "torch_rng" in st:
            torch.set_rng_state(st["torch_rng"])
        log.info("resumed %s at epoch %d step %d", path, self.epoch, self.step_in_epoch)

    def init_weights(self, path: str | Path, *, optimizer: bool = False) -> None:
        """Fine-tuning: start from another run's weights and task state (a recognizer's margin-loss class centres,
        learnt loss weights); schedule, epoch count and model selection start afresh, and so does the optimizer
        unless `optimizer`: then its state (AdamW's moment estimates, SGD's momentum) comes along too, so that a
        continuation does not start from zero moments; this run's weight decay stays. A recognizer can also start
        from a shipped deploy ONNX (`RecognizerTask.init_from_deploy`)."""
        if Path(path).suffix == ".onnx":
            if optimizer:
                raise ModelError(f"{path}: a deploy ONNX has no optimizer state; set init_optimizer = false")
            from_deploy = getattr(self.task, "init_from_deploy", None)
            if from_deploy is None:
                raise ModelError(f"{path}: only a recognizer run can start from a deploy ONNX; name a checkpoint")
            from_deploy(Path(path))
            self.init_source = str(path)
            log.info("initialised weights from the deploy model %s", path)
            return
        st = load_checkpoint(path)
        if st.get("kind") != self.kind or st.get("model_args") != self.task.model_args():
            raise ModelError(
                f"{path}: a {st.get('kind')} checkpoint with model args {st.get('model_args')}, "
                f"not the {self.kind} this config builds ({self.task.model_args()})"
            )
        if optimizer:
            self._load_optimizer_for_init(path, st)
        self.task.model.load_state_dict(st["model"])
        self.task.load_extra_state(st.get("task", {}))
        self.init_source = str(path)
        log.info("initialised weights%s from %s (epoch %s of that run)", " and optimizer state" if optimizer else "",
                 path, st.get("epoch"))

    def _load_optimizer_for_init(self, path: str | Path, st: dict[str, Any]) -> None:
        """The optimizer state of checkpoint `st` (from `path`) for a fine-tune, keeping this run's hyperparameters."""
        if "optimizer" not in st:
            raise ModelError(f"{path}: no optimizer state (an averaged checkpoint?); set init_optimizer = false")
        saved = st["optimizer"]
        key = "exp_avg" if isinstance(self.opt, torch.optim.AdamW) else "momentum_buffer"
        if not all(key in v for v in saved.get("state", {}).values()):
            raise ModelError(f"{path}: its optimizer state is not from a {type(self.opt).__name__} run")
        mine = [{k: v for k, v in g.items() if k != "params"} for g in self.opt.param_groups]
        try:
            self.opt.load_state_dict(saved)
        except ValueError as e:
            raise ModelError(f"{path}: its optimizer state does not fit this run's parameters ({e})") from None
        for g, hyper in zip(self.opt.param_groups, mine, strict=True):
            g.update(hyper)  # this run's lr, weight decay and betas, the other run's moments

    def save(self, name: str = "last.pt") -> Path:
        p = self.out / name
        save_checkpoint(p, self.state())
        return p

    # ------------------------------------------------------------ loop
    def _log_metrics(self, record: dict[str, Any]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        log.info("epoch %d: %s", record["epoch"], json.dumps(record))

    def fit(self) -> dict[str, float]:
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        last_ckpt = time.time()
        metrics: dict[str, float] = {}
        if self.init_source is not None and self.global_step == 0:
            # a fine-tune's starting point, measured like every epoch: the bar each epoch has to clear
            self.task.train_modules().eval()
            with torch.no_grad():
                start = self.task.validate()
            self._log_metrics({"epoch": 0, "step": 0, "init": self.init_source,
                               **{f"val_{k}": v for k, v in start.items()}})
        while self.epoch < self.epochs:
            self.task.on_epoch_start(self.epoch)
            self.sampler.set(self.epoch, self.step_in_epoch * self.batch_size)
            loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=self.sampler,
                collate_fn=self.collate,
                num_workers=self.workers,
                drop_last=True,
                persistent_workers=False,
                prefetch_factor=4 if self.workers else None,
                # A fresh worker process per epoch, not a fork of this one: forking after OpenCV's and torch's
                # thread pools have run (validation) can deadlock the child.
                multiprocessing_context="forkserver" if self.workers else None,
                # Its own seeded generator: creating the loader must not draw from the global torch RNG, which
                # the checkpoint restores for the training steps (otherwise a mid-epoch resume diverges).
                generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch),
            )
            sums: dict[str, float] = {}
            n = 0
            t0 = time.time()
            self.task.train_modules().train()
            bar = tqdm(
                loader,
                total=self.steps_per_epoch - self.step_in_epoch,
                desc=f"epoch {self.epoch + 1}/{self.epochs}",
                file=sys.stderr,
                mininterval=1.0 if sys.stderr.isatty() else 60.0,
                dynamic_ncols=True,
            )
            for batch in bar:
                lr = lr_at(self.global_step, self.total_steps, self.warmup, self.base_lr)
                for g in self.opt.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
                out = self.task.training_step(batch, self.global_step)
                loss = out["loss"]
                if not torch.isfinite(loss):
                    self.save("diverged.pt")
                    raise TrainingDivergedError(f"non-finite loss at step {self.global_step}: {loss.item()}")
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                if self.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.task.train_modules().parameters(), self.grad_clip)
                self.opt.step()
                self.global_step += 1
                self.step_in_epoch += 1
                n += 1
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                bar.set_postfix({k: f"{v / n:.3f}" for k, v in list(sums.items())[:4]}, refresh=False)
                if time.time() - last_ckpt > self.checkpoint_every_s:
                    self.save()
                    last_ckpt = time.time()
                if self.max_steps is not None and self.global_step >= self.max_steps:
                    break
            bar.close()
            finished_epoch = self.step_in_epoch >= self.steps_per_epoch
            record: dict[str, Any] = {"epoch": self.epoch + 1, "step": self.global_step}
            record.update({f"train_{k}": round(v / max(n, 1), 5) for k, v in sums.items()})
            record["train_images_per_s"] = round(n * self.batch_size / max(time.time() - t0, 1e-9), 1)
            if finished_epoch:
                self.epoch += 1
                self.step_in_epoch = 0
            if finished_epoch and (self.epoch % self.validate_every == 0 or self.epoch == self.epochs):
                self.task.train_modules().eval()
                with torch.no_grad():
                    metrics = self.task.validate()
                record.update({f"val_{k}": v for k, v in metrics.items()})
                m = metrics.get(self.task.main_metric)
                if m is not None and (
                    self.best is None or (m > self.best if self.task.higher_is_better else m < self.best)
                ):
                    self.best = m
                    self.save("best.pt")
            self._log_metrics(record)
            self.save()
            if finished_epoch and self.epoch > self.epochs - self.keep_epochs:
                shutil.copyfile(self.out / "last.pt", self.out / f"epoch_{self.epoch}.pt")
            last_ckpt = time.time()
            if self.max_steps is not None and self.global_step >= self.max_steps:
                break
        return metrics
