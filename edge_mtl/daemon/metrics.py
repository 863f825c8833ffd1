"""Health and Prometheus metrics of the daemon, served on localhost only, and only when configured.

The service's main loop builds a `Snapshot` (plain numbers) about once a second and `publish`es it; the HTTP
thread only renders the latest snapshot. So the HTTP side never touches the pipeline, the sources or the SQLite
connections (which belong to the main thread), and a scrape can never slow down or block frame processing.

Endpoints (`service.metrics_port`, bound to 127.0.0.1 by default and never to a non-loopback address):

* `GET /metrics`: Prometheus text format 0.0.4 (`edge_mtl_*`);
* `GET /health`: JSON, HTTP 200 while the daemon is ready and making progress, 503 otherwise (with reasons).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge_mtl.errors import InputError

log = logging.getLogger(__name__)

CONTENT_TYPE_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class CameraSnapshot:
    """One camera as the pipeline and its capture source see it."""

    name: str
    kind: str
    frames_processed: int = 0
    faces: int = 0
    frames_read: int = 0
    frames_dropped: int = 0
    frames_corrupt: int = 0
    reconnects: int = 0
    reconnect_attempts: int = 0
    connected: bool = False
    finished: bool = False
    last_frame_age_s: float | None = None
    fps: float = 0.0  # frames processed per second over the last snapshot interval
    error: str | None = None
    state: str = "starting"  # delivering | reconnecting | stalled | finished | failed | starting


@dataclass
class StageSnapshot:
    """Per-stage latency from the pipeline's StageTimer (seconds)."""

    p50_s: float
    p95_s: float
    sum_s: float
    count: int


@dataclass
class ForwarderSnapshot:
    name: str
    connected: bool
    delivered_seq: int
    last_error: str | None = None


@dataclass
class Snapshot:
    """Everything /metrics and /health report, captured at `time` (epoch seconds)."""

    time: float = 0.0
    uptime_s: float = 0.0
    ready: bool = False
    stopping: bool = False
    progressing: bool = False  # the watchdog policy (service.ProgressMonitor) says so
    serving: bool = False  # at least one camera delivers frames
    problems: list[str] = field(default_factory=list)
    frames: int = 0
    faces: int = 0
    analyses: int = 0
    fps: float = 0.0
    events: dict[str, int] = field(default_factory=dict)  # written to the queue, by type
    cameras: list[CameraSnapshot] = field(default_factory=list)
    stages: dict[str, StageSnapshot] = field(default_factory=dict)
    queue_last_seq: int = 0
    queue_first_seq: int = 1
    consumers: dict[str, int] = field(default_factory=dict)  # cursor name -> committed seq
    forwarders: list[ForwarderSnapshot] = field(default_factory=list)
    reloads: int = 0
    reload_errors: int = 0
    pruned: int = 0
    models: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, version, precision) of loaded models
    identity_threshold: float | None = None  # the cosine threshold in use (config or the model's measured point)

    @property
    def queue_stored(self) -> int:
        """Events stored in the queue (retention deletes the oldest, so they are one contiguous range)."""
        return max(0, self.queue_last_seq - self.queue_first_seq + 1)

    @property
    def events_total(self) -> int:
        return sum(self.events.values())

    @property
    def dropped(self) -> int:
        return sum(c.frames_dropped for c in self.cameras)

    @property
    def healthy(self) -> bool:
        return self.ready and not self.stopping and self.progressing and self.serving

    @property
    def status(self) -> str:
        """ok | degraded (healthy, with problems) | starting | stopping | stalled | no_input."""
        if self.stopping:
            return "stopping"
        if not self.ready:
            return "starting"
        if not self.progressing:
            return "stalled"
        if not self.serving:
            return "no_input"
        return "degraded" if self.problems else "ok"


# ------------------------------------------------------------------ rendering
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


class _Writer:
    """Collects metric families in the text exposition format (HELP and TYPE once per family)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, str], float]],
               suffix: str = "") -> None:
        rows = list(samples)
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            self.sample(name + suffix, labels, value)

    def sample(self, name: str, labels: Mapping[str, str], value: float) -> None:
        if labels:
            body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{body}}} {_num(value)}")
        else:
            self.lines.append(f"{name} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_prometheus(s: Snapshot) -> str:
    """The snapshot in Prometheus text format (counters end in _total; rates are left to PromQL's rate())."""
    w = _Writer()
    w.family("edge_mtl_up", "gauge", "1 while the daemon runs.", [({}, 1)])
    w.family("edge_mtl_ready", "gauge", "1 once models are loaded and sources started.", [({}, s.ready)])
    w.family("edge_mtl_healthy", "gauge", "1 when /health answers 200 (ready, progressing, frames flowing).",
             [({}, s.healthy)])
    w.family("edge_mtl_uptime_seconds", "gauge", "Seconds since the daemon started.", [({}, s.uptime_s)])
    cams = s.cameras

    def per_cam(attr: str) -> list[tuple[Mapping[str, str], float]]:
        return [({"camera": c.name}, getattr(c, attr)) for c in cams]

    w.family("edge_mtl_frames_total", "counter", "Frames processed by the pipeline.", per_cam("frames_processed"))
    w.family("edge_mtl_frames_read_total", "counter", "Frames read from the source.", per_cam("frames_read"))
    w.family("edge_mtl_frames_dropped_total", "counter",
             "Frames replaced by a newer one before processing (latest-frame policy).", per_cam("frames_dropped"))
    w.family("edge_mtl_frames_corrupt_total", "counter", "Frames that could not be decoded.",
             per_cam("frames_corrupt"))
    w.family("edge_mtl_faces_total", "counter", "Faces detected.", per_cam("faces"))
    w.family("edge_mtl_reconnects_total", "counter", "Successful reconnects of the source.", per_cam("reconnects"))
    w.family("edge_mtl_reconnect_attempts_total", "counter", "Reconnect attempts of the source.",
             per_cam("reconnect_attempts"))
    w.family("edge_mtl_camera_connected", "gauge", "1 while the source is open.", per_cam("connected"))
    w.family("edge_mtl_camera_fps", "gauge", "Frames processed per second (last interval).", per_cam("fps"))
    w.family(
        "edge_mtl_last_frame_age_seconds", "gauge", "Seconds since the source last delivered a frame.",
        [({"camera": c.name}, c.last_frame_age_s) for c in cams if c.last_frame_age_s is not None],
    )
    w.family("edge_mtl_analyses_total", "counter", "Face crops analysed by the recognizer.", [({}, s.analyses)])
    w.family("edge_mtl_events_total", "counter", "Events committed to the queue, by type.",
             [({"type": t}, n) for t, n in sorted(s.events.items())])
    w.lines.append("# HELP edge_mtl_stage_latency_seconds Per-stage latency of the pipeline (recent samples).")
    w.lines.append("# TYPE edge_mtl_stage_latency_seconds summary")
    for stage, st in sorted(s.stages.items()):
        w.sample("edge_mtl_stage_latency_seconds", {"stage": stage, "quantile": "0.5"}, st.p50_s)
        w.sample("edge_mtl_stage_latency_seconds", {"stage": stage, "quantile": "0.95"}, st.p95_s)
        w.sample("edge_mtl_stage_latency_seconds_sum", {"stage": stage}, st.sum_s)
        w.sample("edge_mtl_stage_latency_seconds_count", {"stage": stage}, st.count)
    w.family("edge_mtl_queue_events", "gauge", "Events stored in the durable queue.", [({}, s.queue_stored)])
    w.family("edge_mtl_queue_last_seq", "gauge", "Highest sequence number assigned.", [({}, s.queue_last_seq)])
    w.family("edge_mtl_queue_backlog_events", "gauge", "Events a consumer has not committed yet.",
             [({"consumer": n}, max(0, s.queue_last_seq - seq)) for n, seq in sorted(s.consumers.items())])
    w.family("edge_mtl_events_pruned_total", "counter", "Events deleted by retention.", [({}, s.pruned)])
    w.family("edge_mtl_forwarder_connected", "gauge", "1 while the forwarder is connected to its broker.",
             [({"forwarder": f.name}, f.connected) for f in s.forwarders])
    w.family("edge_mtl_forwarder_delivered_seq", "gauge", "Last sequence number acknowledged by the broker.",
             [({"forwarder": f.name}, f.delivered_seq) for f in s.forwarders])
    w.family("edge_mtl_reloads_total", "counter", "SIGHUP reloads, by result.",
             [({"result": "ok"}, s.reloads), ({"result": "error"}, s.reload_errors)])
    w.family("edge_mtl_model_info", "gauge", "1 per loaded model, with its version and precision.",
             [({"kind": k, "version": v, "precision": pr}, 1) for k, v, pr in s.models])
    w.family("edge_mtl_identity_threshold", "gauge",
             "Cosine similarity a gallery match needs (identity.threshold, or the recognizer's measured point).",
             [({}, s.identity_threshold)] if s.identity_threshold is not None else [])
    return w.text()


def health_body(s: Snapshot) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body): 200 while healthy, 503 with the problems otherwise."""
    body: dict[str, Any] = {
        "status": s.status,
        "problems": list(s.problems),
        "uptime_s": round(s.uptime_s, 1),
        "frames": s.frames,
        "fps": round(s.fps, 2),
        "events": s.events_total,
        "dropped": s.dropped,
        "queue": {"stored": s.queue_stored, "last_seq": s.queue_last_seq,
                  "backlog": {n: max(0, s.queue_last_seq - v) for n, v in sorted(s.consumers.items())}},
        "cameras": {
            c.name: {
                "state": c.state,
                "connected": c.connected,
                "fps": round(c.fps, 2),
                "last_frame_age_s": None if c.last_frame_age_s is None else round(c.last_frame_age_s, 2),
                "frames": c.frames_processed,
                "dropped": c.frames_dropped,
                "corrupt": c.frames_corrupt,
                "reconnects": c.reconnects,
                **({"error": c.error} if c.error else {}),
            }
            for c in s.cameras
        },
        "forwarders": [asdict(f) for f in s.forwarders],
    }
    return (200 if s.healthy else 503), body


# ------------------------------------------------------------------ server
def check_loopback(host: str) -> None:
    """The metrics listener stays on this box: a non-loopback address is a config error (exit 2)."""
    if host == "localhost":
        return
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise InputError(
            f"service.metrics_host {host!r}: metrics and health are served on a loopback address only "
            "(127.0.0.1 or ::1); put a reverse proxy in front to expose them"
        )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5.0  # a slow or silent client cannot hold a handler thread
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        snap = self.server.owner.latest()
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_PROMETHEUS, render_prometheus(snap).encode())
        elif path == "/health":
            code, body = health_body(snap)
            self._send(code, "application/json", (json.dumps(body) + "\n").encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /health\n")

    def _send(self, code: int, ctype: str, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s: " + format, self.client_address[0], *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: MetricsServer


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """`/metrics` and `/health` on `host:port` in one background thread (plus short-lived request threads)."""

    def __init__(self, host: str, port: int) -> None:
        check_loopback(host)
        self.host, self.port = host, port
        self._lock = threading.Lock()
        self._snapshot = Snapshot(time=time.time())
        self._thread: threading.Thread | None = None
        server_cls = _Server6 if ":" in host else _Server
        try:
            self._server = server_cls((host, port), _Handler, bind_and_activate=True)
        except OSError as e:
            raise InputError(f"service.metrics_port: cannot listen on {host}:{port}: {e.strerror or e}") from None
        self._server.owner = self
        self.port = int(self._server.server_address[1])

    def publish(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def latest(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics and /health", self.host, self.port)

    def stop(self, timeout: float = 2.0) -> None:
        if self._thread is not None:
            self._server.shutdown()  # returns once serve_forever's poll loop has seen the request
            self._thread.join(timeout)
            self._thread = None
        self._server.server_close()
