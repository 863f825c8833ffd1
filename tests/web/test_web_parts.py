"""Snapshot retention with the event queue's, the token and bind rules, the API server in-process on a real queue
(missing files, non-loopback bind), the optional `snapshot` key of the v1 schema, and the Grafana dashboard."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_mtl.config import AppConfig, load_config
from edge_mtl.daemon.metrics import CameraSnapshot, Snapshot, StageSnapshot, render_prometheus
from edge_mtl.errors import ConfigError, InputError
from edge_mtl.events.schema import SCHEMA_KEYS, decode_event, encode_event
from edge_mtl.events.sink import EventSink
from edge_mtl.events.snapshots import SnapshotStore, snapshot_state
from edge_mtl.types import Event
from edge_mtl.web.auth import check_bind, resolve_token, token_matches
from tests.proc_helpers import REPO
from tests.web.web_helpers import PEDESTRIANS, TOKEN, Client, SseReader, write_token


@pytest.fixture(scope="module")
def frame(data_dir: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(data_dir / PEDESTRIANS))
    ok, img = cap.read()
    cap.release()
    assert ok
    return img


def _cfg(tmp: Path, **events: Any) -> AppConfig:
    cfg = AppConfig()
    cfg.events.db = tmp / "events.db"
    cfg.events.snapshots = True
    for k, v in events.items():
        setattr(cfg.events, k, v)
    return cfg


def _track_events(sink: EventSink, frame: np.ndarray, n: int, camera: str = "lobby") -> list[Event]:
    """n tracks, one face.appeared each with a snapshot written the way the pipeline writes it."""
    store = sink.snapshots
    assert store is not None
    out = []
    for i in range(n):
        box = np.array([100 + 40 * i, 100, 180 + 40 * i, 190], np.float32)
        snap = store.offer(None, frame, box, 0.5)
        ev = Event("face.appeared", "2026-12-01T10:00:00.000Z", camera, f"{camera}-{i}", i, bbox=[1, 2, 3, 4],
                   snapshot=store.reference(snap))
        out.append(ev)
    sink.write(out)
    return out


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*.jpg")}


def test_snapshot_retention_goes_with_event_retention_and_a_size_cap(tmp_path: Path, frame: np.ndarray) -> None:
    cfg = _cfg(tmp_path, snapshot_context=True)
    sink = EventSink(cfg)
    try:
        folder = tmp_path / "snapshots"
        evs = _track_events(sink, frame, 6)
        assert all(e.snapshot for e in evs)
        assert len(_files(folder)) == 12  # face and context per track
        # an improved face of a track rewrites its file; the key stays
        store = sink.snapshots
        assert store is not None
        first = folder / SnapshotStore.relpath(evs[0].snapshot or "")
        before = first.read_bytes()
        from edge_mtl.events.snapshots import TrackSnapshot

        snap = TrackSnapshot(evs[0].snapshot or "", quality=0.5, written=True)
        store.offer(snap, frame, np.array([600, 300, 760, 480], np.float32), 0.9)
        assert store.reference(snap) == evs[0].snapshot and first.read_bytes() != before
        # age: the two oldest events are 31 days old in the queue -> pruned, and their files with them
        with sqlite3.connect(cfg.events.db) as c:
            c.execute("UPDATE events SET stored_at = ? WHERE seq <= 2", (time.time() - 31 * 86400,))
        sink.prune(force=True)
        left = sink.queue.read(1, 100)
        assert [e["seq"] for e in left] == [3, 4, 5, 6]
        keys = {e["snapshot"] for e in left}
        assert {n[:32] for n in _files(folder)} == keys
        # size: a cap below the total deletes the oldest files; their events stay and the state says "missing"
        oldest = folder / SnapshotStore.relpath(left[0]["snapshot"])
        total = 0
        for p in folder.rglob("*.jpg"):
            os.utime(p, (time.time() - (1000 if p == oldest else 0),) * 2)
            total += p.stat().st_size
        store.max_bytes = total - 1
        sink.prune(force=True)
        states = [snapshot_state(folder, e["snapshot"]) for e in sink.queue.read(1, 100)]
        assert len(_files(folder)) == 7 and states == ["missing", "present", "present", "present"]
        # snapshot_retention_days shorter than the events': old files go, events stay
        for p in folder.rglob("*.jpg"):
            os.utime(p, (time.time() - 3 * 86400,) * 2)
        store.max_age_s = 2 * 86400
        sink.prune(force=True)
        assert _files(folder) == set() and sink.queue.count() == 4
    finally:
        sink.close()
    # turning snapshots off deletes what is left from when they were on
    _track_events_cfg = _cfg(tmp_path)
    sink = EventSink(_track_events_cfg)
    _track_events(sink, frame, 2)
    sink.close()
    assert len(_files(tmp_path / "snapshots")) == 2
    off = _cfg(tmp_path)
    off.events.snapshots = False
    EventSink(off).close()
    assert _files(tmp_path / "snapshots") == set()


def test_start_sweeps_orphans_and_keeps_referenced_files(tmp_path: Path, frame: np.ndarray) -> None:
    cfg = _cfg(tmp_path)
    sink = EventSink(cfg)
    evs = _track_events(sink, frame, 2)
    store = sink.snapshots
    assert store is not None
    orphan = store.offer(None, frame, np.array([10, 10, 90, 90], np.float32), 0.3)
    assert store.reference(orphan)  # written, but its event never commits (the crash)
    sink.close()
    assert len(_files(tmp_path / "snapshots")) == 3
    EventSink(cfg).close()
    assert {n[:32] for n in _files(tmp_path / "snapshots")} == {e.snapshot for e in evs}


def test_schema_snapshot_key_is_optional_and_strict() -> None:
    ev = Event("face.left", "2026-12-01T10:00:00.000Z", "lobby", "lobby-1", 3, seq=7)
    plain = json.loads(encode_event(ev))
    assert tuple(plain) == SCHEMA_KEYS  # without a snapshot: exactly v1 as before
    ev.snapshot = "0123456789abcdef0123456789abcdef"
    line = encode_event(ev)
    assert tuple(json.loads(line)) == (*SCHEMA_KEYS, "snapshot")
    assert decode_event(line)["snapshot"] == ev.snapshot
    for bad in ("../../etc/passwd", "0123", 42, None, "0123456789ABCDEF0123456789ABCDEF"):
        d = dict(plain, snapshot=bad)
        with pytest.raises(ValueError, match="snapshot: expected 32 lowercase hex"):
            decode_event(d)
    with pytest.raises(ValueError, match="unexpected key"):
        decode_event(dict(plain, thumbnail="x"))


def test_token_and_bind_rules(tmp_path: Path) -> None:
    cfg = AppConfig()
    assert resolve_token(cfg, environ={}) is None
    check_bind(cfg, None)  # metrics alone on loopback: no token needed
    cfg.service.metrics_port = 9999
    cfg.api.enabled = True
    with pytest.raises(InputError, match=r"api\.enabled needs a token"):
        check_bind(cfg, None)
    creds = tmp_path / "creds"
    creds.mkdir()
    write_token(creds / "api-token")
    assert resolve_token(cfg, environ={"CREDENTIALS_DIRECTORY": str(creds)}) == TOKEN
    cfg.api.token_file = write_token(tmp_path / "short", "abc")
    with pytest.raises(InputError, match="at least 16"):
        resolve_token(cfg, environ={})
    cfg.api.token_file = tmp_path / "nope"
    with pytest.raises(InputError, match="no such file"):
        resolve_token(cfg, environ={})
    cfg.api.enabled = False
    cfg.service.metrics_host = "0.0.0.0"
    with pytest.raises(InputError, match="non-loopback address needs the API token"):
        check_bind(cfg, None)
    check_bind(cfg, TOKEN)
    assert token_matches(f"Bearer {TOKEN}", TOKEN) and token_matches(f"bearer {TOKEN}", TOKEN)
    assert not token_matches(TOKEN, TOKEN) and not token_matches(f"Bearer {TOKEN[:-1]}", TOKEN)
    assert not token_matches("Bearer \udcff", TOKEN)
    # api.enabled without a metrics port is a config error
    bad = tmp_path / "bad.toml"
    bad.write_text("[api]\nenabled = true\n")
    with pytest.raises(ConfigError, match=r"api\.enabled needs service\.metrics_port"):
        load_config(bad)


def test_run_and_check_config_refuse_api_without_token_exit_2(tmp_path: Path, data_dir: Path) -> None:
    import subprocess
    import sys

    from tests.proc_helpers import child_env

    cfg = tmp_path / "c.toml"
    cfg.write_text("[service]\nmetrics_port = 9999\n[api]\nenabled = true\n"  # check-config also needs a camera
                   f"[[cameras]]\nname = \"door\"\nsource = \"{data_dir / PEDESTRIANS}\"\n")
    db = tmp_path / "events.db"
    p = subprocess.run([sys.executable, "-m", "edge_mtl", "run", "--config", str(cfg), "--source",
                        str(data_dir / PEDESTRIANS), "--events", str(db)], capture_output=True, text=True,
                       timeout=120, cwd=REPO, env=child_env())
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("edge-mtl:")]
    assert len(lines) == 1 and "api.enabled needs a token" in lines[0] and "Traceback" not in p.stderr
    assert not db.exists()  # refused before anything was written
    # check-config (the unit's ExecStartPre) says the same; with the systemd credential the config passes
    p = subprocess.run([sys.executable, "-m", "edge_mtl", "check-config", str(cfg)], capture_output=True, text=True,
                       timeout=120, cwd=REPO, env=child_env())
    assert p.returncode == 2 and "api.enabled needs a token" in p.stderr, p.stderr[-2000:]
    creds = tmp_path / "creds"
    creds.mkdir()
    write_token(creds / "api-token")
    p = subprocess.run([sys.executable, "-m", "edge_mtl", "check-config", str(cfg)], capture_output=True, text=True,
                       timeout=120, cwd=REPO, env=child_env({"CREDENTIALS_DIRECTORY": str(creds)}))
    assert p.returncode == 0, p.stderr[-2000:]


def test_server_on_a_non_loopback_address_and_a_missing_snapshot(tmp_path: Path, frame: np.ndarray) -> None:
    """The API server in-process on a real queue: on 0.0.0.0 every path needs the token; an event whose file was
    deleted says so (410, state missing)."""
    from edge_mtl.web.server import WebServer

    cfg = _cfg(tmp_path)
    sink = EventSink(cfg)
    evs = _track_events(sink, frame, 3)
    import socket

    with socket.socket() as sk:
        sk.bind(("0.0.0.0", 0))
        cfg.service.metrics_port = int(sk.getsockname()[1])
    cfg.service.metrics_host = "0.0.0.0"
    cfg.api.enabled = True
    server = WebServer(cfg, TOKEN)
    server.publish(Snapshot(time=time.time(), ready=True, cameras=[CameraSnapshot("lobby", "rtsp")]))
    server.start()
    try:
        c = Client(server.port)
        for path in ("/metrics", "/health", "/api/events"):
            assert c.get(path, token=None)[0] == 401
        assert c.get("/metrics")[0] == 200
        assert [e["seq"] for e in c.json("/api/events")["events"]] == [1, 2, 3]
        (tmp_path / "snapshots" / SnapshotStore.relpath(evs[1].snapshot or "")).unlink()
        assert c.json(f"/api/events/{evs[0].id}")["snapshot"]["state"] == "present"
        info = c.json(f"/api/events/{evs[1].id}")
        assert info["snapshot"] == {"state": "missing"}
        code, _, body = c.get(f"/api/events/{evs[1].id}/snapshot")
        assert code == 410 and json.loads(body)["state"] == "missing"
        assert c.get(f"/api/events/{evs[2].id}/snapshot?kind=context")[0] == 410  # context frames were off
        assert c.get(f"/api/events/{evs[2].id}/snapshot?kind=../x")[0] == 400
        assert c.json("/api/cameras")["cameras"][0]["name"] == "lobby"
        assert c.json("/api/gallery") == {"configured": False, "people": []}
        # the stream, also across retention deleting every event a client had not read yet
        s1 = SseReader(server.port, last_event_id=0)
        assert [i for i, _ in s1.next_events(3)] == [1, 2, 3]
        assert sink.queue.prune(0.0, None) == 3
        s2 = SseReader(server.port, last_event_id=1)
        time.sleep(0.5)
        new = _track_events(sink, frame, 1)
        assert [ev["id"] for _, ev in s2.next_events(1)] == [new[0].id]
        assert [i for i, _ in s1.next_events(1)] == [4]
        s1.close()
        s2.close()
    finally:
        server.stop()
        sink.close()


def _exported_names() -> set[str]:
    """Every metric family name the daemon's /metrics exposes, from a snapshot with every kind of sample."""
    snap = Snapshot(time=1.0, ready=True, cameras=[CameraSnapshot("lobby", "rtsp", last_frame_age_s=0.1)],
                    stages={"detect": StageSnapshot(0.01, 0.02, 1.0, 10)}, events={"face.left": 1},
                    consumers={"jsonl": 1}, models=[("detector", "d", "fp32")], identity_threshold=0.4)
    from edge_mtl.daemon.metrics import ForwarderSnapshot

    snap.forwarders = [ForwarderSnapshot("mqtt", True, 1)]
    names = set()
    for line in render_prometheus(snap).splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_grafana_dashboard_imports_and_uses_only_exported_metrics() -> None:
    path = REPO / "docs" / "grafana" / "edge-mtl.json"
    dash = json.loads(path.read_text())
    assert dash["title"] and dash["schemaVersion"] >= 30 and dash["uid"]
    panels = dash["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert len(exprs) >= 8
    used = {m for e in exprs for m in re.findall(r"\bedge_mtl_[a-z0-9_]+", e)}
    exported = _exported_names()
    assert used and used <= exported, sorted(used - exported)
    # every panel reads the datasource variable a user picks on import
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in panels if p.get("targets"))
    assert any(i["name"] == "DS_PROMETHEUS" for i in dash["__inputs"])
    assert len({p["id"] for p in panels}) == len(panels)
