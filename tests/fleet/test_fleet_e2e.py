"""A fleet on loopback: a real PostgreSQL, a real mosquitto, three `edge-mtl run` boxes on a real clip, one
`edge-mtl collect`. Every event of every box lands in PostgreSQL exactly once although the broker is restarted, the
collector is killed with -9 and restarted and the database is stopped for a while, all mid-run; one gallery,
published once, is used by all three boxes (the enrolled person is identified on each)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_mtl.config import BrokerConfig
from edge_mtl.events.queue import EventQueue
from edge_mtl.fleet.gallery import publish_gallery
from tests.e2e.conftest import edge_mtl
from tests.events.events_helpers import Broker, free_port
from tests.fleet.fleet_helpers import Postgres
from tests.proc_helpers import Daemon, wait_until

pytestmark = [pytest.mark.data, pytest.mark.timeout(300)]

BOXES = (("box1", "north"), ("box2", "north"), ("box3", "south"))
EVENTS_TOPIC = "fleet/events"
GALLERY_TOPIC = "fleet/gallery"
PERSON = "selfie_person"


def _frame(video: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    cap.release()
    assert ok, f"cannot read frame {index} of {video}"
    return frame


def _short_clip(video: Path, out: Path) -> Path:
    """2 s of the clip at 10 fps (every 3rd of its first 60 frames), then 0.8 s of black: looped, each pass is one
    track (appeared, identified, left), so every box makes events all through the test."""
    cap = cv2.VideoCapture(str(video))
    frames = []
    for i in range(60):
        ok, f = cap.read()
        assert ok, f"{video}: frame {i}"
        if i % 3 == 0:
            frames.append(f)
    cap.release()
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (w, h))
    assert wr.isOpened()
    for f in [*frames, *[np.zeros_like(frames[0])] * 8]:
        wr.write(f)
    wr.release()
    return out


def _box_config(tmp: Path, box: str, site: str, clip: Path, key: Path, broker: Broker, metrics: int) -> Path:
    d = tmp / box
    d.mkdir()
    text = f"""
[[cameras]]
name = "entrance"
source = "{clip}"
loop = true
realtime = true

[detector]
input_size = 320

[tracker]
confirm_frames = 2
lost_frames = 4

[recognition]
every_n_frames = 2

[identity]
gallery = "{d / 'gallery.db'}"

[events]
db = "{d / 'events.db'}"

[[forwarders]]
type = "mqtt"
port = {broker.port}
topic = "{EVENTS_TOPIC}"
client_id = "{box}"

[fleet]
box = "{box}"
site = "{site}"

[fleet.gallery]
port = {broker.port}
topic = "{GALLERY_TOPIC}"
key_file = "{key}"
reconnect_max_s = 1

[service]
metrics_port = {metrics}
stop_timeout_s = 20
"""
    p = d / "edge-mtl.toml"
    p.write_text(text)
    return p


def _collector_config(tmp: Path, pg: Postgres, broker: Broker) -> Path:
    p = tmp / "collector.toml"
    p.write_text(f"""
[collector]
batch_wait_s = 0.1
lag_log_interval_s = 2

[collector.broker]
port = {broker.port}
topic = "{EVENTS_TOPIC}"
client_id = "collector-1"
reconnect_max_s = 1

[collector.database]
dsn = "{pg.dsn}"
reconnect_max_s = 1
""")
    return p


def _health(port: int) -> dict[str, Any]:
    """/health's body, whether it answers 200 or 503 (a box still starting); {} before its server listens (the
    fleet gallery can be applied while the box still loads its models)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        body = e.read()
    except urllib.error.URLError:
        return {}
    return dict(json.loads(body))


def _stored(pg: Postgres) -> dict[str, int]:
    return {str(b): int(n) for b, n in pg.query("SELECT box, count(*) FROM edge_mtl.events GROUP BY box")}


def test_fleet_every_event_once_through_outages(
    data_dir: Path, tmp_path: Path, shipped_models: tuple[Path, Path], postgres: Postgres, fleet_broker: Broker
) -> None:
    det, rec = shipped_models
    models = ["--detector", str(det), "--recognizer", str(rec)]
    video = data_dir / "videos" / "selfie_portrait.mp4"
    clip = _short_clip(video, tmp_path / "clip.mp4")
    key = tmp_path / "fleet.key"
    key.write_bytes(os.urandom(32).hex().encode())
    os.chmod(key, 0o600)

    col_cfg = _collector_config(tmp_path, postgres, fleet_broker)
    collector = Daemon(["--config", str(col_cfg)], command="collect")
    boxes: dict[str, Daemon] = {}
    ports = {box: free_port() for box, _ in BOXES}
    try:
        collector.wait_log(r"connected \(session new\)", 30)
        time.sleep(0.5)  # its SUBSCRIBE is on the wire right after the CONNACK
        for box, site in BOXES:
            cfg = _box_config(tmp_path, box, site, clip, key, fleet_broker, ports[box])
            boxes[box] = Daemon(["--config", str(cfg), *models])
        # while the boxes load their models: a central enrolment from stills of the clip's last seconds (never the
        # frames the boxes see), published once
        stills = []
        for i in (300, 330):
            stills.append(tmp_path / f"still{i}.png")
            cv2.imwrite(str(stills[-1]), _frame(video, i))
        central = tmp_path / "central.db"
        edge_mtl("enroll", *models, "--gallery", str(central), "--name", PERSON, *map(str, stills))
        pub = json.loads(edge_mtl("gallery", "publish", "--gallery", str(central), "--broker",
                                  f"127.0.0.1:{fleet_broker.port}", "--key-file", str(key), "--topic",
                                  GALLERY_TOPIC, "--json").stdout)
        assert pub["people"] == 1
        for d in boxes.values():
            d.wait_log(rf"fleet gallery version {pub['version']} applied: 1 people", 90)
        # every box reports the gallery it runs
        for box in boxes:
            wait_until(lambda box=box: _health(ports[box]).get("fleet_gallery", {}).get("version") == pub["version"],
                       10, f"{box}'s /health to report gallery version {pub['version']}")
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports[box]}/metrics", timeout=5).read().decode()
            prefix = f"edge_mtl_gallery_version{{recognizer=\"{pub['recognizer']}\"}} "
            shown = [ln[len(prefix):] for ln in metrics.splitlines() if ln.startswith(prefix)]
            assert len(shown) == 1 and float(shown[0]) == pub["version"], shown  # prometheus-client writes floats

        # a gallery signed with another key, on the same topic: every box refuses it and keeps the one it runs
        rogue = tmp_path / "rogue.key"
        rogue.write_bytes(os.urandom(32).hex().encode())
        os.chmod(rogue, 0o600)
        publish_gallery(central, rogue, BrokerConfig(port=fleet_broker.port), GALLERY_TOPIC)
        for box, d in boxes.items():
            d.wait_log(r"fleet gallery refused: signed with another key .*; keeping gallery version "
                       + str(pub["version"]), 30)
            wait_until(lambda box=box: _health(ports[box])["fleet_gallery"]["refused"] == 1, 10,
                       f"{box}: refusal on /health")
            assert _health(ports[box])["fleet_gallery"]["version"] == pub["version"]

        def progress(what: str, timeout: float = 60) -> None:
            base = _stored(postgres)
            wait_until(lambda: all(_stored(postgres).get(b, 0) >= base.get(b, 0) + 1 for b in boxes), timeout,
                       f"more events of every box in PostgreSQL ({what})")

        progress("start")
        fleet_broker.stop()  # broker restart mid-run (mosquitto saves its sessions and queues on the way out)
        time.sleep(2)
        fleet_broker.start()
        progress("after the broker restart")
        collector.kill()  # SIGKILL: batches in hand are neither committed nor acknowledged
        time.sleep(2)
        collector = Daemon(["--config", str(col_cfg)], command="collect")
        collector.wait_log(r"connected \(session resumed\)", 30)
        progress("after the collector was killed")
        postgres.stop()
        time.sleep(3)
        postgres.start()
        progress("after the database outage")
        for d in boxes.values():
            assert d.stop(60) == 0, d.stderr[-3000:]
        queues = {}
        for box in boxes:
            with EventQueue(tmp_path / box / "events.db", create=False) as q:
                queues[box] = [json.loads(b) for _, b in q.read_raw(1, 100_000)]
                assert q.cursors()[f"mqtt:{box}"] == q.last_seq(), f"{box}: forwarder did not deliver everything"
        want = {box: len(evs) for box, evs in queues.items()}
        wait_until(lambda: _stored(postgres) == want, 60, f"every box's events in PostgreSQL ({want})")
        collector.signal(signal.SIGTERM)
        assert collector.wait(30) == 0, collector.stderr[-3000:]
    finally:
        for d in boxes.values():
            d.kill()
        collector.kill()

    for box, site in BOXES:
        evs = queues[box]
        rows = postgres.query("SELECT id::text, seq, site, camera, type, identity FROM edge_mtl.events WHERE box = %s "
                              "ORDER BY seq", box)
        assert [r[1] for r in rows] == list(range(1, len(evs) + 1)), f"{box}: seqs stored once each, none missing"
        assert [r[0] for r in rows] == [e["id"] for e in evs]
        assert {r[2] for r in rows} == {site} and {r[3] for r in rows} == {"entrance"}
        assert all(e["box"] == box and e["site"] == site for e in evs)
        named = [r for r in rows if r[4] == "face.identified" and r[5] == PERSON]
        assert named, f"{box}: the person enrolled centrally was never identified"
        assert len(evs) >= 12, f"{box}: too few events ({len(evs)}) to have spanned the outages"
    assert re.search(r"lag per box: north/box1 [0-9.]+ s \(seq [0-9]+", collector.stderr), collector.stderr[-2000:]
