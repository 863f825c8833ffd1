"""Keep the quality score on the previous release's scale: an affine map of the quality logit, folded into the head.

The quality head is trained towards how well a face's embedding agrees with a teacher's. Change the teacher (the
dlib network for recognizer-1.0..1.2, a previous release for a backward-compatible fine-tune) and the ranking can
stay while the scale moves: a fine-tune distilled from recognizer-1.2 put LFW faces at 0.95-0.99 instead of
0.67-0.82. Absolute values matter downstream: enrolment refuses faces under a quality floor, per-track aggregation
weights each analysis by its quality (near-equal weights would stop favouring the sharp frames), and dashboards
read the `quality` of events.

`calibrate_quality` measures the quality logit of the new model and of the reference release on the same cached
training crops, fits z' = a z + b so that the new logits get the reference's mean and standard deviation, and
folds (a, b) into the head's last linear layer. Monotone (a > 0), so the ranking, and with it error-by-quality,
is unchanged. The result is a model checkpoint without optimizer state (it refuses to resume a run; `init` and
`edge-mtl export` take it), recording what was done under `quality_calibration`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from edge_mtl.errors import InputError, ModelError
from edge_mtl.models.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def sample_crops(crops: str | Path, sources: Sequence[str], n: int, seed: int = 0,
                 fill: int = 0) -> npt.NDArray[np.uint8]:
    """Up to `n` cached crops (BGR, N x 112 x 112 x 3), drawn evenly at random from `sources`, missing faces
    skipped, with `fill` beyond their images (the recognizer's; the same faces for every fill)."""
    from edge_mtl.data.crops import load_source

    if not sources:
        raise InputError("name at least one cached source (--sources)")
    rng = np.random.default_rng(seed)
    per = max(1, n // len(sources))
    out = []
    for name in sources:
        cs = load_source(crops, name)
        rows = np.array(cs.present())
        if len(rows):
            pick = np.sort(rng.choice(rows, min(per, len(rows)), replace=False))
            out.append(cs.rendered(fill, pick))
    if not out:
        raise InputError(f"{crops}: the sources {list(sources)} hold no faces")
    return np.concatenate(out)


def _logit(p: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    q = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def reference_logits(reference: str | Path, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """The quality logits of a deploy recognizer (ONNX) on `crops` (made with its fill: `reference_fill`)."""
    from edge_mtl.runtime.registry import open_recognizer

    return _logit(open_recognizer(Path(reference)).analyze(crops).quality)


def reference_fill(reference: str | Path) -> int:
    """The fill a deploy recognizer (ONNX) was trained with, from its metadata (no inference session)."""
    from edge_mtl.export_tools.onnx_utils import read_metadata
    from edge_mtl.runtime.recognizer import model_fill

    return model_fill(read_metadata(reference))


@torch.no_grad()
def model_logits(
    model: nn.Module, args: dict[str, Any], crops: npt.NDArray[np.uint8]
) -> npt.NDArray[np.float64]:
    """The raw quality logits of a training-form recognizer (model args `args`) on `crops` (eval mode),
    preprocessed as the runtime does."""
    from edge_mtl.models.metadata import recognizer_metadata
    from edge_mtl.runtime.engine import normalize

    meta = recognizer_metadata(args)
    model.eval()
    out = []
    for s in range(0, len(crops), 256):
        x = torch.from_numpy(normalize(np.asarray(crops[s : s + 256]), meta, bgr_input=True))
        out.append(model(x)["quality"].reshape(-1).double().numpy())
    return np.concatenate(out)


def fit_affine(new: npt.NDArray[np.float64], ref: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(a, b) with a * new + b having ref's mean and standard deviation."""
    sd = float(new.std())
    if not np.isfinite(sd) or sd < 1e-9:
        raise ModelError("the model's quality scores are constant on these faces: nothing to calibrate")
    a = float(ref.std()) / sd
    return a, float(ref.mean()) - a * float(new.mean())


def calibrate_quality(
    checkpoint: str | Path,
    reference: str | Path,
    crops: str | Path,
    sources: Sequence[str],
    output: str | Path,
    faces: int = 20000,
    seed: int = 0,
) -> dict[str, Any]:
    """`edge-mtl calibrate-quality`: see the module doc. Returns a report (also stored in the checkpoint)."""
    from edge_mtl.export_tools.export import model_from_checkpoint

    state = load_checkpoint(checkpoint)
    kind, args, model = model_from_checkpoint(state, str(checkpoint))
    if kind != "recognizer" or "heads.quality.2.weight" not in state["model"]:
        raise ModelError(f"{checkpoint}: not a hard-shared recognizer checkpoint (no quality head to calibrate)")
    fill, ref_fill = int(args.get("fill", 0)), reference_fill(reference)
    sample = sample_crops(crops, sources, faces, seed, fill)  # the same faces, each model with its own fill
    ref_sample = sample if ref_fill == fill else sample_crops(crops, sources, faces, seed, ref_fill)
    new, ref = model_logits(model, args, sample), reference_logits(reference, ref_sample)
    a, b = fit_affine(new, ref)
    weights = dict(state["model"])
    w, bias = weights["heads.quality.2.weight"], weights["heads.quality.2.bias"]
    weights["heads.quality.2.weight"] = (w.double() * a).to(w.dtype)
    weights["heads.quality.2.bias"] = (bias.double() * a + b).to(bias.dtype)

    def q(z: npt.NDArray[np.float64]) -> list[float]:
        p = 1 / (1 + np.exp(-z))
        return [round(float(v), 4) for v in (p.mean(), *np.quantile(p, [0.1, 0.5, 0.9]))]

    before, after, reference_q = q(new), q(a * new + b), q(ref)  # mean, p10, p50, p90
    report = {
        "checkpoint": str(checkpoint),
        "reference": Path(reference).name,
        "faces": len(sample),
        "sources": list(sources),
        "scale": round(a, 6),
        "shift": round(b, 6),
        "quality_before": before,
        "quality_after": after,
        "quality_reference": reference_q,
        "rank_correlation_with_reference": round(float(_spearman(new, ref)), 4),
    }
    out = {k: v for k, v in state.items() if k != "optimizer"}
    out["model"] = weights
    out["quality_calibration"] = report
    save_checkpoint(output, out)
    report["output"] = str(output)
    log.info("quality logits scaled by %.3f and shifted by %.3f: mean quality %.3f -> %.3f (reference %.3f)",
             a, b, before[0], after[0], reference_q[0])
    return report


def _spearman(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])
