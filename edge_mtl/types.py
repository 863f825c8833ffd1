"""Validated data exchanged between pipeline stages.

Every container checks shapes and dtypes at construction and raises `ShapeError` with an
"expected ... got ..." message, so a stage that produces garbage fails where it happens and not three stages
later. The containers are plain numpy; no stage needs to know another stage's internals.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

EVENT_SCHEMA = "edge_mtl.event/v1"
EventType = Literal["face.appeared", "face.identified", "face.left"]
EVENT_TYPES: tuple[str, ...] = ("face.appeared", "face.identified", "face.left")


class ShapeError(ValueError):
    """A container got an array of the wrong shape or dtype."""


def _check(name: str, arr: np.ndarray, shape: tuple[int | None, ...], dtype: type | None = None) -> None:
    if not isinstance(arr, np.ndarray):
        raise ShapeError(f"{name}: expected a numpy array, got {type(arr).__name__}")
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape, strict=False)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ShapeError(f"{name}: expected shape {want}, got {tuple(arr.shape)}")
    if dtype is not None and arr.dtype != dtype:
        raise ShapeError(f"{name}: expected dtype {np.dtype(dtype).name}, got {arr.dtype.name}")


@dataclass(frozen=True)
class Frame:
    """One decoded video frame (BGR, uint8, HxWx3) and where and when it came from."""

    image: U8
    camera: str
    index: int
    timestamp: float  # seconds since the epoch when the frame was captured

    def __post_init__(self) -> None:
        _check("Frame.image", self.image, (None, None, 3), np.uint8)
        if self.image.shape[0] < 1 or self.image.shape[1] < 1:
            raise ShapeError(f"Frame.image: expected a non-empty image, got {self.image.shape}")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class Detections:
    """Faces found in one frame: boxes (x1, y1, x2, y2) in pixels, scores, and K landmarks per face.

    Landmarks are, in order: left eye, right eye, nose, mouth centre (K=4, the detector's points) or the
    5-point layout with two mouth corners (K=5). "Left" is the eye with the smaller x in the image.
    """

    boxes: F32
    scores: F32
    landmarks: F32

    def __post_init__(self) -> None:
        _check("Detections.boxes", self.boxes, (None, 4), np.float32)
        n = self.boxes.shape[0]
        _check("Detections.scores", self.scores, (n,), np.float32)
        _check("Detections.landmarks", self.landmarks, (n, None, 2), np.float32)
        if self.landmarks.shape[1] not in (4, 5):
            raise ShapeError(f"Detections.landmarks: expected 4 or 5 points, got {self.landmarks.shape[1]}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty(points: int = 4) -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, points, 2), np.float32)
        )

    def select(self, idx: npt.ArrayLike) -> Detections:
        i = np.asarray(idx)
        return Detections(self.boxes[i], self.scores[i], self.landmarks[i])


@dataclass(frozen=True)
class FaceCrops:
    """Aligned face crops (N x S x S x 3, BGR uint8) and which row of `source` each came from."""

    images: U8
    source_index: I64

    def __post_init__(self) -> None:
        _check("FaceCrops.images", self.images, (None, None, None, 3), np.uint8)
        if self.images.shape[1] != self.images.shape[2]:
            raise ShapeError(f"FaceCrops.images: expected square crops, got {self.images.shape[1:3]}")
        _check("FaceCrops.source_index", self.source_index, (self.images.shape[0],), np.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class Tracks:
    """Tracks alive after one tracker update.

    `ids` are per-tracker integers; `det_index` is the row of the frame's `Detections` matched to each track in
    this frame, or -1 if the track was only predicted (not seen). `confirmed` marks tracks past their probation.
    """

    ids: I64
    boxes: F32
    scores: F32
    det_index: I64
    confirmed: npt.NDArray[np.bool_]

    def __post_init__(self) -> None:
        _check("Tracks.ids", self.ids, (None,), np.int64)
        n = self.ids.shape[0]
        _check("Tracks.boxes", self.boxes, (n, 4), np.float32)
        _check("Tracks.scores", self.scores, (n,), np.float32)
        _check("Tracks.det_index", self.det_index, (n,), np.int64)
        _check("Tracks.confirmed", self.confirmed, (n,), np.bool_)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @staticmethod
    def empty() -> Tracks:
        return Tracks(
            np.zeros((0,), np.int64),
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0,), np.int64),
            np.zeros((0,), np.bool_),
        )


def gender_reading(
    female_prob: float, min_confidence: float = 0.5, age_years: float | None = None, min_age: float = 0.0
) -> tuple[str | None, float]:
    """The gender label a probability of 'female' gives, and its confidence (the larger of the two probabilities);
    the label is None below `min_confidence` (`attributes.gender_min_confidence`: a coin flip is not a gender) and
    for a face estimated younger than `min_age` years (`attributes.gender_min_age`: an infant's face barely shows
    its sex, however confident the network)."""
    confidence = max(female_prob, 1.0 - female_prob)
    if confidence < min_confidence or (age_years is not None and age_years < min_age):
        return None, confidence
    return ("female" if female_prob >= 0.5 else "male"), confidence


@dataclass(frozen=True)
class FaceAnalysis:
    """What the multi-task network says about N aligned faces.

    embeddings: L2-normalised identity embeddings (N x D); age_years/age_std: expectation and spread of the
    predicted age distribution; female_prob: probability of 'female'; quality in [0, 1]: how far to trust the crop.
    """

    embeddings: F32
    age_years: F32
    age_std: F32
    female_prob: F32
    quality: F32

    def __post_init__(self) -> None:
        _check("FaceAnalysis.embeddings", self.embeddings, (None, None), np.float32)
        n = self.embeddings.shape[0]
        for name in ("age_years", "age_std", "female_prob", "quality"):
            _check(f"FaceAnalysis.{name}", getattr(self, name), (n,), np.float32)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def gender(self, i: int, min_confidence: float = 0.5, min_age: float = 0.0) -> dict[str, Any]:
        """Label and confidence of face `i`; the label is None below `min_confidence` and when the face's age
        estimate is under `min_age` (as events report no gender under `attributes.gender_min_confidence` /
        `gender_min_age`), the confidence stays."""
        label, confidence = gender_reading(
            float(self.female_prob[i]), min_confidence, self.age(i)["years"], min_age
        )
        return {"label": label, "confidence": round(confidence, 4)}

    def age(self, i: int) -> dict[str, float]:
        return {"years": round(float(self.age_years[i]), 2), "std": round(float(self.age_std[i]), 2)}


@dataclass
class Event:
    """One event of schema `edge_mtl.event/v1` (docs/events.md). `seq` is assigned by the durable queue."""

    type: str
    ts: str
    camera: str
    track_id: str
    frame: int
    identity: dict[str, Any] | None = None
    age: dict[str, float] | None = None
    gender: dict[str, Any] | None = None
    bbox: list[float] | None = None
    quality: float | None = None
    duration_s: float | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    seq: int | None = None

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ShapeError(f"Event.type: expected one of {EVENT_TYPES}, got {self.type!r}")
        if self.bbox is not None and len(self.bbox) != 4:
            raise ShapeError(f"Event.bbox: expected [x, y, w, h], got {self.bbox!r}")

    def to_dict(self) -> dict[str, Any]:
        """The wire form: every key of the schema present, in schema order."""
        return {
            "schema": EVENT_SCHEMA,
            "seq": self.seq,
            "id": self.id,
            "type": self.type,
            "ts": self.ts,
            "camera": self.camera,
            "track_id": self.track_id,
            "frame": self.frame,
            "identity": self.identity,
            "age": self.age,
            "gender": self.gender,
            "bbox": self.bbox,
            "quality": self.quality,
            "duration_s": self.duration_s,
        }
