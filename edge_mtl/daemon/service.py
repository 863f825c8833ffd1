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
- /metrics (Prometheus) and /health (JSON, 200/503) on 127.0.0.1:`service.metrics_port`, only when it is set,
  and with `api.enabled` the events API and live page on the same server (edge_mtl.web); otherwise the daemon
  opens no listening socket at all.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_mtl.config import AppConfig, CameraConfig
from edge_mtl.daemon.annotate import Annotator
from edge_mtl.daemon.metrics import (
    CameraSnapshot,
    ForwarderSnapshot,
    Snapshot,
    StageSnapshot,
)
from edge_mtl.daemon.notify import SystemdNotifier
from edge_mtl.daemon.preflight import check_run_config
from edge_mtl.daemon.progress import ProgressMonitor
from edge_mtl.daemon.reload import config_changes, is_live
from edge_mtl.errors import InputError
from edge_mtl.events.dbfaults import db_guard
from edge_mtl.events.sink import EventSink
from edge_mtl.threads import thread_name

if TYPE_CHECKING:
    from edge_mtl.web.server import WebServer

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 5.0
SNAPSHOT_INTERVAL_S = 1.0
JSONL_SYNC_INTERVAL_S = 0.5


@dataclass(frozen=True)
class RunOptions:
    """What `edge-mtl run` adds to the config file: sources, event and gallery paths, and per-run switches."""

    sources: Sequence[str] = ()
    camera_names: Sequence[str] = ()  # one per source; default cam0, cam1, ...
    loop: bool = False  # loop file sources
    realtime: bool = False  # pace file sources at their native frame rate
    events: Path | None = None  # overrides events.db
    jsonl: Path | None = None  # overrides events.jsonl
    gallery: Path | None = None  # overrides identity.gallery (and must then exist)
    max_frames: int | None = None  # per source
    print_events: bool = False  # also write events to stdout as JSON lines
    annotate: Path | None = None  # an annotated video (one per camera)
    log_level_given: bool = False  # the log level was set on the command line: the config's log_level yields


def cameras_for(opts: RunOptions, cfg: AppConfig) -> list[CameraConfig]:
    """The cameras to run: the options' sources, else the config's [[cameras]]."""
    if not opts.sources:
        if not cfg.cameras:
            raise InputError("no source: give --source FILE|rtsp://...|/dev/videoN or [[cameras]] in --config")
        return list(cfg.cameras)
    names = list(opts.camera_names)
    return [
        CameraConfig(name=names[i] if i < len(names) else f"cam{i}", source=s, loop=opts.loop,
                     realtime=opts.realtime)
        for i, s in enumerate(opts.sources)
    ]


def apply_overrides(opts: RunOptions, cfg: AppConfig) -> AppConfig:
    """The options that override the config file (the command applies the model options itself)."""
    cfg.events.db = opts.events or cfg.events.db
    cfg.events.jsonl = opts.jsonl or cfg.events.jsonl
    cfg.identity.gallery = opts.gallery or cfg.identity.gallery
    return cfg


# ------------------------------------------------------------------ the service
class Service:
    """One run of the daemon; `run()` returns the exit code. Build with `run_service`."""

    def __init__(
        self,
        opts: RunOptions,
        cfg: AppConfig,
        reload_config: Callable[[], AppConfig] | None = None,
    ) -> None:
        self.opts = opts
        self.cfg = apply_overrides(opts, cfg)
        self.reload_config = reload_config
        self.cams = cameras_for(opts, self.cfg)
        self.notifier = SystemdNotifier()
        self.stop_event = threading.Event()
        self.reload_flag = threading.Event()
        self.wake = threading.Event()
        self.sources: list[Any] = []
        self.forwarders: list[Any] = []
        self.gallery_sync: Any = None  # edge_mtl.fleet.gallery.GallerySync with [fleet.gallery]
        self.sink: EventSink | None = None
        self.pipeline: Any = None
        self.metrics: WebServer | None = None
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
        from edge_mtl.pipeline import Pipeline
        from edge_mtl.runtime.registry import load_detector, load_recognizer

        cfg, opts = self.cfg, self.opts
        self._apply_log_level()
        svc = cfg.service
        check_run_config(cfg, self.cams)  # the checks check-config makes too (edge_mtl.daemon.preflight)
        api_token = None
        if svc.metrics_port is not None:  # checked by check_run_config: the API's token, where it may listen
            from edge_mtl.web.auth import resolve_token

            api_token = resolve_token(cfg)
        for c in self.cams:
            if c.watchdog_s >= svc.watchdog_stall_s:
                log.warning("camera %s: watchdog_s %.0f >= service.watchdog_stall_s %.0f: an outage of this camera "
                            "counts as a stall until its capture times out", c.name, c.watchdog_s,
                            svc.watchdog_stall_s)
        self.notifier.notify("STATUS=loading models")
        with thread_name("onnxrt"):  # the inference pools' threads, started now, inherit this name
            detector = load_detector(cfg)
            recognizer = load_recognizer(cfg)  # (TensorRT: may build engines for minutes on a first start)
        if self.stop_event.is_set():
            # Stopped while loading: nothing accepted yet, so leave the queue and the events log untouched.
            log.info("stop requested while loading models: not starting sources")
            return
        gallery = cfg.identity.gallery
        if gallery is not None and not Path(gallery).exists():
            if opts.gallery:  # named on the command line: most likely a typo
                raise InputError(f"{gallery}: no such gallery (enrol people with 'edge-mtl enroll')")
            log.warning("gallery %s does not exist yet: everyone is unknown until people are enrolled (it is "
                        "picked up without a restart)", gallery)
        max_frames = opts.max_frames
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
        self.sink = EventSink(cfg, print_events=opts.print_events)
        self.sink.prune(force=True)
        for fw in cfg.forwarders:
            from edge_mtl.events.mqtt import MqttForwarder

            self.forwarders.append(MqttForwarder(Path(cfg.events.db), fw, box=cfg.fleet.box, site=cfg.fleet.site))
        self.pipeline = Pipeline(cfg, detector, recognizer, snapshots=self.sink.snapshots, cameras=self.cams)
        if cfg.fleet.gallery is not None:
            from edge_mtl.fleet.gallery import start_gallery_sync

            self.gallery_sync = start_gallery_sync(cfg, recognizer.meta)
        if opts.annotate:
            self.annotate = Annotator(opts.annotate, [c.name for c in self.cams])
        if svc.metrics_port is not None:
            from edge_mtl.web.server import WebServer

            self.metrics = WebServer(cfg, api_token)
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
        if not self.opts.log_level_given:
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
            if self.gallery_sync is not None and self.gallery_sync.take_swap():
                pipeline.reopen_gallery()
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
                new = apply_overrides(self.opts, self.reload_config())
            except InputError as e:
                self.reload_errors += 1
                log.error("SIGHUP: config not reloaded, still running on the previous one: %s", e)
                return
            changes = config_changes(self.cfg, new)
            if self.opts.sources:
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
            live = bool(getattr(s, "live", False))  # offline files are stamped in media time: no latency
            cams.append(CameraSnapshot(
                name=s.name, kind=str(st.get("kind", "")), frames_processed=pc.frames if pc else 0,
                faces=pc.faces if pc else 0, frames_read=int(st["frames_read"]),
                frames_dropped=int(st["frames_dropped"]), frames_corrupt=int(st["frames_corrupt"]),
                reconnects=int(st["reconnects"]), reconnect_attempts=int(st["reconnect_attempts"]),
                connected=bool(st["connected"]), finished=bool(st["finished"]),
                last_frame_age_s=st.get("last_frame_age_s"), fps=self._cam_fps.get(s.name, 0.0),
                error=st.get("error"), state=self.monitor.states.get(s.name, "starting"),
                frames_detected=pc.detected if pc else 0, rate_fps=r.fps, target_fps=r.target_fps,
                behind=r.behind, behind_episodes=r.episodes, latency_s=pc.latency_quantiles() if pc and live else None,
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
            with db_guard(sink.queue.path, "event queue"):
                last_seq, first_seq, consumers = sink.queue.last_seq(), sink.queue.first_seq(), sink.queue.cursors()
        serving = any(c.state == "delivering" for c in cams)
        problems = list(self.monitor.problems)
        gallery = p.gallery if p is not None else None  # a damaged gallery costs identification only: degraded
        if gallery is not None and gallery.problem:
            problems.append(gallery.problem)
        if self.ready and cams and not serving and not problems:
            problems.append("no camera is delivering frames")
        return Snapshot(
            time=time.time(), uptime_s=now - self.started, ready=self.ready, stopping=self.stopping,
            progressing=self.monitor.progressing, serving=serving, problems=problems,
            frames=frames, faces=int(p.counters["faces"]) if p is not None else 0,
            analyses=int(p.counters["analyses"]) if p is not None else 0, fps=self._fps,
            events=dict(sink.by_type) if sink is not None else {}, cameras=cams, stages=stages,
            queue_last_seq=last_seq, queue_first_seq=first_seq, consumers=consumers,
            forwarders=[ForwarderSnapshot(f.cursor_name, f.connected, f.delivered_seq, f.last_error, f.replayed)
                        for f in self.forwarders],
            reloads=self.reloads, reload_errors=self.reload_errors,
            pruned=sink.pruned if sink is not None else 0,
            models=[(m.kind, m.version, m.precision) for m in (p.detector.meta, p.recognizer.meta)] if p else [],
            identity_threshold=p.identity_threshold if p is not None else None,
            gallery=self.gallery_sync.state() if self.gallery_sync is not None else None,
            gallery_people=gallery.people if gallery is not None and gallery.path is not None else None,
            gallery_ok=gallery is None or gallery.problem is None,
            gallery_errors=gallery.errors if gallery is not None else 0,
        )

    def _status_line(self) -> str:
        p, sink = self.pipeline, self.sink
        frames = int(p.counters["frames"]) if p is not None else 0
        drops = sum(int(s.stats()["frames_dropped"]) for s in self.sources)
        corrupt = sum(int(s.stats()["frames_corrupt"]) for s in self.sources)
        events = sink.written if sink is not None else 0
        line = (f"frames={frames} fps={self._fps:.1f} events={events} drops={drops} corrupt={corrupt} "
                f"cameras={len(self.sources)}")
        problems = list(self.monitor.problems)
        if p is not None and p.gallery.problem:
            problems.append("gallery unusable, last good one in use")
        if problems:
            line += " problems: " + "; ".join(problems[:3])
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
        if self.gallery_sync is not None:
            step("fleet gallery", self.gallery_sync.stop)
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
    opts: RunOptions, cfg: AppConfig, reload_config: Callable[[], AppConfig] | None = None
) -> int:
    """`edge-mtl run`: process sources until they end (files) or until SIGTERM; returns the exit code.

    `reload_config` re-reads the configuration (with the command line's overrides) on SIGHUP; without it a
    SIGHUP reloads the gallery only.
    """
    return Service(opts, cfg, reload_config).run()
