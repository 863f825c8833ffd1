"""Identity with and without score normalisation against a cohort (edge_mtl.identity.scorenorm), from the crop cache.

For each recognizer and each cohort setting (identities x top), the cohort is fitted as `edge-mtl score-cohort`
fits it (`cohort_faces` and `fit_cohort`: CelebA training identities of `celeba_samples`, the model's own
embeddings; the faces of the largest setting are embedded once, a smaller one takes its first identities), then:
LFW View 1 (the model-selection split) 10-fold accuracy over its 3,200 listed pairs and TAR at FAR 1e-3 / 1e-4 over
every pair of its images, plain cosine beside normalised. With `--lfw-all` (evaluation: decide on View 1 first),
the same over every pair of all 9,056 LFW images (`lfw_all`, as benchmarks/lfw_every_pair.py) and View 2's 6,000
pairs in 10 folds with TAR at FAR 1e-3 / 1e-2 over its 3,000 impostor pairs. With `--cross OLD.onnx` (a model that
carries its cohort and thresholds): a gallery of the earlier release matched by it, on View 1 (`cross_version`).

Usage: python benchmarks/score_norm.py A.onnx ... --crops $EDGE_MTL_CACHE/crops [--data ../shared/data]
           [--people 2500 ...] [--top 200 ...] [--lfw-all] [--cross OLD.onnx]
The crop cache's `celeba_samples` and `lfw_dev` are written by any recognizer training run, `lfw_all` by
benchmarks/lfw_every_pair.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_mtl.data.crops import CropSet, add_sizes, load_source
from edge_mtl.errors import InputError
from edge_mtl.eval.every_pair import every_pair_tar
from edge_mtl.eval.verification import balanced_folds, read_pairs, tar_at_far, ten_fold_accuracy
from edge_mtl.export_tools.score_cohort import cohort_faces, embed_faces, identity_crops
from edge_mtl.identity.scorenorm import ScoreNorm, fit_cohort, pair_scores
from edge_mtl.paths import data_root
from edge_mtl.runtime.registry import open_recognizer


def listed(emb: np.ndarray, idx: dict[str, int], pairs: Sequence[Any], norm: ScoreNorm | None,  # type: ignore[type-arg]
           folds: np.ndarray | None = None) -> dict[str, float]:  # type: ignore[type-arg]
    """10-fold accuracy (balanced folds unless given) and TAR at FAR 1e-3 / 1e-2 over listed pairs."""
    a = np.array([idx[p.a] for p in pairs], np.int64)
    b = np.array([idx[p.b] for p in pairs], np.int64)
    y = np.array([p.same for p in pairs])
    s = pair_scores(emb, a, b, norm)
    f = balanced_folds(y) if folds is None else folds
    out = {"10fold_accuracy": ten_fold_accuracy(s, y, f)["accuracy"]}
    out.update({f"tar_at_far_{far:g}": round(tar_at_far(s, y, far), 4) for far in (1e-3, 1e-2)})
    return out


def every(emb: np.ndarray, keys: Sequence[str], norm: ScoreNorm | None) -> dict[str, float]:  # type: ignore[type-arg]
    r = every_pair_tar(emb, [k.split("/")[0] for k in keys], norm=norm)
    return {k: v for k, v in r.items() if k.startswith("tar_at_far")}


def cross_version(old: Path, new_emb: np.ndarray, cs: CropSet, norm: ScoreNorm, t: float,  # type: ignore[type-arg]
                  margin: float) -> dict[str, float]:
    """A gallery enrolled with recognizer `old` matched by the new one (every ordered pair of View 1 images: the old
    model's embedding of one, the new one's of the other), all scores normalised against the new one's cohort:
    false-accept and false-reject rates at threshold `t` beside the new model's own, with the declared `margin` taken
    off, and the least margin that brings the cross-version false-accept rate down to the model's own."""
    rec = open_recognizer(old, max_batch=128)
    e_old = rec.analyze(cs.rendered(rec.fill)).embeddings
    people = np.array([k.split("/")[0] for k in cs.keys])
    same = people[:, None] == people[None, :]
    iu = np.triu_indices(len(people), 1)
    off = ~np.eye(len(people), dtype=bool)
    st_new, st_old = norm.stats(new_emb), norm.stats(e_old)
    own = norm.scores(new_emb @ new_emb.T, (st_new[0][:, None], st_new[1][:, None]), (st_new[0][None], st_new[1][None]))
    cross = norm.scores(e_old @ new_emb.T, (st_old[0][:, None], st_old[1][:, None]), (st_new[0][None], st_new[1][None]))
    own_far = float((own[iu][~same[iu]] > t).mean())
    imp, gen = cross[off & ~same], cross[off & same]
    kth = imp.size - 1 - int(np.floor(own_far * imp.size))
    return {"threshold": t, "own_far": round(own_far, 5), "own_frr": round(float((own[iu][same[iu]] <= t).mean()), 4),
            "cross_far": round(float((imp > t).mean()), 5), "declared_margin": margin,
            "cross_far_with_margin": round(float((imp - margin > t).mean()), 5),
            "cross_frr_with_margin": round(float((gen - margin <= t).mean()), 4),
            "margin_for_own_far": round(max(0.0, float(np.partition(imp, kth)[kth]) - t), 4)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--crops", type=Path, required=True)
    p.add_argument("--data", type=Path, help="../shared/data (default: $EDGE_MTL_DATA)")
    p.add_argument("--people", type=int, nargs="+", default=[2500], help="cohort identities (each a setting)")
    p.add_argument("--top", type=int, nargs="+", default=[200], help="highest cohort similarities (each a setting)")
    p.add_argument("--lfw-all", action="store_true", help="also every pair of all LFW images and View 2 (evaluation)")
    p.add_argument("--cross", type=Path, help="an earlier recognizer the model declares compatible: its gallery "
                   "matched with the model's own cohort (a model that carries one) at its stamped FAR 1e-2 point")
    a = p.parse_args(argv)
    root = data_root(a.data)
    if root is None:
        p.error("needs ../shared/data (--data)")
    from edge_mtl.train.tasks.recognizer import lfw_records

    dev = {f: read_pairs(root / "lfw" / f) for f in ("pairsDevTrain.txt", "pairsDevTest.txt")}
    try:
        v1 = add_sizes(lfw_records(root, list(dev)), a.crops, "lfw_dev")
        everything = load_source(a.crops, "lfw_all") if a.lfw_all else None
        cohort, names = identity_crops(a.crops)
    except InputError as e:
        p.error(str(e))
    present = [st != "missing" for st in cohort.status]
    v1_pairs = dev["pairsDevTrain.txt"] + dev["pairsDevTest.txt"]
    v2_pairs = read_pairs(root / "lfw" / "pairs.txt")
    for m in a.models:
        rec = open_recognizer(m, max_batch=128)
        e1 = rec.analyze(v1.rendered(rec.fill)).embeddings
        e_all = rec.analyze(everything.rendered(rec.fill)).embeddings if everything is not None else None
        settings: list[tuple[str, ScoreNorm | None, dict[str, Any]]] = [("cosine", None, {})]
        chosen, rows = cohort_faces(names, present, max(a.people))
        emb = embed_faces(rec, cohort, rows)
        who = np.asarray(names)[rows]
        for n in a.people:
            keep = np.isin(who, chosen[:n])
            for k in a.top:
                try:
                    norm = fit_cohort(emb[keep], who[keep], top=k)
                except ValueError as e:
                    p.error(str(e))
                report = {"identities": int(norm.cohort.shape[0]), "faces": int(keep.sum()), "top": k,
                          "center": round(norm.center, 4), "spread": round(norm.spread, 4)}
                settings.append((f"cohort {n} x top {k}", norm, report))
        if a.cross is not None:
            if rec.score_norm is None or "plain" not in rec.meta.operating_points:
                p.error(f"--cross: {m} carries no cohort or no stamped points")
            t = rec.meta.operating_points["plain"]["0.01"]
            row = cross_version(a.cross, e1, v1, rec.score_norm, t, rec.meta.compatible.get(
                open_recognizer(a.cross).meta.version, 0.0))
            sys.stdout.write(json.dumps({"model": str(m), "cross": str(a.cross), **row}) + "\n")
        for name, norm, report in settings:
            row: dict[str, Any] = {"model": str(m), "scores": name, **({"cohort": report} if report else {})}
            row["view1"] = listed(e1, v1.index(), v1_pairs, norm)
            row["view1_every_pair"] = every(e1, v1.keys, norm)
            if everything is not None and e_all is not None:
                row["lfw_every_pair"] = every(e_all, everything.keys, norm)
                row["view2"] = listed(e_all, everything.index(), v2_pairs, norm,
                                      folds=np.array([q.fold for q in v2_pairs]))
            sys.stdout.write(json.dumps(row) + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
