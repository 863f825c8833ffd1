"""Detection metrics (recall per IOD band, precision, AP, NME) and attribute metrics on hand-built cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_mtl.eval.attributes import attribute_metrics
from edge_mtl.eval.detection import (
    GroundTruth,
    average_precision,
    evaluate,
    false_detections_per_frame,
    iou_matrix,
    match,
)
from edge_mtl.types import Detections


def _face(x1: float, y1: float, side: float, iod: float) -> tuple[list[float], list[list[float]]]:
    """A square face box and 4 landmarks with the given inter-ocular distance."""
    cx, cy = x1 + side / 2, y1 + side / 2
    lms = [[cx - iod / 2, cy - side * 0.1], [cx + iod / 2, cy - side * 0.1], [cx, cy + side * 0.05],
           [cx, cy + side * 0.25]]
    return [x1, y1, x1 + side, y1 + side], lms


# image 1: a big face (IOD 40, band > 30) and a tiny one (IOD 8, band < 10); image 2: a medium one (IOD 20)
A = _face(0, 0, 100, 40)
B = _face(200, 200, 20, 8)
C = _face(50, 50, 50, 20)


def _gt(*faces: tuple[list[float], list[list[float]]]) -> GroundTruth:
    return GroundTruth(np.array([f[0] for f in faces], np.float32).reshape(-1, 4),
                       np.array([f[1] for f in faces], np.float32).reshape(-1, 4, 2))


def _dets(faces: list[tuple[list[float], list[list[float]]]], scores: list[float]) -> Detections:
    return Detections(np.array([f[0] for f in faces], np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      np.array([f[1] for f in faces], np.float32).reshape(-1, 4, 2))


TRUTHS = [_gt(A, B), _gt(C)]


def test_perfect_predictions() -> None:
    res = evaluate([_dets([A, B], [0.9, 0.8]), _dets([C], [0.7])], TRUTHS, score_threshold=0.5)
    assert res["faces"] == 3.0 and res["ap50"] == 1.0
    assert res["recall"] == 1.0 and res["precision"] == 1.0 and res["false_positives"] == 0.0
    assert res["recall_iod_lt10"] == 1.0 and res["recall_iod_10_30"] == 1.0 and res["recall_iod_gt30"] == 1.0
    assert res["faces_iod_lt10"] == res["faces_iod_10_30"] == res["faces_iod_gt30"] == 1.0
    assert res["recall_iod_ge10"] == 1.0
    assert res["nme"] == 0.0 and res["nme_median"] == 0.0


def test_one_missed_face_of_two() -> None:
    res = evaluate([_dets([A], [0.9])], [_gt(A, B)], score_threshold=0.5)
    assert res["recall"] == 0.5 and res["precision"] == 1.0
    assert res["recall_iod_gt30"] == 1.0 and res["recall_iod_lt10"] == 0.0
    assert math.isnan(res["recall_iod_10_30"]) and res["faces_iod_10_30"] == 0.0
    assert res["ap50"] == 0.5


def test_false_positive_ranked_first_and_threshold() -> None:
    fp = _face(400, 400, 30, 12)
    preds = [_dets([fp, A, B], [0.99, 0.9, 0.4]), _dets([C], [0.8])]
    res = evaluate(preds, TRUTHS, score_threshold=0.5)
    # at threshold 0.5: A and C found, B (0.4) not, one false positive
    assert res["recall"] == pytest.approx(2 / 3, abs=1e-4) and res["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert res["false_positives"] == 1.0 and res["recall_iod_lt10"] == 0.0
    # AP over all scores: FP(0.99) A(0.9) C(0.8) B(0.4) -> precision 1/2, 2/3, 3/4 at recall 1/3, 2/3, 1;
    # the interpolated envelope is 3/4 everywhere
    assert res["ap50"] == 0.75


def test_duplicate_is_a_false_positive_and_iou_threshold() -> None:
    shifted = ([A[0][0] + 40, A[0][1], A[0][2] + 40, A[0][3]], A[1])  # IoU 60/140 = 0.43 with A
    res = evaluate([_dets([A, A], [0.9, 0.8])], [_gt(A)], score_threshold=0.5)
    assert res["recall"] == 1.0 and res["precision"] == 0.5 and res["false_positives"] == 1.0
    res = evaluate([_dets([shifted], [0.9])], [_gt(A)], score_threshold=0.5)
    assert res["recall"] == 0.0
    res = evaluate([_dets([shifted], [0.9])], [_gt(A)], score_threshold=0.5, iou_thr=0.4)
    assert res["recall"] == 1.0


def test_landmark_error_normalised_by_iod() -> None:
    moved = (A[0], [[x + 2.0, y] for x, y in A[1]])
    res = evaluate([_dets([moved], [0.9])], [_gt(A)], score_threshold=0.5)
    assert res["nme"] == pytest.approx(2.0 / 40.0)


def test_unannotated_landmarks_are_in_no_band() -> None:
    gt = _gt(A, B)
    gt.landmarks[1] = np.nan
    res = evaluate([_dets([A], [0.9])], [gt], score_threshold=0.5)
    assert res["faces_iod_lt10"] == 0.0 and res["faces"] == 2.0 and res["recall"] == 0.5


def test_empty_images() -> None:
    res = evaluate([Detections.empty(), _dets([A], [0.9])], [_gt(), _gt()], score_threshold=0.5)
    assert res["faces"] == 0.0 and math.isnan(res["ap50"]) and res["false_positives"] == 1.0


def test_match_and_iou_and_ap_primitives() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150, 1.0, 0.0]], rtol=1e-6)
    assert iou_matrix(a, np.zeros((0, 4), np.float32)).shape == (1, 0)
    # the higher-scoring prediction takes the face; the other gets nothing
    assign, taken = match(np.array([[0, 0, 10, 10], [1, 0, 11, 10]], np.float32), np.array([0.5, 0.9], np.float32),
                          a)
    assert assign.tolist() == [-1, 0] and taken.tolist() == [True]
    assert average_precision(np.array([0.9, 0.8]), np.array([True, True]), 4) == 0.5
    assert average_precision(np.array([0.9, 0.8]), np.array([False, True]), 1) == 0.5


def test_false_detections_per_frame() -> None:
    frames = [np.zeros((4, 4, 3), np.uint8)] * 4
    counts = iter([0, 2, 0, 1])

    def detect(_f: np.ndarray) -> Detections:
        n = next(counts)
        return _dets([A] * n, [0.9] * n)

    res = false_detections_per_frame(detect, frames)
    assert res == {"frames": 4.0, "detections": 3.0, "per_frame": 0.75, "max_in_frame": 2.0}


# ------------------------------------------------------------------ attributes
def test_attribute_metrics_known_values() -> None:
    res = attribute_metrics(
        age_true=[10, 25, 35, 70], age_pred=[12, 25, 30, 80], gender_true=[0, 1, 1, 0],
        female_prob=[0.2, 0.7, 0.4, 0.5], age_std=[3, 1, 5, 5],
    )
    assert res["images"] == 4
    assert res["age_mae"] == 4.25 and res["age_median_ae"] == 3.5
    assert res["gender_accuracy"] == 0.5  # 0.5 counts as female
    assert res["age_within_1std"] == 0.75
    def band(n: int, mae: float, acc: float, female: float, predicted: float) -> dict[str, float]:
        return {"n": n, "age_mae": mae, "gender_accuracy": acc, "female_share": female,
                "predicted_female_share": predicted}

    assert res["bands"] == {
        "0-12": band(1, 2.0, 1.0, 0.0, 0.0),
        "20-29": band(1, 0.0, 1.0, 1.0, 1.0),
        "30-39": band(1, 5.0, 0.0, 1.0, 0.0),
        "70-116": band(1, 10.0, 0.0, 0.0, 1.0),
    }
    assert res["child_bands"] == {"7-12": band(1, 2.0, 1.0, 0.0, 0.0)}


def test_attribute_metrics_child_bands_show_a_gender_bias() -> None:
    # infants: all predicted male although half are girls; older children: right
    res = attribute_metrics([1, 1, 2, 2, 8, 9], [1, 1, 2, 2, 8, 9], [1, 0, 1, 0, 1, 0], [0.1, 0.2, 0.3, 0.4, 0.9, 0.1])
    kids = res["child_bands"]
    assert isinstance(kids, dict) and set(kids) == {"0-2", "7-12"}
    assert kids["0-2"]["gender_accuracy"] == 0.5 and kids["0-2"]["female_share"] == 0.5
    assert kids["0-2"]["predicted_female_share"] == 0.0
    assert kids["7-12"]["gender_accuracy"] == 1.0 and kids["7-12"]["predicted_female_share"] == 0.5


def test_gender_selective_trades_coverage_for_accuracy() -> None:
    from edge_mtl.eval.attributes import gender_selective

    # confidences 0.95, 0.9, 0.65, 0.55, 0.52; the two least confident are wrong, and are the children
    rows = gender_selective(
        gender_true=[1, 0, 1, 1, 0], female_prob=[0.95, 0.1, 0.65, 0.45, 0.52], age_true=[30, 40, 50, 2, 8],
        floors=(0.5, 0.6, 0.9, 0.99),
    )
    assert rows[0]["coverage"] == 1.0 and rows[0]["accuracy"] == 0.6 and math.isnan(rows[0]["dropped_under_13"])
    assert rows[1] == {"min_confidence": 0.6, "coverage": 0.6, "accuracy": 1.0, "dropped_under_13": 1.0}
    assert rows[2] == {"min_confidence": 0.9, "coverage": 0.4, "accuracy": 1.0, "dropped_under_13": 0.6667}
    assert rows[3]["coverage"] == 0.0 and math.isnan(rows[3]["accuracy"])
    res = attribute_metrics([30, 40, 50, 2, 8], [30, 40, 50, 2, 8], [1, 0, 1, 1, 0], [0.95, 0.1, 0.65, 0.45, 0.52])
    assert [r["min_confidence"] for r in res["gender_selective"]] == [0.6, 0.7, 0.8, 0.9]  # type: ignore[index]


def test_gender_selective_by_age_withholds_the_young_not_the_adults() -> None:
    from edge_mtl.eval.attributes import gender_selective_by_age

    # two confident but wrong infants (estimated 1 and 2.5), a right 4-year-old, three adults (one unsure and wrong)
    rows = gender_selective_by_age(
        gender_true=[1, 0, 1, 0, 1, 0], female_prob=[0.05, 0.9, 0.8, 0.1, 0.95, 0.55],
        age_true=[1, 2, 4, 30, 40, 50], age_pred=[1.0, 2.5, 4.0, 28.0, 45.0, 52.0],
        min_ages=(0.0, 3.0, 5.0), floors=(0.5, 0.6),
    )
    by = {(r["min_age"], r["min_confidence"]): r for r in rows}
    assert list(by) == [(0.0, 0.5), (0.0, 0.6), (3.0, 0.5), (3.0, 0.6), (5.0, 0.5), (5.0, 0.6)]
    assert by[0.0, 0.5]["coverage"] == 1.0 and by[0.0, 0.5]["accuracy"] == 0.5 and by[0.0, 0.5]["adults_dropped"] == 0
    assert by[3.0, 0.5] == {"min_age": 3.0, "min_confidence": 0.5, "coverage": 0.6667, "accuracy": 0.75,
                            "dropped_under_13": 1.0, "adults_dropped": 0.0}
    assert by[3.0, 0.6] == {"min_age": 3.0, "min_confidence": 0.6, "coverage": 0.5, "accuracy": 1.0,
                            "dropped_under_13": 0.6667, "adults_dropped": 0.3333}
    assert by[5.0, 0.6]["coverage"] == 0.3333 and by[5.0, 0.6]["dropped_under_13"] == 0.75


def test_attribute_metrics_gender_by_quality_third() -> None:
    # six infants: the three best crops right, the three worst wrong -> [0, 0.5, 1] by thirds of two faces each
    res = attribute_metrics([1] * 6, [1] * 6, [1, 1, 1, 1, 1, 1], [0.2, 0.3, 0.4, 0.9, 0.8, 0.7],
                            quality=[0.1, 0.2, 0.5, 0.45, 0.9, 0.8])
    kids = res["child_bands"]
    assert isinstance(kids, dict) and kids["0-2"]["gender_accuracy_by_quality_third"] == [0.0, 0.5, 1.0]
    one = attribute_metrics([1], [1], [1], [0.9], quality=[0.5])["bands"]
    assert isinstance(one, dict) and "gender_accuracy_by_quality_third" not in one["0-12"]  # fewer than three faces
    assert "gender_selective_by_age" in res and "gender_accuracy_by_quality_third" not in attribute_metrics(
        [1] * 6, [1] * 6, [1] * 6, [0.9] * 6)["bands"]["0-12"]


def test_attribute_metrics_band_edges_and_empty() -> None:
    res = attribute_metrics([12.9, 13.0, 19.99, 20.0], [12.9, 13.0, 19.99, 20.0], [1, 1, 0, 0], [0.9, 0.9, 0.1, 0.1])
    bands = res["bands"]
    assert isinstance(bands, dict)
    assert {k: v["n"] for k, v in bands.items()} == {"0-12": 1, "13-19": 2, "20-29": 1}
    assert res["age_mae"] == 0.0 and res["gender_accuracy"] == 1.0 and "age_within_1std" not in res
    empty = attribute_metrics([], [], [], [])
    assert empty["images"] == 0 and math.isnan(empty["age_mae"]) and math.isnan(empty["gender_accuracy"])
