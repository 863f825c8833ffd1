"""Capture-to-result latency of the pipeline on a real clip played as a live camera (not run in CI).

The clip is paced at its native frame rate and looped (`FileSource(realtime=True, loop=True)`: the latest-frame
policy of a live camera, so when processing is slower than the camera the surplus frames are dropped and counted).
The loop is the daemon's: read the newest frame, `Pipeline.process`, append the events to a SQLite event queue.
Per processed frame it records

* age_in: seconds from capture (the frame's timestamp, taken when the reader thread decoded it) to the start of
  processing: how stale the input is;
* latency: seconds from capture to the frame's events being committed to the queue: what a consumer waits.

"Capture" is when the reader thread has decoded the frame; `read_fps` below the clip's rate means decoding alone
cannot keep up on this machine (the reader then skips ahead in time, as a camera stream would lose frames).

and prints one JSON object with p50/p95/max of both, frames read, processed and dropped, processed fps and the
per-stage timings. With ``--daemon`` it also runs the real `edge-mtl run --realtime --loop` for the same time and
reports, for its face.appeared / face.identified events, the time from the frame's capture (`ts`) to the event's
commit in the queue (`stored_at`): the same latency measured on the daemon itself.

    nice -n 10 python benchmarks/latency.py --seconds 30 --json            # shipped models, pedestrians clip
    python benchmarks/latency.py --detector d.onnx --recognizer r.onnx --input-size 960 --daemon
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("latency")


def stats_ms(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    a = np.asarray(samples) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "max_ms": round(float(a.max()), 1), "n": len(samples)}


def app_config(args: argparse.Namespace) -> Any:
    from edge_mtl.config import AppConfig, load_config

    cfg = load_config(args.config) if args.config else AppConfig()
    if args.detector:
        cfg.detector.model = args.detector
    if args.recognizer:
        cfg.recognizer.model = args.recognizer
    if args.input_size:
        cfg.detector.input_size = args.input_size
    if args.threads is not None:
        cfg.detector.backend.threads = cfg.recognizer.backend.threads = args.threads
    return cfg


def in_process(args: argparse.Namespace, video: Path) -> dict[str, Any]:
    from edge_mtl.capture import FileSource
    from edge_mtl.events.queue import EventQueue
    from edge_mtl.pipeline import Pipeline
    from edge_mtl.runtime.registry import load_detector, load_recognizer

    cfg = app_config(args)
    pipe = Pipeline(cfg, load_detector(cfg), load_recognizer(cfg))
    src = FileSource("bench", video, realtime=True, loop=True)
    ages_in: list[float] = []
    latency: list[float] = []
    events = 0
    with tempfile.TemporaryDirectory() as tmp, EventQueue(Path(tmp) / "events.db") as queue:
        src.start()
        try:
            warm = src.read(timeout=5.0)  # first inference is slow (allocations); not part of the measurement
            if warm is not None:
                pipe.process([warm])
            t0 = time.monotonic()
            base = src.stats()
            while time.monotonic() - t0 < args.seconds:
                frame = src.read(timeout=2.0)
                if frame is None:
                    raise RuntimeError(f"the source delivered no frame for 2 s: {src.stats()}")
                ages_in.append(time.time() - frame.timestamp)
                evs = pipe.process([frame])
                if evs:
                    queue.append(evs)
                    events += len(evs)
                latency.append(time.time() - frame.timestamp)
            wall = time.monotonic() - t0
            st = src.stats()
        finally:
            src.stop()
            pipe.close()
    read = st["frames_read"] - base["frames_read"]
    dropped = st["frames_dropped"] - base["frames_dropped"]
    return {
        "seconds": round(wall, 1), "source_fps": round(float(st["fps"] or 0.0), 2),
        "frames_read": read, "read_fps": round(read / wall, 2), "frames_processed": len(ages_in),
        "frames_dropped": dropped,
        "drop_rate": round(dropped / max(read, 1), 3), "processed_fps": round(len(ages_in) / wall, 2),
        "age_in": stats_ms(ages_in), "latency": stats_ms(latency), "events": events,
        "faces": pipe.counters["faces"], "analyses": pipe.counters["analyses"], "stages": pipe.timer.summary(),
    }


def daemon(args: argparse.Namespace, video: Path) -> dict[str, Any]:
    """The real `edge-mtl run` on the clip as a live camera for `args.seconds`; latency from its event queue."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "events.db"
        cmd = [sys.executable, "-m", "edge_mtl", "run", "--source", str(video), "--realtime", "--loop",
               "--events", str(db)]
        for opt in ("config", "detector", "recognizer", "input_size", "threads"):
            v = getattr(args, opt)
            if v is not None:
                cmd += [f"--{opt.replace('_', '-')}", str(v)]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not db.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)  # the queue is created once models are loaded and sources started
            time.sleep(args.seconds)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"edge-mtl run exited {proc.returncode}:\n{err[-2000:]}")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT stored_at, body FROM events ORDER BY seq").fetchall()
    lat = []
    for stored_at, body in rows:
        ev = json.loads(body)
        if ev["type"] in ("face.appeared", "face.identified"):  # face.left carries the last sighting's time
            ts = datetime.strptime(ev["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
            lat.append(stored_at - ts)
    summary = [ln for ln in err.splitlines() if "processed " in ln and " frames in " in ln]
    source = [ln for ln in err.splitlines() if "source cam0:" in ln]
    return {"events": len(rows), "event_latency": stats_ms(lat),
            "summary": summary[-1].split(": ", 1)[-1][:300] if summary else None,
            "source": source[-1].split("source cam0: ", 1)[-1] if source else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, help="clip (default: $EDGE_MTL_DATA/videos/pedestrians_1080p.mp4)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement time per mode")
    ap.add_argument("--config", type=Path)
    ap.add_argument("--detector", type=Path)
    ap.add_argument("--recognizer", type=Path)
    ap.add_argument("--input-size", type=int, help="detector input long side")
    ap.add_argument("--threads", type=int, help="intra-op threads per model")
    ap.add_argument("--daemon", action="store_true", help="also measure the real `edge-mtl run` daemon")
    ap.add_argument("--json", action="store_true", help="one JSON line instead of indented JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(REPO))
    from edge_mtl.paths import data_root

    video = args.video
    if video is None:
        root = data_root()
        if root is None:
            ap.error("no --video and no ../shared/data (set EDGE_MTL_DATA)")
        video = root / "videos" / "pedestrians_1080p.mp4"
    cfg = app_config(args)
    result: dict[str, Any] = {"video": video.name, "detector_input": cfg.detector.input_size,
                              "in_process": in_process(args, video)}
    if args.daemon:
        result["daemon"] = daemon(args, video)
    sys.stdout.write((json.dumps(result) if args.json else json.dumps(result, indent=1)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
