"""Recognizers side by side at low false-accept rates over every pair of all LFW images, from one crop cache.

`edge-mtl eval verification --every-pair` measures one recognizer through the whole runtime path (detection,
alignment, recognition of all 9,056 LFW images: most of an hour on two busy cores). Comparing releases needs the
same faces for each, and only the recognizer differs: this aligns every LFW image once into the crop cache
(`lfw_all`, by `edge_mtl.data.crops` with the shipped detector and landmark refiner, as the training and View 1
caches are; no bordered retry, as the recognizer-1.5 every-pair figure in export/recognizer.md was measured), then,
per model: TAR and threshold at FAR 1e-3 and 1e-4 over every pair (`edge_mtl.eval.every_pair.every_pair_tar`),
and View 2's 10-fold accuracy and TAR at FAR 1e-3 over its 3,000 impostor pairs from the same crops.
The dlib peer on the same images: benchmarks/dlib_every_pair.py.

Usage: python benchmarks/lfw_every_pair.py --crops $EDGE_MTL_CACHE/crops [--data ../shared/data] A.onnx B.onnx ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_mtl.data import sources as S
from edge_mtl.data.crops import ensure_source
from edge_mtl.errors import InputError
from edge_mtl.eval.every_pair import every_pair_tar
from edge_mtl.eval.verification import read_pairs, verification_metrics
from edge_mtl.paths import data_root
from edge_mtl.runtime.registry import open_recognizer


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--crops", type=Path, required=True)
    p.add_argument("--data", type=Path, help="../shared/data (default: $EDGE_MTL_DATA)")
    p.add_argument("--detector", type=Path, default=Path("export/detector.onnx"))
    p.add_argument("--landmarks", type=Path, default=Path("export/landmarks.onnx"))
    a = p.parse_args(argv)
    root = data_root(a.data)
    if root is None:
        p.error("needs ../shared/data (--data or EDGE_MTL_DATA)")
    base = root / "lfw" / "images_deepfunneled"
    names = sorted(str(f.relative_to(base)) for f in base.glob("*/*.jpg"))
    from edge_mtl.train.tasks.recognizer import load_detector

    try:
        cs = ensure_source([S.FaceRecord("lfw", str(base / n), n) for n in names],
                           lambda: load_detector(a.detector, landmarks=a.landmarks), a.crops, "lfw_all", str(base),
                           sizes=True)
    except InputError as e:
        p.error(str(e))
    idx = cs.index()
    pairs = read_pairs(root / "lfw" / "pairs.txt")
    ia = np.array([idx[q.a] for q in pairs])
    ib = np.array([idx[q.b] for q in pairs])
    same = np.array([q.same for q in pairs])
    folds = np.array([q.fold for q in pairs])
    for m in a.models:
        rec = open_recognizer(m, max_batch=128)
        e = rec.analyze(cs.rendered(rec.fill)).embeddings  # with the model's fill beyond the images
        sims = (e[ia] * e[ib]).sum(1).astype(np.float64)
        v2 = verification_metrics(sims, same, folds, fars=(1e-3, 1e-2))
        out = {"model": str(m), "faces_not_found": sum(st == "missing" for st in cs.status),
               "view2": {k: v2[k] for k in v2 if k.startswith(("accuracy", "tar_at_far", "threshold_at_far"))},
               "every_pair": every_pair_tar(e, [n.split("/")[0] for n in names])}
        sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
