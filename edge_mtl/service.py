"""The daemon around the pipeline: sources, event sinks, forwarders, signals, systemd notify and watchdog, health.

What systemd sees (Type=notify, docs/operations.md):

- READY=1 only once the models are loaded, the event queue is open and every source has started; STATUS= lines
  with frames, fps, events, drops and camera problems every few seconds.
- WATCHDOG=1 only while the daemon really makes progress (`ProgressMonitor`): petting happens in the main loop
  after frames were processed, so a hung inference or a queue write that never returns stops it at once; and it
  also stops when no frame was processed for `service.watchdog_stall_s` while a source is open but delivers
  nothing (a wedged capture) or a capture thread died. A camera that is simply down and being reconnected with
  backoff is not a stall: restarting the daemon would not bring it back, and a restart loop would trip systemd's
  start limit and leave the unit dead after the camera returns. It shows on /health and in STATUS instead.
- SIGTERM/SIGINT: stop reading, let the batch in flight finish, end every track (face.left), commit those events,
  sync the JSONL log, give the forwarders the rest of `service.stop_timeout_s` to deliver, exit 0. Events are
  committed to the SQLite queue before anything else, so even a SIGKILL after the timeout loses none.
- SIGHUP: reload the gallery and the config file. Identity thresholds, the recognition schedule, the gender
  confidence floor, retention and the log level apply at once; every other changed setting is named in a warning
  and needs a restart. A config that no longer validates is logged and ignored (the daemon keeps running on the
  old one).
- /metrics (Prometheus) and /health (JSON, 200/503) on 127.0.0.1:`service.metrics_port`, only when it is set;
  otherwise the daemon opens no listening socket at all (edge_mtl.metrics).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from edge_mtl.config import AppConfig, CameraConfig
from edge_mtl.errors import InputError
from edge_mtl.metrics import (
    CameraSnapshot,
    ForwarderSnapshot,
    MetricsServer,
    Snapshot,
    StageSnapshot,
    check_loopback,
)
from edge_mtl.types import Event

log = logging.getLogger(__name__)

#: Settings a SIGHUP applies to the running daemon (dotted prefixes); everything else needs a restart.
LIVE_SETTINGS = (
    "identity.threshold",
    "identity.false_accept_rate",
    "identity.margin",
    "identity.min_observations",
    "recognition.",
    "attributes.",
    "events.retention_days",
    "events.retention_max_events",
    "log_level",
)
PRUNE_INTERVAL_S = 600.0
STATUS_INTERVAL_S = 5.0
SNAPSHOT_INTERVAL_S = 1.0
JSONL_SYNC_INTERVAL_S = 0.5


class SystemdNotifier:
    """sd_notify over $NOTIFY_SOCKET without a dependency; a no-op outside systemd.

    `watchdog_s` is the watchdog interval systemd asked for (WATCHDOG_USEC, for this process per WATCHDOG_PID),
    or None when no watchdog is configured, in which case WATCHDOG=1 is never sent.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self.sock: socket.socket | None = None
        self.addr = ""
        if addr and addr[0] in "@/":
            self.addr = "\0" + addr[1:] if addr.startswith("@") else addr
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        elif addr:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path; not notifying systemd", addr)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        for_us = not pid or (pid.isdigit() and int(pid) == os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and for_us else None

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def notify(self, msg: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto(msg.encode(), self.addr)
        except OSError as e:
            log.debug("sd_notify %r failed: %s", msg.split("\n", 1)[0], e)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class EventSink:
    """Durable queue first (an event exists once it is committed there), then the JSONL log and stdout.

    Also applies retention (events.retention_days / retention_max_events) when opened and every 10 minutes.
    """

    def __init__(self, cfg: AppConfig, print_events: bool = False) -> None:
        from edge_mtl.events.jsonl import JsonlLog
        from edge_mtl.events.queue import EventQueue

        ev = cfg.events
        self.cfg = cfg
        self.queue = EventQueue(ev.db)
        try:
            self.jsonl = JsonlLog(self.queue, ev.jsonl, ev.jsonl_max_bytes, ev.jsonl_backups) if ev.jsonl else None
        except BaseException:
            self.queue.close()
            raise
        self.print_events = print_events
        self.written = 0
        self.by_type: dict[str, int] = {}
        self.pruned = 0
        self._last_prune = -float("inf")

    def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self.queue.append(list(events))
        self.written += len(events)
        for e in events:
            self.by_type[e.type] = self.by_type.get(e.type, 0) + 1
        if self.print_events:
            from edge_mtl.events.schema import encode_event

            for e in events:
                sys.stdout.write(encode_event(e) + "\n")
            sys.stdout.flush()

    def flush(self) -> None:
        """Bring the JSONL log up to the queue (whole lines, fsync'd)."""
        if self.jsonl is not None:
            self.jsonl.sync()

    def prune(self, force: bool = False) -> int:
        """Retention by age and count, at most every PRUNE_INTERVAL_S unless forced: the queue's events, and the
        JSONL log's files by age (their size is bounded by rotation already)."""
        now = time.monotonic()
        if not force and now - self._last_prune < PRUNE_INTERVAL_S:
            return 0
        self._last_prune = now
        ev = self.cfg.events
        n = self.queue.prune(ev.retention_days * 86400.0, ev.retention_max_events)
        self.pruned += n
        if self.jsonl is not None:
            self._age_out_jsonl(ev.retention_days * 86400.0, ev.jsonl_backups)
        return n

    def _age_out_jsonl(self, max_age_s: float, backups: int) -> None:
        """Whole files leave the JSONL log by age: a rotated file once its newest line (its mtime) is older than
        `max_age_s`; the active file is rotated once its oldest line is older than max_age_s / (backups + 1), so no
        file spans more than that. A line is thus gone at most max_age_s * (1 + 1 / (backups + 1)) after it was
        written (docs/privacy.md), or sooner when rotation by size pushes it out."""
        assert self.jsonl is not None
        path = self.jsonl.path
        cutoff = time.time() - max_age_s
        oldest = _first_line_time(path)
        if oldest is not None and oldest < time.time() - max_age_s / (backups + 1):
            log.info("%s: oldest line is from %s; rotating (events.retention_days)", path,
                     time.strftime("%Y-%m-%d %H:%M", time.gmtime(oldest)))
            self.jsonl.rotate()
        for p in path.parent.glob(path.name + ".*"):
            if not p.name[len(path.name) + 1 :].isdigit():
                continue
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    log.info("deleted %s: every line in it is older than events.retention_days", p)
            except FileNotFoundError:
                continue

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self.jsonl is not None:
                self.jsonl.close()
            self.queue.close()


def _first_line_time(path: Path) -> float | None:
    """Capture time (epoch seconds) of the first event in a JSONL file; None if empty or unreadable."""
    try:
        with path.open("rb") as f:
            line = f.readline(65536)
        ts = json.loads(line)["ts"]
        return datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cameras_from_args(args: argparse.Namespace, cfg: AppConfig) -> list[CameraConfig]:
    sources = getattr(args, "source", None) or []
    if not sources:
        if not cfg.cameras:
            raise InputError("no source: give --source FILE|rtsp://...|/dev/videoN or [[cameras]] in --config")
        cams = list(cfg.cameras)
    else:
        names = getattr(args, "camera", None) or []
        cams = [
            CameraConfig(
                name=names[i] if i < len(names) else f"cam{i}",
                source=s,
                loop=bool(getattr(args, "loop", False)),
                realtime=bool(getattr(args, "realtime", False)),
            )
            for i, s in enumerate(sources)
        ]
    return cams


def apply_run_args(args: argparse.Namespace, cfg: AppConfig) -> AppConfig:
    """`edge-mtl run` options that override the config file (the CLI applies the model options itself)."""
    if getattr(args, "events", None):
        cfg.events.db = args.events
    if getattr(args, "jsonl", None):
        cfg.events.jsonl = args.jsonl
    if getattr(args, "gallery", None):
        cfg.identity.gallery = args.gallery
    return cfg


class Annotator:
    """Writes one annotated video per camera (`--annotate out.mp4`; more cameras: out.<camera>.mp4)."""

    def __init__(self, path: Path, cameras: Sequence[str]) -> None:
        self.path = path
        self.multi = len(cameras) > 1
        self.writers: dict[str, Any] = {}

    def write(self, camera: str, image: Any, labels: Any, fps: float, header: str) -> None:
        import cv2

        from edge_mtl.vision.draw import draw_labels

        w = self.writers.get(camera)
        if w is None:
            p = self.path.with_name(f"{self.path.stem}.{camera}{self.path.suffix}") if self.multi else self.path
            p.parent.mkdir(parents=True, exist_ok=True)
            h, wd = image.shape[:2]
            w = cv2.VideoWriter(str(p), cv2.VideoWriter.fourcc(*"mp4v"), fps or 25.0, (wd, h))
            if not w.isOpened():
                raise InputError(f"{p}: cannot write video")
            self.writers[camera] = w
        w.write(draw_labels(image, labels, header))

    def close(self) -> None:
        for w in self.writers.values():
            w.release()


# ------------------------------------------------------------------ progress (watchdog policy)
@dataclass
class _SourceSeen:
    frames_read: int
    attempts: int
    connected: bool
    changed: float  # monotonic time of the last change of any of the above


class ProgressMonitor:
    """Decides whether the daemon is making progress, i.e. whether to pet the systemd watchdog.

    Per camera, from its capture stats: `delivering` (open, a frame within `stall_s`), `reconnecting` (closed and
    retrying: its attempt counter moves at least every backoff cap + open timeout), `stalled` (open but silent for
    `stall_s`, or a reconnect loop that stopped moving: the capture thread is wedged in a call that cannot be
    interrupted), `failed` (the capture thread died), `finished` (a file ended). Progress means no camera is stalled
    or failed, and a frame was processed within `stall_s` unless every unfinished camera is reconnecting.

    Keep each camera's `watchdog_s` (capture read timeout) below `stall_s`, or an outage looks like a stall until
    the capture gives up on the connection.
    """

    def __init__(self, stall_s: float, cameras: Sequence[CameraConfig], now: float) -> None:
        self.stall_s = float(stall_s)
        self.cams = {c.name: c for c in cameras}
        self.seen: dict[str, _SourceSeen] = {}
        self.frames = -1
        self.last_processed = now
        self.states: dict[str, str] = {}
        self.problems: list[str] = []
        self.progressing = True

    def _grace(self, name: str) -> float:
        cam = self.cams.get(name)
        if cam is None:
            return self.stall_s
        return self.stall_s + 1.1 * cam.reconnect_max_s + cam.watchdog_s

    def update(self, now: float, frames_processed: int, stats: Sequence[Mapping[str, Any]]) -> bool:
        if frames_processed != self.frames:
            self.frames = frames_processed
            self.last_processed = now
        states: dict[str, str] = {}
        problems: list[str] = []
        for st in stats:
            name = str(st["name"])
            reads, attempts, conn = int(st["frames_read"]), int(st["reconnect_attempts"]), bool(st["connected"])
            prev = self.seen.get(name)
            if prev is None or (prev.frames_read, prev.attempts, prev.connected) != (reads, attempts, conn):
                self.seen[name] = prev = _SourceSeen(reads, attempts, conn, now)
            quiet = now - prev.changed
            age = st.get("last_frame_age_s")
            if st.get("finished"):
                if st.get("error"):
                    states[name] = "failed"
                    problems.append(f"{name}: capture failed: {st['error']}")
                else:
                    states[name] = "finished"
            elif conn:
                if (age is not None and age < self.stall_s) or quiet < self.stall_s:
                    states[name] = "delivering"
                else:
                    states[name] = "stalled"
                    problems.append(f"{name}: stalled: open but no frame for {quiet:.0f} s")
            elif quiet < self._grace(name):
                states[name] = "reconnecting"
                since = f" (no frame for {age:.0f} s)" if age is not None else ""
                problems.append(f"{name}: reconnecting{since}")
            else:
                states[name] = "stalled"
                problems.append(f"{name}: stalled: reconnect loop silent for {quiet:.0f} s")
        self.states = states
        idle = now - self.last_processed
        waiting = all(s in ("reconnecting", "finished") for s in states.values())
        bad = any(s in ("stalled", "failed") for s in states.values())
        if idle >= self.stall_s and not waiting:
            problems.append(f"no frame processed for {idle:.0f} s")
        self.problems = problems
        self.progressing = not bad and (idle < self.stall_s or waiting)
        return self.progressing


# ------------------------------------------------------------------ config reload
def _flatten(d: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], d


def config_changes(old: AppConfig, new: AppConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted setting -> (old, new) for every difference; lists (cameras, forwarders) compare as a whole."""
    a, b = dict(_flatten(old.model_dump(mode="json"))), dict(_flatten(new.model_dump(mode="json")))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def is_live(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in LIVE_SETTINGS)


# ------------------------------------------------------------------ the service
class Service:
    """One run of the daemon; `run()` returns the exit code. Build with `run_service`."""

    def __init__(
        self,
        args: argparse.Namespace,
        cfg: AppConfig,
        reload_config: Callable[[], AppConfig] | None = None,
    ) -> None:
        self.args = args
        self.cfg = apply_run_args(args, cfg)
        self.reload_config = reload_config
        self.cams = cameras_from_args(args, self.cfg)
        self.notifier = SystemdNotifier()
        self.stop_event = threading.Event()
        self.reload_flag = threading.Event()
        self.wake = threading.Event()
        self.sources: list[Any] = []
        self.forwarders: list[Any] = []
        self.sink: EventSink | None = None
        self.pipeline: Any = None
        self.metrics: MetricsServer | None = None
        self.annotate: Annotator | None = None
        self.ready = False
        self.stopping = False
        self.reloads = 0
        self.reload_errors = 0
        self.started = self.t0 = time.monotonic()
        self.monitor = ProgressMonitor(self.cfg.service.watchdog_stall_s, self.cams, self.t0)
        from edge_mtl.capture.rate import RateMonitor

        self.rates = RateMonitor({c.name: c for c in self.cams})
        self._old_handlers: dict[int, Any] = {}
        self._stop_requested_at: float | None = None
        self._fps_base: tuple[float, int, dict[str, int]] = (self.t0, 0, {})
        self._cam_fps: dict[str, float] = {}
        self._fps = 0.0
        self.exit_code = 0

    # -- signals -------------------------------------------------------------------------------------------
    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stop_event.is_set():
            self._stop_requested_at = time.monotonic()
            log.info("signal %s: stopping (drain and flush within %.0f s)", signal.Signals(signum).name,
                     self.cfg.service.stop_timeout_s)
        self.stop_event.set()
        self.wake.set()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self.reload_flag.set()
        self.wake.set()

    def _install_signals(self) -> None:
        """Handlers first, so a SIGHUP or SIGTERM during model loading is handled, not fatal."""
        if threading.current_thread() is not threading.main_thread():
            return
        wanted: list[tuple[int, Any]] = [(signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop)]
        if hasattr(signal, "SIGHUP"):
            wanted.append((signal.SIGHUP, self._on_hup))
        for sig, handler in wanted:
            self._old_handlers[sig] = signal.signal(sig, handler)

    def _restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            with suppress(ValueError, TypeError):
                signal.signal(sig, handler)
        self._old_handlers.clear()

    # -- start ---------------------------------------------------------------------------------------------
    def _start(self) -> None:
        from edge_mtl.capture import open_source
        from edge_mtl.capture.rate import decode_options
        from edge_mtl.models_registry import load_detector, load_recognizer
        from edge_mtl.pipeline import Pipeline

        cfg = self.cfg
        self._apply_log_level()
        svc = cfg.service
        if svc.metrics_port is not None:
            check_loopback(svc.metrics_host)
        for c in self.cams:
            if c.watchdog_s >= svc.watchdog_stall_s:
                log.warning("camera %s: watchdog_s %.0f >= service.watchdog_stall_s %.0f: an outage of this camera "
                            "counts as a stall until its capture times out", c.name, c.watchdog_s,
                            svc.watchdog_stall_s)
        self.notifier.notify("STATUS=loading models")
        detector = load_detector(cfg)
        recognizer = load_recognizer(cfg)  # (TensorRT: may build engines for minutes on a first start)
        if self.stop_event.is_set():
            # Stopped while loading: nothing accepted yet, so leave the queue and the events log untouched.
            log.info("stop requested while loading models: not starting sources")
            return
        gallery = cfg.identity.gallery
        if gallery is not None and not Path(gallery).exists():
            if getattr(self.args, "gallery", None):  # named on the command line: most likely a typo
                raise InputError(f"{gallery}: no such gallery (enrol people with 'edge-mtl enroll')")
            log.warning("gallery %s does not exist yet: everyone is unknown until people are enrolled (it is "
                        "picked up without a restart)", gallery)
        max_frames = getattr(self.args, "max_frames", None)
        # Sources before event files: a missing or unreadable video fails (InputError) before the queue or the
        # JSONL log is touched. Until the pipeline runs, frames wait in the sources' small buffers.
        self.notifier.notify("STATUS=starting sources")
        if svc.opencv_threads:
            import cv2

            cv2.setNumThreads(svc.opencv_threads)
        size = cfg.detector.input_size
        for s in [open_source(c, max_frames=max_frames, decode=decode_options(c, len(self.cams), size))
                  for c in self.cams]:
            s.add_waker(self.wake)
            self.sources.append(s)
            s.start()
        self.sink = EventSink(cfg, print_events=bool(getattr(self.args, "print_events", False)))
        self.sink.prune(force=True)
        for fw in cfg.forwarders:
            from edge_mtl.events.mqtt import MqttForwarder

            self.forwarders.append(MqttForwarder(Path(cfg.events.db), fw))
        self.pipeline = Pipeline(cfg, detector, recognizer, cameras=self.cams)
        if getattr(self.args, "annotate", None):
            self.annotate = Annotator(self.args.annotate, [c.name for c in self.cams])
        if svc.metrics_port is not None:
            self.metrics = MetricsServer(svc.metrics_host, svc.metrics_port)
        for f in self.forwarders:
            f.start()
        if self.metrics is not None:
            self.metrics.start()
        self.ready = True
        self.t0 = time.monotonic()
        self.monitor = ProgressMonitor(svc.watchdog_stall_s, self.cams, self.t0)
        self._fps_base = (self.t0, 0, {})
        self._publish(self.t0)
        self.notifier.notify(f"READY=1\nSTATUS={self._status_line()}")
        log.info("ready: %d camera(s), %d forwarder(s)%s", len(self.sources), len(self.forwarders),
                 f", metrics on {svc.metrics_host}:{self.metrics.port}" if self.metrics else "")

    def _apply_log_level(self) -> None:
        if getattr(self.args, "log_level", None) is None:
            logging.getLogger().setLevel(self.cfg.log_level)

    # -- main loop -----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        assert self.sink is not None and self.pipeline is not None
        sink, pipeline = self.sink, self.pipeline
        ended: set[str] = set()
        lost: set[str] = set()  # live cameras whose stream is down and whose tracks were ended
        last_flush = last_status = last_snap = last_pet = time.monotonic()
        pet_every = None if self.notifier.watchdog_s is None else max(0.05, self.notifier.watchdog_s / 4)
        while not self.stop_event.is_set():
            if self.reload_flag.is_set():
                self.reload_flag.clear()
                self._reload()
            self.wake.clear()
            frames: list[Any] = []
            for s in self.sources:
                if s.name in ended:
                    continue
                f = s.read(timeout=0.0)
                if f is not None:
                    lost.discard(s.name)
                    frames.append(f)
                elif s.finished:
                    ended.add(s.name)
                    sink.write(pipeline.finish(s.name))
                    err = s.stats().get("error")
                    if err:
                        log.error("camera %s: capture thread failed: %s", s.name, err)
                        self.exit_code = 1
                elif getattr(s, "reconnecting", False) and s.name not in lost and not s.stats()["connected"]:
                    # A camera that lost its stream: nobody is followed through an outage of unknown length (the
                    # tracker counts frames, not seconds). face.left now, new tracks once frames flow again.
                    lost.add(s.name)
                    gone = pipeline.finish(s.name)
                    if gone:
                        log.info("camera %s: stream lost; ended %d track(s)", s.name, len(gone))
                    sink.write(gone)
            if frames:
                sink.write(pipeline.process(frames))
                if self.annotate is not None:
                    for fr in frames:
                        st = next(x for x in self.sources if x.name == fr.camera).stats()
                        self.annotate.write(fr.camera, fr.image, pipeline.labels(fr.camera),
                                            float(st.get("fps") or 25), f"{fr.camera} frame {fr.index}")
            if len(ended) == len(self.sources):
                break
            now = time.monotonic()
            if now - last_flush >= JSONL_SYNC_INTERVAL_S:
                sink.flush()
                sink.prune()
                last_flush = now
            if now - last_snap >= SNAPSHOT_INTERVAL_S or (pet_every is not None and now - last_pet >= pet_every):
                progressing = self.monitor.update(now, pipeline.counters["frames"], [s.stats() for s in self.sources])
                if pet_every is not None and now - last_pet >= pet_every and progressing:
                    self.notifier.notify("WATCHDOG=1")
                    last_pet = now
                if now - last_snap >= SNAPSHOT_INTERVAL_S:
                    self._publish(now)
                    last_snap = now
            if now - last_status >= STATUS_INTERVAL_S:
                self.notifier.notify(f"STATUS={self._status_line()}")
                last_status = now
            if not frames:
                self.wake.wait(0.05)

    # -- reload --------------------------------------------------------------------------------------------
    def _reload(self) -> None:
        """SIGHUP: gallery and the live part of the config; say what else changed and needs a restart."""
        self.notifier.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            if self.pipeline is not None:
                self.pipeline.reload_gallery(force=True)
            if self.reload_config is None:
                log.info("SIGHUP: gallery reloaded (no config file to reload)")
                self.reloads += 1
                return
            try:
                new = apply_run_args(self.args, self.reload_config())
            except InputError as e:
                self.reload_errors += 1
                log.error("SIGHUP: config not reloaded, still running on the previous one: %s", e)
                return
            changes = config_changes(self.cfg, new)
            if getattr(self.args, "source", None):
                changes = {k: v for k, v in changes.items() if k != "cameras"}
            live = {k: v for k, v in changes.items() if is_live(k)}
            later = sorted(k for k in changes if not is_live(k))
            self.cfg.identity.threshold = new.identity.threshold
            self.cfg.identity.false_accept_rate = new.identity.false_accept_rate
            self.cfg.identity.margin = new.identity.margin
            self.cfg.identity.min_observations = new.identity.min_observations
            self.cfg.recognition = new.recognition
            self.cfg.attributes = new.attributes
            self.cfg.events.retention_days = new.events.retention_days
            self.cfg.events.retention_max_events = new.events.retention_max_events
            self.cfg.log_level = new.log_level
            self._apply_log_level()
            if self.pipeline is not None:
                self.pipeline.apply_identity_settings()
            self.reloads += 1
            if live:
                log.info("SIGHUP: applied %s", ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in live.items()))
            else:
                log.info("SIGHUP: gallery reloaded; no live setting changed")
            if later:
                log.warning("SIGHUP: changed settings that need a restart (systemctl restart edge-mtl): %s",
                            ", ".join(later))
        finally:
            self.notifier.notify("READY=1")

    # -- snapshots -----------------------------------------------------------------------------------------
    def _publish(self, now: float) -> Snapshot:
        snap = self.snapshot(now)
        if self.metrics is not None:
            self.metrics.publish(snap)
        return snap

    def snapshot(self, now: float) -> Snapshot:
        """Numbers for /metrics, /health and STATUS (main thread only: it reads the queue and the pipeline)."""
        p, sink = self.pipeline, self.sink
        frames = int(p.counters["frames"]) if p is not None else 0
        cam_frames = {n: c.frames for n, c in p.cameras.items()} if p is not None else {}
        t_base, f_base, c_base = self._fps_base
        if now - t_base >= 1.0:
            dt = now - t_base
            self._fps = (frames - f_base) / dt
            self._cam_fps = {n: (v - c_base.get(n, 0)) / dt for n, v in cam_frames.items()}
            self._fps_base = (now, frames, dict(cam_frames))
        stats = {s.name: s.stats() for s in self.sources}
        counted = {n: (c.detected if c.detect_fps is not None else c.frames)
                   for n, c in (p.cameras if p is not None else {}).items()}
        rates = self.rates.update(
            now, counted,
            {n: st.get("fps") for n, st in stats.items()},
            {n: self.monitor.states.get(n) == "delivering" for n in stats})
        cams = []
        for s in self.sources:
            st = stats[s.name]
            pc = p.cameras.get(s.name) if p is not None else None
            r = rates[s.name]
            cams.append(CameraSnapshot(
                name=s.name, kind=str(st.get("kind", "")), frames_processed=pc.frames if pc else 0,
                faces=pc.faces if pc else 0, frames_read=int(st["frames_read"]),
                frames_dropped=int(st["frames_dropped"]), frames_corrupt=int(st["frames_corrupt"]),
                reconnects=int(st["reconnects"]), reconnect_attempts=int(st["reconnect_attempts"]),
                connected=bool(st["connected"]), finished=bool(st["finished"]),
                last_frame_age_s=st.get("last_frame_age_s"), fps=self._cam_fps.get(s.name, 0.0),
                error=st.get("error"), state=self.monitor.states.get(s.name, "starting"),
                frames_detected=pc.detected if pc else 0, rate_fps=r.fps, target_fps=r.target_fps,
                behind=r.behind, behind_episodes=r.episodes,
            ))
        stages: dict[str, StageSnapshot] = {}
        if p is not None:
            for stage, samples in p.timer.samples.items():
                if samples:
                    a = np.asarray(samples, dtype=np.float64)
                    stages[stage] = StageSnapshot(float(np.percentile(a, 50)), float(np.percentile(a, 95)),
                                                  float(p.timer.totals.get(stage, 0.0)),
                                                  int(p.timer.counts.get(stage, 0)))
        last_seq, first_seq, consumers = 0, 1, {}
        if sink is not None:
            last_seq, first_seq, consumers = sink.queue.last_seq(), sink.queue.first_seq(), sink.queue.cursors()
        serving = any(c.state == "delivering" for c in cams)
        problems = list(self.monitor.problems)
        if self.ready and cams and not serving and not problems:
            problems.append("no camera is delivering frames")
        return Snapshot(
            time=time.time(), uptime_s=now - self.started, ready=self.ready, stopping=self.stopping,
            progressing=self.monitor.progressing, serving=serving, problems=problems,
            frames=frames, faces=int(p.counters["faces"]) if p is not None else 0,
            analyses=int(p.counters["analyses"]) if p is not None else 0, fps=self._fps,
            events=dict(sink.by_type) if sink is not None else {}, cameras=cams, stages=stages,
            queue_last_seq=last_seq, queue_first_seq=first_seq, consumers=consumers,
            forwarders=[ForwarderSnapshot(f.cursor_name, f.connected, f.delivered_seq, f.last_error)
                        for f in self.forwarders],
            reloads=self.reloads, reload_errors=self.reload_errors,
            pruned=sink.pruned if sink is not None else 0,
            models=[(m.kind, m.version, m.precision) for m in (p.detector.meta, p.recognizer.meta)] if p else [],
            identity_threshold=p.identity_threshold if p is not None else None,
        )

    def _status_line(self) -> str:
        p, sink = self.pipeline, self.sink
        frames = int(p.counters["frames"]) if p is not None else 0
        drops = sum(int(s.stats()["frames_dropped"]) for s in self.sources)
        corrupt = sum(int(s.stats()["frames_corrupt"]) for s in self.sources)
        events = sink.written if sink is not None else 0
        line = (f"frames={frames} fps={self._fps:.1f} events={events} drops={drops} corrupt={corrupt} "
                f"cameras={len(self.sources)}")
        if self.monitor.problems:
            line += " problems: " + "; ".join(self.monitor.problems[:3])
        return line

    # -- stop ----------------------------------------------------------------------------------------------
    def _shutdown(self, raise_errors: bool) -> None:
        """Drain and flush within service.stop_timeout_s; every step runs even if an earlier one failed."""
        self.stopping = True
        started = self._stop_requested_at or time.monotonic()
        deadline = started + self.cfg.service.stop_timeout_s
        if self.ready:
            self.notifier.notify("STOPPING=1\nSTATUS=stopping: ending tracks, flushing events")

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        errors: list[BaseException] = []

        def step(what: str, fn: Callable[[], Any]) -> None:
            try:
                fn()
            except Exception as e:  # keep shutting down; the first error is re-raised at the end
                log.error("while stopping (%s): %s: %s", what, type(e).__name__, e)
                errors.append(e)

        for s in self.sources:
            s.request_stop()
        def stopper(src: Any) -> Callable[[], Any]:
            return lambda: src.stop(timeout=min(2.0, 0.2 * left()))

        for s in self.sources:
            step(f"stop {s.name}", stopper(s))
        sink, pipeline = self.sink, self.pipeline
        if sink is not None and pipeline is not None:
            step("end tracks", lambda: sink.write(pipeline.finish()))
        if sink is not None:
            step("sync JSONL", sink.flush)
        if self.forwarders:
            budget = max(0.5, left() - 0.5)
            threads = [threading.Thread(target=f.stop, kwargs={"timeout": budget}, name="stop-forwarder", daemon=True)
                       for f in self.forwarders]
            for t in threads:
                t.start()
            for t in threads:
                t.join(budget + 1.0)
        if self.metrics is not None:
            step("metrics", self.metrics.stop)
        if self.annotate is not None:
            step("annotate", self.annotate.close)
        if self.sink is not None:
            step("close queue", self.sink.close)
        if self.pipeline is not None:
            step("pipeline", self.pipeline.close)
        self.notifier.close()
        if self._stop_requested_at is not None:
            took = time.monotonic() - self._stop_requested_at
            (log.info if took <= self.cfg.service.stop_timeout_s else log.warning)(
                "stopped in %.1f s (service.stop_timeout_s = %.0f)", took, self.cfg.service.stop_timeout_s)
        if errors and raise_errors:
            raise errors[0]

    def _summary(self) -> None:
        p, sink = self.pipeline, self.sink
        if p is None or sink is None:
            return
        dt = time.monotonic() - self.t0
        c = p.counters
        log.info(
            "processed %d frames in %.1fs (%.2f fps), %d faces, %d analyses, %d events; stages: %s",
            c["frames"], dt, c["frames"] / max(dt, 1e-9), c["faces"], c["analyses"], sink.written,
            p.timer.summary(),
        )
        if p.batch_sizes:
            log.info("recognizer batches (faces per call: calls): %s", dict(sorted(p.batch_sizes.items())))
        for s in self.sources:
            log.info("source %s: %s", s.name, s.stats())

    def run(self) -> int:
        if self.cfg.service.malloc_arenas:
            limit_malloc_arenas(self.cfg.service.malloc_arenas)
        self._install_signals()
        try:
            try:
                self._start()
                if not self.stop_event.is_set():
                    self._loop()
            except BaseException:
                self._shutdown(raise_errors=False)
                raise
            self._shutdown(raise_errors=True)
            self._summary()
        finally:
            self._restore_signals()
        return self.exit_code


def limit_malloc_arenas(n: int) -> bool:
    """Cap glibc's malloc arenas at `n` (mallopt M_ARENA_MAX, what MALLOC_ARENA_MAX=n does), before the capture
    threads start. glibc gives threads that allocate at the same time arenas of their own, up to 8 per core; the
    capture threads' frame buffers (6 MB per 1080p frame) left freed but unreturnable holes in them, and the
    10-minute soak's RSS climbed 316 -> 482 MB; with 2 arenas it stayed flat (docs/operations.md). Returns whether
    the cap was applied: not when MALLOC_ARENA_MAX is set (it wins) or the C library is not glibc."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_arena_max = -8  # from glibc's malloc.h
    ok = bool(mallopt(m_arena_max, int(n)))
    log.debug("malloc arenas capped at %d: %s", n, ok)
    return ok


def run_service(
    args: argparse.Namespace, cfg: AppConfig, reload_config: Callable[[], AppConfig] | None = None
) -> int:
    """`edge-mtl run`: process sources until they end (files) or until SIGTERM; returns the exit code.

    `reload_config` re-reads the configuration (with the command line's overrides) on SIGHUP; without it a
    SIGHUP reloads the gallery only.
    """
    return Service(args, cfg, reload_config).run()
