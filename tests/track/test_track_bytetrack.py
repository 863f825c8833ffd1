"""ByteTracker on synthetic trajectories whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_track import box, dets

from edge_mtl.config import TrackerConfig
from edge_mtl.track import ByteTracker, box_iou, min_cost_matching
from edge_mtl.track.kalman import CHI2_95_4DOF
from edge_mtl.types import Detections, Tracks


def by_id(tracks: Tracks) -> dict[int, int]:
    """id -> det_index for this frame."""
    return {int(i): int(d) for i, d in zip(tracks.ids, tracks.det_index, strict=True)}


# ---------------------------------------------------------------- helpers of the module


def test_box_iou_known_values() -> None:
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 8]]
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, 0.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)


def test_min_cost_matching_prefers_one_strong_pair_to_two_weak_ones() -> None:
    # Row 0 fits column 0 well (cost 0.1) and column 1 weakly (0.65); row 1 fits column 0 weakly (0.65).
    # Maximising the number of pairs would give (0, 1), (1, 0); the right answer keeps (0, 0) alone.
    cost = np.array([[0.1, 0.65], [0.65, 1.0]])
    rows, cols = min_cost_matching(cost, max_cost=0.7)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 0)]
    rows, cols = min_cost_matching(np.array([[0.8, 0.9]]), max_cost=0.7)
    assert rows.size == 0 and cols.size == 0
    rows, cols = min_cost_matching(np.zeros((0, 3)), max_cost=0.7)
    assert rows.size == 0


# ---------------------------------------------------------------- construction


def test_constructible_from_config() -> None:
    cfg = TrackerConfig()
    t = ByteTracker(**cfg.tracker_options(0.35))
    assert t.high_threshold == 0.35 and t.lost_frames == cfg.lost_frames  # unset: the detector's threshold
    assert ByteTracker(**TrackerConfig(high_threshold=0.5).tracker_options(0.35)).high_threshold == 0.5
    cfg2 = TrackerConfig(lost_frames=5, confirm_frames=1, match_iou=0.5)
    t2 = ByteTracker(**cfg2.tracker_options(0.3))
    assert (t2.lost_frames, t2.confirm_frames, t2.match_iou) == (5, 1, 0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"low_threshold": 0.7, "high_threshold": 0.5}, "low_threshold"),
        ({"confirm_frames": 0}, "confirm_frames"),
        ({"lost_frames": -1}, "lost_frames"),
        ({"match_iou": 1.5}, "match_iou"),
        ({"motion_gate": -1.0}, "motion_gate"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ByteTracker(**kwargs)  # type: ignore[arg-type]


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        ByteTracker(0.6)  # type: ignore[misc]


# ---------------------------------------------------------------- one face


def test_single_moving_box_keeps_one_id() -> None:
    rng = np.random.default_rng(1)
    t = ByteTracker(confirm_frames=3)
    for f in range(120):
        cx, cy = 100 + 4.0 * f, 200 + 1.5 * f + 20 * np.sin(f / 10)
        b = np.asarray(box(cx, cy)) + rng.normal(0, 1.5, 4)
        out = t.update(dets([b], 0.85))
        assert out.ids.tolist() == [1]
        assert out.det_index.tolist() == [0]
        assert out.confirmed.tolist() == [f >= 2]
        np.testing.assert_array_equal(out.boxes[0], np.asarray(b, np.float32))
        assert out.scores[0] == np.float32(0.85)
        assert t.ended == []
    info = t.info(1)
    assert (info.hits, info.misses, info.first_frame, info.last_seen_frame) == (120, 0, 1, 120)
    assert t.track_age(1) == 120 and t.track_hits(1) == 120
    with pytest.raises(KeyError):
        t.info(2)


def test_det_index_follows_the_detection_row_whatever_the_order() -> None:
    t = ByteTracker(confirm_frames=1)
    faces = [(100.0, 100.0), (400.0, 100.0), (250.0, 300.0)]
    rng = np.random.default_rng(2)
    first = t.update(dets([box(x, y) for x, y in faces]))
    id_of = {i: int(first.ids[first.det_index.tolist().index(i)]) for i in range(3)}
    for f in range(1, 30):
        order = rng.permutation(3)
        boxes = [box(faces[k][0] + 2 * f, faces[k][1]) for k in order]
        out = t.update(dets(boxes))
        m = by_id(out)
        for row, k in enumerate(order):
            assert m[id_of[int(k)]] == row


def test_smooth_boxes_reports_filtered_box() -> None:
    rng = np.random.default_rng(3)
    t = ByteTracker(confirm_frames=1, smooth_boxes=True)
    errs_det, errs_out = [], []
    for f in range(60):
        truth = np.asarray(box(100 + 3.0 * f, 200))
        noisy = truth + rng.normal(0, 3, 4)
        out = t.update(dets([noisy]))
        assert out.det_index.tolist() == [0]
        if f >= 10:
            errs_det.append(np.abs(noisy - truth).mean())
            errs_out.append(np.abs(out.boxes[0] - truth).mean())
    # The filtered box is closer to the truth than the raw detections on average.
    assert np.mean(errs_out) < 0.8 * np.mean(errs_det)


# ---------------------------------------------------------------- two faces crossing


def _crossing(steps: int, hidden: range = range(0)) -> tuple[list[list[list[float]]], list[list[int]]]:
    """Face A walks right, face B walks left on the same row; returns per-frame boxes and which face each is.

    Frames in `hidden` show only A (B is behind A, as a detector's NMS would also leave one box)."""
    frames, who = [], []
    for f in range(steps):
        a = box(100 + 7.0 * f, 200 + 0.2 * f)
        b = box(417 - 9.0 * f, 203 - 0.1 * f)
        if f in hidden:
            frames.append([a])
            who.append([0])
        elif f % 2:
            frames.append([b, a])
            who.append([1, 0])
        else:
            frames.append([a, b])
            who.append([0, 1])
    return frames, who


def test_crossing_faces_keep_their_ids() -> None:
    frames, who = _crossing(40)
    # The scenario is hard: somewhere a face's previous box overlaps the *other* face's new box more than
    # its own, so matching by overlap with the last position alone would swap the ids.
    hard = False
    for f in range(1, 40):
        prev = dict(zip(who[f - 1], frames[f - 1], strict=True))
        cur = dict(zip(who[f], frames[f], strict=True))
        iou = box_iou([prev[0]], [cur[0], cur[1]])[0]
        hard |= bool(iou[1] > iou[0])
    assert hard

    t = ByteTracker(confirm_frames=2)
    ident: dict[int, int] = {}  # face -> track id
    for f in range(40):
        out = t.update(dets(frames[f]))
        m = by_id(out)
        assert sorted(m) == [1, 2]
        for tid, row in m.items():
            assert row >= 0
            face = who[f][row]
            assert ident.setdefault(face, tid) == tid, f"id switch at frame {f}"
    assert t.ended == []


def test_crossing_with_one_face_hidden_keeps_ids() -> None:
    hidden = range(17, 22)  # B is behind A around the crossing
    frames, who = _crossing(40, hidden)
    t = ByteTracker(confirm_frames=2, lost_frames=10)
    ident: dict[int, int] = {}
    for f in range(40):
        out = t.update(dets(frames[f]))
        m = by_id(out)
        assert sorted(m) == [1, 2], f"frame {f}: {m}"
        seen = {tid: who[f][row] for tid, row in m.items() if row >= 0}
        if f in hidden:
            assert len(seen) == 1
        for tid, face in seen.items():
            assert ident.setdefault(face, tid) == tid, f"id switch at frame {f}"
    assert ident == {0: 1, 1: 2}


# ---------------------------------------------------------------- occlusion


def _occluded_run(t: ByteTracker, hide_from: int, hide_frames: int, total: int) -> list[Tracks]:
    outs = []
    for f in range(total):
        if hide_from <= f < hide_from + hide_frames:
            outs.append(t.update(Detections.empty()))
        else:
            outs.append(t.update(dets([box(100 + 5.0 * f, 200)])))
    return outs


def test_occlusion_up_to_lost_frames_keeps_the_id() -> None:
    lost = 6
    t = ByteTracker(lost_frames=lost, confirm_frames=3)
    outs = _occluded_run(t, hide_from=20, hide_frames=lost, total=40)
    for f, out in enumerate(outs):
        assert out.ids.tolist() == [1], f"frame {f}"
        assert out.confirmed.tolist() == [f >= 2]
    for f in range(20, 20 + lost):
        assert outs[f].det_index.tolist() == [-1]
        # The lost track's box is the prediction, which keeps moving along the path.
        cx = float(outs[f].boxes[0, 0] + outs[f].boxes[0, 2]) / 2
        assert cx == pytest.approx(100 + 5.0 * f, abs=3.0)
        assert outs[f].scores[0] == np.float32(0.9)
    assert outs[20 + lost].det_index.tolist() == [0]
    assert t.info(1).hits == 40 - lost


def test_occlusion_longer_than_lost_frames_ends_the_track() -> None:
    lost = 6
    t = ByteTracker(lost_frames=lost, confirm_frames=3)
    ended: dict[int, list[int]] = {}
    outs = []
    for f in range(40):
        if 20 <= f < 20 + lost + 1:
            outs.append(t.update(Detections.empty()))
        else:
            outs.append(t.update(dets([box(100 + 5.0 * f, 200)])))
        if t.ended:
            ended[f] = t.ended
            assert t.ended_confirmed == t.ended
            assert t.ended_tracks[0].hits == 20
    # Ends on its (lost_frames + 1)-th unseen frame, reported once.
    assert ended == {20 + lost: [1]}
    assert outs[20 + lost - 1].ids.tolist() == [1]
    assert len(outs[20 + lost]) == 0
    back = outs[20 + lost + 1]
    assert back.ids.tolist() == [2] and back.confirmed.tolist() == [False]
    assert outs[-1].ids.tolist() == [2] and outs[-1].confirmed.tolist() == [True]


# ---------------------------------------------------------------- low-score detections


def _blur_run(blur_score: float) -> tuple[list[Tracks], list[list[int]]]:
    t = ByteTracker(lost_frames=2, confirm_frames=2, high_threshold=0.6, low_threshold=0.2)
    outs, ended = [], []
    for f in range(30):
        score = blur_score if 10 <= f < 20 else 0.9
        outs.append(t.update(dets([box(100 + 3.0 * f, 200)], score)))
        ended.append(t.ended)
    return outs, ended


def test_low_score_detections_keep_a_track_alive() -> None:
    outs, ended = _blur_run(0.35)
    for out in outs:
        assert out.ids.tolist() == [1]
        assert out.det_index.tolist() == [0]
    assert outs[15].scores[0] == np.float32(0.35)
    assert not any(ended)


def test_without_the_second_stage_the_same_blur_ends_the_track() -> None:
    # Control for the test above: scores below low_threshold are ignored, so the track is lost and ends.
    outs, ended = _blur_run(0.1)
    assert ended[12] == [1]
    assert outs[20].ids.tolist() == [2]


def test_low_score_detection_never_starts_a_track() -> None:
    t = ByteTracker(high_threshold=0.6, low_threshold=0.2, new_track_threshold=0.7)
    for f in range(20):
        # A low score (second-stage only) and a high score below new_track_threshold.
        assert len(t.update(dets([box(100, 100 + f), box(400, 300)], [0.5, 0.65]))) == 0
    assert len(t.update(dets([box(100, 120), box(400, 300)], [0.5, 0.75]))) == 1


def test_low_score_detection_does_not_revive_a_lost_track() -> None:
    # Stage 2 only serves tracks seen in the previous frame; a lost track needs a high-score detection.
    t = ByteTracker(confirm_frames=1, lost_frames=10, high_threshold=0.6, low_threshold=0.2, new_track_threshold=0.7)
    for f in range(5):
        t.update(dets([box(100 + 2.0 * f, 200)]))
    assert t.update(Detections.empty()).det_index.tolist() == [-1]
    assert t.update(dets([box(114, 200)], 0.4)).det_index.tolist() == [-1]
    assert t.update(dets([box(116, 200)], 0.9)).det_index.tolist() == [0]


# ---------------------------------------------------------------- confirmation and ending


def test_confirm_frames_needs_consecutive_hits_and_sticks() -> None:
    t = ByteTracker(confirm_frames=3, lost_frames=5)
    conf = [t.update(dets([box(100 + f, 100)])).confirmed.tolist() for f in range(4)]
    assert conf == [[False], [False], [True], [True]]
    # Once confirmed, a lost track stays confirmed.
    assert t.update(Detections.empty()).confirmed.tolist() == [True]

    t = ByteTracker(confirm_frames=3)
    t.update(dets([box(100, 100)]))
    t.update(dets([box(101, 100)]))
    out = t.update(Detections.empty())  # a miss during probation drops the track
    assert len(out) == 0
    assert t.ended == [1] and t.ended_confirmed == []
    out = t.update(dets([box(103, 100)]))
    assert out.ids.tolist() == [2] and out.confirmed.tolist() == [False]


def test_confirm_frames_one_confirms_at_once() -> None:
    t = ByteTracker(confirm_frames=1)
    assert t.update(dets([box(100, 100)])).confirmed.tolist() == [True]


def test_ended_ids_are_reported_exactly_once() -> None:
    t = ByteTracker(lost_frames=3, confirm_frames=2)
    # Face k is visible from frame 5k to 5k+11, moving; then 20 empty frames end everything.
    reported: list[int] = []
    seen: set[int] = set()
    for f in range(60):
        boxes = [box(80 + 90 * k + 2 * f, 100 + 50 * (k % 2)) for k in range(6) if 5 * k <= f < 5 * k + 12]
        out = t.update(dets(boxes) if boxes else Detections.empty())
        assert not set(out.ids.tolist()) & set(reported), "an ended id came back"
        assert not set(t.ended) & set(out.ids.tolist())
        assert set(t.ended_confirmed) <= set(t.ended)
        reported += t.ended
        seen |= set(out.ids.tolist())
    assert len(t) == 0
    assert sorted(reported) == sorted(seen) == [1, 2, 3, 4, 5, 6]
    assert len(reported) == len(set(reported))
    assert t.update(Detections.empty()).ids.size == 0 and t.ended == []


# ---------------------------------------------------------------- ids and reset


def test_reset_restarts_ids_at_one() -> None:
    t = ByteTracker(confirm_frames=1)
    for f in range(5):
        t.update(dets([box(100 + f, 100), box(300, 300 + f)]))
    assert len(t) == 2 and t.frame_count == 5
    t.update(Detections.empty())
    t.reset()
    assert len(t) == 0 and t.frame_count == 0 and t.ended == []
    out = t.update(dets([box(500, 500)]))
    assert out.ids.tolist() == [1]
    assert t.info(1).first_frame == 1


def test_two_trackers_do_not_share_ids() -> None:
    a, b = ByteTracker(confirm_frames=1), ByteTracker(confirm_frames=1)
    assert a.update(dets([box(100, 100), box(300, 100)])).ids.tolist() == [1, 2]
    assert b.update(dets([box(100, 100)])).ids.tolist() == [1]
    assert a.update(dets([box(100, 100), box(300, 100), box(500, 100)])).ids.tolist() == [1, 2, 3]
    assert b.update(dets([box(100, 100), box(500, 500)])).ids.tolist() == [1, 2]


# ---------------------------------------------------------------- motion gate


def test_motion_gate_refuses_implausible_jumps() -> None:
    def run(gate: float | None) -> list[int]:
        t = ByteTracker(confirm_frames=1, motion_gate=gate, match_iou=0.3)
        for f in range(30):
            t.update(dets([box(100 + 2.0 * f, 200)]))
        # A detection 40 % of a width off the predicted path: IoU ~ 0.43 passes match_iou, motion does not.
        jump = box(100 + 2.0 * 30 + 24, 200)
        return t.update(dets([jump])).ids.tolist()

    assert run(None) == [1]
    assert run(CHI2_95_4DOF) == [1, 2]


# ---------------------------------------------------------------- bad and odd input


@pytest.mark.parametrize("points", [4, 5])
def test_empty_detections(points: int) -> None:
    t = ByteTracker(confirm_frames=1, lost_frames=2)
    out = t.update(Detections.empty(points))
    assert len(out) == 0 and t.ended == []
    t.update(dets([box(100, 100)], points=points))
    out = t.update(Detections.empty(points))
    assert out.ids.tolist() == [1] and out.det_index.tolist() == [-1]


@pytest.mark.parametrize(
    ("boxes", "scores"),
    [
        ([[10, 10, float("nan"), 50]], [0.9]),
        ([[10, 10, 50, 50]], [float("nan")]),
        ([[10, float("inf"), 50, 50]], [0.9]),
    ],
)
def test_non_finite_detections_are_rejected(boxes: list[list[float]], scores: list[float]) -> None:
    t = ByteTracker(confirm_frames=1)
    t.update(dets([box(30, 30)]))
    with pytest.raises(ValueError, match="non-finite"):
        t.update(dets(boxes, scores))
    # The failed call changed nothing.
    assert t.frame_count == 1 and t.ended == []
    assert t.update(dets([box(30, 30)])).ids.tolist() == [1]


def test_inverted_box_is_rejected() -> None:
    with pytest.raises(ValueError, match="x2 < x1"):
        ByteTracker().update(dets([[50, 10, 10, 50]]))


def test_zero_size_boxes_are_ignored() -> None:
    t = ByteTracker(confirm_frames=1)
    out = t.update(dets([[10, 10, 10, 50], box(200, 200), [5, 5, 60, 5]], 0.95))
    assert out.ids.tolist() == [1] and out.det_index.tolist() == [1]


def test_wrong_input_type_is_rejected() -> None:
    with pytest.raises(TypeError, match="expected Detections"):
        ByteTracker().update(np.zeros((1, 5), np.float32))  # type: ignore[arg-type]
