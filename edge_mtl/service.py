"""The daemon around the pipeline: sources, event sinks, forwarders, signals, systemd notify and watchdog.

- READY=1 once models are loaded and sources started; STATUS= with frames, fps and events; WATCHDOG=1 only while
  frames are really being processed (a stalled pipeline stops petting the watchdog and systemd restarts it).
- SIGTERM/SIGINT: stop reading, finish in-flight tracks (face.left), flush the queue and the JSONL log, exit 0.
- SIGHUP: reload the gallery (and log that other settings need a restart).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from edge_mtl.config import AppConfig, CameraConfig
from edge_mtl.errors import InputError
from edge_mtl.types import Event

log = logging.getLogger(__name__)


class SystemdNotifier:
    """sd_notify over $NOTIFY_SOCKET without a dependency; a no-op outside systemd."""

    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET")
        self.sock: socket.socket | None = None
        self.addr = ""
        if addr:
            self.addr = "\0" + addr[1:] if addr.startswith("@") else addr
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_s = int(usec) / 1e6 if usec and usec.isdigit() else None

    def notify(self, msg: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto(msg.encode(), self.addr)
        except OSError as e:
            log.debug("sd_notify failed: %s", e)


class EventSink:
    """Durable queue first (the event exists once it is committed there), then the JSONL log and stdout."""

    def __init__(self, cfg: AppConfig, print_events: bool = False) -> None:
        from edge_mtl.events.jsonl import JsonlLog
        from edge_mtl.events.queue import EventQueue

        ev = cfg.events
        self.queue = EventQueue(ev.db)
        self.jsonl = JsonlLog(self.queue, ev.jsonl, ev.jsonl_max_bytes, ev.jsonl_backups) if ev.jsonl else None
        self.print_events = print_events
        self.written = 0
        self._last_prune = 0.0

    def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self.queue.append(list(events))
        self.written += len(events)
        if self.print_events:
            from edge_mtl.events.schema import encode_event

            for e in events:
                sys.stdout.write(encode_event(e) + "\n")
            sys.stdout.flush()

    def flush(self, cfg: AppConfig | None = None) -> None:
        if self.jsonl is not None:
            self.jsonl.sync()
        now = time.monotonic()
        if cfg is not None and now - self._last_prune > 600:
            self._last_prune = now
            self.queue.prune(cfg.events.retention_days * 86400.0, cfg.events.retention_max_events)

    def close(self) -> None:
        self.flush()
        self.queue.close()


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


def run_service(args: argparse.Namespace, cfg: AppConfig) -> int:
    """`edge-mtl run`: process sources until they end (files) or until SIGTERM; returns the exit code."""
    from edge_mtl.capture import open_source
    from edge_mtl.models_registry import load_detector, load_recognizer
    from edge_mtl.pipeline import Pipeline

    if getattr(args, "events", None):
        cfg.events.db = args.events
    if getattr(args, "jsonl", None):
        cfg.events.jsonl = args.jsonl
    if getattr(args, "gallery", None):
        cfg.identity.gallery = args.gallery
    cams = cameras_from_args(args, cfg)
    max_frames = getattr(args, "max_frames", None)
    notifier = SystemdNotifier()
    stop = threading.Event()
    reload_flag = threading.Event()

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        reload_flag.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, on_hup)

    detector = load_detector(cfg)
    recognizer = load_recognizer(cfg)
    if cfg.identity.gallery is not None and not Path(cfg.identity.gallery).exists():
        raise InputError(f"{cfg.identity.gallery}: no such gallery (enrol people with 'edge-mtl enroll')")
    sources = [open_source(c, max_frames=max_frames) for c in cams]
    sink = EventSink(cfg, print_events=bool(getattr(args, "print_events", False)))
    forwarders: list[Any] = []
    for fw in cfg.forwarders:
        from edge_mtl.events.mqtt import MqttForwarder

        forwarders.append(MqttForwarder(Path(cfg.events.db), fw))
    pipeline = Pipeline(cfg, detector, recognizer)
    annotate = Annotator(args.annotate, [c.name for c in cams]) if getattr(args, "annotate", None) else None
    for s in sources:
        s.start()
    for f in forwarders:
        f.start()
    notifier.notify("READY=1")
    t0 = time.monotonic()
    last_progress = time.monotonic()
    last_status = 0.0
    last_flush = 0.0
    ended: set[str] = set()
    try:
        while not stop.is_set():
            if reload_flag.is_set():
                reload_flag.clear()
                pipeline.reload_gallery(force=True)
                log.info("SIGHUP: gallery reloaded; other settings apply after a restart")
            frames: list[Any] = []
            for s in sources:
                if s.name in ended:
                    continue
                f = s.read(timeout=0.0 if frames else 0.02)
                if f is not None:
                    frames.append(f)
                elif s.finished:
                    ended.add(s.name)
                    sink.write(pipeline.finish(s.name))
            if frames:
                events = pipeline.process(frames)
                sink.write(events)
                last_progress = time.monotonic()
                if annotate is not None:
                    for fr in frames:
                        st = next(x for x in sources if x.name == fr.camera).stats()
                        annotate.write(fr.camera, fr.image, pipeline.labels(fr.camera), float(st.get("fps") or 25),
                                       f"{fr.camera} frame {fr.index}")
            if len(ended) == len(sources):
                break
            now = time.monotonic()
            if now - last_flush > 0.5:
                sink.flush(cfg)
                last_flush = now
            if now - last_progress < cfg.service.watchdog_stall_s:
                notifier.notify("WATCHDOG=1")
            if now - last_status > 5.0:
                last_status = now
                c = pipeline.counters
                fps = c["frames"] / max(now - t0, 1e-9)
                notifier.notify(f"STATUS=frames={c['frames']} fps={fps:.1f} events={sink.written}")
    finally:
        notifier.notify("STOPPING=1")
        for s in sources:
            s.stop()
        sink.write(pipeline.finish())
        sink.flush()
        for f in forwarders:
            f.stop(timeout=cfg.service.stop_timeout_s)
        if annotate is not None:
            annotate.close()
        sink.close()
        pipeline.close()
    dt = time.monotonic() - t0
    c = pipeline.counters
    log.info(
        "processed %d frames in %.1fs (%.2f fps), %d faces, %d analyses, %d events; stages: %s",
        c["frames"], dt, c["frames"] / max(dt, 1e-9), c["faces"], c["analyses"], sink.written,
        pipeline.timer.summary(),
    )
    for s in sources:
        log.info("source %s: %s", s.name, s.stats())
    return 0
