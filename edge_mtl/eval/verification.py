"""Face verification metrics on LFW: the standard 10-fold protocol, TAR at a given FAR, and error by quality.

View 2 (`pairs.txt`): 10 folds of 300 matched + 300 mismatched pairs; for each fold the cosine threshold is chosen
on the other nine folds and accuracy measured on the held-out one; the result is the mean and std over folds.
View 1 (`pairsDevTrain.txt` / `pairsDevTest.txt`) is for model selection only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Pair:
    a: str  # relative path under images_deepfunneled/
    b: str
    same: bool
    fold: int


def lfw_path(name: str, num: int) -> str:
    return f"{name}/{name}_{num:04d}.jpg"


def read_pairs(path: str | Path) -> list[Pair]:
    """Parse an LFW pairs file (View 1 or View 2). Folds follow the file's layout (View 1: one fold)."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split()
    if len(header) == 2:
        n_folds, per = int(header[0]), int(header[1])
    else:
        n_folds, per = 1, int(header[0])
    pairs = []
    for i, line in enumerate(lines[1:]):
        x = line.split()
        if len(x) == 3:
            a, b, same = lfw_path(x[0], int(x[1])), lfw_path(x[0], int(x[2])), True
        elif len(x) == 4:
            a, b, same = lfw_path(x[0], int(x[1])), lfw_path(x[2], int(x[3])), False
        else:
            continue
        pairs.append(Pair(a, b, same, min(i // (2 * per), n_folds - 1)))
    return pairs


def best_threshold(sims: F64, same: npt.NDArray[np.bool_]) -> float:
    """The threshold maximising accuracy (midpoints between sorted similarities)."""
    order = np.argsort(sims, kind="stable")
    s, y = sims[order], same[order]
    # predicting "same" for sims > t; accuracy when the k lowest pairs (k = 0..n) fall below the cut
    n_same = y.sum()
    below_diff = np.concatenate([[0], np.cumsum(~y)])  # mismatched pairs correctly below the cut
    below_same = np.concatenate([[0], np.cumsum(y)])
    acc = (below_diff + (n_same - below_same)) / len(s)
    # no threshold separates equal similarities: a cut between two of them is not achievable
    possible = np.ones(len(s) + 1, bool)
    possible[1:-1] = s[1:] > s[:-1]
    k = int(np.argmax(np.where(possible, acc, -1.0)))
    if k == 0:
        return float(s[0] - 1e-6)
    if k == len(s):
        return float(s[-1] + 1e-6)
    return float((s[k - 1] + s[k]) / 2)


def balanced_folds(same: npt.NDArray[np.bool_], k: int = 10) -> npt.NDArray[np.int64]:
    """Fold ids giving each of k folds an equal share of the matched and of the mismatched pairs (for pair lists,
    such as LFW View 1's two files together, that do not come in folds of their own)."""
    same = np.asarray(same, bool)
    folds = np.empty(len(same), np.int64)
    folds[same] = np.arange(int(same.sum())) % k
    folds[~same] = np.arange(int((~same).sum())) % k
    return folds


def ten_fold_accuracy(sims: F64, same: npt.NDArray[np.bool_], folds: npt.NDArray[np.int64]) -> dict[str, float]:
    accs, ths = [], []
    for f in np.unique(folds):
        te = folds == f
        th = best_threshold(sims[~te], same[~te]) if (~te).any() else best_threshold(sims, same)
        accs.append(float(((sims[te] > th) == same[te]).mean()))
        ths.append(th)
    return {
        "accuracy": round(float(np.mean(accs)), 4),
        "accuracy_std": round(float(np.std(accs)), 4),
        "threshold": round(float(np.mean(ths)), 4),
    }


@dataclass(frozen=True)
class View1:
    """LFW View 1 (the model-selection split) scored from embeddings of its images."""

    accuracy: float  # on pairsDevTest, at the threshold chosen on pairsDevTrain
    threshold: float
    ten_fold_accuracy: float  # all listed pairs in 10 balanced folds, each threshold from the other nine
    a: npt.NDArray[np.int64]  # every listed pair (pairsDevTrain, then pairsDevTest): embedding rows
    b: npt.NDArray[np.int64]
    scores: F64  # cosine similarity of each pair
    same: npt.NDArray[np.bool_]


def view1(
    embeddings: npt.NDArray[np.floating], index: Mapping[str, int], dev_train: list[Pair], dev_test: list[Pair]
) -> View1:
    """The selection figures of LFW View 1 from unit-norm `embeddings` whose rows `index` maps image names to:
    the trainer's validation (`val_lfw_dev_accuracy`, `val_lfw_dev_10fold_accuracy`) and
    benchmarks/recognizer_view1.py both score candidates through this."""
    pairs = dev_train + dev_test
    a = np.array([index[p.a] for p in pairs], np.int64)
    b = np.array([index[p.b] for p in pairs], np.int64)
    e = np.asarray(embeddings)
    s = (e[a] * e[b]).sum(1).astype(np.float64)  # products in the embeddings' own precision, as always
    same = np.array([p.same for p in pairs], bool)
    n = len(dev_train)
    th = best_threshold(s[:n], same[:n])
    return View1(
        accuracy=round(float(((s[n:] > th) == same[n:]).mean()), 4),
        threshold=round(th, 4),
        ten_fold_accuracy=ten_fold_accuracy(s, same, balanced_folds(same))["accuracy"],
        a=a, b=b, scores=s, same=same,
    )


def far_threshold(sims: F64, same: npt.NDArray[np.bool_], far: float) -> float:
    """The lowest similarity threshold (accept when similarity > it) whose false accept rate on mismatched pairs
    is <= `far`: a gallery's `identity.threshold` for that FAR. NaN without mismatched pairs."""
    neg = np.sort(sims[~same])[::-1]
    if neg.size == 0:
        return float("nan")
    k = int(np.floor(far * neg.size))
    return float(neg[k] if k < neg.size else neg[-1] - 1e-6)


def tar_at_far(sims: F64, same: npt.NDArray[np.bool_], far: float) -> float:
    """True accept rate at the threshold whose false accept rate on mismatched pairs is <= `far`."""
    if not same.any() or same.all():
        return float("nan")
    return float((sims[same] > far_threshold(sims, same, far)).mean())


def verification_metrics(
    sims: F64, same: npt.NDArray[np.bool_], folds: npt.NDArray[np.int64], fars: tuple[float, ...] = (1e-3, 1e-2)
) -> dict[str, float]:
    out = ten_fold_accuracy(sims, same, folds)
    for far in fars:
        out[f"tar_at_far_{far:g}"] = round(tar_at_far(sims, same, far), 4)
        out[f"threshold_at_far_{far:g}"] = round(far_threshold(sims, same, far), 4)
    out["pairs"] = len(sims)
    return out


def error_by_quality(
    sims: F64, same: npt.NDArray[np.bool_], pair_quality: F64, bins: int, threshold: float
) -> list[dict[str, float]]:
    """Verification error at a fixed threshold within quantile bins of pair quality (min of the two faces)."""
    edges = np.quantile(pair_quality, np.linspace(0, 1, bins + 1))
    out = []
    for i in range(bins):
        lo, hi = edges[i], edges[i + 1]
        m = (pair_quality >= lo) & ((pair_quality <= hi) if i == bins - 1 else (pair_quality < hi))
        if not m.any():
            continue
        err = float(((sims[m] > threshold) != same[m]).mean())
        out.append({"quality_lo": round(float(lo), 3), "quality_hi": round(float(hi), 3),
                    "pairs": int(m.sum()), "error": round(err, 4)})
    return out
