"""ByteTrack-style face tracker: boxes and scores in, stable integer ids out, one call per frame.

Algorithm (one ``update(dets)`` call):

1. Predict every live track one frame ahead with a constant-velocity Kalman filter (``kalman.py``).
2. Split detections by score: *high* (>= ``high_threshold``) and *low* (``low_threshold`` <= s < high).
   Detections below ``low_threshold`` are ignored.
3. Stage 1: confirmed tracks, both currently seen and lost, are matched to high detections by IoU between
   prediction and box (Hungarian assignment; a pair needs IoU >= ``match_iou``).
4. Stage 2 (the "byte" idea): confirmed tracks seen last frame but left unmatched are matched to the *low*
   detections (IoU >= ``low_match_iou``). A face blurred by motion or half turned away gets a low score;
   this keeps its track alive without letting low-score clutter start tracks.
5. Stage 3: unconfirmed (probationary) tracks are matched to the high detections still free.
   An unconfirmed track that misses a frame is dropped at once: confirmation needs consecutive hits.
6. High detections still unmatched with score >= ``new_track_threshold`` start new, unconfirmed tracks.
7. A confirmed track unseen for more than ``lost_frames`` consecutive frames ends.

Output (``Tracks``): every live track, in ascending id order. A track matched in this frame has
``det_index`` = its row in ``dets`` (so the pipeline can fetch the landmarks) and, by default, exactly the
detection's box and score (the box the landmarks belong to; set ``smooth_boxes=True`` to get the filtered
box instead). A lost track has ``det_index`` = -1, the filter's predicted box and its last seen score.
``confirmed`` turns True once a track has ``confirm_frames`` consecutive hits and never turns back.
After each update, ``ended`` lists the ids removed in that call (each id is reported exactly once) and
``ended_confirmed`` the subset that had been confirmed (the pipeline emits ``face.left`` for those only).

What each knob does (all keyword-only, matching ``edge_mtl.config.TrackerConfig``):

- ``high_threshold``: raise it to let only clear faces drive stage 1 (fewer false matches, more tracks
  carried by stage 2 or lost); lower it to associate doubtful faces with full rights.
- ``low_threshold``: lower it to keep tracks alive through worse blur (and risk latching onto clutter);
  raise it to drop doubtful detections entirely.
- ``new_track_threshold``: raise it to open tracks only on clear faces (fewer ghost tracks, later starts);
  lower it (down to ``high_threshold``) to start tracks sooner.
- ``match_iou``: raise it to demand tighter overlap between prediction and detection (fewer identity
  switches between nearby faces, more broken tracks under fast motion); lower it for the opposite.
- ``lost_frames``: raise it to bridge longer occlusions under the same id (and to report ``face.left``
  later); lower it to end tracks sooner (an occluded person comes back under a new id).
- ``confirm_frames``: raise it to suppress short-lived false tracks (``face.appeared`` comes later);
  lower it to confirm faster (1 confirms on the first frame).

Ids are per-instance integers starting at 1; ``reset()`` forgets every track and restarts ids at 1. There is
no global state: two trackers (two cameras) never share a counter. A tracker is not thread-safe; use one per
camera and call it from one thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from edge_mtl import defaults as D
from edge_mtl.track.kalman import BoxKalmanFilter, cxcywh_to_xyxy
from edge_mtl.types import Detections, Tracks
from edge_mtl.vision.boxes import box_iou

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

# Cost of a forbidden pair in the assignment; finite so the augmented problem is always solvable.
_FORBIDDEN = 1e6
# Reported boxes never shrink below this side (pixels), even if the filter's estimate does.
_MIN_SIDE = 1e-3


@dataclass(frozen=True)
class TrackInfo:
    """Bookkeeping of one track. Frame numbers count ``update()`` calls since creation or ``reset()``, from 1."""

    id: int
    confirmed: bool
    hits: int  # frames in which a detection was matched to the track
    misses: int  # consecutive frames without a match (0 if seen in the latest frame)
    first_frame: int
    last_seen_frame: int

    @property
    def age(self) -> int:
        """Frames from the first to the last sighting, both included."""
        return self.last_seen_frame - self.first_frame + 1


def min_cost_matching(cost: npt.ArrayLike, max_cost: float) -> tuple[I64, I64]:
    """Optimal one-to-one matching that may leave rows and columns unmatched.

    A pair (i, j) is allowed only if ``cost[i, j] <= max_cost``. Leaving a row or a column unmatched costs
    ``max_cost / 2`` each, so a pair is taken when it is cheaper than leaving both of its ends alone. Unlike
    a plain rectangular Hungarian (which maximises the *number* of pairs), this never trades one strong pair
    for two weak ones, which is what swaps identities when two faces meet.
    """
    c = np.asarray(cost, dtype=np.float64)
    n, m = c.shape
    if n == 0 or m == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    allowed = c <= max_cost
    aug = np.full((n + m, m + n), _FORBIDDEN)
    aug[:n, :m] = np.where(allowed, c, _FORBIDDEN)
    aug[np.arange(n), m + np.arange(n)] = max_cost / 2.0  # row i left unmatched
    aug[n + np.arange(m), np.arange(m)] = max_cost / 2.0  # column j left unmatched
    aug[n:, m:] = 0.0
    rows, cols = linear_sum_assignment(aug)
    keep = (rows < n) & (cols < m)
    rows, cols = rows[keep], cols[keep]
    ok = allowed[rows, cols]
    return rows[ok].astype(np.int64), cols[ok].astype(np.int64)


class ByteTracker:
    """Multi-face tracker with two-stage (high, then low score) association. See the module docstring."""

    def __init__(
        self,
        *,
        high_threshold: float = D.DETECTOR_SCORE_THRESHOLD,
        low_threshold: float = D.TRACK_LOW_THRESHOLD,
        new_track_threshold: float = D.TRACK_NEW_THRESHOLD,
        match_iou: float = D.TRACK_MATCH_IOU,
        lost_frames: int = D.TRACK_LOST_FRAMES,
        confirm_frames: int = D.TRACK_CONFIRM_FRAMES,
        low_match_iou: float = 0.5,
        motion_gate: float | None = None,
        smooth_boxes: bool = False,
        position_noise: float = 1.0 / 20.0,
        velocity_noise: float = 1.0 / 160.0,
        measurement_noise: float = 1.0 / 20.0,
    ) -> None:
        """Create an empty tracker.

        The first six arguments are ``TrackerConfig``'s fields (module docstring says what raising or lowering
        them does). The rest are tuning extras with defaults that suit faces:

        low_match_iou: minimum IoU for stage 2 (low-score detections). Higher than ``match_iou`` because a
            low-score box is only trusted where the track is expected; raise it to make blur rescue stricter,
            lower it to rescue tracks of faces moving fast while blurred.
        motion_gate: if set, a pair whose squared Mahalanobis distance between the Kalman prediction and the
            box exceeds this is forbidden in every stage (9.49 = 95 % for 4 degrees of freedom). Lower it to
            cut identity switches between nearby faces; raise it (or None, the default) to tolerate camera
            shake and sudden moves that the constant-velocity model does not expect.
        smooth_boxes: False reports a matched track's detection box (consistent with its landmarks); True
            reports the Kalman-filtered box (steadier, slightly lagging).
        position_noise, velocity_noise, measurement_noise: Kalman noise as fractions of the box size; see
            ``edge_mtl.track.kalman``.
        """
        for name, value in (
            ("high_threshold", high_threshold),
            ("low_threshold", low_threshold),
            ("new_track_threshold", new_track_threshold),
            ("match_iou", match_iou),
            ("low_match_iou", low_match_iou),
        ):
            if not (isinstance(value, int | float) and 0.0 < float(value) < 1.0):
                raise ValueError(f"ByteTracker: {name} must be in (0, 1), got {value!r}")
        if low_threshold > high_threshold:
            raise ValueError(
                f"ByteTracker: low_threshold ({low_threshold}) must not exceed high_threshold ({high_threshold})"
            )
        if isinstance(lost_frames, bool) or not isinstance(lost_frames, int) or lost_frames < 0:
            raise ValueError(f"ByteTracker: lost_frames must be an integer >= 0, got {lost_frames!r}")
        if isinstance(confirm_frames, bool) or not isinstance(confirm_frames, int) or confirm_frames < 1:
            raise ValueError(f"ByteTracker: confirm_frames must be an integer >= 1, got {confirm_frames!r}")
        if motion_gate is not None and not (np.isfinite(motion_gate) and motion_gate > 0):
            raise ValueError(f"ByteTracker: motion_gate must be positive or None, got {motion_gate!r}")
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.new_track_threshold = float(new_track_threshold)
        self.match_iou = float(match_iou)
        self.lost_frames = int(lost_frames)
        self.confirm_frames = int(confirm_frames)
        self.low_match_iou = float(low_match_iou)
        self.motion_gate = None if motion_gate is None else float(motion_gate)
        self.smooth_boxes = bool(smooth_boxes)
        self._kf = BoxKalmanFilter(
            position_noise=position_noise, velocity_noise=velocity_noise, measurement_noise=measurement_noise
        )
        self.ended_tracks: list[TrackInfo] = []
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every track and restart frame numbers and ids at 1 (e.g. when the camera reconnects)."""
        self._next_id = 1
        self._frame = 0
        self._ids = np.zeros(0, np.int64)
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 8, 8))
        self._hits = np.zeros(0, np.int64)
        self._misses = np.zeros(0, np.int64)
        self._confirmed = np.zeros(0, np.bool_)
        self._first = np.zeros(0, np.int64)
        self._last_seen = np.zeros(0, np.int64)
        self._score = np.zeros(0, np.float32)
        self.ended_tracks = []

    @property
    def frame_count(self) -> int:
        """Number of ``update()`` calls since creation or the last ``reset()``."""
        return self._frame

    @property
    def ended(self) -> list[int]:
        """Ids of the tracks removed by the latest ``update()`` (confirmed or not), each reported once."""
        return [t.id for t in self.ended_tracks]

    @property
    def ended_confirmed(self) -> list[int]:
        """The subset of ``ended`` that had been confirmed: the tracks whose end is a ``face.left``."""
        return [t.id for t in self.ended_tracks if t.confirmed]

    def _info_at(self, i: int) -> TrackInfo:
        return TrackInfo(
            id=int(self._ids[i]),
            confirmed=bool(self._confirmed[i]),
            hits=int(self._hits[i]),
            misses=int(self._misses[i]),
            first_frame=int(self._first[i]),
            last_seen_frame=int(self._last_seen[i]),
        )

    def info(self, track_id: int) -> TrackInfo:
        """Bookkeeping of a live track; KeyError if the id is not alive."""
        where = np.flatnonzero(self._ids == track_id)
        if where.size == 0:
            raise KeyError(f"no live track with id {track_id}")
        return self._info_at(int(where[0]))

    def track_age(self, track_id: int) -> int:
        """Frames from the track's first to its last sighting, both included."""
        return self.info(track_id).age

    def track_hits(self, track_id: int) -> int:
        """Frames in which the track was matched to a detection."""
        return self.info(track_id).hits

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    # ------------------------------------------------------------------ update

    @staticmethod
    def _validate(dets: Detections) -> tuple[F64, npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Reject garbage loudly; return boxes, scores and which rows are usable (positive width and height)."""
        if not isinstance(dets, Detections):
            raise TypeError(f"ByteTracker.update: expected Detections, got {type(dets).__name__}")
        boxes = dets.boxes.astype(np.float64)
        scores = dets.scores
        bad = ~(np.isfinite(boxes).all(axis=1) & np.isfinite(scores))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"ByteTracker.update: detection {i} has a non-finite value "
                f"(box {dets.boxes[i].tolist()}, score {float(scores[i])})"
            )
        wh = boxes[:, 2:] - boxes[:, :2]
        inverted = (wh < 0).any(axis=1)
        if inverted.any():
            i = int(np.flatnonzero(inverted)[0])
            raise ValueError(
                f"ByteTracker.update: detection {i} has x2 < x1 or y2 < y1 "
                f"(expected (x1, y1, x2, y2), got {dets.boxes[i].tolist()})"
            )
        usable = np.asarray((wh > 0).all(axis=1), dtype=np.bool_)
        if not usable.all():
            log.debug("ignoring %d zero-size detection(s)", int((~usable).sum()))
        return boxes, scores, usable

    def _cost(self, tracks: I64, dets: I64, boxes: F64, pred: F64) -> F64:
        """1 - IoU between predicted track boxes and detection boxes; motion-gated pairs made forbidden."""
        cost = 1.0 - box_iou(pred[tracks], boxes[dets])
        if self.motion_gate is not None and tracks.size and dets.size:
            d2 = self._kf.gating_distance(self._mean[tracks], self._cov[tracks], boxes[dets])
            cost[d2 > self.motion_gate] = _FORBIDDEN
        return cost

    def _match(
        self, tracks: I64, dets: I64, boxes: F64, pred: F64, min_iou: float
    ) -> tuple[I64, I64, I64, I64]:
        """Match track indices to detection indices; return (matched tracks, matched dets, free ones of each)."""
        rows, cols = min_cost_matching(self._cost(tracks, dets, boxes, pred), 1.0 - min_iou)
        mt, md = tracks[rows], dets[cols]
        return mt, md, np.setdiff1d(tracks, mt), np.setdiff1d(dets, md)

    def update(self, dets: Detections) -> Tracks:
        """Advance one frame with this frame's detections; return every live track (see module docstring)."""
        boxes, scores, usable = self._validate(dets)
        self._frame += 1
        self.ended_tracks = []
        n = len(self)

        if n:
            self._mean, self._cov = self._kf.predict(self._mean, self._cov, freeze_size=self._misses > 0)
        pred = cxcywh_to_xyxy(self._mean[:, :4])

        high = np.flatnonzero(usable & (scores >= self.high_threshold)).astype(np.int64)
        low = np.flatnonzero(usable & (scores >= self.low_threshold) & (scores < self.high_threshold)).astype(
            np.int64
        )
        det_of = np.full(n, -1, np.int64)

        # Stage 1: confirmed tracks (seen or lost) vs high-score detections.
        confirmed = np.flatnonzero(self._confirmed).astype(np.int64)
        mt, md, free_t, free_high = self._match(confirmed, high, boxes, pred, self.match_iou)
        det_of[mt] = md
        # Stage 2: confirmed tracks seen last frame but unmatched now vs low-score detections.
        recent = free_t[self._misses[free_t] == 0]
        mt, md, _, _ = self._match(recent, low, boxes, pred, self.low_match_iou)
        det_of[mt] = md
        # Stage 3: probationary tracks vs the high-score detections left.
        tentative = np.flatnonzero(~self._confirmed).astype(np.int64)
        mt, md, _, free_high = self._match(tentative, free_high, boxes, pred, self.match_iou)
        det_of[mt] = md

        matched = det_of >= 0
        if matched.any():
            idx = np.flatnonzero(matched)
            self._mean[idx], self._cov[idx] = self._kf.update(self._mean[idx], self._cov[idx], boxes[det_of[idx]])
            self._hits[idx] += 1
            self._misses[idx] = 0
            self._last_seen[idx] = self._frame
            self._score[idx] = scores[det_of[idx]]
            self._confirmed[idx] |= self._hits[idx] >= self.confirm_frames
        self._misses[~matched] += 1

        # Tentative tracks die on their first miss; confirmed ones after lost_frames misses.
        dead = ~matched & (~self._confirmed | (self._misses > self.lost_frames))
        if dead.any():
            self.ended_tracks = [self._info_at(int(i)) for i in np.flatnonzero(dead)]
            for t in self.ended_tracks:
                log.debug("track %d ended (confirmed=%s, hits=%d)", t.id, t.confirmed, t.hits)
            self._keep(~dead)
            det_of = det_of[~dead]

        new = free_high[scores[free_high] >= self.new_track_threshold]
        if new.size:
            self._start(new, boxes, scores)
            det_of = np.concatenate([det_of, new])

        return self._output(det_of, dets)

    def extrapolate(self, steps: float) -> dict[int, npt.NDArray[np.float32]]:
        """Each live track's box `steps` updates ahead of the last one (fractions allowed), by its filtered velocity,
        without changing any state: where a face is between two detections (the pipeline's `detect_fps`)."""
        mean = self._mean[:, :4] + float(steps) * self._mean[:, 4:8]
        mean[:, 2:] = np.maximum(mean[:, 2:], _MIN_SIDE)
        boxes = cxcywh_to_xyxy(mean).astype(np.float32)
        return {int(i): boxes[k] for k, i in enumerate(self._ids)}

    def _keep(self, keep: npt.NDArray[np.bool_]) -> None:
        self._ids = self._ids[keep]
        self._mean = self._mean[keep]
        self._cov = self._cov[keep]
        self._hits = self._hits[keep]
        self._misses = self._misses[keep]
        self._confirmed = self._confirmed[keep]
        self._first = self._first[keep]
        self._last_seen = self._last_seen[keep]
        self._score = self._score[keep]

    def _start(self, det_idx: I64, boxes: F64, scores: npt.NDArray[np.float32]) -> None:
        k = det_idx.size
        ids = np.arange(self._next_id, self._next_id + k, dtype=np.int64)
        self._next_id += k
        mean, cov = self._kf.initiate(boxes[det_idx])
        self._ids = np.concatenate([self._ids, ids])
        self._mean = np.concatenate([self._mean, mean])
        self._cov = np.concatenate([self._cov, cov])
        self._hits = np.concatenate([self._hits, np.ones(k, np.int64)])
        self._misses = np.concatenate([self._misses, np.zeros(k, np.int64)])
        self._confirmed = np.concatenate([self._confirmed, np.full(k, self.confirm_frames <= 1)])
        self._first = np.concatenate([self._first, np.full(k, self._frame, np.int64)])
        self._last_seen = np.concatenate([self._last_seen, np.full(k, self._frame, np.int64)])
        self._score = np.concatenate([self._score, scores[det_idx].astype(np.float32)])
        log.debug("tracks %s started", ids.tolist())

    def _output(self, det_of: I64, dets: Detections) -> Tracks:
        out = cxcywh_to_xyxy(self._mean[:, :4])
        centre = (out[:, :2] + out[:, 2:]) / 2.0
        half = np.maximum(out[:, 2:] - out[:, :2], _MIN_SIDE) / 2.0
        out = np.concatenate([centre - half, centre + half], axis=1)
        seen = det_of >= 0
        if not self.smooth_boxes and seen.any():
            out[seen] = dets.boxes[det_of[seen]]
        return Tracks(
            ids=self._ids.copy(),
            boxes=out.astype(np.float32),
            scores=self._score.copy(),
            det_index=det_of.astype(np.int64),
            confirmed=self._confirmed.copy(),
        )
