"""TensorRT engine cache: keys, profiles, entries and the checks made before an engine is used (docs/acceleration.md).

A serialized engine only runs on the GPU architecture and the exact TensorRT version that built it, for the input
shapes of its optimisation profile and in the precision its ONNX had. So each engine file (`.plan`) sits next to a
JSON entry recording all of that, and the cache key is a hash of (model sha256, GPU compute capability, TensorRT
version, precision, profile): a new box, a TensorRT upgrade, a re-exported model or another batch limit each get a
new engine instead of a wrong one. At load time a mismatch means rebuild (when the ONNX is at hand) or a clear
error naming both sides. Pure Python: testable without TensorRT or a GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_mtl.errors import InputError, ModelError
from edge_mtl.runtime.engine import ModelMetadata

log = logging.getLogger(__name__)

ENTRY_SCHEMA = "edge_mtl.engine/v1"
STRIDE_ALIGN = 32  # detector inputs are padded to a multiple of the largest stride
DETECTOR_MIN_SIDE = 32
DEFAULT_OPT_BATCH = 8  # recognizer: crops batched across cameras
# Batch limits when none is given: crops of many tracks per call vs one frame per camera per call (a detector
# profile for 32 frames of 640 x 640 would reserve GPU memory a Jetson cannot spare).
DEFAULT_MAX_BATCH = {"recognizer": 32, "detector": 4}


@dataclass(frozen=True)
class BuildTarget:
    """What an engine is tied to: the GPU architecture and the TensorRT version."""

    compute_capability: tuple[int, int]
    tensorrt: str
    gpu_name: str = ""

    @property
    def arch(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"

    def describe(self) -> str:
        return f"{self.arch} / TensorRT {self.tensorrt}"


@dataclass(frozen=True)
class Profile:
    """One optimisation profile for the single image input: min / opt / max NCHW shapes."""

    input_name: str
    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"input_name": self.input_name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Profile:
        def shape(v: Sequence[int]) -> tuple[int, int, int, int]:
            a, b, c, e = (int(x) for x in v)
            return (a, b, c, e)

        return Profile(str(d["input_name"]), shape(d["min"]), shape(d["opt"]), shape(d["max"]))

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == 4 and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True))

    def describe(self) -> str:
        return " .. ".join("x".join(str(d) for d in s) for s in (self.min, self.max))


def _round_up(v: int, m: int = STRIDE_ALIGN) -> int:
    return -(-int(v) // m) * m


def make_profile(
    meta: ModelMetadata, max_batch: int | None, opt_batch: int | None = None, max_side: int | None = None
) -> Profile:
    """The profile for a model kind.

    Recognizer: batch 1 .. max_batch (opt 8, the typical cross-camera batch), fixed crop size. Detector: batch
    1 .. max_batch (opt 1: one frame per call), height and width each from 32 to `max_side` (default: the model's
    input size rounded up to 32, which covers landscape and portrait letterboxing at that size), optimised for a
    4:3 landscape frame at the input size. `max_batch=None` takes DEFAULT_MAX_BATCH for the kind.
    """
    if max_batch is None:
        max_batch = DEFAULT_MAX_BATCH.get(meta.kind, 1)
    if max_batch < 1:
        raise InputError(f"max batch must be at least 1, got {max_batch}")
    if meta.kind == "recognizer":
        s = meta.input_size
        opt = min(opt_batch or DEFAULT_OPT_BATCH, max_batch)
        return Profile(meta.input_name, (1, 3, s, s), (opt, 3, s, s), (max_batch, 3, s, s))
    if meta.kind != "detector":
        raise ModelError(f"cannot make an engine profile for a {meta.kind!r} model")
    side = _round_up(max_side or meta.input_size)
    if side < DETECTOR_MIN_SIDE:
        raise InputError(f"detector max side must be at least {DETECTOR_MIN_SIDE}, got {max_side}")
    opt_w = _round_up(meta.input_size)
    opt_w = min(opt_w, side)
    opt_h = min(_round_up(opt_w * 3 // 4), side)
    opt = min(opt_batch or 1, max_batch)
    lo = DETECTOR_MIN_SIDE
    return Profile(meta.input_name, (1, 3, lo, lo), (opt, 3, opt_h, opt_w), (max_batch, 3, side, side))


def cache_key(model_sha256: str, target: BuildTarget, precision: str, profile: Profile) -> str:
    """Hash of everything an engine depends on (workspace size and log level are not: they change the build's
    speed, not what the engine computes or where it runs)."""
    blob = json.dumps(
        {
            "model_sha256": model_sha256,
            "compute_capability": list(target.compute_capability),
            "tensorrt": target.tensorrt,
            "precision": precision,
            "profile": profile.to_dict(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class CacheEntry:
    """The JSON written next to each engine."""

    key: str
    model_sha256: str
    model_path: str
    kind: str
    precision: str
    compute_capability: tuple[int, int]
    gpu_name: str
    tensorrt: str
    profile: Profile
    metadata: dict[str, str]
    built_at: str = ""
    build_seconds: float = 0.0
    layers: dict[str, Any] = field(default_factory=dict)
    schema: str = ENTRY_SCHEMA

    @property
    def target(self) -> BuildTarget:
        return BuildTarget(self.compute_capability, self.tensorrt, self.gpu_name)

    def to_json(self) -> str:
        d = asdict(self)
        d["compute_capability"] = list(self.compute_capability)
        d["profile"] = self.profile.to_dict()
        return json.dumps(d, indent=1, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str, source: str = "engine entry") -> CacheEntry:
        try:
            d = json.loads(text)
            if d.get("schema") != ENTRY_SCHEMA:
                raise ValueError(f"schema {d.get('schema')!r}, expected {ENTRY_SCHEMA!r}")
            cc = d["compute_capability"]
            return CacheEntry(
                key=str(d["key"]),
                model_sha256=str(d["model_sha256"]),
                model_path=str(d["model_path"]),
                kind=str(d["kind"]),
                precision=str(d["precision"]),
                compute_capability=(int(cc[0]), int(cc[1])),
                gpu_name=str(d.get("gpu_name", "")),
                tensorrt=str(d["tensorrt"]),
                profile=Profile.from_dict(d["profile"]),
                metadata={str(k): str(v) for k, v in d["metadata"].items()},
                built_at=str(d.get("built_at", "")),
                build_seconds=float(d.get("build_seconds", 0.0)),
                layers=dict(d.get("layers", {})),
            )
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise ModelError(f"{source}: not a valid engine cache entry ({e})") from None

    @property
    def model_metadata(self) -> ModelMetadata:
        return ModelMetadata.from_props(self.metadata, f"engine {self.key}")


def engine_paths(cache_dir: str | Path, model_stem: str, key: str) -> tuple[Path, Path]:
    """`<cache>/<model>-<key16>.plan` and its `.json` entry."""
    base = Path(cache_dir) / f"{model_stem}-{key[:16]}"
    return base.with_suffix(".plan"), base.with_suffix(".json")


def entry_path_for(plan: str | Path) -> Path:
    return Path(plan).with_suffix(".json")


def read_entry(path: str | Path) -> CacheEntry:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ModelError(f"{path}: engine cache entry unreadable ({e.strerror or e})") from None
    return CacheEntry.from_json(text, str(path))


def write_entry(path: str | Path, entry: CacheEntry) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(entry.to_json(), encoding="utf-8")
    os.replace(tmp, path)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def mismatch(entry: CacheEntry, target: BuildTarget) -> str | None:
    """Why this engine cannot run on `target`, or None when it can."""
    if entry.compute_capability != target.compute_capability or entry.tensorrt != target.tensorrt:
        return f"engine built for {entry.target.describe()}, this box is {target.describe()}"
    return None


def check_entry(entry: CacheEntry, target: BuildTarget, plan: str | Path) -> None:
    """Raise a ModelError saying how to fix it when the engine does not fit this box."""
    why = mismatch(entry, target)
    if why:
        model = entry.model_path or "MODEL.onnx"
        raise ModelError(f"{plan}: {why}: rebuild with `edge-mtl build-engine {model}`")


def check_shape(profile: Profile, shape: Sequence[int], source: str = "engine") -> None:
    if not profile.contains(shape):
        raise InputError(
            f"{source}: input {'x'.join(str(d) for d in shape)} is outside the engine's profile "
            f"({profile.describe()}); rebuild with a larger --max-batch or --max-side"
        )


# ------------------------------------------------------------------ precision checks
_INT8 = re.compile(r"\bint8\b", re.IGNORECASE)
_FP16 = re.compile(r"\b(fp16|half)\b", re.IGNORECASE)
_FP32 = re.compile(r"\b(fp32|float)\b", re.IGNORECASE)
_WEIGHTED = re.compile(r"conv|gemm|matrixmultiply|fullyconnected|matmul", re.IGNORECASE)


def summarize_layers(info: Mapping[str, Any]) -> dict[str, Any]:
    """Precision census of a built engine from the engine inspector's JSON (ProfilingVerbosity.DETAILED).

    Each layer lists its input/output tensors with a "Format/Datatype" string such as "Row major linear FP32" or
    "Thirty-two wide channel vectorized row major Int8 format" (TensorRT 11: separate "Format" and "DataType"
    fields, e.g. "Int8", "Half", "Float"; both are read); a weighted layer (convolution, GEMM, matrix
    multiply, possibly fused with its activation) counts as running in the precision of its input format.
    """
    layers = info.get("Layers", [])

    def describe(t: Any) -> str:
        # TensorRT 10 writes one "Format/Datatype" string; TensorRT 11 splits it into "Format" and "DataType".
        if not isinstance(t, Mapping):
            return ""
        keys = ("Format/Datatype", "Format/DataType", "DataType", "Datatype", "Format")
        return " ".join(str(t[k]) for k in keys if t.get(k))

    out: dict[str, Any] = {"layers": len(layers), "weighted": 0, "weighted_int8": 0, "weighted_fp16": 0,
                           "weighted_fp32": 0, "any_int8": 0, "any_fp16": 0, "formats_seen": 0}
    for layer in layers:
        if not isinstance(layer, Mapping):
            continue  # a non-detailed inspector returns bare layer names
        kind = f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')} {layer.get('Name', '')}"
        ins = [describe(t) for t in layer.get("Inputs", [])]
        outs = [describe(t) for t in layer.get("Outputs", [])]
        formats = [f for f in ins + outs if f]
        out["formats_seen"] += len(formats)
        out["any_int8"] += any(_INT8.search(f) for f in formats)
        out["any_fp16"] += any(_FP16.search(f) for f in formats)
        if _WEIGHTED.search(kind) and ins:
            out["weighted"] += 1
            first = ins[0]
            if _INT8.search(first):
                out["weighted_int8"] += 1
            elif _FP16.search(first):
                out["weighted_fp16"] += 1
            elif _FP32.search(first):
                out["weighted_fp32"] += 1
    return out


def check_engine_precision(expected: str, summary: Mapping[str, Any], source: str = "engine") -> bool:
    """Assert that the engine runs its weighted layers in the precision the ONNX metadata claims.

    int8: at least one weighted layer reads Int8; fp16: at least one reads FP16 and none Int8; fp32: none reads
    FP16 or Int8. Returns False (and logs) when the inspector gave no format information to check, so the caller
    can rely on the network-level check instead; raises ModelError on a real mismatch.
    """
    if not summary.get("formats_seen"):
        log.warning("%s: the engine inspector reported no tensor formats; precision verified on the network only",
                    source)
        return False
    got = (
        "int8" if summary.get("weighted_int8") else "fp16" if summary.get("weighted_fp16") else "fp32"
    )
    ok = {
        "int8": bool(summary.get("weighted_int8")),
        "fp16": bool(summary.get("weighted_fp16")) and not summary.get("weighted_int8"),
        "fp32": not summary.get("weighted_fp16") and not summary.get("weighted_int8"),
    }.get(expected)
    if ok is None:
        raise ModelError(f"{source}: unknown precision {expected!r} in the model metadata")
    if not ok:
        raise ModelError(
            f"{source}: metadata says {expected} but the built engine runs its weighted layers in {got} "
            f"({summary.get('weighted_int8', 0)} int8, {summary.get('weighted_fp16', 0)} fp16, "
            f"{summary.get('weighted_fp32', 0)} fp32 of {summary.get('weighted', 0)})"
        )
    return True


def check_network_precision(expected: str, quantize_layers: int, half_tensors: int, source: str = "model") -> None:
    """Before building: a strongly typed network's precision is what its ONNX holds (Q/DQ layers for int8, FP16
    tensors for fp16); refuse a file whose metadata claims otherwise (TensorRT would silently build FP32)."""
    got = "int8" if quantize_layers else "fp16" if half_tensors else "fp32"
    if got != expected:
        raise ModelError(
            f"{source}: metadata says {expected} but the network is {got} "
            f"({quantize_layers} Q/DQ layers, {half_tensors} FP16 tensors); re-run `edge-mtl quantize`"
        )


def trt_log_level(severity: str) -> int:
    """TensorRT logger severity name -> Python logging level (INFO is chatty during builds: DEBUG)."""
    return {
        "INTERNAL_ERROR": logging.CRITICAL,
        "ERROR": logging.ERROR,
        "WARNING": logging.WARNING,
        "INFO": logging.DEBUG,
        "VERBOSE": logging.DEBUG,
    }.get(severity.upper().rsplit(".", 1)[-1], logging.INFO)
