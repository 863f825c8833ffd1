"""Health and Prometheus metrics of the daemon (served by `edge_mtl.web` when `service.metrics_port` is set).

The service's main loop builds a `Snapshot` (plain numbers) about once a second and `publish`es it; the HTTP
thread (edge_mtl.web) only renders the latest snapshot. So the HTTP side never touches the pipeline, the sources or
the SQLite connections (which belong to the main thread), and a scrape can never slow down or block frame processing.

Endpoints (`service.metrics_port`, bound to 127.0.0.1 by default; a non-loopback bind needs the API token,
docs/dashboards.md):

* `GET /metrics`: Prometheus text format 0.0.4 (`edge_mtl_*`), written by prometheus-client from a registry of
  its own (`metrics_registry`), so any HTTP server can expose the same metrics with `exposition(registry)`;
* `GET /health`: JSON, HTTP 200 while the daemon is ready and making progress, 503 otherwise (with reasons).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from edge_mtl.errors import InputError

log = logging.getLogger(__name__)

CONTENT_TYPE_PROMETHEUS = CONTENT_TYPE_PLAIN_0_0_4  # what generate_latest writes


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
    frames_detected: int = 0  # frames the detector ran on (the others were carried: cameras.N.detect_fps)
    rate_fps: float = 0.0  # the rate checked against target_fps over 10 s (capture.rate.RateMonitor)
    target_fps: float | None = None  # detect_fps when set, else the stream's own rate
    behind: bool = False  # rate_fps below 0.9 x target_fps
    behind_episodes: int = 0
    latency_s: tuple[float, float] | None = None  # capture to processed, p50 and p95 of recent frames (live only)


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
    replayed: int = 0  # events resent because the fleet's collector asked for them


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
    gallery: dict[str, Any] | None = None  # the fleet gallery running ([fleet.gallery]; GallerySync.state())
    gallery_people: int | None = None  # people matched against (None: no gallery configured)
    gallery_ok: bool = True  # False while the gallery file cannot be used (the last good one is in use)
    gallery_errors: int = 0  # episodes of an unusable gallery since start

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


# ------------------------------------------------------------------ exposition
def metric_family(
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    help_text: str,
    rows: Iterable[tuple[Sequence[str], float]],
    labels: Sequence[str] = (),
) -> Metric:
    """One gauge or counter family from (label values, value) rows (the daemon's and the collector's metrics)."""
    fam = kind(name, help_text, labels=list(labels))
    for values, v in rows:
        fam.add_metric(list(values), float(v))
    return fam


def metric_families(s: Snapshot) -> list[Metric]:
    """The snapshot as prometheus-client metric families (counters end in _total; rates are left to PromQL)."""
    out: list[Metric] = []

    def gauge(name: str, help_text: str, rows: Iterable[tuple[Sequence[str], float]],
              labels: Sequence[str] = ()) -> None:
        out.append(metric_family(GaugeMetricFamily, name, help_text, rows, labels))

    def counter(name: str, help_text: str, rows: Iterable[tuple[Sequence[str], float]],
                labels: Sequence[str] = ()) -> None:
        out.append(metric_family(CounterMetricFamily, name, help_text, rows, labels))

    cams = s.cameras

    def per_cam(attr: str) -> list[tuple[Sequence[str], float]]:
        return [((c.name,), getattr(c, attr)) for c in cams]

    cam = ("camera",)
    gauge("edge_mtl_up", "1 while the daemon runs.", [((), 1)])
    gauge("edge_mtl_ready", "1 once models are loaded and sources started.", [((), s.ready)])
    gauge("edge_mtl_healthy", "1 when /health answers 200 (ready, progressing, frames flowing).", [((), s.healthy)])
    gauge("edge_mtl_uptime_seconds", "Seconds since the daemon started.", [((), s.uptime_s)])
    counter("edge_mtl_frames_total", "Frames processed by the pipeline.", per_cam("frames_processed"), cam)
    counter("edge_mtl_frames_read_total", "Frames read from the source.", per_cam("frames_read"), cam)
    counter("edge_mtl_frames_dropped_total", "Frames replaced by a newer one before processing (latest-frame policy).",
            per_cam("frames_dropped"), cam)
    counter("edge_mtl_frames_corrupt_total", "Frames that could not be decoded.", per_cam("frames_corrupt"), cam)
    counter("edge_mtl_faces_total", "Faces detected.", per_cam("faces"), cam)
    counter("edge_mtl_reconnects_total", "Successful reconnects of the source.", per_cam("reconnects"), cam)
    counter("edge_mtl_reconnect_attempts_total", "Reconnect attempts of the source.", per_cam("reconnect_attempts"),
            cam)
    gauge("edge_mtl_camera_connected", "1 while the source is open.", per_cam("connected"), cam)
    gauge("edge_mtl_camera_fps", "Frames processed per second (last interval).", per_cam("fps"), cam)
    counter("edge_mtl_frames_detected_total",
            "Frames the detector ran on (the others had their faces carried by the tracker: detect_fps).",
            per_cam("frames_detected"), cam)
    gauge("edge_mtl_camera_target_fps",
          "The rate a camera is configured for: detect_fps, else its stream's frame rate.",
          [((c.name,), c.target_fps) for c in cams if c.target_fps is not None], cam)
    gauge("edge_mtl_camera_rate_fps",
          "Detections (with detect_fps) or frames processed per second over the last 10 s.", per_cam("rate_fps"), cam)
    gauge("edge_mtl_camera_behind", "1 while the camera runs below 0.9 x its target rate.", per_cam("behind"), cam)
    counter("edge_mtl_camera_behind_total", "Times the camera fell behind its target rate.",
            per_cam("behind_episodes"), cam)
    latency = SummaryMetricFamily("edge_mtl_frame_latency_seconds",
                                  "Capture to the end of processing, recent frames.", labels=["camera"])
    for c in cams:
        if c.latency_s is not None:
            for q, v in zip(("0.5", "0.95"), c.latency_s, strict=True):
                latency.add_sample("edge_mtl_frame_latency_seconds", {"camera": c.name, "quantile": q}, float(v))
    out.append(latency)
    gauge("edge_mtl_last_frame_age_seconds", "Seconds since the source last delivered a frame.",
          [((c.name,), c.last_frame_age_s) for c in cams if c.last_frame_age_s is not None], cam)
    counter("edge_mtl_analyses_total", "Face crops analysed by the recognizer.", [((), s.analyses)])
    counter("edge_mtl_events_total", "Events committed to the queue, by type.",
            [((t,), n) for t, n in sorted(s.events.items())], ("type",))
    stages = SummaryMetricFamily("edge_mtl_stage_latency_seconds",
                                 "Per-stage latency of the pipeline (recent samples).", labels=["stage"])
    for stage, st in sorted(s.stages.items()):
        for q, v in (("0.5", st.p50_s), ("0.95", st.p95_s)):
            stages.add_sample("edge_mtl_stage_latency_seconds", {"stage": stage, "quantile": q}, float(v))
        stages.add_metric([stage], count_value=st.count, sum_value=st.sum_s)
    out.append(stages)
    gauge("edge_mtl_queue_events", "Events stored in the durable queue.", [((), s.queue_stored)])
    gauge("edge_mtl_queue_last_seq", "Highest sequence number assigned.", [((), s.queue_last_seq)])
    gauge("edge_mtl_queue_backlog_events", "Events a consumer has not committed yet.",
          [((n,), max(0, s.queue_last_seq - seq)) for n, seq in sorted(s.consumers.items())], ("consumer",))
    counter("edge_mtl_events_pruned_total", "Events deleted by retention.", [((), s.pruned)])
    gauge("edge_mtl_forwarder_connected", "1 while the forwarder is connected to its broker.",
          [((f.name,), f.connected) for f in s.forwarders], ("forwarder",))
    gauge("edge_mtl_forwarder_delivered_seq", "Last sequence number acknowledged by the broker.",
          [((f.name,), f.delivered_seq) for f in s.forwarders], ("forwarder",))
    counter("edge_mtl_forwarder_replayed_events_total",
            "Events resent because the fleet's collector asked for them (automatic backfill).",
            [((f.name,), f.replayed) for f in s.forwarders], ("forwarder",))
    counter("edge_mtl_reloads_total", "SIGHUP reloads, by result.",
            [(("ok",), s.reloads), (("error",), s.reload_errors)], ("result",))
    gauge("edge_mtl_model_info", "1 per loaded model, with its version and precision.",
          [((k, v, pr), 1) for k, v, pr in s.models], ("kind", "version", "precision"))
    gauge("edge_mtl_identity_threshold",
          "Cosine similarity a gallery match needs (identity.threshold, or the recognizer's measured point).",
          [((), s.identity_threshold)] if s.identity_threshold is not None else [])
    gauge("edge_mtl_gallery_people", "People in the gallery in use (the last good one while damaged).",
          [((), s.gallery_people)] if s.gallery_people is not None else [])
    gauge("edge_mtl_gallery_ok", "0 while the gallery file cannot be used (damaged, unreadable, gone).",
          [((), s.gallery_ok)])
    counter("edge_mtl_gallery_errors_total", "Times the gallery file became unusable.", [((), s.gallery_errors)])
    if s.gallery is not None:
        gauge("edge_mtl_gallery_version", "Version of the fleet gallery in use (0: none yet).",
              [((s.gallery.get("recognizer") or "",), s.gallery.get("version") or 0)], ("recognizer",))
        counter("edge_mtl_gallery_refused_total",
                "Fleet gallery messages refused (another key, an incompatible recognizer, older).",
                [((), s.gallery.get("refused") or 0)])
    return out


class SnapshotCollector(Collector):
    """A prometheus-client collector over the latest published snapshot (`latest` is called once per scrape)."""

    def __init__(self, latest: Callable[[], Snapshot]) -> None:
        self._latest = latest

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self._latest())


def metrics_registry(latest: Callable[[], Snapshot]) -> CollectorRegistry:
    """A registry of its own (never the process-global one) holding the daemon's metrics: any HTTP server can
    expose it, with `exposition(registry)` or prometheus-client's own WSGI/ASGI apps."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(latest))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format (`CONTENT_TYPE_PROMETHEUS`)."""
    return bytes(generate_latest(registry))


def render_prometheus(s: Snapshot) -> str:
    """One snapshot in the Prometheus text format."""
    return exposition(metrics_registry(lambda: s)).decode()


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
                "detected": c.frames_detected,
                "rate_fps": round(c.rate_fps, 2),
                "target_fps": None if c.target_fps is None else round(c.target_fps, 2),
                "behind": c.behind,
                "latency_p50_p95_s": None if c.latency_s is None else [round(v, 3) for v in c.latency_s],
                **({"error": c.error} if c.error else {}),
            }
            for c in s.cameras
        },
        "forwarders": [asdict(f) for f in s.forwarders],
        "gallery": {"ok": s.gallery_ok, "people": s.gallery_people, "errors": s.gallery_errors},
        **({"fleet_gallery": dict(s.gallery)} if s.gallery is not None else {}),
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
