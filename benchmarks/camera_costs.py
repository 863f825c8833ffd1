"""What a camera costs the box, in CPU time: decode, convert, scale, detect and the rest of the pipeline, per frame,
measured in one process with one thread per stage (FFmpeg, OpenCV and ONNX Runtime each limited to one thread, so
process CPU time is the stage's own), then the cores a set of cameras needs at a given detection rate and how many
cameras a 2-core box serves.

CPU time, unlike frames per second, barely depends on what else runs on a shared machine (contention inflates it
somewhat: the projection is conservative). The daemon's own cost per processed frame from `edge-mtl bench
--cameras` checks the model (docs/performance.md).

    nice -n 10 python benchmarks/camera_costs.py --json > benchmarks/results/camera_costs.json

Per clip: `grab` (decode only), `retrieve` (convert the decoded frame to BGR), `scale` (to the detector's input,
INTER_AREA), `detect` (pad, normalize, detector, NMS, landmark refiner: per frame, frames of four cameras in one
batch), `pipeline` (track, select, align, recognize, aggregate: a step of four frames minus its detection), `carry`
(a frame between detections with detect_fps). Model for one camera at `fps` frames/s detected `rate` times/s:

    cores = fps * grab + fps_processed * retrieve + rate * (scale + detect + pipeline) + (fps - rate) * carry

where fps_processed = fps (with detect_fps every frame is still processed, its boxes carried).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import cv2

from edge_mtl.config import AppConfig, CameraConfig

log = logging.getLogger("camera_costs")


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def per_frame_ms(fn: Any, n: int) -> float:
    c0 = cpu()
    for _ in range(n):
        fn()
    return 1000.0 * (cpu() - c0) / n


def clip_costs(video: Path, frames_n: int, cfg: AppConfig) -> dict[str, Any]:
    from edge_mtl.pipeline import Pipeline
    from edge_mtl.runtime.detector import scale_for_detection
    from edge_mtl.runtime.registry import load_detector, load_recognizer
    from edge_mtl.types import Frame

    params = [cv2.CAP_PROP_N_THREADS, 1]
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG, params)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or frames_n)
    n = min(frames_n, total)
    c0 = cpu()
    for _ in range(n):
        cap.grab()
    grab = 1000.0 * (cpu() - c0) / n
    cap.release()
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG, params)
    frames = []
    c0 = cpu()
    for _ in range(n):
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    read = 1000.0 * (cpu() - c0) / max(len(frames), 1)
    cap.release()
    h, w = frames[0].shape[:2]
    size = cfg.detector.input_size
    k = iter(range(10**9))
    scale = per_frame_ms(lambda: scale_for_detection(frames[next(k) % len(frames)], size), len(frames))
    small = [scale_for_detection(f, size) for f in frames]
    det = load_detector(cfg)
    rec = load_recognizer(cfg)
    steps = [list(range(i, min(i + 4, len(frames)))) for i in range(0, len(frames), 4)]
    det.detect_batch([frames[i] for i in steps[0]], [small[i] for i in steps[0]])  # warm-up
    c0 = cpu()
    faces = 0
    for st in steps:
        faces += sum(len(d) for d in det.detect_batch([frames[i] for i in st], [small[i] for i in st]))
    detect = 1000.0 * (cpu() - c0) / len(frames)
    # the whole pipeline, four cameras, each step one frame of each (each camera its own offset into the clip)
    cams = [CameraConfig(name=f"c{j}", source="-") for j in range(4)]
    pipe = Pipeline(cfg, det, rec, cameras=cams)
    t0 = 1000.0
    c0 = cpu()
    for i in range(len(frames)):
        pipe.process([Frame(frames[(i + 7 * j) % len(frames)], f"c{j}", i, t0 + i / fps,
                            detect_image=small[(i + 7 * j) % len(frames)]) for j in range(4)])
    step_total = 1000.0 * (cpu() - c0) / (4 * len(frames))
    pipeline_rest = max(0.0, step_total - detect)
    analyses = pipe.counters["analyses"] / (4 * len(frames))
    # a carried frame (detect_fps): the same four cameras, detection on one frame in five
    cams5 = [CameraConfig(name=f"c{j}", source="-", detect_fps=fps / 5) for j in range(4)]
    pipe5 = Pipeline(cfg, det, rec, cameras=cams5)
    carried_cpu, carried_n = 0.0, 0
    for i in range(len(frames)):
        batch = [Frame(frames[(i + 7 * j) % len(frames)], f"c{j}", i, t0 + i / fps,
                       detect_image=small[(i + 7 * j) % len(frames)]) for j in range(4)]
        due_before = sum(c.detected for c in pipe5.cameras.values())
        c0 = cpu()
        pipe5.process(batch)
        spent = cpu() - c0
        if sum(c.detected for c in pipe5.cameras.values()) == due_before and i > 0:
            carried_cpu += spent
            carried_n += len(batch)
    carry = 1000.0 * carried_cpu / max(carried_n, 1)
    pipe.close()
    pipe5.close()
    return {"video": video.name, "size": [w, h], "fps": round(fps, 2), "frames": len(frames),
            "faces_per_frame": round(faces / len(frames), 1), "analyses_per_frame": round(analyses, 3),
            "ms_cpu": {"grab": round(grab, 2), "retrieve": round(max(0.0, read - grab), 2),
                       "scale": round(scale, 2), "detect": round(detect, 2), "pipeline": round(pipeline_rest, 2),
                       "carry": round(carry, 3)}}


def cores(c: dict[str, float], fps: float, rate: float) -> float:
    """Cores one camera needs at `fps` frames/s with `rate` detections/s (the model in the module docstring)."""
    rate = min(rate, fps)
    return (fps * (c["grab"] + c["retrieve"]) + rate * (c["scale"] + c["detect"] + c["pipeline"])
            + (fps - rate) * c["carry"]) / 1000.0


def capacity(costs: list[dict[str, Any]], budget: float, rates: list[float]) -> list[dict[str, Any]]:
    rows = []
    for clip in costs:
        for rate in rates:
            per_cam = cores(clip["ms_cpu"], clip["fps"], rate)
            rows.append({"video": clip["video"], "size": clip["size"], "camera_fps": clip["fps"],
                         "detect_fps": min(rate, clip["fps"]), "cores_per_camera": round(per_cam, 3),
                         "cameras": int(budget // per_cam)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=Path, nargs="+", help="clips (default: the shared 1080p and 960x544 ones)")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--cores", type=float, default=2.0, help="cores of the box the capacity is given for")
    ap.add_argument("--headroom", type=float, default=0.85, help="share of the cores the cameras may use")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cv2.setNumThreads(1)
    cfg = AppConfig()
    cfg.detector.backend.threads = 1
    cfg.recognizer.backend.threads = 1
    videos = args.videos
    if not videos:
        from edge_mtl.paths import data_root

        root = data_root()
        if root is None:
            sys.stderr.write("camera_costs: no --videos and no ../shared/data\n")
            return 2
        videos = [root / "videos" / "pedestrians_1080p.mp4", root / "videos" / "cctv_overhead_no_faces.mp4"]
    load = os.getloadavg()
    costs = [clip_costs(v, args.frames, cfg) for v in videos]
    out = {"load_before": [round(x, 2) for x in load], "load_after": [round(x, 2) for x in os.getloadavg()],
           "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "cores": args.cores,
           "headroom": args.headroom, "costs": costs,
           "capacity": capacity(costs, args.cores * args.headroom, [25.0, 15.0, 10.0, 5.0, 2.0])}
    if args.json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        for c in costs:
            sys.stdout.write(f"{c['video']} {c['size'][0]}x{c['size'][1]} ({c['faces_per_frame']} faces/frame): "
                             f"{c['ms_cpu']} ms CPU per frame\n")
        for r in out["capacity"]:
            sys.stdout.write(f"{r['size'][0]}x{r['size'][1]} at {r['camera_fps']} fps, detect {r['detect_fps']}/s: "
                             f"{r['cores_per_camera']} cores per camera, {r['cameras']} cameras on "
                             f"{args.cores:g} x {args.headroom:g} cores\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
