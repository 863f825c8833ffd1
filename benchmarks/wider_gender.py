"""Gender on hand-labelled WIDER FACE faces from the wild: the selection set of the release rule `wild`.

UTKFace's validation chips are where the recognizer's gender head is already right on about 97% of the adults it
labels; the errors a user meets (women read as men on photos from the wild, issue 29) do not show there. This
scores recognizers on the WIDER FACE faces labelled in `benchmarks/wider_gender_labels.txt` and `..._2.txt`
(crowds, parades, protests, sports; no recognizer training source holds WIDER). Each face is aligned once into the
crop cache (`wider_gender_N`, N faces, by `edge_mtl.data.crops`): the shipped detector at the daemon's input size,
the landmark refiner, the face picked by its annotated box. A face the detector does not find is not analysed and
counts as withheld (`face_width_px`: the median box width of the faces found and of those not). Then, per model,
the gender figures of `edge_mtl.eval.populations.gender_metrics` with the daemon's gender floors (`[attributes]`
defaults): over all labelled faces, and over women and men.

Usage: python benchmarks/wider_gender.py --crops $EDGE_MTL_CACHE/crops --wider DIR [--labels FILE]... [--input-size N]
           A.onnx B.onnx ...
DIR: `datasets/widerface` of himanshuchopade97/Crowd-Counting @ 6c86209a (the data README's WIDER FACE subset).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_mtl.config import AttributesConfig, DetectorConfig
from edge_mtl.data import sources as S
from edge_mtl.data.crops import ensure_source
from edge_mtl.errors import InputError
from edge_mtl.eval.populations import gender_metrics, labelled_mask
from edge_mtl.runtime.registry import open_recognizer

LABELS = Path(__file__).resolve().parent / "wider_gender_labels.txt"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--crops", type=Path, required=True)
    p.add_argument("--wider", type=Path, required=True, help="datasets/widerface (images/train, labels/train)")
    p.add_argument("--labels", type=Path, action="append",
                   help="a label file, repeatable (default: the first batch, the wild rule's of stage 15; "
                        "benchmarks/wider_gender_labels_2.txt is the second)")
    p.add_argument("--min-confidence", type=float, help="the gender floor (default: attributes.gender_min_confidence)")
    p.add_argument("--input-size", type=int, help="the detector's input size (default: detector.input_size, 640; "
                   "another size aligns into its own crop cache, wider_gender_N_SIZE)")
    p.add_argument("--detector", type=Path, default=Path("export/detector.onnx"))
    p.add_argument("--landmarks", type=Path, default=Path("export/landmarks.onnx"))
    a = p.parse_args(argv)
    a.labels = a.labels or [LABELS]
    try:
        img_dir, lab_dir = a.wider / "images" / "train", a.wider / "labels" / "train"
        recs = [r for f in a.labels for r in S.wider_gender(img_dir, lab_dir, f)]
    except (InputError, OSError) as e:
        p.error(str(e))
    keys = [r.key for r in recs]
    if len(set(keys)) != len(keys):
        p.error("a face is labelled in more than one of the label files")
    daemon_size = DetectorConfig().input_size
    size = a.input_size or daemon_size
    name = f"wider_gender_{len(keys)}" + ("" if size == daemon_size else f"_{size}")
    from edge_mtl.train.tasks.recognizer import load_detector

    try:
        cs = ensure_source(recs, lambda: load_detector(a.detector, input_size=size, landmarks=a.landmarks), a.crops,
                           name, ", ".join(map(str, a.labels)), sizes=True)
    except InputError as e:
        p.error(str(e))
    found = np.array([st != "missing" for st in cs.status])
    gt = np.array([r.gender for r in recs], np.int64)
    width = np.array([float(r.box[2] - r.box[0]) for r in recs])  # of the annotated box, in the photo's pixels
    widths = {"found_median": float(np.median(width[found])) if found.any() else None,
              "not_found_median": float(np.median(width[~found])) if (~found).any() else None}
    floors = AttributesConfig()
    floor = floors.gender_min_confidence if a.min_confidence is None else a.min_confidence
    for m in a.models:
        rec = open_recognizer(m, max_batch=128)
        res = rec.analyze(cs.rendered(rec.fill))  # with the model's fill beyond the images
        fp, ap = np.asarray(res.female_prob, np.float64), np.asarray(res.age_years, np.float64)
        lab = labelled_mask(fp, ap, found, floor, floors.gender_min_age)
        rows = {"all": gender_metrics(gt, fp, found, lab)}
        for g, gname in ((1, "women"), (0, "men")):
            k = gt == g
            rows[gname] = gender_metrics(gt[k], fp[k], found[k], lab[k])
        sys.stdout.write(json.dumps({"model": str(m), "labels": [str(f) for f in a.labels], "min_confidence": floor,
                                     "input_size": size, "face_width_px": widths, **rows}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
