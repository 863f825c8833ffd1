"""Wires the stages for N cameras: detect -> track -> select -> align -> recognize (batched across cameras) ->
aggregate -> identity -> events. It knows how stages connect, not how they work inside.

Recognition runs per track, not per frame: when a track is confirmed, when a clearly better face of it appears,
or every `every_n_frames` frames. Attributes and identity are aggregated over the track, so they do not flicker.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_mtl.config import AppConfig
from edge_mtl.events.schema import utc_ts
from edge_mtl.identity.aggregate import IdentityDecider, TrackAggregate, resolve_threshold
from edge_mtl.identity.gallery import Gallery, Matcher
from edge_mtl.runtime.detector import FaceDetector
from edge_mtl.runtime.recognizer import FaceRecognizer
from edge_mtl.track.bytetrack import ByteTracker
from edge_mtl.types import Detections, Event, Frame, Tracks
from edge_mtl.vision.align import align_faces
from edge_mtl.vision.draw import Label

log = logging.getLogger(__name__)
STAGES = ("detect", "track", "align", "recognize", "aggregate")


@dataclass
class TrackState:
    """What the pipeline knows about one track of one camera."""

    camera: str
    track_id: int
    first_frame: int
    first_ts: float
    last_frame: int
    last_ts: float
    box: npt.NDArray[np.float32]
    landmarks: npt.NDArray[np.float32] | None = None
    announced: bool = False
    analysed_frame: int = -(10**9)
    best_geo: float = 0.0
    agg: TrackAggregate = field(default_factory=TrackAggregate)
    decider: IdentityDecider = field(default_factory=IdentityDecider)
    visible: bool = True

    @property
    def key(self) -> str:
        return f"{self.camera}-{self.track_id}"


def xywh(box: npt.NDArray[np.float32]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1)]


class StageTimer:
    """Recent per-stage latencies (seconds) for metrics and benchmarks."""

    def __init__(self, keep: int = 2000) -> None:
        self.samples: dict[str, deque[float]] = {s: deque(maxlen=keep) for s in STAGES}
        self.totals: dict[str, float] = {s: 0.0 for s in STAGES}
        self.counts: dict[str, int] = {s: 0 for s in STAGES}

    def add(self, stage: str, seconds: float) -> None:
        self.samples.setdefault(stage, deque(maxlen=2000)).append(seconds)
        self.totals[stage] = self.totals.get(stage, 0.0) + seconds
        self.counts[stage] = self.counts.get(stage, 0) + 1

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for s, d in self.samples.items():
            if d:
                a = np.asarray(d) * 1000
                out[s] = {"p50_ms": round(float(np.percentile(a, 50)), 2),
                          "p95_ms": round(float(np.percentile(a, 95)), 2), "n": float(len(a))}
        return out


class CameraState:
    def __init__(self, name: str, cfg: AppConfig) -> None:
        self.name = name
        self.tracker = ByteTracker(**cfg.tracker.model_dump())
        self.tracks: dict[int, TrackState] = {}
        self.frames = 0
        self.faces = 0
        self.last_frame_ts = 0.0
        # Track ids shown in events are id_base + the tracker's id: ending a camera's tracks mid-run (its stream
        # was lost) resets the tracker, whose ids restart at 1, and a dashboard must never see a track id twice.
        self.id_base = 0
        self.max_id = 0


class Pipeline:
    """Processes frames of any number of cameras; returns the events they cause."""

    def __init__(
        self,
        cfg: AppConfig,
        detector: FaceDetector,
        recognizer: FaceRecognizer,
        gallery: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.detector = detector
        # The tracker's second (low-score) association stage needs the detections the detector's own threshold
        # would drop: detect down to the tracker's low threshold and let the tracker decide.
        detector.score_threshold = min(detector.score_threshold, cfg.tracker.low_threshold)
        self.recognizer = recognizer
        self.cameras: dict[str, CameraState] = {}
        self.timer = StageTimer()
        self.gallery_path = gallery or cfg.identity.gallery
        self.matcher: Matcher | None = None
        self._gallery: Gallery | None = None
        self._gallery_version: tuple[int, int] | None = None
        self._gallery_checked = 0.0
        self.counters: dict[str, int] = {"frames": 0, "faces": 0, "analyses": 0, "events": 0}
        #: recognizer batch size -> number of calls: shows whether faces of several cameras share a batch
        self.batch_sizes: Counter[int] = Counter()
        self.identity_threshold = self.resolve_identity_threshold()
        self.reload_gallery(force=True)

    def resolve_identity_threshold(self) -> float:
        """The identity threshold from the config and the loaded recognizer (`resolve_threshold`), logged."""
        i = self.cfg.identity
        th, source = resolve_threshold(i.threshold, i.false_accept_rate, self.recognizer.meta, self.recognizer.flip)
        log.info("identity threshold %.3f (%s)", th, source)
        return th

    def apply_identity_settings(self) -> None:
        """Re-resolve the identity threshold after `cfg.identity` changed; running tracks use the new settings too."""
        self.identity_threshold = self.resolve_identity_threshold()
        i = self.cfg.identity
        for cam in self.cameras.values():
            for st in cam.tracks.values():
                st.decider.threshold = self.identity_threshold
                st.decider.margin = i.margin
                st.decider.min_observations = i.min_observations

    # ------------------------------------------------------------ gallery
    def reload_gallery(self, force: bool = False) -> bool:
        """Pick up enrolments and removals made while running (checked at most every 2 s)."""
        if self.gallery_path is None:
            return False
        now = time.monotonic()
        if not force and now - self._gallery_checked < 2.0:
            return False
        self._gallery_checked = now
        if self._gallery is None:
            if not Path(self.gallery_path).exists():
                return False
            self._gallery = Gallery(self.gallery_path, create=False)
        v = self._gallery.version()
        if v == self._gallery_version and not force:
            return False
        self._gallery_version = v
        meta = self.recognizer.meta
        self.matcher = Matcher.load(self._gallery, meta.version, meta.compatible)
        log.info("gallery %s: %d people", self.gallery_path, len(self.matcher))
        return True

    def close(self) -> None:
        if self._gallery is not None:
            self._gallery.close()
            self._gallery = None

    # ------------------------------------------------------------ events
    def _event(self, kind: str, st: TrackState, frame: int, ts: float) -> Event:
        ident: dict[str, Any] | None = None
        if st.decider.current is not None:
            sim = min(max(float(st.decider.similarity), -1.0), 1.0)
            ident = {"name": st.decider.current, "similarity": round(sim, 4)}
        return Event(
            type=kind,
            ts=utc_ts(ts),
            camera=st.camera,
            track_id=st.key,
            frame=frame,
            identity=ident,
            age=st.agg.age(),
            gender=self._gender(st),
            bbox=xywh(st.box),
            quality=round(min(max(st.agg.best_quality, 0.0), 1.0), 4) if st.agg.observations else None,
            duration_s=round(max(st.last_ts - st.first_ts, 0.0), 3),
        )

    def _gender(self, st: TrackState) -> dict[str, object] | None:
        """A track's gender as events and labels report it (read per call: a SIGHUP changes the floors live)."""
        a = self.cfg.attributes
        return st.agg.gender(a.gender_min_confidence, a.gender_min_age)

    def _decider(self) -> IdentityDecider:
        i = self.cfg.identity
        return IdentityDecider(threshold=self.identity_threshold, margin=i.margin, min_observations=i.min_observations)

    # ------------------------------------------------------------ main step
    def process(self, frames: list[Frame]) -> list[Event]:
        """One frame from each of some cameras -> events. Recognition is batched across the cameras."""
        if not frames:
            return []
        self.reload_gallery()
        t = time.perf_counter()
        dets_all = self.detector.detect_batch([f.image for f in frames])
        dt = (time.perf_counter() - t) / len(frames)
        for _ in frames:
            self.timer.add("detect", dt)
        events: list[Event] = []
        todo: list[tuple[TrackState, Frame, npt.NDArray[np.float32]]] = []
        for frame, dets in zip(frames, dets_all, strict=True):
            cam = self.cameras.get(frame.camera)
            if cam is None:
                cam = self.cameras[frame.camera] = CameraState(frame.camera, self.cfg)
            cam.frames += 1
            cam.faces += len(dets)
            cam.last_frame_ts = frame.timestamp
            self.counters["frames"] += 1
            self.counters["faces"] += len(dets)
            t = time.perf_counter()
            tracks = cam.tracker.update(dets)
            self.timer.add("track", time.perf_counter() - t)
            events += self._update_tracks(cam, frame, dets, tracks, todo)
        if todo:
            events += self._recognize(todo)
        self.counters["events"] += len(events)
        return events

    def _update_tracks(
        self,
        cam: CameraState,
        frame: Frame,
        dets: Detections,
        tracks: Tracks,
        todo: list[tuple[TrackState, Frame, npt.NDArray[np.float32]]],
    ) -> list[Event]:
        events: list[Event] = []
        rc = self.cfg.recognition
        for i in range(len(tracks)):
            tid = int(tracks.ids[i])
            st = cam.tracks.get(tid)
            if st is None:
                st = cam.tracks[tid] = TrackState(
                    cam.name, cam.id_base + tid, frame.index, frame.timestamp, frame.index, frame.timestamp,
                    tracks.boxes[i].copy(), decider=self._decider(),
                )
                cam.max_id = max(cam.max_id, tid)
            j = int(tracks.det_index[i])
            st.visible = j >= 0
            if j >= 0:
                st.box = dets.boxes[j].copy()
                st.landmarks = dets.landmarks[j].copy()
                st.last_frame, st.last_ts = frame.index, frame.timestamp
            if not tracks.confirmed[i]:
                continue
            if not st.announced:
                st.announced = True
                events.append(self._event("face.appeared", st, frame.index, frame.timestamp))
            if j < 0:
                continue
            width = float(dets.boxes[j, 2] - dets.boxes[j, 0])
            if width < rc.min_face_px:
                continue
            geo = float(dets.scores[j]) * min(1.0, width / 112.0)
            due = (
                st.agg.observations == 0
                or frame.index - st.analysed_frame >= rc.every_n_frames
                or geo > st.best_geo + rc.quality_gain
            )
            if due:
                todo.append((st, frame, dets.landmarks[j]))
                st.best_geo = max(st.best_geo, geo)
        for tid in cam.tracker.ended:
            st = cam.tracks.pop(tid, None)
            if st is not None and st.announced:
                events.append(self._event("face.left", st, st.last_frame, st.last_ts))
        return events

    def _recognize(self, todo: list[tuple[TrackState, Frame, npt.NDArray[np.float32]]]) -> list[Event]:
        # Never-analysed tracks first, then the longest-waiting; at most max_batch faces per step.
        todo.sort(key=lambda x: (x[0].agg.observations > 0, x[0].analysed_frame))
        todo = todo[: self.cfg.recognizer.max_batch]
        t = time.perf_counter()
        crops = np.stack([align_faces(fr.image, lm[None], self.recognizer.size)[0] for _, fr, lm in todo])
        self.timer.add("align", time.perf_counter() - t)
        t = time.perf_counter()
        res = self.recognizer.analyze(crops)
        self.timer.add("recognize", time.perf_counter() - t)
        self.counters["analyses"] += len(todo)
        self.batch_sizes[len(todo)] += 1
        t = time.perf_counter()
        events = []
        for k, (st, fr, _) in enumerate(todo):
            st.agg.add(res.embeddings[k], float(res.age_years[k]), float(res.age_std[k]),
                       float(res.female_prob[k]), float(res.quality[k]))
            st.analysed_frame = fr.index
            if self.matcher is not None and st.decider.decide(st.agg, self.matcher):
                events.append(self._event("face.identified", st, fr.index, fr.timestamp))
        self.timer.add("aggregate", time.perf_counter() - t)
        return events

    def finish(self, camera: str | None = None) -> list[Event]:
        """End every live track (of one camera or all): the stream ended or was lost, or the service is stopping.
        Track ids of a camera keep counting up afterwards."""
        events = []
        for name in [camera] if camera else list(self.cameras):
            cam = self.cameras.get(name)
            if cam is None:
                continue
            for st in cam.tracks.values():
                if st.announced:
                    events.append(self._event("face.left", st, st.last_frame, st.last_ts))
            cam.tracks.clear()
            cam.tracker.reset()
            cam.id_base += cam.max_id
            cam.max_id = 0
        self.counters["events"] += len(events)
        return events

    # ------------------------------------------------------------ drawing
    def labels(self, camera: str) -> list[Label]:
        cam = self.cameras.get(camera)
        if cam is None:
            return []
        out = []
        for st in cam.tracks.values():
            if not st.announced or not st.visible:
                continue
            parts = [f"#{st.track_id}"]
            known: bool | None = None
            if st.decider.decided:
                known = st.decider.current is not None
                parts.append(st.decider.current or "unknown")
            age, gender = st.agg.age(), self._gender(st)
            if gender:
                parts.append("F" if gender["label"] == "female" else "M")
            if age:
                parts.append(f"{age['years']:.0f}y")
            out.append(Label(st.box.tolist(), " ".join(parts), known, st.landmarks))
        return out

