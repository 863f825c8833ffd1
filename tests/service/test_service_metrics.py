"""/metrics and /health on localhost when configured (and nowhere else), and SIGHUP reloads: live settings apply,
others are named as needing a restart, a broken config is refused while the daemon keeps running."""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from service_helpers import EVENTFUL, Daemon, NotifySocket, child_env, free_port, listening_sockets, wait_until

from edge_mtl.daemon.metrics import CameraSnapshot, Snapshot, health_body, render_prometheus

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse_prometheus(text: str) -> dict[str, float]:
    """A strict reader of the text format: every sample belongs to a family announced by HELP and TYPE."""
    assert text.endswith("\n")
    families: set[str] = set()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("counter", "gauge", "summary"), line
            families.add(name)
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name = m.group(1)
        base = re.sub(r"_(sum|count)$", "", name)
        assert name in families or base in families, f"sample without TYPE: {line!r}"
        samples[name + (m.group(2) or "")] = float(m.group(3))
    return samples


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_health_and_sighup_reload(
    tmp_path: Path, model_args: list[str], clips: dict[str, Path], notify: NotifySocket
) -> None:
    port = free_port()
    gallery = tmp_path / "gallery.db"
    cfg = tmp_path / "edge-mtl.toml"

    def write_cfg(threshold: float = 0.53, every: int = 15, input_size: int = 160, extra: str = "") -> None:
        text = EVENTFUL.replace("input_size = 160", f"input_size = {input_size}")
        cfg.write_text(
            text + f'\n[identity]\ngallery = "{gallery}"\nthreshold = {threshold}\n'
            f"\n[recognition]\nevery_n_frames = {every}\n"
            f"\n[service]\nmetrics_port = {port}\n" + extra
        )

    write_cfg()
    base = f"http://127.0.0.1:{port}"
    with Daemon(["--config", str(cfg), "--source", str(clips["noise"]), "--loop", "--events",
                 str(tmp_path / "e.db"), *model_args], env=child_env(notify.env())) as d:
        notify.wait_for("READY=1", 120, daemon=d)
        assert "does not exist yet" in d.stderr  # a gallery named in the config may appear later
        # exactly one listening socket, on loopback
        assert listening_sockets(d.pid) == [("tcp", f"127.0.0.1:{port}")]
        metrics: dict[str, float] = {}

        def scraped() -> bool:
            metrics.clear()
            metrics.update(parse_prometheus(_get(base + "/metrics")[1]))
            return metrics.get('edge_mtl_frames_total{camera="cam0"}', 0) > 0 and \
                metrics.get('edge_mtl_events_total{type="face.appeared"}', 0) > 0

        wait_until(scraped, 30, "frames and events in /metrics")
        assert metrics["edge_mtl_ready"] == 1 and metrics["edge_mtl_queue_last_seq"] > 0
        assert metrics['edge_mtl_stage_latency_seconds{stage="detect",quantile="0.5"}'] > 0
        assert metrics['edge_mtl_stage_latency_seconds_count{stage="detect"}'] > 0
        assert 'edge_mtl_last_frame_age_seconds{camera="cam0"}' in metrics
        assert 'edge_mtl_frames_dropped_total{camera="cam0"}' in metrics
        assert 'edge_mtl_reconnects_total{camera="cam0"}' in metrics
        assert metrics['edge_mtl_model_info{kind="recognizer",version="tiny-test",precision="fp32"}'] == 1
        assert sum(1 for k in metrics if k.startswith('edge_mtl_model_info{kind="detector"')) == 1
        assert metrics["edge_mtl_identity_threshold"] == 0.53  # as configured
        code, body = _get(base + "/health")
        health = json.loads(body)
        assert code == 200 and health["status"] in ("ok", "degraded"), health
        assert health["cameras"]["cam0"]["state"] == "delivering"
        assert _get(base + "/nope")[0] == 404

        # SIGHUP 1: three live settings and one that needs a restart
        write_cfg(threshold=0.6, every=5, input_size=192, extra="\n[attributes]\ngender_min_confidence = 0.75\n")
        mark = len(notify.messages())
        d.signal(signal.SIGHUP)
        d.wait_log(r"SIGHUP: applied .*identity\.threshold 0\.53 -> 0\.6", 20)
        d.wait_log(r"recognition\.every_n_frames 15 -> 5", 5)
        d.wait_log(r"attributes\.gender_min_confidence 0\.6 -> 0\.75", 5)
        d.wait_log(r"need a restart \(systemctl restart edge-mtl\): detector\.input_size", 5)

        def reload_acked() -> bool:
            after = [m for _, m in notify.messages()[mark:]]
            return "RELOADING=1" in after and "READY=1" in after[after.index("RELOADING=1"):]

        wait_until(reload_acked, 10, "RELOADING=1 then READY=1 on NOTIFY_SOCKET")
        wait_until(lambda: parse_prometheus(_get(base + "/metrics")[1]).get("edge_mtl_identity_threshold") == 0.6,
                   10, "the reloaded identity threshold in /metrics")

        # people enrolled while running are picked up without a restart
        from edge_mtl.identity.gallery import Gallery

        with Gallery(gallery) as g:
            g.add("alice", np.eye(1, 128, dtype=np.float32), [0.9], ["a.jpg"], model="tiny-test")
        d.signal(signal.SIGHUP)
        d.wait_log(r"gallery .*gallery\.db: 1 people", 20)

        # SIGHUP 3: a config that no longer validates is refused; the daemon runs on
        write_cfg(threshold=0.6, every=5, input_size=192,
                  extra="\n[attributes]\ngender_min_confidence = 0.75\n\n[events]\nretention_dayz = 3\n")
        d.signal(signal.SIGHUP)
        d.wait_log(r"config not reloaded, still running on the previous one: .*events\.retention_dayz: unknown", 20)
        wait_until(lambda: parse_prometheus(_get(base + "/metrics")[1])
                   .get('edge_mtl_reloads_total{result="error"}') == 1, 10, "the failed reload in /metrics")
        assert d.alive()
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0, d.stderr[-3000:]
    assert "Traceback" not in d.stderr


def test_health_is_503_unless_ready_and_progressing() -> None:
    cam = CameraSnapshot(name="a", kind="rtsp", state="delivering", connected=True, last_frame_age_s=0.1)
    ok = Snapshot(ready=True, progressing=True, serving=True, cameras=[cam])
    assert health_body(ok)[0] == 200 and health_body(ok)[1]["status"] == "ok"
    assert health_body(Snapshot(ready=False, cameras=[cam]))[1]["status"] == "starting"
    stalled = Snapshot(ready=True, progressing=False, serving=True, problems=["a: stalled"], cameras=[cam])
    assert health_body(stalled) == (503, health_body(stalled)[1]) and health_body(stalled)[1]["status"] == "stalled"
    down = CameraSnapshot(name="a", kind="rtsp", state="reconnecting")
    no_input = Snapshot(ready=True, progressing=True, serving=False, problems=["a: reconnecting"], cameras=[down])
    assert health_body(no_input)[0] == 503 and health_body(no_input)[1]["status"] == "no_input"
    stopping = Snapshot(ready=True, stopping=True, progressing=True, serving=True, cameras=[cam])
    assert health_body(stopping)[0] == 503
    # label values are escaped; the output parses
    odd = Snapshot(ready=True, cameras=[CameraSnapshot(name='we"ird\\cam', kind="file")])
    parse_prometheus(render_prometheus(odd))
