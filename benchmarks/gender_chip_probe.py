"""Is there gender signal that the recognizer's head misses? A dedicated gender network on the whole UTKFace chip.

UTKFace's gender labels are held back by infants (recognizer-1.5: 65.5% on the 194 faces aged 0-2 of the
validation split). This probe trains a small CNN for gender alone (plus age as an auxiliary output) on the whole
200x200 chips of the full UTKFace at 64x64 (about 0.06 GFLOPs per face, within what the 0.6-GFLOP budget leaves),
with the faces under 13 weighted x3, and measures it on the same 1,317 validation images as
`edge-mtl eval attributes`, alone and averaged with the shipped recognizer's female probability at several
weights. (The aligned 112x112 crop the recognizer sees already spans the whole chip: the chips are tight, 80 px
between the eyes against 35 px in the template, so "the whole chip" adds no context; what differs is a network
given to gender alone.) Training data: the full UTKFace minus the 1,000 reserved names and minus the validation
split, as the recognizer's training. About 15 minutes on one CPU thread for the default 20 epochs.

Usage: python benchmarks/gender_chip_probe.py --data ../shared/data --utkface-full DIR [--epochs 20] [--seed 0]
Prints one JSON object: per weight of the probe in the average, accuracy overall and per child band.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_mtl.config import AppConfig
from edge_mtl.data import sources as S
from edge_mtl.eval.suites import crops_for_images
from edge_mtl.runtime.registry import load_detector, load_recognizer

log = logging.getLogger("gender_chip_probe")
SIZE = 64
BANDS = {"0-2": (0, 2), "3-6": (3, 6), "7-12": (7, 12), "13+": (13, 200)}


def load_chips(paths: list[str]) -> npt.NDArray[np.uint8]:
    """Chips resized to SIZE + 8 (random 64x64 crops in training, the centre at test), N x 3 x H x W."""
    out = np.zeros((len(paths), 3, SIZE + 8, SIZE + 8), np.uint8)
    for i, p in enumerate(paths):
        img = cv2.imread(p, cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"gender_chip_probe: cannot read {p}")
        out[i] = cv2.resize(img[:, :, ::-1], (SIZE + 8, SIZE + 8), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    return out


def band_accuracy(correct: npt.NDArray[np.bool_], ages: npt.NDArray[np.float64]) -> dict[str, float]:
    out = {"all": round(float(correct.mean()), 4)}
    for name, (lo, hi) in BANDS.items():
        m = (ages >= lo) & (ages <= hi)
        out[name] = round(float(correct[m].mean()), 4)
    return out


def train_probe(x: npt.NDArray[np.uint8], gender: npt.NDArray[np.int64], age: npt.NDArray[np.float64],
                x_val: npt.NDArray[np.uint8], epochs: int, seed: int) -> npt.NDArray[np.float64]:
    """Train the probe; returns its female probability on `x_val` (mean over the image and its mirror)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True),
                             nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True))

    net = nn.Sequential(block(3, 24), block(24, 48), block(48, 96), block(96, 192), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Dropout(0.2), nn.Linear(192, 3))
    xt, gt, at = torch.from_numpy(x), torch.from_numpy(gender), torch.from_numpy(age).float()
    weight = torch.where(at < 13, 3.0, 1.0)
    batch = 128
    steps = epochs * (len(x) // batch)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)

    def prep(u: torch.Tensor, ij: tuple[int, int]) -> torch.Tensor:
        u = u[:, :, ij[0]: ij[0] + SIZE, ij[1]: ij[1] + SIZE]
        return (u.float() / 255 - 0.5) / 0.25

    for epoch in range(epochs):
        t0 = time.time()
        perm = torch.from_numpy(rng.permutation(len(x)))
        net.train()
        for k in range(0, len(x) - batch + 1, batch):
            idx = perm[k: k + batch]
            u = prep(xt[idx], (int(rng.integers(0, 9)), int(rng.integers(0, 9))))
            if rng.random() < 0.5:
                u = u.flip(3)
            o = net(u)
            loss_g = (F.cross_entropy(o[:, :2], gt[idx], reduction="none", label_smoothing=0.05) * weight[idx]).mean()
            loss_a = F.smooth_l1_loss(o[:, 2] * 30 + 30, at[idx], beta=5) / 10
            opt.zero_grad()
            (loss_g + 0.3 * loss_a).backward()
            opt.step()
            sched.step()
        log.info("epoch %d/%d: %.0f s", epoch + 1, epochs, time.time() - t0)
    net.eval()
    probs = []
    with torch.no_grad():
        for k in range(0, len(x_val), 256):
            u = prep(torch.from_numpy(x_val[k: k + 256]), (4, 4))
            o = net(u) + net(u.flip(3))
            probs.append(F.softmax(o[:, :2], 1)[:, 1].numpy())
    return np.concatenate(probs).astype(np.float64)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="../shared/data")
    p.add_argument("--utkface-full", type=Path, required=True, help="folder of the full UTKFace chips")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.set_num_threads(a.threads)
    reserved = S.read_name_list(a.data / "utkface_reserved.txt")
    _, val = S.utkface_split(a.data / "utkface")
    train = S.utkface(a.utkface_full, "utkface_full", exclude=[*reserved, *val])
    labels = np.array([S.parse_utkface_name(n) for n in val], np.float64)
    x_val = load_chips([str(a.data / "utkface" / n) for n in val])
    x = load_chips([r.path for r in train])
    gender = np.array([r.gender for r in train], np.int64)
    age = np.array([r.age for r in train], np.float64)
    log.info("%d training chips, %d validation chips", len(x), len(x_val))
    probe = train_probe(x, gender, age, x_val, a.epochs, a.seed)
    cfg = AppConfig()
    det, rec = load_detector(cfg), load_recognizer(cfg)
    crops, _, _ = crops_for_images([a.data / "utkface" / n for n in val], det, rec.size, pad=0.25)
    shipped = np.asarray(rec.analyze(crops).female_prob, np.float64)
    truth = labels[:, 1].astype(bool)
    out = {"recognizer": rec.meta.version, "epochs": a.epochs, "seed": a.seed, "val_images": len(val),
           "probe_weight": {}}
    for w in (0.0, 0.25, 0.5, 1.0):
        fused = (1 - w) * shipped + w * probe
        out["probe_weight"][str(w)] = band_accuracy((fused >= 0.5) == truth, labels[:, 0])
    out["decisions_that_differ"] = round(float(((shipped >= 0.5) != (probe >= 0.5)).mean()), 4)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
