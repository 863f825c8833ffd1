"""`edge-mtl bench --cameras N`: the real daemon serving N live cameras, against a decode-only yardstick measured in
the same run.

Every camera plays the same clip in real time and in a loop (`realtime = true`, `loop = true`: a live camera
stand-in at the clip's own frame rate). The daemon (`edge_mtl.daemon.service.Service`, the code `edge-mtl run` runs) is
started in this process with a throw-away event queue; after `warmup` seconds its counters are taken, and again
`seconds` later. Reported per run: frames processed per second per camera and in all, frames detected per second
(fewer than processed with `detect_fps`), fairness (slowest and fastest camera, Jain's index), capture-to-processed
latency percentiles (from each frame's capture time to the end of its pipeline step), process CPU in cores and per
processed frame, and the ratio of processed frames to the yardstick.

The yardstick is what this machine can decode at all: N threads each grabbing the same clip with OpenCV as fast as
they can (grab only: decode without converting), with the decoder threads the daemon would use, once before and
once after the daemon runs (the machine is shared: the two bracket the load the runs saw).

`variants` run one after the other in the same process, each a label and config overrides ("camera.KEY" applies to
every camera), `repeat` times in turn (A B A B): side by side is the only comparison a shared machine allows.
"""

from __future__ import annotations

import logging
import os
import resource
import tempfile
import threading
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_mtl.errors import ConfigError

if TYPE_CHECKING:
    from edge_mtl.config import AppConfig

log = logging.getLogger(__name__)

Variant = tuple[str, dict[str, Any]]


def parse_variant(text: str) -> Variant:
    """"LABEL" or "LABEL:key=value,key=value" -> (label, {key: value}); values are TOML (true, 5, "x"), anything
    else a string. ValueError (argparse's message) when malformed."""
    label, _, rest = text.partition(":")
    label = label.strip()
    if not label:
        raise ValueError(f"expected LABEL or LABEL:key=value,..., got {text!r}")
    settings: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"expected key=value in {text!r}, got {part!r}")
        try:
            value: Any = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        settings[key.strip()] = value
    return label, settings


def _set(d: dict[str, Any], key: str, value: Any, shown: str = "") -> None:
    shown = shown or key
    node = d
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            raise ConfigError(f"variant setting {shown}: {p} is not a section of the configuration")
        node = nxt
    if parts[-1] not in node:
        raise ConfigError(f"variant setting {shown}: unknown key")
    node[parts[-1]] = value


def variant_config(base: AppConfig, video: Path, cameras: int, settings: dict[str, Any]) -> AppConfig:
    """`base` with N looping real-time cameras on `video` and the variant's settings applied; ConfigError naming
    the setting when one is unknown or invalid."""
    from edge_mtl.config import AppConfig, CameraConfig

    data = base.model_dump(mode="python")
    cam = CameraConfig(name="cam0", source=str(video), loop=True, realtime=True).model_dump(mode="python")
    for key, value in settings.items():
        if key.startswith("camera."):
            _set(cam, key.removeprefix("camera."), value, key)
        else:
            _set(data, key, value)
    data["cameras"] = [{**cam, "name": f"cam{i}"} for i in range(cameras)]
    try:
        return AppConfig.model_validate(data)
    except ValueError as e:
        first = str(e).splitlines()
        raise ConfigError(f"variant settings {settings}: {first[2].strip() if len(first) > 2 else e}") from None


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pcts(values_s: Sequence[float]) -> dict[str, float]:
    import numpy as np

    if not values_s:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "n": 0}
    a = np.asarray(values_s, np.float64) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1), "n": int(a.size)}


def decode_yardstick(video: Path, streams: int, seconds: float, threads: int) -> dict[str, Any]:
    """`streams` threads, each grabbing `video` (looped) with OpenCV for `seconds`: decode only, as fast as it goes."""
    import cv2

    counts = [0] * streams
    stop = threading.Event()
    params = [cv2.CAP_PROP_N_THREADS, threads] if threads > 0 else []

    def worker(i: int) -> None:
        cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG, params)
        while not stop.is_set():
            if not cap.grab():
                cap.release()
                cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG, params)
                continue
            counts[i] += 1
        cap.release()

    workers = [threading.Thread(target=worker, args=(i,), name=f"yardstick-{i}", daemon=True)
               for i in range(streams)]
    c0, t0 = _cpu(), time.monotonic()
    for w in workers:
        w.start()
    stop.wait(seconds)
    stop.set()
    for w in workers:
        w.join(10.0)
    wall, cpu = time.monotonic() - t0, _cpu() - c0
    total = sum(counts)
    return {"streams": streams, "decoder_threads": threads, "seconds": round(wall, 2),
            "fps_total": round(total / wall, 1), "fps_per_stream": [round(c / wall, 1) for c in counts],
            "cpu_cores": round(cpu / wall, 2), "cpu_ms_per_frame": round(1000 * cpu / max(total, 1), 2)}


def run_daemon(cfg: AppConfig, seconds: float, warmup: float, tmp: Path) -> dict[str, Any]:
    """Run the daemon on `cfg` for warmup + seconds in a thread of this process; the numbers of the last `seconds`."""
    import numpy as np

    from edge_mtl.daemon.service import RunOptions, Service

    db = tmp / f"bench-{time.monotonic_ns()}.db"
    service = Service(RunOptions(events=db, log_level_given=True), cfg)
    result: dict[str, Any] = {}
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result["exit_code"] = service.run()
        except BaseException as e:  # reported below, in the caller's thread
            failure.append(e)

    th = threading.Thread(target=target, name="bench-daemon", daemon=True)
    th.start()
    deadline = time.monotonic() + 120.0
    while not service.ready and th.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not service.ready:
        service.stop_event.set()
        service.wake.set()
        th.join(30.0)
        raise failure[0] if failure else RuntimeError("the daemon did not start within 120 s")
    time.sleep(warmup)
    pipe = service.pipeline
    names = [c.name for c in cfg.cameras]

    def counters() -> dict[str, tuple[int, int, int, int]]:
        out = {}
        for s in service.sources:
            st = s.stats()
            cam = pipe.cameras.get(s.name)
            out[s.name] = (cam.frames if cam else 0, cam.detected if cam else 0, int(st["frames_read"]),
                           int(st["frames_dropped"]))
        return out

    for cam in pipe.cameras.values():
        cam.latency.clear()
    c0, t0, before = _cpu(), time.monotonic(), counters()
    time.sleep(seconds)
    c1, t1, after = _cpu(), time.monotonic(), counters()
    latencies = {n: list(pipe.cameras[n].latency) if n in pipe.cameras else [] for n in names}
    service.stop_event.set()
    service.wake.set()
    th.join(60.0)
    if failure:
        raise failure[0]
    wall = t1 - t0
    per_cam: dict[str, Any] = {}
    for n in names:
        f0, d0, r0, x0 = before[n]
        f1, d1, r1, x1 = after[n]
        per_cam[n] = {"fps": round((f1 - f0) / wall, 2), "detect_fps": round((d1 - d0) / wall, 2),
                      "read_fps": round((r1 - r0) / wall, 2), "dropped_fps": round((x1 - x0) / wall, 2),
                      "latency": _pcts(latencies[n])}
    fps = np.asarray([v["fps"] for v in per_cam.values()], np.float64)
    total = float(fps.sum())
    processed = sum(after[n][0] - before[n][0] for n in names)
    jain = float(fps.sum() ** 2 / (len(fps) * (fps**2).sum())) if (fps > 0).any() else 0.0
    return {
        "fps_total": round(total, 2),
        "detect_fps_total": round(sum(v["detect_fps"] for v in per_cam.values()), 2),
        "per_camera": per_cam,
        "fairness": {"min_fps": round(float(fps.min()), 2), "max_fps": round(float(fps.max()), 2),
                     "jain": round(jain, 3)},
        "latency": _pcts([x for v in latencies.values() for x in v]),
        "cpu_cores": round((c1 - c0) / wall, 2),
        "cpu_ms_per_frame": round(1000 * (c1 - c0) / max(processed, 1), 2),
        "seconds": round(wall, 2),
        "exit_code": result.get("exit_code"),
    }


@dataclass(frozen=True)
class CamerasBenchOptions:
    """`edge-mtl bench --cameras N` (see the module docstring)."""

    cameras: int
    video: Path | None = None  # default: the pedestrians clip of the data folder
    seconds: float = 30.0  # measured per run
    warmup: float = 5.0  # before measuring
    yardstick_seconds: float = 8.0  # each of the two decode-only yardsticks
    repeat: int = 1  # every variant this many times, in turn
    variants: tuple[Variant, ...] = ()  # (label, {setting: value}); none: the configuration as it is


def bench_cameras(args: CamerasBenchOptions, cfg: AppConfig) -> dict[str, Any]:
    import cv2
    import numpy as np

    from edge_mtl.capture.file import open_video_file
    from edge_mtl.eval.bench import _machine, bench_video

    video = bench_video(args.video)
    cap = open_video_file(video)
    size = [int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))]
    clip_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    cap.release()
    n = int(args.cameras)
    variants: list[Variant] = list(args.variants) or [("default", {})]
    configs = [(label, settings, variant_config(cfg, video, n, settings)) for label, settings in variants]
    threads = 1 if n > 1 else 0
    out: dict[str, Any] = {"machine": _machine(), "video": video.name, "frame_size": size,
                           "clip_fps": round(clip_fps, 2), "cameras": n, "seconds": args.seconds,
                           "warmup": args.warmup, "load_before": [round(x, 2) for x in os.getloadavg()],
                           "yardstick": [], "runs": []}
    out["yardstick"].append({"when": "before", **decode_yardstick(video, n, args.yardstick_seconds, threads)})
    with tempfile.TemporaryDirectory(prefix="edge-mtl-bench-") as tmp:
        for rep in range(args.repeat):
            for label, settings, c in configs:
                log.info("bench: %s (repeat %d of %d)", label, rep + 1, args.repeat)
                run = run_daemon(c, args.seconds, args.warmup, Path(tmp))
                out["runs"].append({"variant": label, "settings": settings, "repeat": rep + 1, **run})
    out["yardstick"].append({"when": "after", **decode_yardstick(video, n, args.yardstick_seconds, threads)})
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    yard = float(np.mean([y["fps_total"] for y in out["yardstick"]]))
    for r in out["runs"]:
        r["ratio_to_yardstick"] = round(r["fps_total"] / yard, 3) if yard else None
        r["targets"] = {"total_ge_60": r["fps_total"] >= 60.0 * n / 4,
                        "each_ge_15": r["fairness"]["min_fps"] >= 15.0}
    return out


def format_cameras(result: dict[str, Any]) -> str:
    """The text report: one row per run, the yardstick before and after."""
    from edge_mtl.eval.report import text_table

    m = result["machine"]
    w, h = result["frame_size"]
    lines = [
        f"machine: {m.get('cpu')}, {m.get('cores')} cores, onnxruntime {m.get('onnxruntime')}; load average "
        f"before {result['load_before']}, after {result.get('load_after')}",
        f"{result['cameras']} live cameras, each {result['video']} {w}x{h} at {result['clip_fps']} fps (looped, "
        f"real time); {result['seconds']} s measured after {result['warmup']} s warm-up",
    ]
    for y in result["yardstick"]:
        lines.append(f"decode-only yardstick ({y['when']}): {y['fps_total']} frames/s in all "
                     f"({', '.join(f'{v:g}' for v in y['fps_per_stream'])}), {y['cpu_ms_per_frame']} ms CPU/frame")
    header = ["variant", "fps total", "per camera", "detect/s", "min / max", "jain", "latency p50 / p95 / max ms",
              "cores", "CPU ms/frame", "x yardstick"]
    body = []
    for r in result["runs"]:
        lat = r["latency"]
        body.append([
            f"{r['variant']} #{r['repeat']}", f"{r['fps_total']:g}",
            " ".join(f"{v['fps']:g}" for v in r["per_camera"].values()), f"{r['detect_fps_total']:g}",
            f"{r['fairness']['min_fps']:g} / {r['fairness']['max_fps']:g}", f"{r['fairness']['jain']:.3f}",
            f"{lat['p50_ms']:g} / {lat['p95_ms']:g} / {lat['max_ms']:g}", f"{r['cpu_cores']:g}",
            f"{r['cpu_ms_per_frame']:g}", f"{r['ratio_to_yardstick']:.3f}" if r["ratio_to_yardstick"] else "-",
        ])
    lines += text_table(header, body)
    return "\n".join(lines) + "\n"

