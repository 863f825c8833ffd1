"""`edge-mtl bench`: per-stage latency (p50/p95) and throughput, per backend and precision, measured in one run so
the figures compare side by side. Speed targets are checked here, never in unit tests."""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt

from edge_mtl.config import AppConfig
from edge_mtl.errors import InputError
from edge_mtl.paths import data_root

if TYPE_CHECKING:
    from edge_mtl.runtime.detector import FaceDetector
    from edge_mtl.runtime.recognizer import FaceRecognizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchOptions:
    video: Path | None = None  # default: the pedestrians clip of the data folder
    frames: int = 100  # frames of the clip to decode and process
    batches: tuple[int, ...] = (1, 8, 32)  # recognizer batch sizes
    precisions: tuple[str, ...] = ("fp32",)


def _pct(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "n": len(samples)}


def _machine() -> dict[str, Any]:
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "onnxruntime": ort.__version__,
            "providers": ort.get_available_providers()}


def _frames(video: Path, n: int) -> tuple[list[npt.NDArray[np.uint8]], list[float], float]:
    """The first `n` frames of `video`, the decode time of each and the clip's frame rate.

    Decode is timed in a pass of its own that drops each frame once read, as the capture loop does (it keeps only
    the latest). Timing the pass that keeps all `n` frames for the later measurements would add the cost of
    faulting in fresh memory for every frame: 6 MB per 1080p frame, 4.5 vs 65 ms per frame on a 2-core VM."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise InputError(f"{video}: cannot open video")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0)
    times: list[float] = []
    while len(times) < n:
        t = time.perf_counter()
        ok, _ = cap.read()
        if not ok:
            break
        times.append(time.perf_counter() - t)
    cap.release()
    cap = cv2.VideoCapture(str(video))
    frames: list[npt.NDArray[np.uint8]] = []
    while len(frames) < len(times):
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    if not frames:
        raise InputError(f"{video}: no frames decoded")
    return frames, times[: len(frames)], fps


def bench_recognizer(rec: Any, crops: npt.NDArray[np.uint8], batches: list[int], repeats: int = 0) -> dict[str, Any]:
    """Faces per second at each batch size: the median of `repeats` timed calls (default: enough calls for about
    128 faces, at least 10), after one warm-up call."""
    out: dict[str, Any] = {}
    for b in batches:
        x = np.ascontiguousarray(np.resize(crops, (b, *crops.shape[1:])))
        rec.analyze(x)  # warm-up
        times = []
        for _ in range(repeats or max(10, 128 // b)):
            t = time.perf_counter()
            rec.analyze(x)
            times.append(time.perf_counter() - t)
        r = _pct(times)
        r["faces_per_s"] = round(b / float(np.median(times)), 1)
        out[f"batch_{b}"] = r
    return out


def bench_video(video: Path | str | None) -> Path:
    """The clip a benchmark runs on: the one given, else the 1080p pedestrians clip of the data folder."""
    if video is not None:
        return Path(video)
    root = data_root()
    if root is None:
        raise InputError("bench needs --video (or ../shared/data for the default clip)")
    return root / "videos" / "pedestrians_1080p.mp4"


def bench(opts: BenchOptions, cfg: AppConfig) -> dict[str, Any]:
    from edge_mtl.events.queue import EventQueue
    from edge_mtl.pipeline import Pipeline
    from edge_mtl.runtime.registry import load_detector, load_recognizer
    from edge_mtl.vision.align import align_faces

    video = bench_video(opts.video)
    frames, decode_t, fps = _frames(video, opts.frames)
    batches = list(opts.batches)
    precisions = list(opts.precisions)
    result: dict[str, Any] = {"machine": _machine(), "video": Path(video).name,
                              "frame_size": [int(frames[0].shape[1]), int(frames[0].shape[0])],
                              "frames": len(frames), "detector_input": cfg.detector.input_size,
                              "decode": _pct(decode_t), "precisions": {}}
    for prec in precisions:
        c = cfg.model_copy(deep=True)
        c.detector.backend.precision = prec  # type: ignore[assignment]
        c.recognizer.backend.precision = prec  # type: ignore[assignment]
        try:
            det, rec = load_detector(c), load_recognizer(c)
        except InputError as e:
            result["precisions"][prec] = {"skipped": str(e)}
            continue
        entry: dict[str, Any] = {"provider": det.engine.provider}
        # detector alone, per frame, as the daemon runs it: landmarks are refined later, only for the faces aligned
        det.detect_batch([frames[0]], refine=False)
        times = []
        for f in frames[: min(len(frames), 50)]:
            t = time.perf_counter()
            det.detect_batch([f], refine=False)
            times.append(time.perf_counter() - t)
        entry["detect"] = {**_pct(times), "fps": round(1.0 / float(np.median(times)), 1)}
        # recognizer throughput on real crops from the clip (or a blank face if none is found)
        crops = []
        for f in frames[:: max(1, len(frames) // 20)]:
            d = det.detect(f)
            if len(d):
                crops.append(align_faces(f, d.landmarks, rec.size, rec.fill))
        crop_arr = np.concatenate(crops) if crops else np.full((1, rec.size, rec.size, 3), 128, np.uint8)
        entry["recognize"] = bench_recognizer(rec, crop_arr, batches)
        # the whole pipeline over the clip, as `edge-mtl run` processes a file (decode excluded, timed above)
        with tempfile.TemporaryDirectory() as tmp:
            pipe = Pipeline(c, det, rec)
            q = EventQueue(Path(tmp) / "bench.db")
            ev_t, n_events = [], 0
            t0 = time.perf_counter()
            for i, f in enumerate(frames):
                from edge_mtl.types import Frame

                events = pipe.process([Frame(f, "bench", i, time.time())])
                t = time.perf_counter()
                if events:
                    q.append(events)
                    n_events += len(events)
                ev_t.append(time.perf_counter() - t)
            events = pipe.finish()
            if events:
                q.append(events)
                n_events += len(events)
            wall = time.perf_counter() - t0
            q.close()
        stages = pipe.timer.summary()
        stages["events"] = _pct(ev_t)
        entry["stages"] = stages
        per_frame_decode = float(np.mean(decode_t))
        threaded = end_to_end_threaded(c, det, rec, video, len(frames))
        entry["end_to_end"] = {
            "frames": len(frames), "seconds": round(wall, 2), "fps": round(len(frames) / wall, 2),
            "fps_with_decode": round(len(frames) / (wall + per_frame_decode * len(frames)), 2),
            "faces": pipe.counters["faces"], "analyses": pipe.counters["analyses"], "events": n_events,
            "source_fps": round(fps, 2),
            # decode in the capture thread, beside the pipeline, as `edge-mtl run` reads a file
            "fps_decode_in_thread": threaded,
        }
        result["precisions"][prec] = entry
    return result


def end_to_end_threaded(cfg: AppConfig, det: FaceDetector, rec: FaceRecognizer, video: Path, n: int,
                        warmup: int = 10) -> float:
    """Frames per second of the pipeline fed by the daemon's own file capture (decode and conversion in the capture
    thread, the pipeline in this one, as `edge-mtl run --source FILE` runs): `n` frames timed after `warmup`,
    the clip looped if it is shorter."""
    from edge_mtl.capture import open_source
    from edge_mtl.capture.rate import decode_options
    from edge_mtl.config import CameraConfig
    from edge_mtl.pipeline import Pipeline

    cam = CameraConfig(name="bench", source=str(video), loop=True)
    src = open_source(cam, max_frames=n + warmup, decode=decode_options(cam, 1, cfg.detector.input_size))
    pipe = Pipeline(cfg, det, rec, cameras=[cam])
    src.start()
    try:
        done, t0 = 0, 0.0
        while done < n + warmup:
            f = src.read(timeout=5.0)
            if f is None:
                if src.finished:
                    break
                continue
            pipe.process([f])
            done += 1
            if done == warmup:
                t0 = time.perf_counter()
        wall = time.perf_counter() - t0
    finally:
        src.stop()
    if done < n + warmup:
        raise InputError(f"{video}: the capture delivered {done} of {n + warmup} frames")
    return round(n / wall, 2)


def format_bench(result: dict[str, Any]) -> str:
    """`edge-mtl bench` without --json: the precisions side by side, each speed also as a ratio to the first
    measured precision (one run, one machine: the only comparison these shared boxes allow)."""
    from edge_mtl.eval.report import text_table

    m = result["machine"]
    w, h = result["frame_size"]
    d = result["decode"]
    lines = [
        f"machine: {m.get('cpu')}, {m.get('cores')} cores, onnxruntime {m.get('onnxruntime')}",
        f"video: {result['video']} {w}x{h}, {result['frames']} frames; decode p50 {d['p50_ms']} ms; "
        f"detector input {result['detector_input']}",
    ]
    ran = {p: e for p, e in result["precisions"].items() if "skipped" not in e}
    lines += [f"{p}: skipped ({e['skipped']})" for p, e in result["precisions"].items() if "skipped" in e]
    if not ran:
        return "\n".join(lines) + "\n"
    first = next(iter(ran.values()))
    rows: list[tuple[str, list[float]]] = [("detect, frames/s", [e["detect"]["fps"] for e in ran.values()])]
    rows += [(f"recognize batch {k.removeprefix('batch_')}, faces/s", [e["recognize"][k]["faces_per_s"]
                                                                      for e in ran.values()])
             for k in first["recognize"]]
    rows += [("end to end, frames/s", [e["end_to_end"]["fps"] for e in ran.values()]),
             ("end to end with decode, frames/s", [e["end_to_end"]["fps_with_decode"] for e in ran.values()]),
             ("end to end, decode in a thread (as run), frames/s",
              [e["end_to_end"]["fps_decode_in_thread"] for e in ran.values()])]
    names = list(ran)
    header = ["", *names, *(f"{p}/{names[0]}" for p in names[1:])]
    body = [[label, *(f"{v:g}" for v in vals), *(f"{v / vals[0]:.2f}x" if vals[0] else "-" for v in vals[1:])]
            for label, vals in rows]
    lines += text_table(header, body)
    lines.append("providers: " + ", ".join(f"{p}={e['provider']}" for p, e in ran.items()))
    return "\n".join(lines) + "\n"
