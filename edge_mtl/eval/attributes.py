"""Age and gender metrics: MAE (overall and per age band), gender accuracy, calibration of the predicted spread."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge_mtl.defaults import GENDER_MIN_CONFIDENCE

AGE_BANDS: tuple[tuple[int, int], ...] = (
    (0, 13), (13, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 117)
)
#: The first band split: infants, small children, older children (gender from the face alone gets harder the
#: younger the child).
CHILD_BANDS: tuple[tuple[int, int], ...] = ((0, 3), (3, 7), (7, 13))
#: Confidence floors for the gender trade-off table (what `attributes.gender_min_confidence` would keep).
GENDER_FLOORS: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9)
#: Age floors (years, estimated) for the second trade-off table (what `attributes.gender_min_age` would keep).
GENDER_MIN_AGES: tuple[float, ...] = (0.0, 2.0, 3.0, 5.0)


def _gender_right(gender_true: npt.ArrayLike, female_prob: npt.ArrayLike
                  ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Each face's gender confidence (max(p, 1 - p)) and whether its reading (female at p >= 0.5) is right."""
    gt = np.asarray(gender_true, np.int64)
    fp = np.asarray(female_prob, np.float64)
    return np.maximum(fp, 1 - fp), (fp >= 0.5).astype(np.int64) == gt


def _selective_row(right: npt.NDArray[np.bool_], kept: npt.NDArray[np.bool_], age_true: npt.NDArray[np.float64]
                   ) -> dict[str, float]:
    return {
        "coverage": round(float(kept.mean()), 4) if kept.size else float("nan"),
        "accuracy": round(float(right[kept].mean()), 4) if kept.any() else float("nan"),
        "dropped_under_13": round(float((age_true[~kept] < 13).mean()), 4) if (~kept).any() else float("nan"),
    }


def gender_selective(
    gender_true: npt.ArrayLike,
    female_prob: npt.ArrayLike,
    age_true: npt.ArrayLike,
    floors: tuple[float, ...] = GENDER_FLOORS,
) -> list[dict[str, float]]:
    """Accuracy over the faces whose gender confidence (max(p, 1 - p)) reaches each floor, the share of faces that
    do (coverage), and how many of those left out are children under 13: the trade-off behind
    `attributes.gender_min_confidence`."""
    at = np.asarray(age_true, np.float64)
    conf, right = _gender_right(gender_true, female_prob)
    return [{"min_confidence": f, **_selective_row(right, conf >= f, at)} for f in floors]


def gender_selective_by_age(
    gender_true: npt.ArrayLike,
    female_prob: npt.ArrayLike,
    age_true: npt.ArrayLike,
    age_pred: npt.ArrayLike,
    min_ages: tuple[float, ...] = GENDER_MIN_AGES,
    floors: tuple[float, ...] = (0.5, GENDER_MIN_CONFIDENCE),
) -> list[dict[str, float]]:
    """The same trade-off when faces estimated younger than `min_age` years report no gender either
    (`attributes.gender_min_age`), for each age floor and confidence floor; `adults_dropped`: the share of the
    faces aged 13 and over that report none."""
    at = np.asarray(age_true, np.float64)
    ap = np.asarray(age_pred, np.float64)
    conf, right = _gender_right(gender_true, female_prob)
    adults = at >= 13
    rows = []
    for a in min_ages:
        for f in floors:
            kept = (conf >= f) & (ap >= a)
            rows.append({
                "min_age": a, "min_confidence": f, **_selective_row(right, kept, at),
                "adults_dropped": round(float((~kept[adults]).mean()), 4) if adults.any() else float("nan"),
            })
    return rows


def attribute_metrics(
    age_true: npt.ArrayLike,
    age_pred: npt.ArrayLike,
    gender_true: npt.ArrayLike,
    female_prob: npt.ArrayLike,
    age_std: npt.ArrayLike | None = None,
    quality: npt.ArrayLike | None = None,
) -> dict[str, object]:
    """Age MAE and gender accuracy overall and per age band, and the gender trade-off tables. With `quality` (the
    recognizer's score per face) each band also gives its gender accuracy over the lowest, middle and highest
    third of its faces by quality: whether a band's errors come from poor crops or from the faces themselves."""
    at = np.asarray(age_true, np.float64)
    ap = np.asarray(age_pred, np.float64)
    gt = np.asarray(gender_true, np.int64)
    fp = np.asarray(female_prob, np.float64)
    err = np.abs(at - ap)
    right = _gender_right(gt, fp)[1]
    q = None if quality is None else np.asarray(quality, np.float64)
    res: dict[str, object] = {
        "images": int(at.size),
        "age_mae": round(float(err.mean()), 3) if at.size else float("nan"),
        "age_median_ae": round(float(np.median(err)), 3) if at.size else float("nan"),
        "gender_accuracy": round(float(right.mean()), 4) if gt.size else float("nan"),
    }

    def by_band(edges: tuple[tuple[int, int], ...]) -> dict[str, dict[str, float | int | list[float]]]:
        bands: dict[str, dict[str, float | int | list[float]]] = {}
        for lo, hi in edges:
            m = (at >= lo) & (at < hi)
            if m.any():
                bands[f"{lo}-{hi - 1}"] = {
                    "n": int(m.sum()),
                    "age_mae": round(float(err[m].mean()), 3),
                    "gender_accuracy": round(float(right[m].mean()), 4),
                    # a gender bias shows as predicted and true shares of female faces far apart
                    "female_share": round(float(gt[m].mean()), 4),
                    "predicted_female_share": round(float((fp[m] >= 0.5).mean()), 4),
                }
                if q is not None and m.sum() >= 3:
                    third = np.digitize(q[m], np.quantile(q[m], [1 / 3, 2 / 3]))
                    band_right = right[m]
                    bands[f"{lo}-{hi - 1}"]["gender_accuracy_by_quality_third"] = [
                        round(float(band_right[third == k].mean()), 4) if (third == k).any() else float("nan")
                        for k in range(3)
                    ]
        return bands

    res["bands"] = by_band(AGE_BANDS)
    res["child_bands"] = by_band(CHILD_BANDS)
    res["gender_selective"] = gender_selective(gt, fp, at)
    res["gender_selective_by_age"] = gender_selective_by_age(gt, fp, at, ap)
    if age_std is not None:
        sd = np.asarray(age_std, np.float64)
        res["age_within_1std"] = round(float((err <= sd).mean()), 4)
    return res
