"""Is the shared head short of capacity for gender? A gender branch grafted onto the trained recognizer.

recognizer-1.5 reads gender from the pooled output of the shared last stage, which identity dominates. This probe
freezes a trained recognizer checkpoint (backbone and all heads), grafts a branch off the third stage (two
RepVGG blocks, 128 -> `--width` channels, stride 2 to 7x7, about 0.02 GFLOPs and 0.22 M parameters at width 96:
what the 0.6-GFLOP / 8-MB budget leaves) and replaces the gender MLP by one that reads the shared pooled features
and the branch's, initialised so that it starts as exactly the shipped head (the branch's input columns zero).
Only the branch and that MLP train, on the recognizer's own gender data and augmentation (the `sources` of
`--config`, children under `oversample_age_below` repeated as there), gender loss alone; the UTKFace validation
split (the trainer's, 1,317 faces) is scored before training and after every epoch. If gender accuracy rises, more
gender capacity on the shared features is worth shipping; if not, the features are what limits it.
About 3 minutes an epoch on 2 CPU cores.

Usage: python benchmarks/gender_branch_probe.py --config configs/recognizer_stage11.toml \
           --checkpoint runs/recognizer10/epoch_5_q.pt [--width 96] [--epochs 6] [--lr 0.002]
Prints one JSON object: the checkpoint's own figure and each epoch's (all faces, and by age band).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.gender_chip_probe import band_accuracy  # the same age bands as that probe

log = logging.getLogger("gender_branch_probe")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, required=True, help="a recognizer training config (data and sources)")
    p.add_argument("--checkpoint", type=Path, required=True, help="the trained recognizer checkpoint to graft on")
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from edge_mtl.config import load_toml
    from edge_mtl.models.blocks import RepVGGBlock
    from edge_mtl.models.checkpoint import load_checkpoint
    from edge_mtl.train.config import RecognizerTrain, TrainConfig
    from edge_mtl.train.losses.recognizer import gender_loss
    from edge_mtl.train.tasks.recognizer import RecognizerTask

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = load_toml(a.config, TrainConfig)
    assert isinstance(cfg.task, RecognizerTrain)
    gender_sources = [s for s in cfg.task.sources if s in ("utkface", "utkface_full", "celeba_gender")]
    # age labels are kept only so that the children are oversampled as in training; no age loss is computed
    task = RecognizerTask(cfg.model_copy(update={
        "seed": a.seed, "task": cfg.task.model_copy(update={"sources": gender_sources, "tasks": ["age", "gender"]})
    }))
    task.model.load_state_dict(load_checkpoint(a.checkpoint)["model"])
    model = task.model.eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    old = model.heads["gender"]
    assert isinstance(old, nn.Sequential)
    c3, c4 = task.args.widths[-2], task.args.widths[-1]

    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.Sequential(RepVGGBlock(c3, a.width, 2), RepVGGBlock(a.width, a.width))
            self.fc1, self.fc2 = nn.Linear(c4 + a.width, old[0].out_features), nn.Linear(old[2].in_features, 2)
            with torch.no_grad():
                self.fc1.weight.zero_()
                self.fc1.weight[:, :c4] = old[0].weight
                self.fc1.bias.copy_(old[0].bias)
                self.fc2.load_state_dict(old[2].state_dict())

        def forward(self, f3: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
            b = self.blocks(f3).mean(dim=(2, 3))
            return self.fc2(torch.relu(self.fc1(torch.cat([pooled, b], 1))))

    branch = Branch()
    added = sum(q.numel() for q in branch.parameters()) - sum(q.numel() for q in old.parameters())
    bb = model.backbone

    def features(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            f = bb.stem(x)
            for stage in bb.stages[:-1]:
                f = stage(f)
            pooled = bb.stages[-1](f).mean(dim=(2, 3))
        return f.float(), pooled.float()

    val_x = torch.from_numpy(np.ascontiguousarray(np.asarray(task.utk_val.images)[..., ::-1])).permute(0, 3, 1, 2)
    truth = np.array([int(r.gender or 0) for r in task.utk_val_recs], np.int64)
    ages = np.array([float(r.age or 0) for r in task.utk_val_recs], np.float64)

    def evaluate() -> dict[str, float]:
        branch.eval()
        probs = []
        with torch.no_grad():
            for i in range(0, len(val_x), 256):
                probs.append(torch.softmax(branch(*features(task._input(val_x[i:i + 256]))), 1)[:, 1])
        branch.train()
        return band_accuracy((torch.cat(probs).numpy() > 0.5).astype(np.int64) == truth, ages)

    ds = task.dataset
    loader = DataLoader(ds, batch_size=cfg.optim.batch_size, shuffle=True, num_workers=cfg.workers,
                        drop_last=True, persistent_workers=cfg.workers > 0,
                        generator=torch.Generator().manual_seed(a.seed))
    opt = torch.optim.AdamW(branch.parameters(), lr=a.lr, weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.epochs * len(loader), pct_start=0.05)
    result: dict[str, Any] = {
        "checkpoint": str(a.checkpoint), "width": a.width, "added_parameters": added, "epochs": a.epochs,
        "lr": a.lr, "seed": a.seed, "training_faces": len(ds), "val_images": len(truth), "start": evaluate(),
        "per_epoch": [],
    }
    log.info("branch adds %d parameters; start %s", added, result["start"])
    for ep in range(a.epochs):
        ds.set_epoch(ep)
        total, n = 0.0, 0
        for batch in loader:
            f3, pooled = features(task._input(batch["image"]))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = branch(f3, pooled)
            loss = gender_loss(logits.float(), batch["gender"], batch["gender"] >= 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + float(loss.detach()), n + 1
        row = {"epoch": ep + 1, "train_loss": round(total / n, 4), **evaluate()}
        result["per_epoch"].append(row)
        log.info("%s", row)
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
