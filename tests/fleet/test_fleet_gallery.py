"""The fleet gallery: `edge-mtl gallery publish` signs and retains it on a real mosquitto; a box's GallerySync
verifies the key, the recognizer and the version, and installs it atomically or keeps its gallery."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.config import FleetGalleryConfig
from edge_mtl.fleet.gallery import GallerySync, encode_gallery, sign
from edge_mtl.identity.gallery import Gallery
from tests.e2e.conftest import edge_mtl
from tests.events.events_helpers import Broker
from tests.proc_helpers import wait_until

pytestmark = pytest.mark.timeout(120)


def _key(path: Path, byte: int) -> Path:
    path.write_bytes(bytes([byte]) * 40)
    os.chmod(path, 0o600)
    return path


def _people(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in (("alice", 2), ("bob", 1)):
        e = rng.normal(size=(n, 16)).astype(np.float32)
        out[name] = e / np.linalg.norm(e, axis=1, keepdims=True)
    return out


def _sync(tmp: Path, key: Path, recognizer: str = "rec-1", compatible: dict[str, float] | None = None,
          port: int = 1883) -> GallerySync:
    cfg = FleetGalleryConfig(host="127.0.0.1", port=port, topic="fleet-test/gallery", key_file=key)
    return GallerySync(cfg, tmp / "box" / "gallery.db", recognizer, compatible, box="b1")


def _names(path: Path) -> list[str]:
    with Gallery(path, create=False) as g:
        return [p["name"] for p in g.people()]


def test_publish_once_every_box_applies_it(fleet_broker: Broker, tmp_path: Path) -> None:
    key = _key(tmp_path / "fleet.key", 7)
    central = tmp_path / "central.db"
    with Gallery(central) as g:
        for name, emb in _people().items():
            g.add(name, emb, model="rec-1")
    out = edge_mtl("gallery", "publish", "--gallery", str(central), "--broker", f"127.0.0.1:{fleet_broker.port}",
                   "--key-file", str(key), "--topic", "fleet-test/gallery", "--gallery-version", "5", "--json")
    res = json.loads(out.stdout)
    assert res["version"] == 5 and res["people"] == 2 and res["embeddings"] == 3 and res["recognizer"] == "rec-1"
    boxes = []
    for i in range(2):  # retained: boxes that subscribe later get it too
        (tmp_path / f"b{i}").mkdir()
        s = _sync(tmp_path / f"b{i}", key, port=fleet_broker.port)
        s.start()
        boxes.append(s)
    try:
        for s in boxes:
            wait_until(lambda s=s: s.state()["version"] == 5, 20, "gallery version 5 on the box")
            assert s.take_swap() and not s.take_swap()
            assert _names(s.path) == ["alice", "bob"]
            with Gallery(s.path, create=False) as g:
                names, mat = g.matrix("rec-1")
            want = _people()
            assert np.allclose(mat[[i for i, n in enumerate(names) if n == "alice"]], want["alice"])
            assert oct(s.path.stat().st_mode & 0o777) == "0o600"
    finally:
        for s in boxes:
            s.stop()
    # a restarted box knows which version it runs, from the gallery file itself
    again = _sync(tmp_path / "b0", key, port=fleet_broker.port)
    assert again.state()["version"] == 5 and again.state()["people"] == 2


def test_refusals_keep_the_running_gallery(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key, other = _key(tmp_path / "k1", 1), _key(tmp_path / "k2", 2)
    (tmp_path / "box").mkdir()
    s = _sync(tmp_path, key, recognizer="rec-2", compatible={"rec-1": 0.03})
    k = key.read_bytes()
    assert s.apply(sign(encode_gallery(10, "rec-1", _people()), k))  # rec-2 declares rec-1 compatible
    before = s.path.read_bytes()
    caplog.set_level(logging.ERROR, "edge_mtl.fleet.gallery")
    refusals = {
        "another key": sign(encode_gallery(11, "rec-1", _people(1)), other.read_bytes()),
        "incompatible recognizer": sign(encode_gallery(12, "rec-0", _people(1)), k),
        "older version": sign(encode_gallery(9, "rec-2", _people(1)), k),
        "tampered": sign(encode_gallery(13, "rec-2", _people(1)), k).replace(b'"bob"', b'"eve"'),
        "malformed": sign(b'{"schema": "edge_mtl.gallery/v1", "version": 14}', k),
    }
    for what, msg in refusals.items():
        assert not s.apply(msg), what
        assert s.path.read_bytes() == before, what
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 5 and all("keeping gallery version 10" in x for x in lines), lines
    assert "signed with another key" in lines[0]
    assert "made with recognizer rec-0, this box runs rec-2 (compatible: rec-1)" in lines[1]
    assert "older than the running 10" in lines[2]
    assert "signature does not verify" in lines[3]
    assert s.state()["refused"] == 5 and s.state()["version"] == 10
    assert _names(s.path) == ["alice", "bob"]
    # the same version again (a retained message seen on reconnect) is neither applied nor refused
    assert not s.apply(sign(encode_gallery(10, "rec-1", _people()), k)) and s.state()["refused"] == 5
    with sqlite3.connect(s.path) as db:
        assert dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'fleet_%'"))["fleet_recognizer"] == "rec-1"
    assert not (s.path.parent / "gallery.db.incoming").exists()


def test_bad_fleet_and_collector_configs_exit_2(tmp_path: Path) -> None:
    cases = {
        "box.toml": ('[fleet]\nsite = "north"\n', "site needs box"),
        "box2.toml": ('[fleet]\nbox = "a/b"\n', "fleet.box"),
        "box3.toml": ('[fleet.gallery]\nkey_file = "k"\n', "fleet.gallery needs identity.gallery"),
        "collector.toml": ('[collector.database]\ndsn = "host=db password=x"\n', "password_file"),
        "collector2.toml": ("[collector]\nbatch_size = 0\n", "collector.batch_size"),
    }
    for name, (text, want) in cases.items():
        (tmp_path / name).write_text(text)
        proc = edge_mtl("check-config", str(tmp_path / name), check=False)
        assert proc.returncode == 2 and want in proc.stderr and "Traceback" not in proc.stderr, (name, proc.stderr)
    (tmp_path / "ok.toml").write_text('[collector]\nbatch_size = 100\n[collector.database]\nschema = "fleet"\n')
    assert edge_mtl("check-config", str(tmp_path / "ok.toml")).returncode == 0
    short = tmp_path / "short.key"
    short.write_text("too short\n")
    (tmp_path / "g.db").write_bytes(b"")
    proc = edge_mtl("gallery", "publish", "--gallery", str(tmp_path / "g.db"), "--broker", "127.0.0.1:1",
                    "--key-file", str(short), check=False)
    assert proc.returncode == 2 and "needs at least 32" in proc.stderr, proc.stderr
