"""How much a recognizer's outputs change when the face is mirrored, on a cached crop source.

A face and its mirror image are the same person of the same age and gender; a model trained with random flips
should answer both the same way. For each model: the share of faces whose gender decision changes, the mean
change of the female probability and of the age estimate, and the mean cosine between the two embeddings.

Usage: python benchmarks/flip_consistency.py --crops $EDGE_MTL_CACHE/crops [--source utk_val_0] A.onnx B.onnx ...
(`utk_val_0` is the UTKFace validation split that `edge-mtl eval attributes` uses, cached by any recognizer
training run.)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_mtl.config import BackendConfig
from edge_mtl.data.crops import load_source
from edge_mtl.runtime.recognizer import FaceRecognizer
from edge_mtl.runtime.registry import load_engine


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--crops", type=Path, required=True)
    p.add_argument("--source", default="utk_val_0")
    a = p.parse_args(argv)
    if not (a.crops / f"{a.source}.json").exists():
        p.error(f"{a.crops}: no crop cache for {a.source}")
    cs = load_source(a.crops, a.source)
    x = np.asarray(cs.images)[cs.present()]
    mirrored = np.ascontiguousarray(x[:, :, ::-1])
    for m in a.models:
        rec = FaceRecognizer(load_engine(m, BackendConfig()), 128)
        f, g = rec.analyze(x), rec.analyze(mirrored)
        out = {
            "model": str(m),
            "faces": len(x),
            "gender_decision_changes": round(float(((f.female_prob > 0.5) != (g.female_prob > 0.5)).mean()), 4),
            "female_prob_mean_abs_change": round(float(np.abs(f.female_prob - g.female_prob).mean()), 4),
            "age_mean_abs_change_years": round(float(np.abs(f.age_years - g.age_years).mean()), 3),
            "embedding_cosine_mean": round(float((f.embeddings * g.embeddings).sum(1).mean()), 4),
        }
        sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
