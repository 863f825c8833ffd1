"""Verification metrics on synthetic similarities with known answers, and the real LFW pairs files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_mtl.eval.verification import (
    Pair,
    balanced_folds,
    best_threshold,
    error_by_quality,
    far_threshold,
    lfw_path,
    read_pairs,
    tar_at_far,
    ten_fold_accuracy,
    verification_metrics,
    view1,
)


def _acc(sims: np.ndarray, same: np.ndarray, th: float) -> float:
    return float(((sims > th) == same).mean())


def _best_possible(sims: np.ndarray, same: np.ndarray) -> float:
    """Brute force: accuracy of every distinct cut, including 'all same' and 'all different'."""
    cands = np.concatenate([[sims.min() - 1.0], np.unique(sims)])
    return max(_acc(sims, same, float(t)) for t in cands)


def test_best_threshold_hand_computed() -> None:
    sims = np.array([0.1, 0.2, 0.3, 0.4])
    same = np.array([False, True, False, True])
    # cut after 0.1: 1 different right + 2 same right = 3/4; after 0.3: 2 + 1 = 3/4 (first wins)
    th = best_threshold(sims, same)
    assert th == pytest.approx(0.15)
    assert _acc(sims, same, th) == 0.75


def test_best_threshold_separable() -> None:
    sims = np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.7])
    same = np.array([True, False, True, False, False, True])
    th = best_threshold(sims, same)
    assert th == pytest.approx(0.5) and _acc(sims, same, th) == 1.0


def test_best_threshold_ties_and_all_same() -> None:
    # three pairs share one similarity: no cut can split them
    sims = np.array([0.5, 0.5, 0.5, 0.9])
    same = np.array([False, True, True, True])
    th = best_threshold(sims, same)
    assert _acc(sims, same, th) == 0.75  # everything "same" is the best achievable
    sims = np.array([0.2, 0.4, 0.6])
    assert _acc(sims, np.ones(3, bool), best_threshold(sims, np.ones(3, bool))) == 1.0
    assert _acc(sims, np.zeros(3, bool), best_threshold(sims, np.zeros(3, bool))) == 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=30))
def test_best_threshold_reaches_the_best_accuracy(pairs: list[tuple[int, bool]]) -> None:
    """Coarse (tied) similarities as a quantised model produces: the chosen threshold must really achieve the
    best accuracy any threshold can."""
    sims = np.array([p[0] / 6 for p in pairs], np.float64)
    same = np.array([p[1] for p in pairs], bool)
    assert _acc(sims, same, best_threshold(sims, same)) == pytest.approx(_best_possible(sims, same))


def test_ten_fold_separable_is_perfect() -> None:
    rng = np.random.default_rng(0)
    n = 600
    same = np.arange(n) % 2 == 0
    sims = np.where(same, rng.uniform(0.6, 1.0, n), rng.uniform(-0.3, 0.4, n))
    folds = np.arange(n) // 60
    res = ten_fold_accuracy(sims, same, folds)
    assert res["accuracy"] == 1.0 and res["accuracy_std"] == 0.0
    assert 0.4 < res["threshold"] < 0.6


def test_ten_fold_one_error_per_fold() -> None:
    # each fold: 9 correct pairs and one 'same' pair with a low similarity -> 90 % in every fold
    sims, same, folds = [], [], []
    for f in range(10):
        sims += [0.9, 0.8, 0.85, 0.95, 0.1, 0.2, 0.15, 0.05, 0.12, 0.0]
        same += [True] * 4 + [False] * 5 + [True]
        folds += [f] * 10
    res = ten_fold_accuracy(np.array(sims), np.array(same), np.array(folds))
    assert res["accuracy"] == 0.9 and res["accuracy_std"] == 0.0


def test_balanced_folds_share_matched_and_mismatched_pairs_evenly() -> None:
    # View 1 lists 1,100 + 500 matched and 1,100 + 500 mismatched pairs, matched first in each file
    same = np.array([True] * 1100 + [False] * 1100 + [True] * 500 + [False] * 500)
    folds = balanced_folds(same)
    assert folds.shape == same.shape and set(folds.tolist()) == set(range(10))
    for f in range(10):
        assert int((same & (folds == f)).sum()) == 160 and int((~same & (folds == f)).sum()) == 160
    uneven = balanced_folds(np.array([True] * 7 + [False] * 3), k=3)
    assert uneven.tolist() == [0, 1, 2, 0, 1, 2, 0, 0, 1, 2]


def test_view1_hand_computed() -> None:
    # cosines: a.b 1, a.c 0, a.d 0.6, c.d 0.8, b.c 0; DevTrain puts the threshold at 0.5, where DevTest's c-d
    # impostor (0.8) is the one error of four
    index = {"a": 0, "b": 1, "c": 2, "d": 3}
    e = np.array([[1, 0], [1, 0], [0, 1], [0.6, 0.8]], np.float32)
    dev_train = [Pair("a", "b", True, 0), Pair("a", "c", False, 0)]
    dev_test = [Pair("a", "d", True, 0), Pair("c", "d", False, 0), Pair("b", "c", False, 0), Pair("a", "b", True, 0)]
    v = view1(e, index, dev_train, dev_test)
    assert v.threshold == 0.5 and v.accuracy == 0.75
    assert v.a.tolist() == [0, 0, 0, 2, 1, 0] and v.b.tolist() == [1, 2, 3, 3, 2, 1]
    assert v.same.tolist() == [True, False, True, False, False, True]
    np.testing.assert_allclose(v.scores, [1, 0, 0.6, 0.8, 0, 1], atol=1e-6)
    # balanced folds over all six: {a-b, a-c}, {a-d, c-d}, {a-b, b-c}; thresholds from the other two folds are
    # 0.3, 0.5, 0.3 -> fold accuracies 1, 0.5 (c-d accepted), 1
    assert v.ten_fold_accuracy == 0.8333


def test_tar_at_far_known() -> None:
    neg = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    pos = np.array([0.9995, 0.9895, 0.98, 0.5])
    sims = np.concatenate([pos, neg])
    same = np.concatenate([np.ones(4, bool), np.zeros(1000, bool)])
    # FAR 1e-2: 10 negatives may pass -> threshold 0.989 -> two of four positives pass
    assert tar_at_far(sims, same, 1e-2) == 0.5
    # FAR 1e-3: one negative may pass -> threshold 0.998 -> one positive passes
    assert tar_at_far(sims, same, 1e-3) == 0.25
    assert tar_at_far(sims, same, 1.0) == 1.0
    assert np.isnan(tar_at_far(pos, np.ones(4, bool), 0.01))
    assert np.isnan(tar_at_far(neg, np.zeros(1000, bool), 0.01))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([1e-3, 1e-2, 0.1, 0.5]))
def test_tar_at_far_never_exceeds_far(seed: int, far: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    sims = np.round(rng.normal(0, 1, n), int(rng.integers(0, 3)))  # with ties
    same = rng.uniform(size=n) < 0.3
    if same.all():
        return
    tar = tar_at_far(sims, same, far)
    neg = np.sort(sims[~same])[::-1]
    k = int(np.floor(far * neg.size))
    th = neg[k] if k < neg.size else neg[-1] - 1e-6
    assert (sims[~same] > th).mean() <= far
    assert far_threshold(sims, same, far) == th
    if same.any():
        assert tar == pytest.approx((sims[same] > th).mean())
    else:
        assert np.isnan(tar)


def test_verification_metrics_and_quality_bins() -> None:
    rng = np.random.default_rng(1)
    n = 200
    same = np.arange(n) % 2 == 0
    sims = np.where(same, 0.8, 0.2) + rng.normal(0, 0.01, n)
    res = verification_metrics(sims, same, np.arange(n) // 20)
    assert res["accuracy"] == 1.0 and res["pairs"] == 200.0
    assert res["tar_at_far_0.001"] == 1.0 and res["tar_at_far_0.01"] == 1.0
    neg = np.sort(sims[~same])[::-1]  # 100 mismatched pairs: FAR 1e-2 allows one above the threshold, 1e-3 none
    assert res["threshold_at_far_0.01"] == round(neg[1], 4) and res["threshold_at_far_0.001"] == round(neg[0], 4)
    quality = np.arange(n, dtype=np.float64)
    # errors only among the lowest-quality quarter
    bad = sims.copy()
    bad[:50] = np.where(same[:50], 0.1, 0.9)
    bins = error_by_quality(bad, same, quality, 4, 0.5)
    assert [b["error"] for b in bins] == [1.0, 0.0, 0.0, 0.0]
    assert sum(b["pairs"] for b in bins) == n


def test_lfw_path() -> None:
    assert lfw_path("Zico", 2) == "Zico/Zico_0002.jpg"


def test_read_pairs_real_view2(data_dir: Path) -> None:
    pairs = read_pairs(data_dir / "lfw" / "pairs.txt")
    assert len(pairs) == 6000
    folds = np.array([p.fold for p in pairs])
    same = np.array([p.same for p in pairs])
    assert np.bincount(folds).tolist() == [600] * 10
    assert int(same.sum()) == 3000
    for f in range(10):
        assert int(same[folds == f].sum()) == 300
        # the file lists each fold's 300 matched pairs, then its 300 mismatched pairs
        assert same[folds == f][:300].all() and not same[folds == f][300:].any()
    assert pairs[0].a == "Abel_Pacheco/Abel_Pacheco_0001.jpg" and pairs[0].b == "Abel_Pacheco/Abel_Pacheco_0004.jpg"
    root = data_dir / "lfw" / "images_deepfunneled"
    for p in pairs[::500]:
        assert (root / p.a).is_file() and (root / p.b).is_file()
    assert all(p.a.split("/")[0] == p.b.split("/")[0] for p in pairs if p.same)
    assert all(p.a.split("/")[0] != p.b.split("/")[0] for p in pairs if not p.same)


def test_read_pairs_real_view1(data_dir: Path) -> None:
    pairs = read_pairs(data_dir / "lfw" / "pairsDevTrain.txt")
    assert len(pairs) == 2200 and {p.fold for p in pairs} == {0}
    assert sum(p.same for p in pairs) == 1100


@pytest.mark.data
def test_eval_verification_every_pair_on_real_lfw(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`edge-mtl eval verification --every-pair` on a few real View 2 pairs: TAR at FAR 1e-4 beside 1e-3 and 1e-2,
    and the every-pair figures over the listed pairs' images (all of LFW without --limit)."""
    import json

    from edge_mtl.commands.cli import main

    assert main(["eval", "verification", "--json", "--limit", "20", "--every-pair", "--data", str(data_dir)]) == 0
    res = json.loads(capsys.readouterr().out)
    pairs = read_pairs(data_dir / "lfw" / "pairs.txt")
    listed = [p for p in pairs if p.same][:10] + [p for p in pairs if not p.same][:10]
    names = sorted({p.a for p in listed} | {p.b for p in listed})
    people = [n.split("/")[0] for n in names]
    genuine = sum(a < b and people[a] == people[b] for a in range(len(names)) for b in range(len(names)))
    ep = res["every_pair"]
    assert res["images"] == ep["images"] == len(names)
    assert ep["genuine_pairs"] == genuine and ep["impostor_pairs"] == len(names) * (len(names) - 1) // 2 - genuine
    assert {"tar_at_far_0.0001", "tar_at_far_0.001", "tar_at_far_0.01"} <= set(res)
    assert ep["threshold_at_far_0.0001"] >= ep["threshold_at_far_0.001"]
    assert 0.5 <= ep["tar_at_far_0.001"] <= 1
