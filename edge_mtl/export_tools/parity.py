"""Head-by-head comparison of two sets of model outputs, with tolerances stated per head.

Export (ONNX Runtime vs PyTorch) and FP16 conversion (FP16 vs FP32 ONNX) both report parity through
`compare_heads`; each head gets the metric that matters for it (cosine for the unit-norm embedding, years for age,
probability for gender and quality, stride units for detector boxes and landmarks) so a failure says which head
broke and by how much. Torch-free: numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Tolerance:
    """max |a - b| <= atol + rtol * max |reference|; `cosine_min` bounds the embedding's row-wise cosine."""

    atol: float
    rtol: float = 0.0
    cosine_min: float | None = None


# ONNX Runtime FP32 vs PyTorch FP32: only summation order differs, so these are tight.
EXPORT_TOLERANCES: dict[str, Tolerance] = {
    "embedding": Tolerance(1e-3, cosine_min=0.9999),
    "age": Tolerance(0.05),  # years and std in years
    "gender": Tolerance(1e-3),  # probabilities
    "quality": Tolerance(1e-3),
    "score": Tolerance(1e-3),  # detector face probability
    "box": Tolerance(1e-3, rtol=1e-3),  # distances in stride units
    "kps": Tolerance(1e-3, rtol=1e-3),
    "offsets": Tolerance(1e-4),  # landmark refiner, fractions of its 64 px crop
}

# FP16 ONNX vs FP32 ONNX: FP16 has ~3 significant digits; sensitive ops stay FP32 (see `edge_mtl.export_tools.fp16`).
FP16_TOLERANCES: dict[str, Tolerance] = {
    "embedding": Tolerance(1e-2, cosine_min=0.999),
    "age": Tolerance(0.5),
    "gender": Tolerance(1e-2),
    "quality": Tolerance(1e-2),
    "score": Tolerance(1e-2),
    "box": Tolerance(2e-2, rtol=5e-3),
    "kps": Tolerance(2e-2, rtol=5e-3),
    "offsets": Tolerance(2e-3),
}


def head_family(name: str) -> str:
    """`score_8` -> `score`; recognizer head names map to themselves."""
    return name.split("_", 1)[0] if name.startswith(("score_", "box_", "kps_")) else name


def compare_heads(
    reference: Mapping[str, npt.NDArray[Any]],
    candidate: Mapping[str, npt.NDArray[Any]],
    tolerances: Mapping[str, Tolerance],
) -> dict[str, dict[str, Any]]:
    """Per output: max_abs, the effective tolerance and ok (plus cosine_min for the embedding)."""
    report: dict[str, dict[str, Any]] = {}
    for name, ref in reference.items():
        if name not in candidate:
            report[name] = {"max_abs": float("inf"), "tol": 0.0, "ok": False, "error": "missing output"}
            continue
        a = np.asarray(ref, np.float64)
        b = np.asarray(candidate[name], np.float64)
        if a.shape != b.shape:
            report[name] = {
                "max_abs": float("inf"),
                "tol": 0.0,
                "ok": False,
                "error": f"shape {list(b.shape)}, expected {list(a.shape)}",
            }
            continue
        tol = tolerances.get(head_family(name), Tolerance(1e-3))
        finite = bool(np.isfinite(b).all())
        max_abs = float(np.abs(a - b).max()) if a.size else 0.0
        limit = tol.atol + tol.rtol * (float(np.abs(a).max()) if a.size else 0.0)
        entry: dict[str, Any] = {"max_abs": max_abs, "tol": limit, "ok": finite and max_abs <= limit}
        if tol.cosine_min is not None and a.ndim == 2 and a.shape[0]:
            na = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            cos = (a * b).sum(axis=1) / np.maximum(na, 1e-12)
            entry["cosine_min"] = float(cos.min())
            entry["cosine_tol"] = tol.cosine_min
            entry["ok"] = entry["ok"] and entry["cosine_min"] >= tol.cosine_min
        if not finite:
            entry["error"] = "non-finite values"
        report[name] = entry
    return report


def merge_reports(reports: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Worst case per head over several input sets (random inputs, real inputs, other shapes)."""
    merged: dict[str, dict[str, Any]] = {}
    for rep in reports:
        for name, e in rep.items():
            m = merged.get(name)
            if m is None:
                merged[name] = dict(e)
                continue
            m["ok"] = bool(m["ok"] and e["ok"])
            if e["max_abs"] - e["tol"] > m["max_abs"] - m["tol"]:
                m["max_abs"], m["tol"] = e["max_abs"], e["tol"]
            if "cosine_min" in e:
                m["cosine_min"] = min(m.get("cosine_min", 1.0), e["cosine_min"])
            if "error" in e:
                m["error"] = e["error"]
    return merged


def failed_heads(report: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [name for name, e in report.items() if not e.get("ok", False)]


def describe_failure(report: Mapping[str, Mapping[str, Any]]) -> str:
    parts = []
    for name in failed_heads(report):
        e = report[name]
        s = f"{name}: max |diff| {e['max_abs']:.3g} > tol {e['tol']:.3g}"
        if "cosine_min" in e:
            s += f", cosine min {e['cosine_min']:.6f} (need >= {e['cosine_tol']})"
        if "error" in e:
            s += f" ({e['error']})"
        parts.append(s)
    return "; ".join(parts)
