"""Where the identity a face cut at its box loses comes from: its landmarks, its cut, or the black around it.

`recognizer_view1.py --tight` measures the loss (LFW View 1, the first image of each pair cut at the box the
detector finds on it, as an ID photo shows a face). This takes it apart on the same 4,992 View 1 images, each
aligned five ways from its photo, and scores every way as `--tight` does (10 folds over the 3,200 listed pairs,
the first image of each pair that way and the second with context; and both that way):

* `context`: the photo with its own landmarks (the crop cache's `lfw_dev`);
* `cut_out`: what the runtime makes of the cut-out: landmarks found on it (the shipped detector with the bordered
  retry, as `lfw_dev_tight` was built), the model's fill (its `RecognizerArgs.fill`: black for every model before
  recognizer-1.7's candidates) where the aligned crop reaches beyond it;
* `cut_out_grey_fill`: the same landmarks and cut, mid grey (128, what the network's input scaling maps to 0)
  beyond it, whatever the model's fill;
* `context_landmarks_cut`: the photo's own landmarks, the model's fill beyond the cut: the cut alone;
* `cut_out_landmarks_whole_photo`: the landmarks found on the cut-out (mapped back onto the photo), the whole
  photo: the landmarks alone.

Also: how far the landmarks found on the cut-out lie from the photo's own (root mean square over the four
points, as a share of the eye distance). The cut-out of each image is recomputed exactly as the crop cache cut
it (the detector on the photo, the face `edge_mtl.data.crops.pick_face` takes, `edge_mtl.vision.anycrop.cut_at_box`).

Usage: python benchmarks/tight_diagnosis.py --crops $EDGE_MTL_CACHE/crops [--data ../shared/data] A.onnx ...
Needs the crop cache's `lfw_dev` and `lfw_dev_tight` (`recognizer_view1.py --tight` builds the second).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from recognizer_view1 import tight_figures  # type: ignore[import-not-found]

from edge_mtl.data.crops import add_sizes, load_source, pick_face, read_bgr
from edge_mtl.errors import InputError
from edge_mtl.eval.verification import read_pairs, view1
from edge_mtl.paths import data_root
from edge_mtl.runtime.registry import open_recognizer
from edge_mtl.vision.align import align_faces
from edge_mtl.vision.anycrop import square_window

log = logging.getLogger("tight_diagnosis")
GREY = 128
Crops = npt.NDArray[np.uint8]


def cut_origins(records: Sequence[object], detector: Path, landmarks: Path) -> npt.NDArray[np.int64]:
    """x0, y0, x1, y1 of each image's cut-out in its photo (zeros where the detector found no face)."""
    from edge_mtl.train.tasks.recognizer import load_detector

    det = load_detector(detector, landmarks=landmarks)
    out = np.zeros((len(records), 4), np.int64)
    for i, r in enumerate(records):
        img = read_bgr(r.path)  # type: ignore[attr-defined]
        if img is None:
            continue
        found = det.detect(img)
        j = pick_face(found, r, img.shape[:2], 0.0)  # type: ignore[arg-type]
        if j is not None:
            b = found.boxes[j]
            out[i] = square_window((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, max(b[2] - b[0], b[3] - b[1]), img.shape)
        if (i + 1) % 1000 == 0:
            log.info("cut %d/%d", i + 1, len(records))
    return out


def variants(records: Sequence[object], context_lm: npt.NDArray[np.float32], cut_lm: npt.NDArray[np.float32],
             box: npt.NDArray[np.int64], ok: npt.NDArray[np.bool_], fill: int = 0) -> dict[str, Crops]:
    """The four recomputed alignments of every image (see the module's docstring), `fill` beyond the photo and
    the cut; rows not `ok` stay zero."""
    n = len(records)
    out = {k: np.zeros((n, 112, 112, 3), np.uint8) for k in
           ("cut_out", "cut_out_grey_fill", "context_landmarks_cut", "cut_out_landmarks_whole_photo")}
    for i, r in enumerate(records):
        if not ok[i]:
            continue
        photo = read_bgr(r.path)  # type: ignore[attr-defined]
        assert photo is not None
        x0, y0, x1, y1 = box[i]
        on_photo = cut_lm[i] + np.array([x0, y0], np.float32)  # the cut-out's landmarks in the photo's pixels
        masked = np.full_like(photo, fill)
        masked[y0:y1, x0:x1] = photo[y0:y1, x0:x1]
        grey = np.full_like(photo, GREY)
        grey[y0:y1, x0:x1] = photo[y0:y1, x0:x1]
        out["cut_out"][i] = align_faces(masked, on_photo[None], fill=fill)[0]
        out["cut_out_grey_fill"][i] = align_faces(grey, on_photo[None], fill=GREY)[0]
        out["context_landmarks_cut"][i] = align_faces(masked, context_lm[i][None], fill=fill)[0]
        out["cut_out_landmarks_whole_photo"][i] = align_faces(photo, on_photo[None], fill=fill)[0]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--crops", type=Path, required=True)
    p.add_argument("--data", type=Path, help="../shared/data (default: $EDGE_MTL_DATA)")
    p.add_argument("--detector", type=Path, default=Path("export/detector.onnx"), help="as lfw_dev_tight was cut")
    p.add_argument("--landmarks", type=Path, default=Path("export/landmarks.onnx"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = data_root(a.data)
    if root is None or not (a.crops / "lfw_dev_tight.json").exists():
        p.error("needs ../shared/data (--data) and a crop cache with lfw_dev and lfw_dev_tight (--crops)")
    from edge_mtl.train.tasks.recognizer import lfw_records

    pairs = {f: read_pairs(root / "lfw" / f) for f in ("pairsDevTrain.txt", "pairsDevTest.txt")}
    records = lfw_records(root, list(pairs))
    try:  # with the image sizes that serve a model's fill (CropSet.rendered)
        cs, tight = add_sizes(records, a.crops, "lfw_dev"), load_source(a.crops, "lfw_dev_tight")
    except InputError as e:
        p.error(str(e))
    if [r.key for r in records] != cs.keys or tight.keys != cs.keys or cs.landmarks is None or tight.landmarks is None:
        p.error(f"{a.crops}: lfw_dev and lfw_dev_tight do not hold View 1's images with their landmarks")
    box = cut_origins(records, a.detector, a.landmarks)
    ok = np.array([s != "missing" and t != "missing" for s, t in zip(cs.status, tight.status, strict=True)])
    ok &= box[:, 2] > box[:, 0]
    by_fill = {0: variants(records, cs.landmarks, tight.landmarks, box, ok)}
    same = np.abs(by_fill[0]["cut_out"][ok].astype(np.int16) - np.asarray(tight.images)[ok].astype(np.int16)).max(-1)
    on_photo = tight.landmarks[ok] + box[ok, None, :2]
    iod = np.linalg.norm(cs.landmarks[ok, 1] - cs.landmarks[ok, 0], axis=1)
    err = np.sqrt(((on_photo - cs.landmarks[ok]) ** 2).sum(-1).mean(-1)) / iod
    head = {"images": len(records), "diagnosed": int(ok.sum()),
            "cut_out_reproduces_lfw_dev_tight_pixels": round(float((same <= 1).mean()), 4),
            "cut_out_landmark_error_eye_distance": {"median": round(float(np.median(err)), 4),
                                                    "p90": round(float(np.quantile(err, 0.9)), 4)}}
    idx = cs.index()
    for m in a.models:
        rec = open_recognizer(m, max_batch=128)
        try:  # each model with its own fill beyond the images, as the runtime aligns for it
            e = rec.analyze(cs.rendered(rec.fill)).embeddings
            cut_fallback = tight.rendered(rec.fill)[~ok]  # an image not diagnosed scores as the cache's cut-out
        except InputError as err_:
            p.error(str(err_))
        if rec.fill not in by_fill:
            by_fill[rec.fill] = variants(records, cs.landmarks, tight.landmarks, box, ok, rec.fill)
        v1 = view1(e, idx, pairs["pairsDevTrain.txt"], pairs["pairsDevTest.txt"])
        row: dict[str, object] = {"model": str(m), "fill": rec.fill, **head,
                                  "context_10fold_accuracy": v1.ten_fold_accuracy}
        for name, c in by_fill[rec.fill].items():
            c[~ok] = cut_fallback
            row[name] = tight_figures(e, rec.analyze(c).embeddings, v1)
        sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
