"""`attributes.gender_min_confidence`: a track whose aggregated gender is a coin flip carries gender null in its
events and labels, the floor is validated, and a SIGHUP applies it to running tracks."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge_mtl import defaults as D
from edge_mtl.config import AppConfig, AttributesConfig
from edge_mtl.events.schema import decode_event


def test_floor_is_validated_and_live() -> None:
    from edge_mtl.service import is_live

    assert AttributesConfig().gender_min_confidence == D.GENDER_MIN_CONFIDENCE == 0.6
    for bad in (0.4, 1.01):
        with pytest.raises(ValidationError):
            AttributesConfig(gender_min_confidence=bad)
    assert is_live("attributes.gender_min_confidence")


def test_events_and_labels_follow_the_floor() -> None:
    from edge_mtl.models_registry import load_detector, load_recognizer
    from edge_mtl.pipeline import CameraState, Pipeline, TrackState

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
        a, b = (pipe._event("face.left", st, 3, 0.1, final=True) for st in (unsure, sure))
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
