"""Population figures (edge_mtl.eval.populations) against small tables computed by hand."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.eval.populations import (
    FAIRFACE_BIN_LABELS,
    age_bin,
    fairface_table,
    gender_ece,
    group_metrics,
    labelled_mask,
    race_age_table,
    utkface_race,
)

# Six faces (gender 1 = female). Hand-worked:
#  0: woman, p(female) .21 -> read "male" (conf .79), age 25 in 20-29: labelled, wrong (a woman read as a man)
#  1: woman, .88 -> "female" (.88), 34.6 -> 35 in 30-39: labelled, right
#  2: man, .72 -> "female" (.72), but estimated 2.4 years (< 3): withheld; true bin 3-9, estimate 0-2 (one off)
#  3: man, .12 -> "male" (.88), 70.5 -> 71 in 70+: labelled, right
#  4: woman, .56 -> conf .56 < .6: withheld; true 3-9, estimate 9.5 -> 10 in 10-19 (one off)
#  5: man, not found (its figures must not count)
GT = [1, 1, 0, 0, 1, 0]
FP = [0.21, 0.88, 0.72, 0.12, 0.56, 0.3]
AP = [25.0, 34.6, 2.4, 70.5, 9.5, 40.0]
FOUND = [True, True, True, True, True, False]
BINS = [3, 4, 1, 8, 1, 5]


def test_age_bin_rounds_to_whole_years() -> None:
    assert FAIRFACE_BIN_LABELS == ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
    assert age_bin([0, 2.49, 2.5, 9.4, 9.5, 19.49, 69.49, 69.5, 104]).tolist() == [0, 0, 1, 1, 2, 2, 7, 8, 8]


def test_gender_ece_hand_computed() -> None:
    # one face per confidence bin: gaps |1-.92|, |0-.83|, |1-.73|, |1-.56| averaged
    assert gender_ece([1, 0, 0, 1], [0.92, 0.83, 0.27, 0.56]) == pytest.approx(1.62 / 4)
    # two faces in one bin, one right: accuracy .5 against mean confidence .92
    assert gender_ece([1, 0], [0.91, 0.93]) == pytest.approx(0.42)
    # perfectly calibrated at confidence 1
    assert gender_ece([1, 0], [1.0, 0.0]) == 0.0
    assert np.isnan(gender_ece([], []))


def test_labelled_mask_follows_the_gender_floors() -> None:
    assert labelled_mask(FP, AP, FOUND, 0.6, 3.0).tolist() == [True, True, False, True, False, False]
    # no floors: every face found is labelled
    assert labelled_mask(FP, AP, FOUND, 0.5, 0.0).tolist() == [True] * 5 + [False]


def test_group_metrics_hand_computed() -> None:
    lab = labelled_mask(FP, AP, FOUND, 0.6, 3.0)
    m = group_metrics(GT, FP, AP, FOUND, lab, BINS)
    assert m == {
        "n": 6,
        "coverage": 0.5,  # faces 0, 1, 3
        "gender_accuracy_labelled": 0.6667,  # 1 and 3 of 0, 1, 3
        "gender_accuracy_all": 0.3333,  # 2 of 6
        "women_read_as_men": 1,  # face 0
        "men_read_as_women": 0,  # face 2 reads female but is withheld
        "age_bin_exact": 0.5,  # faces 0, 1, 3
        "age_bin_within_one": 0.8333,  # and 2, 4; face 5 was not found
        # found faces: confidence bins {.79 wrong}, {.88 right, .88 right}, {.72 wrong}, {.56 right}
        "gender_ece": round((0.79 + 2 * 0.12 + 0.72 + 0.44) / 5, 4),
        "without_face": 1,
    }
    with_age = group_metrics(GT, FP, AP, FOUND, lab, BINS, age_true=[20, 30, 5, 75, 8, 40])
    assert with_age["age_mae"] == round((5 + 4.6 + 2.6 + 4.5 + 1.5) / 5, 3)


def test_fairface_table_splits_by_bin_and_age_10_up() -> None:
    lab = labelled_mask(FP, AP, FOUND, 0.6, 3.0)
    t = fairface_table(GT, BINS, FP, AP, FOUND, lab)
    assert t["overall"] == group_metrics(GT, FP, AP, FOUND, lab, BINS)
    by_bin = t["by_age_bin"]
    assert isinstance(by_bin, dict) and list(by_bin) == ["3-9", "20-29", "30-39", "40-49", "70+"]
    assert by_bin["3-9"]["n"] == 2 and by_bin["3-9"]["coverage"] == 0.0 and by_bin["3-9"]["age_bin_within_one"] == 1
    assert by_bin["20-29"]["women_read_as_men"] == 1 and by_bin["20-29"]["gender_accuracy_labelled"] == 0.0
    ten_up = t["aged_10_and_over"]
    assert isinstance(ten_up, dict)
    assert ten_up["n"] == 4 and ten_up["coverage"] == 0.75 and ten_up["gender_accuracy_all"] == 0.5


def test_race_age_table_cells() -> None:
    race = [0, 0, 2, 2, 2, -1]
    age = [5, 30, 70, 15, 61, 30]
    gt = [0, 1, 0, 1, 1, 0]
    fp = [0.1, 0.9, 0.8, 0.9, 0.2, 0.1]
    ap = [6.0, 28.0, 66.0, 17.0, 64.0, 30.0]
    found = [True] * 6
    lab = labelled_mask(fp, ap, found, 0.6, 3.0)
    t = race_age_table(race, age, gt, fp, ap, found, lab)
    assert list(t["by_race"]) == ["white", "white 13+", "asian", "asian 13+"]
    assert {k: v["n"] for k, v in t["by_race_and_age"].items()} == {
        "white 0-12": 1, "white 13-39": 1, "asian 13-39": 1, "asian 60+": 2}
    older = t["by_race_and_age"]["asian 60+"]
    # a man read as a woman (70) and a woman read as a man (61)
    assert older["men_read_as_women"] == 1 and older["women_read_as_men"] == 1
    assert older["gender_accuracy_all"] == 0.0 and older["age_mae"] == 3.5
    assert t["by_race"]["asian 13+"]["gender_accuracy_labelled"] == round(1 / 3, 4)
    # gender x age over the coded faces (the last face has no race code: in no row)
    assert {k: v["n"] for k, v in t["by_gender_and_age"].items()} == {
        "male 0-12": 1, "male 60+": 1, "female 13-39": 2, "female 60+": 1}
    assert t["by_gender_and_age"]["female 60+"]["women_read_as_men"] == 1


def test_utkface_race_from_real_names(data_dir: Path) -> None:
    names = sorted(os.listdir(data_dir / "utkface"))
    codes = [utkface_race(n) for n in names]
    assert all(c is None or 0 <= c <= 4 for c in codes)
    assert {c for c in codes if c is not None} == {0, 1, 2, 3, 4}
    assert sum(c is None for c in codes) < 5  # the few malformed names
    assert utkface_race("26_1_2_20170116174525125.jpg.chip.jpg") == 2 and utkface_race("61_1_20170109142408075") is None


def test_gender_metrics_are_group_metrics_without_age() -> None:
    from edge_mtl.eval.populations import gender_metrics

    lab = labelled_mask(FP, AP, FOUND, 0.6, 3.0)
    g = gender_metrics(GT, FP, FOUND, lab)
    full = group_metrics(GT, FP, AP, FOUND, lab, BINS)
    assert g == {k: v for k, v in full.items() if not k.startswith("age_")}
    assert g["gender_accuracy_all"] == 0.3333 and g["without_face"] == 1
