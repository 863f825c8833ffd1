"""What face snapshots (`events.snapshots`) cost the pipeline, measured side by side (not run in CI).

The daemon's loop in-process on the first N frames of a real clip: `Pipeline.process` then `EventSink.write`
(SQLite queue, fsync per commit), with snapshots off and on (face crop plus context frame, each written and fsynced
before its event commits), alternating `--rounds` times so that both settings see the same machine load; and the
two operations on their own, 30 times on a frame of the clip: `offer` (crop and JPEG-encode a better face, with and
without the context frame) and `reference` (write and fsync the files before the event commits). Prints one JSON
object: seconds per round for each setting, the ratio of the medians, events and snapshot files written, and the
median milliseconds of each operation.

    nice -n 10 python benchmarks/snapshots.py --data ../shared/data --frames 40 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_mtl.config import AppConfig
from edge_mtl.events.sink import EventSink
from edge_mtl.pipeline import Pipeline
from edge_mtl.runtime.registry import load_detector, load_recognizer
from edge_mtl.types import Frame


def read_frames(path: Path, n: int) -> list[Frame]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(Frame(img, "ped", len(frames), 1_800_000_000.0 + len(frames) / 25.0))
    cap.release()
    if not frames:
        raise SystemExit(f"{path}: no frames")
    return frames


def one_round(cfg: AppConfig, det: Any, rec: Any, frames: list[Frame], snapshots: bool, folder: Path) -> dict[str, Any]:
    cfg.events.db = folder / f"events-{snapshots}-{time.monotonic_ns()}.db"
    cfg.events.snapshots = snapshots
    cfg.events.snapshot_context = snapshots
    cfg.events.snapshot_dir = folder / f"snap-{time.monotonic_ns()}"
    sink = EventSink(cfg)
    pipe = Pipeline(cfg, det, rec, snapshots=sink.snapshots)
    t = time.perf_counter()
    for f in frames:
        sink.write(pipe.process([f]))
    sink.write(pipe.finish())
    took = time.perf_counter() - t
    files = len(list(cfg.events.snapshot_dir.rglob("*.jpg"))) if snapshots else 0
    out = {"seconds": round(took, 3), "events": sink.written, "files": files}
    sink.close()
    pipe.close()
    return out


def micro(frame: Frame, folder: Path, n: int = 30) -> dict[str, float]:
    """Median ms of offer and reference, face only and with the 640-wide context frame."""
    from edge_mtl.events.queue import EventQueue
    from edge_mtl.events.snapshots import SnapshotStore

    db = folder / "micro.db"
    EventQueue(db).close()
    box = np.array([900, 600, 980, 690], np.float32)
    out: dict[str, float] = {}
    for name, width in (("face", None), ("face+context", 640)):
        store = SnapshotStore(folder / f"micro-{name}", db, max_bytes=1 << 30, max_age_s=1e9, context_width=width)
        offer, ref = [], []
        for _ in range(n):
            t = time.perf_counter()
            snap = store.offer(None, frame.image, box, 0.5)
            offer.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.reference(snap)
            ref.append(time.perf_counter() - t)
        store.close()
        out[f"offer {name}"] = round(1000 * statistics.median(offer), 2)
        out[f"write+fsync {name}"] = round(1000 * statistics.median(ref), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    clip = args.data / "videos" / "pedestrians_1080p.mp4"
    if not clip.is_file():
        sys.stderr.write(f"snapshots.py: error: {clip}: no such clip (--data names ../shared/data)\n")
        return 2
    frames = read_frames(clip, args.frames)
    cfg = AppConfig()
    det, rec = load_detector(cfg), load_recognizer(cfg)
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        one_round(cfg, det, rec, frames[:5], False, Path(tmp))  # warm-up
        for _ in range(args.rounds):
            for setting in ("off", "on"):
                runs[setting].append(one_round(cfg, det, rec, frames, setting == "on", Path(tmp)))
        ops = micro(frames[0], Path(tmp))
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    print(json.dumps({"clip": clip.name, "frames": len(frames), "rounds": runs,  # noqa: T201 - the report
                      "on_over_off": round(med["on"] / med["off"], 3), "operations_ms": ops}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
