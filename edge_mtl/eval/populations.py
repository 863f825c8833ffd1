"""Who the attributes work for: gender and age figures per population group.

Per group of faces (a FairFace age bin, a UTKFace race x age band):

- `coverage`: the share of the group's faces given a gender, as `edge-mtl analyze` and the events give one (a
  face was found, its gender confidence reaches `attributes.gender_min_confidence` and its estimated age
  `attributes.gender_min_age`);
- `gender_accuracy_labelled`: right among those given a gender; `gender_accuracy_all`: right among all the
  group's faces, a withheld gender (or a face not found) counted as wrong;
- `women_read_as_men`, `men_read_as_women`: the two directions of the errors among the faces given a gender;
- `age_bin_exact`, `age_bin_within_one`: the estimated age (rounded to whole years) falls in the true FairFace age
  bin (0-2, 3-9, 10-19, ..., 60-69, 70+), or in it or a neighbouring one; a face not found counts as wrong;
- `gender_ece`: expected calibration error of the gender probability over the faces found: the confidence of the
  reading (the larger of the two probabilities, 0.5 to 1) in 10 equal-width bins, the gap between each bin's
  accuracy and its mean confidence, weighted by the bin's share of faces;
- with true ages in years (UTKFace), `age_mae` over the faces found.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

from edge_mtl.types import gender_reading

#: FairFace's age bins as [lo, hi) in years; the last is open.
FAIRFACE_AGE_BINS: tuple[tuple[int, int], ...] = (
    (0, 3), (3, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 1000)
)
#: UTKFace race codes (the third field of `AGE_GENDER_RACE_DATE.jpg.chip.jpg`).
UTKFACE_RACES: tuple[str, ...] = ("white", "black", "asian", "indian", "others")
#: Age bands of the race x age table (few enough that each cell of the 1,317-image validation split holds faces).
POPULATION_BANDS: tuple[tuple[int, int], ...] = ((0, 13), (13, 40), (40, 60), (60, 1000))
ECE_BINS = 10
_UTK_RACE = re.compile(r"^\d+_[01]_(\d)_")


def bin_label(lo: int, hi: int) -> str:
    return f"{lo}+" if hi >= 1000 else f"{lo}-{hi - 1}"


FAIRFACE_BIN_LABELS: tuple[str, ...] = tuple(bin_label(lo, hi) for lo, hi in FAIRFACE_AGE_BINS)


def age_bin(years: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """The FairFace age bin (index into FAIRFACE_AGE_BINS) of each age, rounded to whole years first."""
    y = np.floor(np.asarray(years, np.float64) + 0.5)
    edges = np.array([hi for _, hi in FAIRFACE_AGE_BINS[:-1]], np.float64)
    return np.digitize(y, edges).astype(np.int64)


def utkface_race(name: str) -> int | None:
    """The race code (0-4) of a UTKFace file name; None when the name has none."""
    m = _UTK_RACE.match(name)
    return int(m.group(1)) if m else None


def gender_ece(gender_true: npt.ArrayLike, female_prob: npt.ArrayLike, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the gender reading's confidence (see the module's docstring)."""
    gt = np.asarray(gender_true, np.int64)
    fp = np.asarray(female_prob, np.float64)
    if gt.size == 0:
        return float("nan")
    conf = np.maximum(fp, 1 - fp)
    right = (fp >= 0.5).astype(np.int64) == gt
    k = np.clip(((conf - 0.5) * 2 * bins).astype(np.int64), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = k == b
        if m.any():
            ece += m.sum() / gt.size * abs(float(right[m].mean()) - float(conf[m].mean()))
    return ece


def labelled_mask(
    female_prob: npt.ArrayLike, age_pred: npt.ArrayLike, found: npt.ArrayLike, min_confidence: float,
    min_age: float,
) -> npt.NDArray[np.bool_]:
    """Which faces are given a gender (as `FaceAnalysis.gender` decides it for analyze and the events)."""
    fp = np.asarray(female_prob, np.float64)
    ap = np.asarray(age_pred, np.float64)
    fd = np.asarray(found, bool)
    return np.array([
        bool(f) and gender_reading(float(p), min_confidence, round(float(a), 2), min_age)[0] is not None
        for p, a, f in zip(fp, ap, fd, strict=True)
    ], bool)


def _r(v: float, nd: int = 4) -> float:
    return round(float(v), nd)


def gender_metrics(
    gender_true: npt.ArrayLike, female_prob: npt.ArrayLike, found: npt.ArrayLike, labelled: npt.ArrayLike,
) -> dict[str, float | int]:
    """The gender figures of one group (see the module's docstring), for sets with no age labels."""
    gt = np.asarray(gender_true, np.int64)
    fp = np.asarray(female_prob, np.float64)
    fd = np.asarray(found, bool)
    lb = np.asarray(labelled, bool) & fd
    n = int(gt.size)
    nan = float("nan")
    pred_female = fp >= 0.5
    right = pred_female.astype(np.int64) == gt
    out: dict[str, float | int] = {
        "n": n,
        "coverage": _r(lb.mean()) if n else nan,
        "gender_accuracy_labelled": _r(right[lb].mean()) if lb.any() else nan,
        "gender_accuracy_all": _r((right & lb).mean()) if n else nan,
        "women_read_as_men": int((lb & (gt == 1) & ~pred_female).sum()),
        "men_read_as_women": int((lb & (gt == 0) & pred_female).sum()),
        "gender_ece": _r(gender_ece(gt[fd], fp[fd])) if fd.any() else nan,
    }
    if n and not fd.all():
        out["without_face"] = int((~fd).sum())
    return out


def group_metrics(
    gender_true: npt.ArrayLike,
    female_prob: npt.ArrayLike,
    age_pred: npt.ArrayLike,
    found: npt.ArrayLike,
    labelled: npt.ArrayLike,
    bin_true: npt.ArrayLike,
    age_true: npt.ArrayLike | None = None,
) -> dict[str, float | int]:
    """The figures of one group (see the module's docstring). `bin_true`: the FairFace age bin of each face."""
    ap = np.asarray(age_pred, np.float64)
    fd = np.asarray(found, bool)
    bt = np.asarray(bin_true, np.int64)
    n = int(fd.size)
    nan = float("nan")
    dist = np.abs(age_bin(ap) - bt)
    g = gender_metrics(gender_true, female_prob, found, labelled)
    out: dict[str, float | int] = {
        **{k: g[k] for k in ("n", "coverage", "gender_accuracy_labelled", "gender_accuracy_all", "women_read_as_men",
                             "men_read_as_women")},
        "age_bin_exact": _r(((dist == 0) & fd).mean()) if n else nan,
        "age_bin_within_one": _r(((dist <= 1) & fd).mean()) if n else nan,
        "gender_ece": g["gender_ece"],
    }
    if age_true is not None:
        at = np.asarray(age_true, np.float64)
        out["age_mae"] = _r(np.abs(at[fd] - ap[fd]).mean(), 3) if fd.any() else nan
    if n and not fd.all():
        out["without_face"] = int((~fd).sum())
    return out


def fairface_table(
    gender_true: npt.ArrayLike,
    bin_true: npt.ArrayLike,
    female_prob: npt.ArrayLike,
    age_pred: npt.ArrayLike,
    found: npt.ArrayLike,
    labelled: npt.ArrayLike,
) -> dict[str, object]:
    """FairFace figures: over all faces, over those aged 10 and over, and per age bin (`by_age_bin`)."""
    gt, bt = np.asarray(gender_true, np.int64), np.asarray(bin_true, np.int64)
    fp, ap = np.asarray(female_prob, np.float64), np.asarray(age_pred, np.float64)
    fd, lb = np.asarray(found, bool), np.asarray(labelled, bool)

    def rows(m: npt.NDArray[np.bool_]) -> dict[str, float | int]:
        return group_metrics(gt[m], fp[m], ap[m], fd[m], lb[m], bt[m])

    everyone = np.ones(gt.size, bool)
    return {
        "overall": rows(everyone),
        "aged_10_and_over": rows(bt >= 2),
        "by_age_bin": {FAIRFACE_BIN_LABELS[b]: rows(bt == b) for b in range(len(FAIRFACE_AGE_BINS)) if (bt == b).any()},
    }


def race_age_table(
    race: npt.ArrayLike,
    age_true: npt.ArrayLike,
    gender_true: npt.ArrayLike,
    female_prob: npt.ArrayLike,
    age_pred: npt.ArrayLike,
    found: npt.ArrayLike,
    labelled: npt.ArrayLike,
) -> dict[str, dict[str, dict[str, float | int]]]:
    """UTKFace figures per race code (`by_race`: all ages and `13+`), per race x age band (`by_race_and_age`, keys
    such as `asian 60+`), and per gender x age band over all races (`by_gender_and_age`, keys such as
    `female 60+`). Faces without a race code are in no row."""
    rc = np.asarray(race, np.int64)
    at, gt = np.asarray(age_true, np.float64), np.asarray(gender_true, np.int64)
    fp, ap = np.asarray(female_prob, np.float64), np.asarray(age_pred, np.float64)
    fd, lb = np.asarray(found, bool), np.asarray(labelled, bool)
    bt = age_bin(at)

    def rows(m: npt.NDArray[np.bool_]) -> dict[str, float | int]:
        return group_metrics(gt[m], fp[m], ap[m], fd[m], lb[m], bt[m], at[m])

    by_race: dict[str, dict[str, float | int]] = {}
    by_cell: dict[str, dict[str, float | int]] = {}
    for code, name in enumerate(UTKFACE_RACES):
        r = rc == code
        if not r.any():
            continue
        by_race[name] = rows(r)
        if (r & (at >= 13)).any():
            by_race[f"{name} 13+"] = rows(r & (at >= 13))
        for lo, hi in POPULATION_BANDS:
            m = r & (at >= lo) & (at < hi)
            if m.any():
                by_cell[f"{name} {bin_label(lo, hi)}"] = rows(m)
    by_gender: dict[str, dict[str, float | int]] = {}
    coded = rc >= 0
    for code, name in ((0, "male"), (1, "female")):
        for lo, hi in POPULATION_BANDS:
            m = coded & (gt == code) & (at >= lo) & (at < hi)
            if m.any():
                by_gender[f"{name} {bin_label(lo, hi)}"] = rows(m)
    return {"by_race": by_race, "by_race_and_age": by_cell, "by_gender_and_age": by_gender}
