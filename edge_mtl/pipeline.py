"""Wires the stages for N cameras: detect -> track -> select -> align -> recognize (batched across cameras) ->
aggregate -> identity -> events. It knows how stages connect, not how they work inside.

Recognition runs per track, not per frame: when a track is confirmed, when a clearly better face of it appears,
or every `every_n_frames` frames. Attributes and identity are aggregated over the track, so they do not flicker.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_mtl.config import AppConfig, CameraConfig
from edge_mtl.events.schema import utc_ts
from edge_mtl.events.snapshots import SnapshotStore, TrackSnapshot
from edge_mtl.identity.aggregate import IdentityDecider, TrackAggregate, resolve_threshold
from edge_mtl.identity.gallery import Matcher
from edge_mtl.identity.gallery_watch import GalleryWatch
from edge_mtl.runtime.detector import FaceDetector
from edge_mtl.runtime.recognizer import FaceRecognizer
from edge_mtl.track.bytetrack import ByteTracker
from edge_mtl.types import Detections, Event, Frame, Tracks
from edge_mtl.vision.align import align_faces
from edge_mtl.vision.draw import Label

log = logging.getLogger(__name__)
STAGES = ("detect", "track", "carry", "refine", "align", "recognize", "aggregate")


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
    snap: TrackSnapshot | None = None

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
    def __init__(self, name: str, cfg: AppConfig, detect_fps: float | None = None, phase: float = 0.0) -> None:
        self.name = name
        self.tracker = ByteTracker(**cfg.tracker.tracker_options(cfg.track_high_threshold()))
        self.tracks: dict[int, TrackState] = {}
        self.frames = 0
        self.faces = 0
        self.last_frame_ts = 0.0
        #: frames the detector ran on; the others (`detect_fps`) were carried by the tracker
        self.detected = 0
        self.detect_fps = detect_fps
        #: where in the detection period this camera's detections fall (0 <= phase < 1): cameras with the same
        #: detect_fps are spread over the period instead of all detecting in the same step
        self.phase = phase
        self._next_detect = -float("inf")
        self.last_detect_ts = 0.0
        #: seconds from capture to the end of processing, recent frames
        self.latency: deque[float] = deque(maxlen=4096)
        # Track ids shown in events are id_base + the tracker's id: ending a camera's tracks mid-run (its stream
        # was lost) resets the tracker, whose ids restart at 1, and a dashboard must never see a track id twice.
        self.id_base = 0
        self.max_id = 0

    def latency_quantiles(self) -> tuple[float, float] | None:
        """p50 and p95 (seconds) of the recent frames' capture-to-processed latency; None before the first frame."""
        if not self.latency:
            return None
        p50, p95 = np.percentile(np.fromiter(self.latency, np.float64), [50, 95])
        return float(p50), float(p95)

    def detect_lateness(self, ts: float) -> float | None:
        """How overdue a detection is for the frame captured at `ts` (seconds past this camera's schedule; +inf for a
        camera that detects every frame, or for its first frame), None when the frame is not due. Only the first
        call of a camera with a phase anchors its schedule; `mark_detected` commits a detection."""
        if self.detect_fps is None:
            return math.inf
        if self._next_detect == -math.inf:
            if self.phase <= 0:
                return math.inf
            self._next_detect = ts + self.phase * (1.0 / self.detect_fps)  # the first frame waits for its phase
        return None if ts < self._next_detect else ts - self._next_detect

    def mark_detected(self, ts: float) -> None:
        """The frame captured at `ts` goes through the detector: the schedule moves on by 1 / detect_fps (anchored,
        so the rate averages out to detect_fps over dropped and late frames; a stall restarts it instead of
        bursting to catch up)."""
        if self.detect_fps is None:
            return
        period = 1.0 / self.detect_fps
        self.last_detect_ts = ts
        first = self._next_detect == -math.inf
        self._next_detect = ts + period if first else max(self._next_detect + period, ts + period / 2)


class Pipeline:
    """Processes frames of any number of cameras; returns the events they cause."""

    def __init__(
        self,
        cfg: AppConfig,
        detector: FaceDetector,
        recognizer: FaceRecognizer,
        gallery: Path | None = None,
        snapshots: SnapshotStore | None = None,
        cameras: Sequence[CameraConfig] = (),
    ) -> None:
        self.cfg = cfg
        self.snapshots = snapshots
        #: per-camera detection rates (`cameras.N.detect_fps`); cameras not listed detect every frame
        cams = list(cameras or cfg.cameras)
        self.detect_fps = {c.name: c.detect_fps for c in cams}
        self._phase = {c.name: k / len(cams) for k, c in enumerate(cams)}
        self.detections_per_step = cfg.service.detections_per_step
        self.detector = detector
        # The tracker's second (low-score) association stage needs the detections the detector's own threshold
        # would drop: detect down to the tracker's low threshold and let the tracker decide. The detector's
        # threshold itself is the tracker's high threshold (AppConfig.track_high_threshold).
        detector.score_threshold = min(detector.score_threshold, cfg.tracker.low_threshold)
        self.recognizer = recognizer
        self.cameras: dict[str, CameraState] = {}
        self.timer = StageTimer()
        self.gallery_path = gallery or cfg.identity.gallery
        self.matcher: Matcher | None = None
        meta = recognizer.meta
        self.gallery = GalleryWatch(self.gallery_path, meta.version, meta.compatible, recognizer.embedding_dim,
                                    score_norm=recognizer.score_norm)
        self.counters: dict[str, int] = {"frames": 0, "faces": 0, "analyses": 0, "events": 0}
        #: recognizer batch size -> number of calls: shows whether faces of several cameras share a batch
        self.batch_sizes: Counter[int] = Counter()
        self.identity_threshold = self.resolve_identity_threshold()
        self.reload_gallery(force=True, strict=True)  # a gallery that can never match this recognizer: exit 2

    def resolve_identity_threshold(self) -> float:
        """The identity threshold from the config and the loaded recognizer (`resolve_threshold`), logged."""
        i = self.cfg.identity
        th, source = resolve_threshold(i.threshold, i.false_accept_rate, self.recognizer.meta, self.recognizer.flip)
        norm = self.recognizer.score_norm
        scores = "cosine similarity" if norm is None else (
            f"similarity normalised against the recognizer's cohort of {norm.cohort.shape[0]} people")
        log.info("identity threshold %.3f (%s), on %s", th, source, scores)
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
    def reload_gallery(self, force: bool = False, strict: bool = False) -> bool:
        """Pick up enrolments and removals made while running (checked at most every 2 s); a damaged gallery keeps
        the last good one in use (edge_mtl.identity.gallery_watch)."""
        changed = self.gallery.poll(force=force, strict=strict)
        self.matcher = self.gallery.matcher
        return changed

    def reopen_gallery(self) -> None:
        """The gallery file was replaced by a new one (a fleet gallery renamed into place): load that one (the
        watch sees the new file by its inode and reads it)."""
        self.reload_gallery(force=True)

    def close(self) -> None:
        self.gallery.close()

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
            snapshot=self.snapshots.reference(st.snap) if self.snapshots is not None else None,
        )

    def _offer_snapshot(self, st: TrackState, frame: Frame, quality: float) -> None:
        if self.snapshots is not None:
            st.snap = self.snapshots.offer(st.snap, frame.image, st.box, quality)

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
        detect: list[Frame] = []
        scheduled: list[tuple[float, Frame]] = []
        for frame in frames:
            cam = self.camera(frame.camera)
            cam.frames += 1
            cam.last_frame_ts = frame.timestamp
            self.counters["frames"] += 1
            late = cam.detect_lateness(frame.timestamp)
            if late is None:
                continue
            if cam.detect_fps is None:
                detect.append(frame)
            else:
                scheduled.append((late, frame))
        # Cameras on a detection schedule (detect_fps): at most `detections_per_step` of their due frames per step,
        # the most overdue first; the rest are carried and stay due. A step then costs about one detection, so every
        # camera's frames keep flowing at its frame rate; when the detector cannot keep up, the cameras' detection
        # rates fall below detect_fps (fairly, by lateness) instead of the whole loop falling to the detection rate.
        scheduled.sort(key=lambda x: -x[0])
        for _, frame in scheduled[: self.detections_per_step]:
            self.cameras[frame.camera].mark_detected(frame.timestamp)
            detect.append(frame)
        events: list[Event] = []
        if detect:
            t = time.perf_counter()
            # Landmarks are refined later, only for the faces aligned for recognition (`_recognize`): a frame has
            # many detections (down to the tracker's low threshold) and few faces due for analysis.
            dets_all = self.detector.detect_batch([f.image for f in detect], [f.detect_image for f in detect],
                                                  refine=False)
            dt = (time.perf_counter() - t) / len(detect)
            for _ in detect:
                self.timer.add("detect", dt)
            todo: list[tuple[TrackState, Frame, npt.NDArray[np.float32]]] = []
            for frame, dets in zip(detect, dets_all, strict=True):
                cam = self.cameras[frame.camera]
                cam.detected += 1
                cam.faces += len(dets)
                self.counters["faces"] += len(dets)
                t = time.perf_counter()
                tracks = cam.tracker.update(dets)
                self.timer.add("track", time.perf_counter() - t)
                events += self._update_tracks(cam, frame, dets, tracks, todo)
            if todo:
                events += self._recognize(todo)
        detected = {id(f) for f in detect}
        for frame in frames:
            if id(frame) not in detected:
                self._carry(self.cameras[frame.camera], frame)
        self.counters["events"] += len(events)
        done = time.time()
        for frame in frames:
            self.cameras[frame.camera].latency.append(done - frame.timestamp)
        return events

    def _carry(self, cam: CameraState, frame: Frame) -> None:
        """A frame between two detections (detect_fps): every visible track's box moves on by the tracker's velocity
        for the time since the last detection; nothing is announced or analysed."""
        if cam.detect_fps is None or not cam.tracks:
            return
        t = time.perf_counter()
        boxes = cam.tracker.extrapolate((frame.timestamp - cam.last_detect_ts) * cam.detect_fps)
        for tid, st in cam.tracks.items():
            box = boxes.get(tid)
            if box is not None and st.visible:
                st.box = box
        self.timer.add("carry", time.perf_counter() - t)

    def camera(self, name: str) -> CameraState:
        """The state of camera `name`, created on its first frame."""
        cam = self.cameras.get(name)
        if cam is None:
            cam = self.cameras[name] = CameraState(name, self.cfg, self.detect_fps.get(name),
                                                   self._phase.get(name, 0.0))
        return cam

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
                if j >= 0:
                    self._offer_snapshot(st, frame, -math.inf)
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
        by_frame: dict[int, list[int]] = {}
        for k, (_, fr, _) in enumerate(todo):
            by_frame.setdefault(id(fr), []).append(k)
        lms = [lm for _, _, lm in todo]
        for ks in by_frame.values():  # one refiner batch per frame
            fine = self.detector.refine_landmarks(todo[ks[0]][1].image, np.stack([lms[k] for k in ks]))
            for k, lm in zip(ks, fine, strict=True):
                lms[k] = lm
                todo[k][0].landmarks = lm
        self.timer.add("refine", time.perf_counter() - t)
        t = time.perf_counter()
        crops = np.stack([align_faces(fr.image, lm[None], self.recognizer.size, self.recognizer.fill)[0]
                          for (_, fr, _), lm in zip(todo, lms, strict=True)])
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
            self._offer_snapshot(st, fr, float(res.quality[k]))
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

