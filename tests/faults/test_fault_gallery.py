"""A damaged gallery costs identification, never detection and events (issue 23, case 2), and a gallery that can
never match the recognizer refuses to start (case 3)."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

from fault_helpers import check_nothing_lost, corrupt_page, health, make_gallery, metric

from tests.service.service_helpers import (
    EVENTFUL,
    Daemon,
    NotifySocket,
    child_env,
    edge_mtl,
    free_port,
    one_line_error,
    wait_until,
)


def _config(tmp_path: Path, models: dict[str, Path], clip: Path, gallery: Path, port: int) -> Path:
    cfg = tmp_path / "edge-mtl.toml"
    detector = EVENTFUL.replace("[detector]\n", f"[detector]\nmodel = \"{models['detector']}\"\n", 1)
    cfg.write_text(detector + f"""
[recognizer]
model = "{models['recognizer']}"
[identity]
gallery = "{gallery}"
[events]
db = "{tmp_path / 'events.db'}"
jsonl = "{tmp_path / 'events.jsonl'}"
[service]
metrics_port = {port}
[[cameras]]
name = "door"
source = "{clip}"
loop = true
realtime = true
""")
    return cfg


def _replace_with_good(gallery: Path, people: int) -> None:
    """The operator's fix: a good gallery written beside it and renamed over it (atomic)."""
    fresh = gallery.with_name("fresh.db")
    make_gallery(fresh, people)
    os.replace(fresh, gallery)


def test_gallery_damaged_while_running_keeps_the_last_good_one_and_recovers(
    tmp_path: Path, models: dict[str, Path], clips: dict[str, Path]
) -> None:
    gallery, port = tmp_path / "gallery.db", free_port()
    make_gallery(gallery, 3)
    cfg = _config(tmp_path, models, clips["loop"], gallery, port)
    notify = NotifySocket()
    with contextlib.closing(notify), Daemon(["--config", str(cfg)], env=child_env(notify.env())) as d:
        d.wait_log(r"ready: 1 camera", 60)
        wait_until(lambda: metric(port, "edge_mtl_gallery_people") == 3, 10, "3 people in the gallery")
        assert metric(port, "edge_mtl_gallery_ok") == 1

        # Damage it in place, as a failing disk or a stray `cp` over it would: same inode, garbage content.
        data = bytearray(gallery.read_bytes())
        data[: len(data) // 2] = os.urandom(len(data) // 2)
        with open(gallery, "r+b") as f:
            f.write(bytes(data))
        wait_until(lambda: metric(port, "edge_mtl_gallery_ok") == 0, 10, "edge_mtl_gallery_ok 0")
        damaged = time.monotonic()
        frames = health(port)[1]["frames"]
        time.sleep(3)  # a few more polls of the damaged file: still one log line, frames still flow
        code, h = health(port)
        assert code == 200 and h["status"] == "degraded", h
        assert any(str(gallery) in str(p) and "last good gallery (3 people)" in str(p)
                   for p in h["problems"]), h  # type: ignore[union-attr]
        assert h["gallery"] == {"ok": False, "people": 3, "errors": 1}, h
        assert int(h["frames"]) > int(frames)  # type: ignore[call-overload]
        assert metric(port, "edge_mtl_gallery_people") == 3
        assert metric(port, "edge_mtl_gallery_errors_total") == 1
        assert len(re.findall(r"ERROR .*gallery", d.stderr)) == 1, d.stderr[-3000:]
        status = notify.messages("STATUS=frames=", since=damaged)  # `systemctl status` shows it too (every 5 s)
        if not status:
            notify.wait_for("STATUS=frames=", 10, since=damaged, daemon=d)
            status = notify.messages("STATUS=frames=", since=damaged)
        assert "gallery unusable, last good one in use" in status[-1][1], status
        d.check_alive()

        _replace_with_good(gallery, 2)
        wait_until(lambda: metric(port, "edge_mtl_gallery_ok") == 1, 10, "the replaced gallery to be loaded")
        assert metric(port, "edge_mtl_gallery_people") == 2
        code, h = health(port)
        assert code == 200 and h["status"] == "ok", h
        d.wait_log(r"gallery .* is readable again after \d+ s: 2 people", 5)
        assert d.stop(30) == 0
    check_nothing_lost(tmp_path / "events.db", tmp_path / "events.jsonl")


def test_damaged_gallery_at_start_starts_with_nobody_enrolled(
    tmp_path: Path, models: dict[str, Path], clips: dict[str, Path]
) -> None:
    gallery, port = tmp_path / "gallery.db", free_port()
    make_gallery(gallery, 20)
    corrupt_page(gallery)  # one page of garbage: the file still opens, its embeddings cannot be read
    cfg = _config(tmp_path, models, clips["loop"], gallery, port)
    with Daemon(["--config", str(cfg)]) as d:
        d.wait_log(r"ready: 1 camera", 60)
        wait_until(lambda: health(port)[1]["status"] == "degraded", 10, "degraded health")
        code, h = health(port)
        assert code == 200 and h["gallery"] == {"ok": False, "people": 0, "errors": 1}, h
        assert any("no one is identified until it is readable" in str(p) for p in h["problems"]), h  # type: ignore
        wait_until(lambda: metric(port, 'edge_mtl_events_total{type="face.appeared"}') or 0, 20, "events")
        _replace_with_good(gallery, 4)
        wait_until(lambda: metric(port, "edge_mtl_gallery_people") == 4, 10, "the fixed gallery to be loaded")
        assert health(port)[1]["gallery"] == {"ok": True, "people": 4, "errors": 1}
        assert d.stop(30) == 0
    check_nothing_lost(tmp_path / "events.db", tmp_path / "events.jsonl")


def test_gallery_of_another_embedding_size_refuses_to_start(
    tmp_path: Path, model_args: list[str], clips: dict[str, Path]
) -> None:
    gallery = tmp_path / "gallery.db"
    make_gallery(gallery, 2, dim=64)  # the tiny recognizer makes 128-d embeddings
    r = edge_mtl("run", "--source", str(clips["noise"]), "--gallery", str(gallery), "--events",
                 str(tmp_path / "events.db"), *model_args)
    assert r.returncode == 2, r.stderr[-2000:]
    line = one_line_error(r.stderr)
    assert str(gallery) in line and "64-d" in line and "128-d" in line, line
