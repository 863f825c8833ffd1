"""Collector throughput (events/s into PostgreSQL) side by side with one box's event rate at full load, in one run.

    nice -n 10 python benchmarks/collector_throughput.py --out benchmarks/results/collector_throughput.json

1. One box at full load: `edge-mtl run` on $EDGE_MTL_DATA/videos/pedestrians_1080p.mp4 (several people walking
   toward the camera), frames fed as fast as the pipeline takes them (no pacing): events per second of wall time,
   and events per second of footage (what one such camera makes in real time).
2. The collector: a real PostgreSQL (initdb in a temporary folder, loopback) and a real mosquitto configured as
   docs/fleet.md says; the collector's persistent session is created, then `--events` valid events of 4 boxes are
   published while it is away (the broker queues them), then the collector is started and the time from its
   connection to the last event committed is measured: the drain rate, broker -> collector -> PostgreSQL, with
   every event acknowledged only after its commit. Repeated with `batch_size = 1` (one transaction per event) to
   show what batching buys.

Both run on the same machine in the same invocation; compare the ratio, not absolute figures from other runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_mtl.events.schema import encode_event, utc_ts  # noqa: E402
from edge_mtl.fleet.collect import Collector  # noqa: E402
from edge_mtl.fleet.config import CollectorConfig  # noqa: E402
from edge_mtl.types import Event  # noqa: E402
from tests.events.events_helpers import Broker, free_port, mosquitto_path  # noqa: E402
from tests.fleet.conftest import FLEET_BROKER  # noqa: E402
from tests.fleet.fleet_helpers import Postgres, postgres_bin  # noqa: E402

SUMMARY = re.compile(
    r"processed (\d+) frames in ([0-9.]+)s \(([0-9.]+) fps\), (\d+) faces, (\d+) analyses, (\d+) events"
)


def box_rate(video: Path, workdir: Path) -> dict[str, Any]:
    """One `edge-mtl run` over the whole clip at full speed; its own summary line gives frames, seconds, events."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "edge_mtl", "run", "--source", str(video), "--events", str(workdir / "box.db")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=1800,
    )
    m = SUMMARY.search(proc.stderr)
    if proc.returncode != 0 or m is None:
        raise SystemExit(f"edge-mtl run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    frames, secs, fps, _, _, events = int(m[1]), float(m[2]), float(m[3]), int(m[4]), int(m[5]), int(m[6])
    import cv2

    cap = cv2.VideoCapture(str(video))
    clip_fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
    cap.release()
    return {"video": video.name, "frames": frames, "seconds": secs, "fps": fps, "events": events,
            "events_per_s_full_load": events / secs, "events_per_s_of_footage": events / (frames / clip_fps)}


def _events(n: int, boxes: int) -> list[str]:
    out = []
    t0 = time.time()
    for i in range(n):
        box = i % boxes
        e = Event(type=("face.appeared", "face.identified", "face.left")[i % 3], ts=utc_ts(t0 + i * 0.01),
                  camera="entrance", track_id=f"entrance-{i // 3}", frame=i, identity={"name": "alice",
                  "similarity": 0.7} if i % 3 == 1 else None, age={"years": 30.0, "std": 4.0},
                  gender={"label": "female", "confidence": 0.9}, bbox=[10.0, 20.0, 64.0, 80.0], quality=0.8,
                  duration_s=1.5, box=f"box{box}", site="bench")
        e.seq = i // boxes + 1
        out.append(encode_event(e))
    return out


def collector_rate(pg: Postgres, broker: Broker, n: int, batch_size: int, schema: str) -> dict[str, Any]:
    import paho.mqtt.client as mqtt

    cfg = CollectorConfig.model_validate({
        "broker": {"port": broker.port, "topic": "bench/events", "client_id": f"bench-{schema}"},
        "database": {"dsn": pg.dsn, "schema": schema}, "batch_size": batch_size, "batch_wait_s": 0.05,
    })

    def run_until(cond: Any) -> tuple[Collector, float, float]:
        col = Collector(cfg)
        t = threading.Thread(target=col.run, daemon=True)
        t0 = time.monotonic()
        t.start()
        while not col.stats.subscribed:
            time.sleep(0.01)
        t_sub = time.monotonic()
        while not cond(col):
            time.sleep(0.01)
        t_end = time.monotonic()
        col.stop()
        t.join(30)
        return col, t_sub - t0, t_end - t_sub

    run_until(lambda c: True)  # creates the persistent session, the subscription and the tables
    bodies = _events(n, 4)
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{schema}")
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    infos = [pub.publish(f"bench/events/bench/box{i % 4}/entrance", b, qos=1) for i, b in enumerate(bodies)]
    for info in infos:
        info.wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()
    col, _, secs = run_until(lambda c: c.stats.stored >= n)
    stored = int(pg.query(f"SELECT count(*) FROM {schema}.events")[0][0])  # type: ignore[call-overload]
    size = int(pg.query(f"SELECT pg_total_relation_size('{schema}.events')")[0][0])  # type: ignore[call-overload]
    return {"batch_size": batch_size, "events": n, "stored": stored, "seconds": round(secs, 3),
            "events_per_s": round(n / secs, 1), "transactions": col.stats.batches,
            "bytes_per_event_with_indexes": round(size / max(stored, 1)), "message_bytes": round(
                sum(len(b) for b in bodies) / len(bodies))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000, help="events drained with the default batch size")
    ap.add_argument("--events-batch1", type=int, default=2000, help="events drained with batch_size = 1")
    ap.add_argument("--video", type=Path, help="default: $EDGE_MTL_DATA/videos/pedestrians_1080p.mp4")
    ap.add_argument("--out", type=Path, help="also write the JSON result here")
    args = ap.parse_args()
    from edge_mtl.paths import data_root

    video = args.video or ((data_root() or REPO.parent / "shared" / "data") / "videos" / "pedestrians_1080p.mp4")
    bindir, mosq = postgres_bin(), mosquitto_path()
    if bindir is None or mosq is None:
        raise SystemExit("needs PostgreSQL server binaries (/usr/lib/postgresql/*/bin) and mosquitto")
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="edge-mtl-bench-") as tmp:
        result["box"] = box_rate(video, Path(tmp))
        pg = Postgres(bindir)
        bdir = Path(tmp) / "broker"
        bdir.mkdir()
        broker = Broker(mosq, bdir, free_port(), extra=FLEET_BROKER, persistence=True)
        try:
            pg.start()
            broker.start()
            result["collector"] = collector_rate(pg, broker, args.events, 500, "bench_batch500")
            result["collector_batch1"] = collector_rate(pg, broker, args.events_batch1, 1, "bench_batch1")
        finally:
            broker.stop()
            pg.close()
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    result["collector_over_box_full_load"] = round(
        result["collector"]["events_per_s"] / result["box"]["events_per_s_full_load"], 1)
    result["command"] = "nice -n 10 python benchmarks/collector_throughput.py --out " \
        "benchmarks/results/collector_throughput.json"
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
