"""Does a recognizer's backbone hold more gender than its head reads? Fresh gender heads on its frozen features.

The gender head of the shipped recognizer reads the backbone's 7 x 7 x C map averaged over the face (an MLP on the
pooled C features); the embedding head instead weighs each position (a 7 x 7 depthwise convolution). This trains,
on the frozen backbone of one model, fresh heads of both kinds on the same labelled training faces and scores
them on the hand-labelled WIDER faces (the wild rule's selection set) and on UTKFace validation, beside the
model's own head:

* `pooled`: the shipped head's shape (C -> 64 -> 2 on the average);
* `spatial`: a 7 x 7 depthwise convolution with BatchNorm before the same MLP (the embedding head's pooling).

If `spatial` beats `pooled` by more than the spread between seeds, a head that keeps where features are would be
a lever for gender; if not, gender is limited by the backbone's features, not by how the head reads them.

Training faces (their crops must be in the cache, as the recognizer's training leaves them): UTKFace (the full
set minus the validation split, `--train-limit` drawn at random), CelebA's gender set (likewise) and the Caltech
faces of the hand label files (all, weighted x4: about what `gender_labels_repeat` = 8 gives them in training).
WIDER's faces are aligned into the cache as `benchmarks/wider_gender.py` does; a face the detector misses is not
scored here (the fraction found bounds the wild rule's "right of all" figure).

Usage: python benchmarks/gender_probe.py --crops $EDGE_MTL_CACHE/crops --wider DIR MODEL.onnx [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_mtl.data import sources as S
from edge_mtl.data.crops import CropSet, load_source
from edge_mtl.errors import InputError
from edge_mtl.runtime.engine import normalize
from edge_mtl.runtime.recognizer import model_fill

log = logging.getLogger("gender_probe")
ROOT = Path(__file__).resolve().parent.parent
WIDER_LABELS = [ROOT / "benchmarks/wider_gender_labels.txt", ROOT / "benchmarks/wider_gender_labels_2.txt"]
CALTECH_LABELS = sorted((ROOT / "configs/labels").glob("caltech_gender*.txt"))
CALTECH_WEIGHT = 4.0
Features = tuple[npt.NDArray[np.float16], npt.NDArray[np.int64], npt.NDArray[np.float32]]


class Extractor:
    """The model with its backbone's last map (the pooled heads' input) as an extra output."""

    def __init__(self, model: Path, threads: int) -> None:
        import onnx
        import onnxruntime as ort

        from edge_mtl.runtime.engine import ModelMetadata

        m = onnx.load(str(model))
        means = [n for n in m.graph.node if n.op_type in ("ReduceMean", "GlobalAveragePool")]
        if len(means) != 1:
            raise InputError(f"{model}: expected one pooling node before the attribute heads, found {len(means)}")
        self.feature = means[0].input[0]
        m.graph.output.append(onnx.helper.make_tensor_value_info(self.feature, onnx.TensorProto.FLOAT, None))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self.meta = ModelMetadata.from_props(dict(self.session.get_modelmeta().custom_metadata_map), str(model))
        self.input = self.session.get_inputs()[0].name
        self.fill = model_fill(self.meta)  # the crops are served as the runtime aligns them for this model

    def run(self, cs: CropSet, labels: dict[str, int], limit: int | None, seed: int) -> Features:
        """Feature maps (float16), labels and the model's own P(female) of the cached faces in `labels`."""
        idx = cs.index()
        rows = sorted((idx[k], y) for k, y in labels.items() if k in idx and cs.status[idx[k]] != "missing")
        if limit is not None and len(rows) > limit:
            pick = np.random.default_rng(seed).choice(len(rows), limit, replace=False)
            rows = [rows[i] for i in sorted(pick)]
        images = cs.rendered(self.fill, [i for i, _ in rows])
        maps, female = [], []
        for s in range(0, len(rows), 64):
            x = normalize(images[s : s + 64], self.meta, bgr_input=True)
            f, g = self.session.run([self.feature, "gender"], {self.input: x})
            maps.append(f.astype(np.float16))
            female.append(g[:, 1].astype(np.float32))
        log.info("%s: %d faces", cs.path.name, len(rows))
        return np.concatenate(maps), np.array([y for _, y in rows], np.int64), np.concatenate(female)


def utk_labels(cs: CropSet, skip: set[str]) -> dict[str, int]:
    out = {}
    for k in cs.keys:
        name = k.rsplit("/", 1)[-1]
        parsed = S.parse_utkface_name(name)
        if parsed is not None and name not in skip:
            out[k] = parsed[1]
    return out


def train_head(kind: str, x: npt.NDArray[np.float16], y: npt.NDArray[np.int64], w: npt.NDArray[np.float32],
               seed: int, epochs: int) -> object:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    c = x.shape[1]
    mlp = nn.Sequential(nn.Linear(c, 64), nn.ReLU(), nn.Linear(64, 2))
    if kind == "pooled":
        net: nn.Module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), mlp)
    else:
        net = nn.Sequential(nn.Conv2d(c, c, x.shape[2], groups=c, bias=False), nn.BatchNorm2d(c), nn.Flatten(), mlp)
    xs, ys, ws = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w)
    steps = epochs * ((len(ys) + 255) // 256)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(ys), generator=gen)
        for s in range(0, len(ys), 256):
            i = perm[s : s + 256]
            batch = xs[i].float()
            if torch.rand(1, generator=gen).item() < 0.5:
                batch = batch.flip(3)  # a mirrored face, as the training's flips
            loss = (nn.functional.cross_entropy(net(batch), ys[i], reduction="none") * ws[i]).sum() / ws[i].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def female_prob(net: object, x: npt.NDArray[np.float16]) -> npt.NDArray[np.float32]:
    import torch

    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(x).float()), 1)[:, 1].numpy()  # type: ignore[operator, no-any-return]


def scores(p: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> dict[str, float | int]:
    said = (p > 0.5).astype(np.int64)
    return {"faces": len(y), "accuracy": round(float((said == y).mean()), 4),
            "women_as_men": int(((said == 0) & (y == 1)).sum()), "men_as_women": int(((said == 1) & (y == 0)).sum())}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--crops", type=Path, required=True, help="the recognizer training's crop cache")
    p.add_argument("--wider", type=Path, required=True, help="datasets/widerface (images/train, labels/train)")
    p.add_argument("--celeba-gender", type=Path, required=True, help="naheri/gender_detection's datasets/dataset")
    p.add_argument("--train-limit", type=int, default=12000, help="faces drawn from UTKFace and from CelebA each")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        ex = Extractor(a.model, a.threads)
        img, lab = a.wider / "images" / "train", a.wider / "labels" / "train"
        wider_recs = [r for f in WIDER_LABELS for r in S.wider_gender(img, lab, f)]
        val = load_source(a.crops, "utk_val_0")
        full = load_source(a.crops, "utkface_full")
        evals = {"wider": ex.run(load_source(a.crops, f"wider_gender_{len(wider_recs)}"),
                                 {r.key: r.gender for r in wider_recs if r.gender is not None}, None, 0),
                 "utkface_val": ex.run(val, utk_labels(val, set()), None, 0)}
        skip = {k.rsplit("/", 1)[-1] for k in val.keys}
        caltech: dict[str, int] = {}
        for f in CALTECH_LABELS:
            caltech.update(S.read_gender_labels(f))
        celeba = {r.key: r.gender for r in S.celeba_gender(a.celeba_gender) if r.gender is not None}
        train = [(ex.run(full, utk_labels(full, skip), a.train_limit, 0), 1.0),
                 (ex.run(load_source(a.crops, "caltech"), caltech, None, 0), CALTECH_WEIGHT),
                 (ex.run(load_source(a.crops, "celeba_gender"), celeba, a.train_limit, 0), 1.0)]
    except (InputError, OSError) as e:
        p.error(" ".join(str(e).split()))
    x = np.concatenate([t[0] for t, _ in train])
    y = np.concatenate([t[1] for t, _ in train])
    w = np.concatenate([np.full(len(t[1]), wt, np.float32) for t, wt in train])
    rows = [{"head": "the model's own", "seed": None, **{k: scores(f, yy) for k, (_, yy, f) in evals.items()}}]
    for kind in ("pooled", "spatial"):
        for seed in a.seeds:
            net = train_head(kind, x, y, w, seed, a.epochs)
            rows.append({"head": kind, "seed": seed,
                         **{k: scores(female_prob(net, fx), yy) for k, (fx, yy, _) in evals.items()}})
    for r in rows:
        sys.stdout.write(json.dumps({"model": str(a.model), "train_faces": len(y), **r}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
