"""How a recognizer reads the hand-labelled Caltech faces that train gender (configs/labels/caltech_gender*.txt).

These labels are training data, not a selection or evaluation set: the figure says which way a model errs on web
photos of ordinary people before it is trained on them (recognizer-1.5 reads their women as men far more often
than the reverse, as on FairFace and WIDER). Each labelled face is aligned once, as the recognizer's training
aligns Caltech (its landmarks, the shipped detector and landmark refiner), into the crop cache `caltech_gender_N`,
and scored by the gender head's argmax, without the daemon's floors.

Usage: python benchmarks/caltech_gender.py --crops $EDGE_MTL_CACHE/crops [--labels FILE]... A.onnx B.onnx ...
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
from edge_mtl.paths import data_root
from edge_mtl.runtime.registry import open_recognizer

LABELS = Path("configs/labels/caltech_gender.txt")  # run from the repository root, as the other defaults


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--crops", type=Path, required=True, help="the recognizer training's crop cache")
    p.add_argument("--labels", type=Path, action="append", help="a label file, repeatable (default: the first batch)")
    p.add_argument("--data", type=Path, help="../shared/data (default: $EDGE_MTL_DATA)")
    p.add_argument("--detector", type=Path, default=Path("export/detector.onnx"))
    p.add_argument("--landmarks", type=Path, default=Path("export/landmarks.onnx"))
    a = p.parse_args(argv)
    root = data_root(a.data)
    if root is None:
        p.error("needs ../shared/data (--data or EDGE_MTL_DATA)")
    try:
        labels = {k: g for f in (a.labels or [LABELS]) for k, g in S.read_gender_labels(f).items()}
    except (InputError, OSError) as e:
        p.error(str(e))
    recs = [r for rs in S.caltech(root / "caltech_webfaces").values() for r in rs if r.key in labels]
    if len(recs) != len(labels):
        p.error(f"{len(labels) - len(recs)} labelled faces are not in {root / 'caltech_webfaces'}")
    from edge_mtl.train.tasks.recognizer import load_detector

    try:
        cs = ensure_source(recs, lambda: load_detector(a.detector, landmarks=a.landmarks), a.crops,
                           f"caltech_gender_{len(recs)}", "the label files")
    except InputError as e:
        p.error(str(e))
    found = np.array([st != "missing" for st in cs.status])
    gt = np.array([labels[r.key] for r in recs])[found]
    images = np.asarray(cs.images)[found]
    for m in a.models:
        pred = (np.asarray(open_recognizer(m, max_batch=128).analyze(images).female_prob) >= 0.5).astype(int)
        sys.stdout.write(json.dumps({
            "model": str(m), "labels": [str(f) for f in (a.labels or [LABELS])], "faces": int(found.sum()),
            "not_aligned": int((~found).sum()),
            "women": int(gt.sum()), "gender_accuracy": round(float((pred == gt).mean()), 4),
            "women_read_as_men": int(((gt == 1) & (pred == 0)).sum()),
            "men_read_as_women": int(((gt == 0) & (pred == 1)).sum())}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
