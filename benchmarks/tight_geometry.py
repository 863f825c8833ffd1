"""Where a face cut out at its box lands in the aligned crop: the figures behind `tight_augment`.

For evenly spaced LFW photos (deep-funneled): the square cut-out around the face box the detector finds
(`any_crop.tight_cut`, as an ID photo is cut), then the runtime path on the cut-out (detector with the bordered
retry, landmark refiner, alignment to 112x112), and the part of the aligned crop that is not black: its box,
side, centre and share, as percentiles. `edge_mtl.train.data.recognizer.TIGHT_SIDE` / `TIGHT_CENTRE` quote them.

Usage: python benchmarks/tight_geometry.py [--images 80] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from any_crop import Analyzer, tight_cut

from edge_mtl.config import AppConfig
from edge_mtl.data.images import read_image
from edge_mtl.paths import data_root
from edge_mtl.runtime.registry import load_detector, load_recognizer
from edge_mtl.vision.anycrop import PadRetry


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=80, help="LFW photos, evenly spaced over the sorted list")
    p.add_argument("--data", type=Path, help="../shared/data (default: $EDGE_MTL_DATA)")
    a = p.parse_args(argv)
    root = data_root(a.data)
    if root is None:
        p.error("needs ../shared/data (--data or EDGE_MTL_DATA)")
    cfg = AppConfig()
    an = Analyzer(load_detector(cfg), load_recognizer(cfg), PadRetry(**cfg.detector.pad_retry.model_dump()),
                  "central")
    files = sorted((root / "lfw" / "images_deepfunneled").glob("*/*.jpg"))
    files = files[:: max(1, len(files) // a.images)][: a.images]
    cuts = [tight_cut(img, an.det.detect(img), "central") for img in (read_image(f) for f in files)]
    crops, found = an.crops([c for c in cuts if c is not None])["on"]
    rows = []
    for crop in crops[found]:
        kept = (crop > 0).any(axis=2)
        ys, xs = np.nonzero(kept)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        rows.append((x0, y0, x1, y1, max(x1 - x0, y1 - y0), (x0 + x1) / 2, (y0 + y1) / 2, kept.mean()))
    r = np.asarray(rows, np.float64)
    q = (5, 25, 50, 75, 95)
    names = ("x0", "y0", "x1", "y1", "side", "centre_x", "centre_y", "share_kept")
    out = {"images": len(files), "aligned": len(r), "percentiles": list(q),
           **{n: [round(float(v), 2) for v in np.percentile(col, q)] for n, col in zip(names, r.T, strict=True)}}
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
