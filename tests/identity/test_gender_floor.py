"""`attributes.gender_min_confidence`: a track whose aggregated gender is a coin flip carries gender null in its
events and labels, the floor is validated, and a SIGHUP applies it to running tracks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge_mtl import defaults as D
from edge_mtl.config import AppConfig, AttributesConfig
from edge_mtl.events.schema import decode_event


def test_floor_is_validated_and_live() -> None:
    from edge_mtl.daemon.reload import is_live

    assert AttributesConfig().gender_min_confidence == D.GENDER_MIN_CONFIDENCE == 0.6
    for bad in (0.4, 1.01):
        with pytest.raises(ValidationError):
            AttributesConfig(gender_min_confidence=bad)
    assert is_live("attributes.gender_min_confidence")


def test_events_and_labels_follow_the_floor() -> None:
    from edge_mtl.pipeline import CameraState, Pipeline, TrackState
    from edge_mtl.runtime.registry import load_detector, load_recognizer

    cfg = AppConfig()
    pipe = Pipeline(cfg, load_detector(cfg), load_recognizer(cfg))
    cam = pipe.cameras["door"] = CameraState("door", cfg)
    box = np.array([10, 10, 60, 60], np.float32)
    unsure = cam.tracks[1] = TrackState("door", 1, 0, 0.0, 3, 0.1, box, announced=True)
    sure = cam.tracks[2] = TrackState("door", 2, 0, 0.0, 3, 0.1, box, announced=True)
    emb = np.eye(128, dtype=np.float32)[0]
    unsure.agg.add(emb, 30.0, 3.0, 0.55, 0.8)  # female at 0.55
    sure.agg.add(emb, 30.0, 3.0, 0.05, 0.8)  # male at 0.95

    def genders() -> tuple[object, object]:
        a, b = (pipe._event("face.left", st, 3, 0.1) for st in (unsure, sure))
        for e in (a, b):
            e.seq = 1  # as the queue assigns it
            decode_event(e.to_dict())  # null gender is valid schema
        return a.gender, b.gender

    g_unsure, g_sure = genders()
    assert g_unsure is None and g_sure == {"label": "male", "confidence": 0.95}
    assert [lb.text.split()[1:] for lb in pipe.labels("door")] == [["30y"], ["M", "30y"]]
    cfg.attributes.gender_min_confidence = 0.5  # what a SIGHUP does: the same config object, read per event
    g_unsure, _ = genders()
    assert g_unsure == {"label": "female", "confidence": 0.55}
    assert [lb.text.split()[1:] for lb in pipe.labels("door")] == [["F", "30y"], ["M", "30y"]]


def test_still_image_analysis_follows_the_floor() -> None:
    """`edge-mtl analyze`'s per-face gender: the label goes at the floor's boundary, the confidence is always there."""
    from edge_mtl.types import FaceAnalysis

    n = 4
    a = FaceAnalysis(
        embeddings=np.eye(n, 8, dtype=np.float32), age_years=np.full(n, 30, np.float32),
        age_std=np.full(n, 3, np.float32), female_prob=np.array([0.9, 0.35, 0.45, 0.6], np.float32),
        quality=np.full(n, 0.8, np.float32),
    )
    assert a.gender(0) == {"label": "female", "confidence": 0.9}  # 0.5: every label
    assert a.gender(2) == {"label": "male", "confidence": 0.55}
    assert [a.gender(i, 0.6)["label"] for i in range(n)] == ["female", "male", None, "female"]
    assert a.gender(2, 0.6)["confidence"] == 0.55
    assert [a.gender(i, 0.95)["label"] for i in range(n)] == [None] * n


# ------------------------------------------------------------------ attributes.gender_min_age
def test_age_floor_is_validated_and_live() -> None:
    from edge_mtl.daemon.reload import is_live

    assert AttributesConfig().gender_min_age == D.GENDER_MIN_AGE == 3.0
    for bad in (-1.0, 18.5):
        with pytest.raises(ValidationError):
            AttributesConfig(gender_min_age=bad)
    assert is_live("attributes.gender_min_age")


def test_gender_reading_age_floor() -> None:
    from edge_mtl.types import gender_reading

    assert gender_reading(0.99, 0.6, age_years=1.5, min_age=3.0) == (None, 0.99)
    assert gender_reading(0.99, 0.6, age_years=3.0, min_age=3.0) == ("female", 0.99)  # at the floor: reported
    assert gender_reading(0.01, 0.6, age_years=None, min_age=3.0) == ("male", 0.99)  # no age known: no age floor
    assert gender_reading(0.55, 0.6, age_years=40.0, min_age=3.0) == (None, 0.55)  # the confidence floor still holds


def test_events_withhold_an_infants_gender() -> None:
    """A track whose aggregated age is under the floor carries gender null however confident; its age stays; a
    SIGHUP to 0 reports it."""
    from edge_mtl.pipeline import CameraState, Pipeline, TrackState
    from edge_mtl.runtime.registry import load_detector, load_recognizer

    cfg = AppConfig()
    pipe = Pipeline(cfg, load_detector(cfg), load_recognizer(cfg))
    cam = pipe.cameras["door"] = CameraState("door", cfg)
    box = np.array([10, 10, 60, 60], np.float32)
    baby = cam.tracks[1] = TrackState("door", 1, 0, 0.0, 3, 0.1, box, announced=True)
    emb = np.eye(128, dtype=np.float32)[0]
    baby.agg.add(emb, 1.0, 1.0, 0.02, 0.8)  # 1 year, male at 0.98
    baby.agg.add(emb, 4.0, 1.0, 0.02, 0.4)  # a poorer frame says 4: quality-weighted mean 2.0

    def event() -> tuple[object, object]:
        e = pipe._event("face.left", baby, 3, 0.1)
        e.seq = 1
        decode_event(e.to_dict())
        return e.gender, e.age

    gender, age = event()
    assert gender is None and isinstance(age, dict) and age["years"] == 2.0
    assert [lb.text.split()[1:] for lb in pipe.labels("door")] == [["2y"]]
    cfg.attributes.gender_min_age = 2.0  # at the floor: reported
    assert event()[0] == {"label": "male", "confidence": 0.98}
    cfg.attributes.gender_min_age = 0.0
    assert event()[0] == {"label": "male", "confidence": 0.98}
    assert [lb.text.split()[1:] for lb in pipe.labels("door")] == [["M", "2y"]]


@pytest.mark.data
def test_analyze_withholds_gender_under_the_age_floor(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shipped models on real UTKFace infants (aged 0-1) and adults (35), each chip padded as a frame would show
    it: a face gets a label exactly when its confidence and its age estimate reach the floors; with the default
    floor some infants are withheld (the floor is exercised), with 0 none is for its age."""
    from edge_mtl.commands.cli import main

    names = sorted(os.listdir(data_dir / "utkface"))
    pick = [n for n in names if n.split("_")[0] in ("0", "1")][:3] + [n for n in names if n.startswith("35_")][:2]
    files = []
    for n in pick:
        img = cv2.imread(str(data_dir / "utkface" / n))
        files.append(tmp_path / f"{n}.png")
        cv2.imwrite(str(files[-1]), cv2.copyMakeBorder(img, 50, 50, 50, 50, cv2.BORDER_CONSTANT))
    young = 0
    for min_age in (3.0, 0.0):
        conf = tmp_path / f"edge{min_age}.toml"
        conf.write_text(f"[attributes]\ngender_min_confidence = 0.5\ngender_min_age = {min_age}\n")
        assert main(["analyze", *map(str, files), "--json", "--no-embedding", "--config", str(conf)]) == 0
        faces = [f for line in capsys.readouterr().out.splitlines() for f in json.loads(line)["faces"]]
        assert faces
        for f in faces:
            assert (f["gender"]["label"] is None) == (f["age"]["years"] < min_age)
            young += min_age and f["age"]["years"] < min_age
    assert young >= 2
