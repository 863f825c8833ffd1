"""`edge-mtl score-cohort`: put a cohort for score normalisation into a recognizer file (`edge_mtl.identity.scorenorm`).

The cohort is made by the recognizer itself from training faces of known identity in the crop cache (`celeba_samples`,
file names `IDENTITY_IMAGE.jpg`; never an evaluation set such as LFW): each identity's unit mean embedding over its
first eight faces, for at most `people` identities with at least two faces, drawn at random with `seed`. `--from`
copies the cohort of another file of the same weights instead (an INT8 or FP16 variant keeps its FP32 file's
embedding space). The file is rewritten in place (or to `--output`) with its operating points dropped: thresholds
measured on plain cosine similarities do not hold for normalised scores, so measure them again (`edge-mtl eval
verification --stamp`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge_mtl.errors import InputError
from edge_mtl.identity.scorenorm import DEFAULT_TOP, ScoreNorm, fit_cohort

if TYPE_CHECKING:
    from edge_mtl.data.crops import CropSet
    from edge_mtl.runtime.recognizer import FaceRecognizer

log = logging.getLogger(__name__)

#: Cached sources whose keys name the identity (`SOURCE/IDENTITY_IMAGE.jpg`).
IDENTITY_SOURCES = ("celeba_samples",)


def identity_of(key: str) -> str:
    """The identity a `celeba_samples` crop key names (`celeba_samples/10000_028381.jpg` -> `10000`)."""
    return key.rsplit("/", 1)[-1].split("_", 1)[0]


def cohort_faces(names: Sequence[str], present: Sequence[bool], people: int, per_person: int = 8,
                 seed: int = 0) -> tuple[list[str], npt.NDArray[np.int64]]:
    """Which faces make a cohort: the identities (`names[i]` is face i's) with two faces or more, in a random order
    drawn with `seed`, the first `people` of them; and the rows of their first `per_person` faces present. The
    first n identities of a larger draw are the draw of n."""
    who = np.asarray(names)
    ok = np.asarray(present, bool)
    uniq, counts = np.unique(who[ok], return_counts=True)
    chosen = [str(x) for x in np.random.default_rng(seed).permutation(uniq[counts >= 2])[:people]]
    rows_of: dict[str, list[int]] = {}
    for i in np.flatnonzero(ok):
        mine = rows_of.setdefault(str(who[i]), [])
        if len(mine) < per_person:
            mine.append(int(i))
    return chosen, np.array(sorted(r for c in chosen for r in rows_of[c]), np.int64)


def identity_crops(crops: Path, source: str = "celeba_samples") -> tuple[CropSet, list[str]]:
    """The cached faces of known identity and the identity of each (InputError when there are none)."""
    from edge_mtl.data.crops import load_source

    if source not in IDENTITY_SOURCES:
        raise InputError(f"--source {source}: the cohort needs training faces of known identity "
                         f"({', '.join(IDENTITY_SOURCES)})")
    try:
        cs = load_source(crops, source)
    except (InputError, OSError) as e:
        raise InputError(f"{crops}: no usable crop cache of {source} ({e}); a recognizer training run builds it") \
            from None
    return cs, [identity_of(k) for k in cs.keys]


def embed_faces(rec: FaceRecognizer, cs: CropSet, rows: npt.NDArray[np.int64],
                chunk: int = 2048) -> npt.NDArray[np.float32]:
    """The recognizer's embeddings of the cached faces `rows` (with its own fill), `chunk` crops in memory at a time."""
    return np.concatenate([rec.analyze(cs.rendered(rec.fill, rows[i:i + chunk])).embeddings
                           for i in range(0, len(rows), chunk)])


def cohort_from_crops(model: Path, crops: Path, source: str = "celeba_samples", people: int = 2500,
                      per_person: int = 8, top: int = DEFAULT_TOP, seed: int = 0) -> tuple[ScoreNorm, dict[str, Any]]:
    """The cohort of `model` (a recognizer ONNX) from the crop cache's `source`; and a report."""
    from edge_mtl.runtime.registry import open_recognizer

    cs, names = identity_crops(crops, source)
    chosen, picked = cohort_faces(names, [st != "missing" for st in cs.status], people, per_person, seed)
    if len(chosen) <= top:
        raise InputError(f"{crops}/{source}: {len(chosen)} identities with two faces or more; need more than "
                         f"--top {top}")
    rec = open_recognizer(model, max_batch=128)
    norm = fit_cohort(embed_faces(rec, cs, picked), np.asarray(names)[picked], top=top)
    report = {"source": source, "identities": int(norm.cohort.shape[0]), "faces": len(picked), "top": top,
              "center": round(norm.center, 4), "spread": round(norm.spread, 4), "seed": seed}
    return norm, report


def write_score_cohort(model: Path, crops: Path | None = None, source: str = "celeba_samples", people: int = 2500,
                       top: int = DEFAULT_TOP, seed: int = 0, copy_from: Path | None = None,
                       output: Path | None = None) -> dict[str, Any]:
    """`edge-mtl score-cohort`: see the module doc. Returns a report."""
    from edge_mtl.export_tools.onnx_utils import load_model, metadata_of, save_model_atomic, set_metadata

    onnx_model = load_model(model)
    meta = metadata_of(onnx_model, str(model))
    if meta.kind != "recognizer":
        raise InputError(f"{model}: a {meta.kind} model, not a recognizer")
    if copy_from is not None:
        other = metadata_of(load_model(copy_from), str(copy_from))
        if other.version != meta.version:
            raise InputError(f"--from {copy_from}: recognizer {other.version}, not {meta.version} (same weights only)")
        if not other.score_cohort:
            raise InputError(f"--from {copy_from}: carries no cohort")
        value = other.score_cohort
        report: dict[str, Any] = {"copied_from": str(copy_from)}
    else:
        if crops is None:
            raise InputError("give --crops (a crop cache with celeba_samples) or --from (a file with a cohort)")
        norm, report = cohort_from_crops(model, crops, source, people, top=top, seed=seed)
        value = norm.to_metadata()
    ScoreNorm.from_metadata(value)  # what is written reads back
    out = output or model
    set_metadata(onnx_model, dataclasses.replace(meta, score_cohort=value, operating_points={},
                                                 operating_points_source=""), keep_extra=True)
    try:
        save_model_atomic(onnx_model, out)
    except OSError as e:
        raise InputError(f"{out}: cannot write it ({e.strerror or e})") from None
    if meta.operating_points:
        log.warning("%s: its measured identity thresholds were dropped (they were for plain cosine similarity); "
                    "measure them again: edge-mtl eval verification --stamp", out)
    log.info("%s: score cohort written (%s)", out, report)
    return {"output": str(out), "version": meta.version, **report}
