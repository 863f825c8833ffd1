"""The validated containers: wrong shapes and dtypes fail at construction with an "expected ... got ..." message."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from edge_mtl.types import (
    EVENT_SCHEMA,
    Detections,
    Event,
    FaceAnalysis,
    FaceCrops,
    Frame,
    ShapeError,
    Tracks,
)

F32, I64, U8 = np.float32, np.int64, np.uint8


def _expect_shape_error(make: Callable[[], Any], field: str) -> str:
    with pytest.raises(ShapeError) as ei:
        make()
    msg = str(ei.value)
    assert msg.startswith(field), msg
    assert re.search(r"expected .+, got .+", msg), msg
    return msg


# ------------------------------------------------------------------ Frame
def test_frame_ok() -> None:
    f = Frame(np.zeros((4, 6, 3), U8), "cam", 7, 1.5)
    assert (f.height, f.width) == (4, 6)


@pytest.mark.parametrize(
    ("image", "want"),
    [
        (np.zeros((4, 6), U8), "shape (N, N, 3), got (4, 6)"),
        (np.zeros((4, 6, 4), U8), "shape (N, N, 3), got (4, 6, 4)"),
        (np.zeros((4, 6, 3), np.float32), "dtype uint8, got float32"),
        (np.zeros((0, 6, 3), U8), "non-empty image, got (0, 6, 3)"),
        ([[0, 0, 0]], "a numpy array, got list"),
    ],
)
def test_frame_rejects(image: Any, want: str) -> None:
    msg = _expect_shape_error(lambda: Frame(image, "cam", 0, 0.0), "Frame.image")
    assert want in msg


# ------------------------------------------------------------------ Detections
def _dets(n: int = 2, k: int = 4) -> dict[str, Any]:
    return {"boxes": np.zeros((n, 4), F32), "scores": np.zeros((n,), F32), "landmarks": np.zeros((n, k, 2), F32)}


def test_detections_ok_and_select() -> None:
    d = Detections(**_dets(3, 5))
    assert len(d) == 3
    s = d.select([2, 0])
    assert len(s) == 2 and s.landmarks.shape == (2, 5, 2)
    assert len(Detections.empty()) == 0 and Detections.empty(5).landmarks.shape == (0, 5, 2)


@pytest.mark.parametrize(
    ("field", "value", "want"),
    [
        ("boxes", np.zeros((2, 5), F32), "shape (N, 4), got (2, 5)"),
        ("boxes", np.zeros((2, 4), np.float64), "dtype float32, got float64"),
        ("scores", np.zeros((3,), F32), "shape (2,), got (3,)"),
        ("scores", np.zeros((2, 1), F32), "shape (2,), got (2, 1)"),
        ("scores", np.zeros((2,), np.float16), "dtype float32, got float16"),
        ("landmarks", np.zeros((2, 4), F32), "shape (2, N, 2), got (2, 4)"),
        ("landmarks", np.zeros((1, 4, 2), F32), "shape (2, N, 2), got (1, 4, 2)"),
        ("landmarks", np.zeros((2, 3, 2), F32), "4 or 5 points, got 3"),
        ("landmarks", np.zeros((2, 4, 2), I64), "dtype float32, got int64"),
    ],
)
def test_detections_rejects(field: str, value: np.ndarray, want: str) -> None:
    kw = _dets()
    kw[field] = value
    msg = _expect_shape_error(lambda: Detections(**kw), f"Detections.{field}")
    assert want in msg


# ------------------------------------------------------------------ FaceCrops
def test_face_crops() -> None:
    assert len(FaceCrops(np.zeros((2, 8, 8, 3), U8), np.array([0, 1], I64))) == 2
    _expect_shape_error(lambda: FaceCrops(np.zeros((2, 8, 9, 3), U8), np.zeros(2, I64)), "FaceCrops.images")
    _expect_shape_error(lambda: FaceCrops(np.zeros((2, 8, 8), U8), np.zeros(2, I64)), "FaceCrops.images")
    _expect_shape_error(lambda: FaceCrops(np.zeros((2, 8, 8, 3), F32), np.zeros(2, I64)), "FaceCrops.images")
    msg = _expect_shape_error(
        lambda: FaceCrops(np.zeros((2, 8, 8, 3), U8), np.zeros(3, I64)), "FaceCrops.source_index"
    )
    assert "got (3,)" in msg
    _expect_shape_error(
        lambda: FaceCrops(np.zeros((2, 8, 8, 3), U8), np.zeros(2, np.int32)), "FaceCrops.source_index"
    )


# ------------------------------------------------------------------ Tracks
def _tracks(n: int = 2) -> dict[str, Any]:
    return {
        "ids": np.arange(n, dtype=I64),
        "boxes": np.zeros((n, 4), F32),
        "scores": np.zeros((n,), F32),
        "det_index": np.full((n,), -1, I64),
        "confirmed": np.zeros((n,), np.bool_),
    }


def test_tracks_ok() -> None:
    assert len(Tracks(**_tracks(3))) == 3
    assert len(Tracks.empty()) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ids", np.zeros((2,), np.int32)),
        ("ids", np.zeros((2, 1), I64)),
        ("boxes", np.zeros((3, 4), F32)),
        ("boxes", np.zeros((2, 4), np.float64)),
        ("scores", np.zeros((1,), F32)),
        ("det_index", np.zeros((2,), F32)),
        ("confirmed", np.zeros((2,), U8)),
        ("confirmed", np.zeros((3,), np.bool_)),
    ],
)
def test_tracks_rejects(field: str, value: np.ndarray) -> None:
    kw = _tracks()
    kw[field] = value
    _expect_shape_error(lambda: Tracks(**kw), f"Tracks.{field}")


# ------------------------------------------------------------------ FaceAnalysis
def _analysis(n: int = 2, d: int = 8) -> dict[str, Any]:
    return {
        "embeddings": np.zeros((n, d), F32),
        "age_years": np.full((n,), 30.0, F32),
        "age_std": np.full((n,), 3.0, F32),
        "female_prob": np.array([0.2, 0.9][:n], F32),
        "quality": np.full((n,), 0.5, F32),
    }


def test_face_analysis_ok() -> None:
    a = FaceAnalysis(**_analysis())
    assert len(a) == 2
    assert a.gender(0) == {"label": "male", "confidence": 0.8}
    assert a.gender(1) == {"label": "female", "confidence": 0.9}
    assert a.age(0) == {"years": 30.0, "std": 3.0}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("embeddings", np.zeros((2,), F32)),
        ("embeddings", np.zeros((2, 8), np.float64)),
        ("age_years", np.zeros((3,), F32)),
        ("age_std", np.zeros((2,), np.float64)),
        ("female_prob", np.zeros((2, 1), F32)),
        ("quality", np.zeros((1,), F32)),
    ],
)
def test_face_analysis_rejects(field: str, value: np.ndarray) -> None:
    kw = _analysis()
    kw[field] = value
    _expect_shape_error(lambda: FaceAnalysis(**kw), f"FaceAnalysis.{field}")


# ------------------------------------------------------------------ Event
DESIGN_KEYS = [
    "schema", "seq", "id", "type", "ts", "camera", "track_id", "frame",
    "identity", "age", "gender", "bbox", "quality", "duration_s",
]


def test_event_to_dict_keys_in_design_order() -> None:
    e = Event("face.identified", "2026-11-22T18:00:00.123Z", "lobby", "lobby-17", 1234,
              identity={"name": "alice", "similarity": 0.71}, bbox=[1.0, 2.0, 3.0, 4.0], quality=0.83)
    d = e.to_dict()
    assert list(d) == DESIGN_KEYS
    assert d["schema"] == EVENT_SCHEMA == "edge_mtl.event/v1"
    assert d["seq"] is None and d["age"] is None and d["duration_s"] is None
    assert d["identity"] == {"name": "alice", "similarity": 0.71}
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", d["id"])
    assert Event("face.left", "t", "c", "c-1", 0).id != e.id


def test_event_rejects() -> None:
    msg = _expect_shape_error(lambda: Event("face.vanished", "t", "c", "c-1", 0), "Event.type")
    assert "'face.vanished'" in msg
    msg = _expect_shape_error(lambda: Event("face.left", "t", "c", "c-1", 0, bbox=[1.0, 2.0, 3.0]), "Event.bbox")
    assert "[1.0, 2.0, 3.0]" in msg
