"""Which layout do the converted MTCNN weights expect? Tries the flatten orders of the fully connected layers and
plain vs transposed images on annotated Caltech training faces; prints faces found (both eye centres inside a box),
detections and median landmark NME per variant. The right layout finds (nearly) every face with a small NME.

Usage: python benchmarks/mtcnn_layout_check.py [--data ../shared/data] [--images 60] [--wheel WHEEL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mtcnn as M

from edge_mtl.data import sources as S

FLATTEN: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "whc": lambda x: x.permute(0, 3, 2, 1).reshape(x.shape[0], -1),
    "chw": lambda x: x.reshape(x.shape[0], -1),
    "hwc": lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], -1),
}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("EDGE_MTL_DATA", "../shared/data"))
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--wheel", default="/tmp/fp/facenet_pytorch-2.6.0-py3-none-any.whl")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    by = S.caltech(Path(args.data) / "caltech_webfaces")
    train, _ = S.split_images(by, 0.1, 0)
    for transpose in (False, True):
        for name, fn in FLATTEN.items():
            setattr(M, "_flatten_whc", fn)  # noqa: B010  swap the layout under test into the module (a check script, not library code)
            det = M.MTCNN(args.wheel)
            hit = n = n_det = 0
            errs = []
            for img_name in train[: args.images]:
                bgr = cv2.imread(by[img_name][0].path)
                if bgr is None:
                    raise OSError(f"cannot read {by[img_name][0].path}")
                img = np.ascontiguousarray(bgr[:, :, ::-1])
                if transpose:
                    img = np.ascontiguousarray(img.transpose(1, 0, 2))
                r = det.detect(img)
                boxes, lms = r.boxes, r.landmarks
                if transpose:
                    boxes, lms = boxes[:, [1, 0, 3, 2]], lms[:, :, ::-1]
                n_det += len(boxes)
                for face in by[img_name]:
                    e = face.landmarks
                    assert e is not None
                    n += 1
                    inside = [bool((b[0] <= e[:2, 0]).all() and (e[:2, 0] <= b[2]).all() and (b[1] <= e[:2, 1]).all()
                                   and (e[:2, 1] <= b[3]).all()) for b in boxes]
                    if any(inside):
                        hit += 1
                        p = lms[int(np.argmax(inside))]
                        p4 = np.stack([p[0], p[1], p[2], p[3:5].mean(0)])
                        errs.append(np.linalg.norm(p4 - e, axis=1).mean() / np.linalg.norm(e[0] - e[1]))
            sys.stdout.write(json.dumps({"transposed": transpose, "flatten": name, "faces": n, "found": hit,
                                         "detections": n_det,
                                         "nme_median": round(float(np.median(errs)), 3) if errs else None}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
