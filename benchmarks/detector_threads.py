"""The detector's CPU and wall time per step of four 1080p frames under ONNX Runtime thread settings (intra-op
threads 1 / 2 / the runtime's default, spinning on / off), and the input normalisation as it is now (one plane per
channel) against the interleaved expression it replaced. All in one process, the settings in turn, repeated.

    nice -n 10 python benchmarks/detector_threads.py --json > benchmarks/results/detector_threads.json

CPU time is the process's (every ONNX Runtime thread included): spinning threads burn it while they wait for work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_mtl.config import AppConfig
from edge_mtl.runtime.engine import normalize


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn: Any, n: int) -> tuple[float, float]:
    fn()
    c0, w0 = cpu(), time.perf_counter()
    for _ in range(n):
        fn()
    return 1000.0 * (cpu() - c0) / n, 1000.0 * (time.perf_counter() - w0) / n


def interleaved(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The normalisation before issue 28: one float copy of the whole batch, then a transposing copy."""
    x = images[..., ::-1]
    return np.ascontiguousarray(((x.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2))


def main(argv: list[str] | None = None) -> int:
    from edge_mtl.paths import data_root
    from edge_mtl.runtime.registry import load_detector

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per setting and repeat")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    video = args.video
    if video is None:
        root = data_root()
        if root is None:
            sys.stderr.write("detector_threads: no --video and no ../shared/data\n")
            return 2
        video = root / "videos" / "pedestrians_1080p.mp4"
    cap = cv2.VideoCapture(str(video))
    frames = [cap.read()[1] for _ in range(4)]
    cap.release()
    out: dict[str, Any] = {"load_before": [round(x, 2) for x in os.getloadavg()], "video": Path(video).name,
                           "detect_batch_of_4": [], "normalize_640x384": {}}
    dets = {}
    for threads, spin in ((1, False), (2, True), (2, False), (0, True), (0, False)):
        c = AppConfig()
        c.detector.backend.threads = threads
        c.detector.backend.spin = spin
        dets[(threads, spin)] = load_detector(c)
    for rep in range(args.repeat):
        for (threads, spin), det in dets.items():
            c_ms, w_ms = timed(lambda det=det: det.detect_batch(frames), args.steps)
            out["detect_batch_of_4"].append({"threads": threads, "spin": spin, "repeat": rep + 1,
                                             "cpu_ms": round(c_ms, 1), "wall_ms": round(w_ms, 1)})
    det = next(iter(dets.values()))
    canvas = np.stack([det.prepare(f)[0] for f in frames[:1]])
    mean, std = np.asarray(det.meta.mean, np.float32), np.asarray(det.meta.std, np.float32)
    assert np.array_equal(normalize(canvas, det.meta), interleaved(canvas, mean, std))
    for name, fn in (("per_plane", lambda: normalize(canvas, det.meta)),
                     ("interleaved_before", lambda: interleaved(canvas, mean, std))):
        c_ms, w_ms = timed(fn, 30)
        out["normalize_640x384"][name] = {"cpu_ms": round(c_ms, 2), "wall_ms": round(w_ms, 2)}
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        for r in out["detect_batch_of_4"]:
            sys.stdout.write(f"threads={r['threads']} spin={r['spin']}: {r['cpu_ms']} ms CPU, {r['wall_ms']} ms wall\n")
        sys.stdout.write(f"normalize: {out['normalize_640x384']}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
