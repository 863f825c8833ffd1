"""`edge-mtl run` on the real videos: events of the exact schema, and (almost) none where no face is visible."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from edge_mtl import defaults as D
from edge_mtl.events.queue import EventQueue
from edge_mtl.events.schema import SCHEMA_KEYS, decode_event
from tests.e2e.conftest import edge_mtl, read_jsonl
from tests.proc_helpers import REPO, child_env

pytestmark = pytest.mark.data


def test_pedestrians_appeared_and_left(data_dir: Path, tmp_path: Path, model_args: list[str]) -> None:
    video = data_dir / "videos" / "pedestrians_1080p.mp4"
    db, log = tmp_path / "events.db", tmp_path / "events.jsonl"
    edge_mtl("run", *model_args, "--source", str(video), "--camera", "ped", "--events", str(db), "--jsonl", str(log))
    events = read_jsonl(log)
    kinds = Counter(e["type"] for e in events)
    # Tracking against the hand-made ground truth (benchmarks/pedestrians_gt.json: 62 clearly visible faces of 9
    # people, every 10th frame), through the same pipeline on every frame of the clip (docs/pipeline.md: recall
    # 0.68, 4 false tracks at the samples, 1 ID switch with the shipped models at 640)
    report = json.loads(subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "tracking_report.py"), "--video", str(video), "--sizes", "640",
         "--json", *model_args], capture_output=True, text=True, timeout=600, check=True, env=child_env(),
    ).stdout)["sizes"]["640"]
    assert report["visible_faces"] == 62 and report["people_with_visible_face"] == 9
    assert report["recall"] >= 0.65, report["recall"]
    assert report["tracks_matched_to_people"] >= 8 and report["false_tracks_at_samples"] <= 6, report
    assert report["id_switches"] <= 2, report["id_switches"]
    assert kinds["face.appeared"] == report["confirmed_tracks"], (kinds, report["confirmed_tracks"])
    # every track that appeared also left (the file ended), with its final aggregate
    appeared = {e["track_id"] for e in events if e["type"] == "face.appeared"}
    left = {e["track_id"] for e in events if e["type"] == "face.left"}
    assert appeared == left
    for e in events:
        assert tuple(e) == SCHEMA_KEYS  # exactly the schema's keys, in order
        decode_event(e)  # strict validation: types, ranges, timestamp format
        assert e["camera"] == "ped" and e["track_id"].startswith("ped-")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    finals = [e for e in events if e["type"] == "face.left"]
    assert all(e["duration_s"] >= 0 for e in finals)
    analysed = [e for e in finals if e["age"] is not None]
    assert analysed, "no track was ever analysed by the recognizer"
    for e in analysed:
        assert 0 < e["age"]["years"] < 100
        # gender is null while the track's aggregated confidence is under attributes.gender_min_confidence
        g = e["gender"]
        assert g is None or (g["label"] in ("male", "female") and g["confidence"] >= D.GENDER_MIN_CONFIDENCE)
        assert 0.0 <= e["quality"] <= 1.0
    assert any(e["gender"] is not None for e in analysed)
    # the JSONL log is written from the queue: same events, same order
    with EventQueue(db, create=False) as q:
        assert [r["id"] for r in q.read(1, 10_000)] == [e["id"] for e in events]


def test_cctv_without_faces_gives_few_events(data_dir: Path, tmp_path: Path, model_args: list[str]) -> None:
    video = data_dir / "videos" / "cctv_overhead_no_faces.mp4"
    log = tmp_path / "events.jsonl"
    edge_mtl("run", *model_args, "--source", str(video), "--events", str(tmp_path / "e.db"), "--jsonl", str(log))
    appeared = [e for e in read_jsonl(log) if e["type"] == "face.appeared"]
    # overhead camera, people almost never show a face: at most one spurious track in 26 s of video
    assert len(appeared) <= 1, appeared
