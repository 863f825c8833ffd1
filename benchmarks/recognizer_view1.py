"""Compare recognizer candidates on LFW View 1 the way the trainer selects epochs, from the training crop cache.

For each model (deploy ONNX): View 1 accuracy (threshold chosen on pairsDevTrain, accuracy on pairsDevTest: the
trainer's `val_lfw_dev_accuracy`), the error by pair-quality quartile over both View 1 files, the quality score's
spread, and, for every model after the first, cross-model matching (both View 1 files, best threshold, like
`all_pairs_best_threshold_accuracy`): the first model's embedding of one face of each
pair against this model's of the other (whether a gallery enrolled with the first model would still match), with
its own best threshold and, at this model's threshold, the false-accept / false-reject rates beside this model's own
(what `--compatible-with` lets the daemon do).
Also, per model, the figures that select candidates from the run after stage 6 on (export/recognizer.md): the
10-fold accuracy over all 3,200 listed View 1 pairs, and TAR at FAR 1e-3 / 1e-2 over every pair of View 1 images.
With `--tight`, also View 1 when faces fill their images (ID photos, tight crops): `lfw_dev_tight`, each View 1
image cut at the box the detector finds on it and aligned from the cut-out (`cache_source(cut=True)`, built once
into the crop cache), scored in 10 folds over the 3,200 listed pairs with the first image of each pair tight and
the second with context (`tight_mixed_10fold_accuracy`: a gallery enrolled from ID photos, matched on photos with
context) and with both tight (`tight_both_10fold_accuracy`).
View 2 (`pairs.txt`) is never touched: it stays for the final measurement (`edge-mtl eval verification`).

Usage: python benchmarks/recognizer_view1.py --crops $EDGE_MTL_CACHE/crops [--data ../shared/data] [--at-threshold T]
    [--tight] A.onnx B.onnx ...
The crop cache's `lfw_dev` source is written by any recognizer training run (`edge_mtl.data.crops`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_mtl.data.crops import CropSet, add_sizes, ensure_source
from edge_mtl.errors import InputError
from edge_mtl.eval.verification import (
    Pair,
    View1,
    balanced_folds,
    best_threshold,
    read_pairs,
    tar_at_far,
    ten_fold_accuracy,
    view1,
)
from edge_mtl.paths import data_root
from edge_mtl.runtime.registry import open_recognizer


def far_frr(scores: np.ndarray, same: np.ndarray, t: float) -> list[float]:  # type: ignore[type-arg]
    """[false-accept rate, false-reject rate] of `scores` at threshold `t`."""
    return [round(float((scores[~same] > t).mean()), 5), round(float((scores[same] <= t).mean()), 4)]


def margin_for_far(impostors: np.ndarray, far: float, t: float) -> float:  # type: ignore[type-arg]
    """The least margin that, taken off the `impostors` scores, leaves at most a share `far` of them above `t`."""
    allowed = int(np.floor(far * impostors.size))
    if allowed >= impostors.size:
        return 0.0
    kth = impostors.size - 1 - allowed  # the (allowed+1)-th highest score
    return max(0.0, float(np.partition(impostors, kth)[kth]) - t)


def own_every_pair(e: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    """Scores and same-person flags (`same`: image x image) of every unordered pair of different View 1 images."""
    iu = np.triu_indices(len(same), 1)
    return (e @ e.T)[iu], same[iu]


def every_pair(
    first: np.ndarray, e: np.ndarray, same: np.ndarray, t: float,  # type: ignore[type-arg]
    own: np.ndarray, own_same: np.ndarray,  # type: ignore[type-arg]
) -> dict[str, object]:
    """The margin estimate again over every pair of View 1 images rather than the 1,600 listed impostor pairs:
    own scores over all unordered pairs of different images, cross-version scores (the first model's embedding
    of one image against this model's of another) over all ordered pairs. Pairs share images, so they are not
    independent, but the FAR at a deployed threshold (about 1%) rests on tens of thousands of impostors, not 14."""
    off = ~np.eye(len(same), dtype=bool)
    cross, cross_same = (first @ e.T)[off], same[off]
    own_far = float((own[~own_same] > t).mean())
    margin = margin_for_far(cross[~cross_same], own_far, t)
    return {
        "every_pair_counts": {"impostor": int((~own_same).sum()), "genuine": int(own_same.sum())},
        "every_pair_own_far_frr": far_frr(own, own_same, t),
        "every_pair_cross_model_far_frr": far_frr(cross, cross_same, t),
        "every_pair_cross_model_margin_for_own_far": round(margin, 4),
        "every_pair_cross_model_far_frr_with_margin": far_frr(cross - margin, cross_same, t),
    }


def tight_source(crops: Path, root: Path, pairs: dict[str, list[Pair]], detector: Path, landmarks: Path) -> CropSet:
    """The View 1 images cut at their faces' boxes (`lfw_dev_tight`), built on first use with the shipped
    detector and landmark refiner, as the trainer builds `lfw_dev`."""
    from edge_mtl.train.tasks.recognizer import lfw_records, load_detector

    return ensure_source(lfw_records(root, list(pairs)), lambda: load_detector(detector, landmarks=landmarks), crops,
                         "lfw_dev_tight", "LFW View 1's images", cut=True)


def tight_figures(e: np.ndarray, e_tight: np.ndarray, v1: View1) -> dict[str, float]:  # type: ignore[type-arg]
    """View 1 10-fold accuracy over the 3,200 listed pairs with the first image tight and the second with
    context, and with both tight."""
    folds = balanced_folds(v1.same)
    mixed = (e_tight[v1.a] * e[v1.b]).sum(1).astype(np.float64)
    both = (e_tight[v1.a] * e_tight[v1.b]).sum(1).astype(np.float64)
    return {"tight_mixed_10fold_accuracy": ten_fold_accuracy(mixed, v1.same, folds)["accuracy"],
            "tight_both_10fold_accuracy": ten_fold_accuracy(both, v1.same, folds)["accuracy"]}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--crops", type=Path, required=True)
    p.add_argument("--data", type=Path, help="../shared/data (default: $EDGE_MTL_DATA)")
    p.add_argument("--at-threshold", type=float, help="also the FAR / FRR at this fixed threshold (a deployed one)")
    p.add_argument("--tight", action="store_true", help="also View 1 with faces cut at their boxes (lfw_dev_tight)")
    p.add_argument("--detector", type=Path, default=Path("export/detector.onnx"), help="builds lfw_dev_tight")
    p.add_argument("--landmarks", type=Path, default=Path("export/landmarks.onnx"), help="builds lfw_dev_tight")
    a = p.parse_args(argv)
    root = data_root(a.data)
    if root is None or not (a.crops / "lfw_dev.json").exists():
        p.error("needs ../shared/data (--data) and a crop cache with lfw_dev (--crops)")
    pairs = {f: read_pairs(root / "lfw" / f) for f in ("pairsDevTrain.txt", "pairsDevTest.txt")}
    from edge_mtl.train.tasks.recognizer import lfw_records

    try:  # with the image sizes that serve a model's fill (CropSet.rendered)
        cs = add_sizes(lfw_records(root, list(pairs)), a.crops, "lfw_dev")
    except InputError as e:
        p.error(str(e))
    idx = cs.index()
    people = np.array([k.split("/")[0] for k in cs.keys])
    same_person = people[:, None] == people[None, :]
    tight = tight_source(a.crops, root, pairs, a.detector, a.landmarks) if a.tight else None
    if tight is not None and tight.keys != cs.keys:
        p.error(f"{a.crops}: lfw_dev_tight and lfw_dev hold other images: remove lfw_dev_tight to rebuild it")

    first = None
    for m in a.models:
        rec = open_recognizer(m, max_batch=128)
        try:  # each model with its own fill beyond the images
            r = rec.analyze(cs.rendered(rec.fill))
            r_tight = rec.analyze(tight.rendered(rec.fill)) if tight is not None else None
        except InputError as e:
            p.error(str(e))
        e = r.embeddings
        v1 = view1(e, idx, pairs["pairsDevTrain.txt"], pairs["pairsDevTest.txt"])
        ia, ib, s, y = v1.a, v1.b, v1.scores, v1.same
        t_own = best_threshold(s, y)
        err = (s > t_own) != y
        q = np.minimum(r.quality[ia], r.quality[ib])
        bins = np.digitize(q, np.quantile(q, [0.25, 0.5, 0.75]))
        out = {
            "model": str(m),
            "view1_accuracy": v1.accuracy,
            "view1_threshold": v1.threshold,
            "all_pairs_best_threshold_accuracy": round(1 - float(err.mean()), 4),  # compare cross_model_accuracy
            "error_by_quality_quartile": [round(float(err[bins == k].mean()), 4) for k in range(4)],
            "quality_p10_p50_p90": [round(float(v), 3) for v in np.quantile(r.quality, [0.1, 0.5, 0.9])],
            # the selection figures fixed for runs after stage 6 (export/recognizer.md): all 3,200 listed pairs
            # in 10 folds (threshold from the other nine), then TAR at FAR 1e-3 over every pair of View 1 images
            "view1_10fold_accuracy": v1.ten_fold_accuracy,
        }
        if tight is not None:
            assert r_tight is not None
            out.update(tight_figures(e, r_tight.embeddings, v1))
            out["tight_missing"] = tight.status.count("missing")
        own, own_same = own_every_pair(e, same_person)
        out["every_pair_tar_at_far"] = {
            str(f): round(tar_at_far(own.astype(np.float64), own_same, f), 4) for f in (1e-3, 1e-2)
        }
        if first is None:
            first = e
        else:
            sx = (first[ia] * e[ib]).sum(1)
            tx = best_threshold(sx, y)
            out["cross_model_accuracy"] = round(float(((sx > tx) == y).mean()), 4)
            out["cross_model_threshold"] = round(float(tx), 4)
            # what the daemon does with a declared-compatible gallery: cross-version scores against this model's own
            # threshold; the false-accept and false-reject rates there, beside this model's own
            for name, sc in (("own", s), ("cross_model", sx)):
                for key, t in (("own_threshold", t_own), ("fixed_threshold", a.at_threshold)):
                    if t is not None:
                        out[f"{name}_far_frr_at_{key}"] = far_frr(sc, y, t)
            if a.at_threshold is not None:
                # the margin to declare (`edge-mtl export --compatible-with FIRST:MARGIN`): taken off cross-version
                # similarities, it brings their false-accept rate at the fixed threshold down to this model's own
                t = a.at_threshold
                margin = margin_for_far(sx[~y], float((s[~y] > t).mean()), t)
                out["cross_model_margin_for_own_far"] = round(margin, 4)
                out["cross_model_far_frr_with_margin"] = far_frr(sx - margin, y, t)
                out.update(every_pair(first, e, same_person, t, own, own_same))
        sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
