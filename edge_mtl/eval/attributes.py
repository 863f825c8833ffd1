"""Age and gender metrics: MAE (overall and per age band), gender accuracy, calibration of the predicted spread."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

AGE_BANDS: tuple[tuple[int, int], ...] = (
    (0, 13), (13, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 117)
)
#: The first band split: infants, small children, older children (gender from the face alone gets harder the
#: younger the child).
CHILD_BANDS: tuple[tuple[int, int], ...] = ((0, 3), (3, 7), (7, 13))
#: Confidence floors for the gender trade-off table (what `attributes.gender_min_confidence` would keep).
GENDER_FLOORS: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9)


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
    gt = np.asarray(gender_true, np.int64)
    fp = np.asarray(female_prob, np.float64)
    conf = np.maximum(fp, 1 - fp)
    right = (fp >= 0.5).astype(np.int64) == gt
    out = []
    for f in floors:
        m = conf >= f
        out.append({
            "min_confidence": f,
            "coverage": round(float(m.mean()), 4) if gt.size else float("nan"),
            "accuracy": round(float(right[m].mean()), 4) if m.any() else float("nan"),
            "dropped_under_13": round(float((at[~m] < 13).mean()), 4) if (~m).any() else float("nan"),
        })
    return out


def attribute_metrics(
    age_true: npt.ArrayLike,
    age_pred: npt.ArrayLike,
    gender_true: npt.ArrayLike,
    female_prob: npt.ArrayLike,
    age_std: npt.ArrayLike | None = None,
) -> dict[str, object]:
    at = np.asarray(age_true, np.float64)
    ap = np.asarray(age_pred, np.float64)
    gt = np.asarray(gender_true, np.int64)
    fp = np.asarray(female_prob, np.float64)
    err = np.abs(at - ap)
    res: dict[str, object] = {
        "images": int(at.size),
        "age_mae": round(float(err.mean()), 3) if at.size else float("nan"),
        "age_median_ae": round(float(np.median(err)), 3) if at.size else float("nan"),
        "gender_accuracy": round(float(((fp >= 0.5).astype(np.int64) == gt).mean()), 4) if gt.size else float("nan"),
    }
    def by_band(edges: tuple[tuple[int, int], ...]) -> dict[str, dict[str, float | int]]:
        bands: dict[str, dict[str, float | int]] = {}
        for lo, hi in edges:
            m = (at >= lo) & (at < hi)
            if m.any():
                bands[f"{lo}-{hi - 1}"] = {
                    "n": int(m.sum()),
                    "age_mae": round(float(err[m].mean()), 3),
                    "gender_accuracy": round(float(((fp[m] >= 0.5).astype(np.int64) == gt[m]).mean()), 4),
                    # a gender bias shows as predicted and true shares of female faces far apart
                    "female_share": round(float(gt[m].mean()), 4),
                    "predicted_female_share": round(float((fp[m] >= 0.5).mean()), 4),
                }
        return bands

    res["bands"] = by_band(AGE_BANDS)
    res["child_bands"] = by_band(CHILD_BANDS)
    res["gender_selective"] = gender_selective(gt, fp, at)
    if age_std is not None:
        sd = np.asarray(age_std, np.float64)
        res["age_within_1std"] = round(float((err <= sd).mean()), 4)
    return res
