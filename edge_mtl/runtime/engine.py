"""The `Engine` protocol every backend implements, and the model metadata that makes artifacts self-describing.

Preprocessing is read from the model's metadata (input size, colour order, mean/std, output names), never guessed:
a model exported with other settings keeps working, and a file without the metadata is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edge_mtl.errors import ModelError

META_PREFIX = "edge_mtl."


@dataclass(frozen=True)
class ModelMetadata:
    """What a model says about itself (stored as ONNX metadata_props `edge_mtl.*`)."""

    kind: str  # "detector" or "recognizer"
    version: str
    input_name: str
    output_names: tuple[str, ...]
    color: str  # "RGB" or "BGR"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int  # recognizer: crop side; detector: default long side
    strides: tuple[int, ...] = ()
    points: int = 4
    template: tuple[tuple[float, float], ...] = ()
    precision: str = "fp32"
    args: dict[str, Any] = field(default_factory=dict)
    provenance: str = ""
    # recognizer: earlier versions whose gallery embeddings this model's embeddings may be matched against until those
    # people are re-enrolled, in order of preference, each with the margin taken off a cross-version similarity so
    # that the model's threshold keeps its false-accept rate (measured: benchmarks/recognizer_view1.py)
    compatible: dict[str, float] = field(default_factory=dict)
    # recognizer: the cosine thresholds measured for this very file (`edge-mtl eval verification --stamp`), by
    # inference mode ("plain", "flip") and false-accept rate ("0.01", "0.001"); an unset `identity.threshold` follows
    # them, so that a recognizer upgrade or another precision keeps the false-accept rate the config asks for
    operating_points: dict[str, dict[str, float]] = field(default_factory=dict)
    operating_points_source: str = ""
    # recognizer: the cohort its similarities are normalised against (`edge_mtl.identity.scorenorm`, written by
    # `edge-mtl score-cohort`); "" for plain cosine similarity
    score_cohort: str = ""

    def to_props(self) -> dict[str, str]:
        d = {
            "kind": self.kind,
            "version": self.version,
            "input_name": self.input_name,
            "output_names": json.dumps(list(self.output_names)),
            "color": self.color,
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "input_size": str(self.input_size),
            "strides": json.dumps(list(self.strides)),
            "points": str(self.points),
            "template": json.dumps([list(p) for p in self.template]),
            "precision": self.precision,
            "args": json.dumps(self.args),
            "provenance": self.provenance,
        }
        if self.compatible:
            d["compatible"] = json.dumps(self.compatible)
        if self.operating_points:
            d["operating_points"] = json.dumps(self.operating_points, sort_keys=True)
            d["operating_points_source"] = self.operating_points_source
        if self.score_cohort:
            d["score_cohort"] = self.score_cohort
        return {META_PREFIX + k: v for k, v in d.items()}

    @staticmethod
    def from_props(props: dict[str, str], source: str = "model") -> ModelMetadata:
        p = {k[len(META_PREFIX) :]: v for k, v in props.items() if k.startswith(META_PREFIX)}
        if "kind" not in p:
            raise ModelError(f"{source}: no edge-mtl metadata (was it exported by 'edge-mtl export'?)")
        try:
            mean = tuple(float(v) for v in json.loads(p["mean"]))
            std = tuple(float(v) for v in json.loads(p["std"]))
            return ModelMetadata(
                kind=p["kind"],
                version=p.get("version", ""),
                input_name=p["input_name"],
                output_names=tuple(json.loads(p["output_names"])),
                color=p.get("color", "RGB"),
                mean=(mean[0], mean[1], mean[2]),
                std=(std[0], std[1], std[2]),
                input_size=int(p["input_size"]),
                strides=tuple(int(s) for s in json.loads(p.get("strides", "[]"))),
                points=int(p.get("points", "4")),
                template=tuple((float(a), float(b)) for a, b in json.loads(p.get("template", "[]"))),
                precision=p.get("precision", "fp32"),
                args=json.loads(p.get("args", "{}")),
                provenance=p.get("provenance", ""),
                compatible=_compatible(json.loads(p.get("compatible", "{}"))),
                operating_points=_operating_points(json.loads(p.get("operating_points", "{}"))),
                operating_points_source=p.get("operating_points_source", ""),
                score_cohort=p.get("score_cohort", ""),
            )
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise ModelError(f"{source}: malformed edge-mtl metadata ({e})") from None


def _compatible(value: Any) -> dict[str, float]:
    """{version: margin}; a plain list of versions means margin 0."""
    if isinstance(value, list):
        return {str(v): 0.0 for v in value}
    if not isinstance(value, dict):
        raise TypeError(f"compatible: expected an object of version: margin, got {value!r}")
    return {str(k): float(v) for k, v in value.items()}


def _operating_points(value: Any) -> dict[str, dict[str, float]]:
    """{mode: {far: threshold}} with far spelled as a number ("0.01")."""
    if not isinstance(value, dict):
        raise TypeError(f"operating_points: expected an object, got {value!r}")
    out: dict[str, dict[str, float]] = {}
    for mode, points in value.items():
        if not isinstance(points, dict):
            raise TypeError(f"operating_points[{mode!r}]: expected an object of far: threshold, got {points!r}")
        out[str(mode)] = {far_key(float(far)): float(th) for far, th in points.items()}
    return out


def far_key(far: float) -> str:
    """How a false-accept rate is spelled in `operating_points` (0.01 -> "0.01", 1e-3 -> "0.001")."""
    return f"{far:g}"


class Engine(Protocol):
    """A loaded model: NCHW float32 batch in, named outputs out."""

    metadata: ModelMetadata
    provider: str  # what actually runs it, e.g. "CPUExecutionProvider", "tensorrt-10.3", "torch-cpu"

    def run(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]: ...


def normalize(images: npt.NDArray[np.uint8], meta: ModelMetadata, bgr_input: bool = True) -> npt.NDArray[np.float32]:
    """N x H x W x 3 uint8 (BGR when `bgr_input`) -> N x 3 x H x W float32 per the model's metadata."""
    x = images
    if bgr_input != (meta.color == "BGR"):
        x = x[..., ::-1]
    # One output plane per channel, written in place: the same values as (x - mean) / std transposed, for a ninth
    # of the CPU (no interleaved float copy, no transposing copy; docs/performance.md).
    mean = np.asarray(meta.mean, np.float32)
    std = np.asarray(meta.std, np.float32)
    out = np.empty((x.shape[0], 3, x.shape[1], x.shape[2]), np.float32)
    for c in range(3):
        np.subtract(x[..., c], mean[c], out=out[:, c], dtype=np.float32)
        np.divide(out[:, c], std[c], out=out[:, c])
    return out
