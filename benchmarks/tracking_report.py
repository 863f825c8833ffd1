"""Tracking quality on pedestrians_1080p.mp4 against a small hand-made ground truth (not run in CI).

Runs the pipeline (detector -> ByteTracker -> recognizer, as `edge-mtl run` does on a file: every frame, in
order) at one or more detector input sizes, and compares the confirmed tracks with `pedestrians_gt.json`: every
10th frame, the face box and a person number of each visible face (made by eye; see its "about"). Faces marked
`hard` (profile, turned away, partly hidden) are neither counted as missed nor make a track false.

At each annotated frame, the confirmed tracks seen in that frame (what the daemon reports) are matched one to one to
the listed faces by box overlap (Hungarian assignment, IoU >= --iou). From the matches:

* people: persons with at least one clearly visible (not hard) face;
* tracks: confirmed tracks (face.appeared events), their lifetimes (first to last frame seen, in frames and
  seconds), and how many of them never matched a listed face (false or too brief to be sampled);
* missed: clearly visible faces with no matching track (recall = 1 - missed / visible faces); detector_recall is
  the share of those faces the detector alone finds at the tracker's high and low score thresholds (a face the
  detector finds but no confirmed track covers was lost by the tracker: unconfirmed yet, or a new track not opened
  because its score is below new_track_threshold);
* false: confirmed tracks seen at an annotated frame that match no listed face;
* id_switches: for each person, how often the matched track id changes between consecutive matched samples;
* fragmentation: how often a person's matching is interrupted (matched, then missed while clearly visible, then
  matched again), plus tracks_per_person (distinct track ids each person was matched to).

    nice -n 10 python benchmarks/tracking_report.py --sizes 640,960 --json
    python benchmarks/tracking_report.py --detector d.onnx --recognizer r.onnx --sizes 640 \\
        --set tracker.high_threshold=0.3 --set tracker.new_track_threshold=0.35 --set tracker.low_threshold=0.15
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

REPO = Path(__file__).resolve().parents[1]
GT = Path(__file__).with_name("pedestrians_gt.json")


def match(gt_boxes: np.ndarray, boxes: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """One-to-one (gt index, box index) pairs with IoU >= min_iou maximising total IoU."""
    from edge_mtl.vision.boxes import iou_matrix

    iou = iou_matrix(gt_boxes.astype(np.float32), boxes.astype(np.float32))
    if iou.size == 0:
        return []
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= min_iou]


def run_pipeline(args: argparse.Namespace, video: Path, size: int, sampled: set[int]) -> dict[str, Any]:
    """Every frame through the pipeline; per frame the confirmed tracks seen in it (id, box), plus events; at the
    `sampled` frames also the detector's own output (box, score), to tell detector misses from tracker misses."""
    import cv2

    from edge_mtl.config import AppConfig, load_config
    from edge_mtl.pipeline import Pipeline
    from edge_mtl.runtime.registry import load_detector, load_recognizer
    from edge_mtl.types import Frame

    cfg = load_config(args.config) if args.config else AppConfig()
    if args.detector:
        cfg.detector.model = args.detector
    if args.recognizer:
        cfg.recognizer.model = args.recognizer
    cfg.detector.input_size = size
    for item in args.set or []:
        key, _, value = item.partition("=")
        section, _, name = key.strip().partition(".")
        if not (section and name and value):
            raise SystemExit(f"--set {item!r}: expected section.key=value")
        setattr(getattr(cfg, section), name, tomllib.loads(f"v = {value.strip()}")["v"])
    cfg = type(cfg).model_validate(cfg.model_dump())  # re-check bounds and relations of the changed settings
    pipe = Pipeline(cfg, load_detector(cfg), load_recognizer(cfg))
    cap = cv2.VideoCapture(str(video))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0)
    seen: dict[int, list[tuple[int, np.ndarray]]] = {}
    dets: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    events: list[Any] = []
    index = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        if index in sampled:
            d = pipe.detector.detect(image)
            dets[index] = (d.boxes.astype(np.float64), d.scores.astype(np.float64))
        events += pipe.process([Frame(image, "ped", index, index / fps)])
        cam = pipe.cameras["ped"]
        seen[index] = [(st.track_id, st.box.copy()) for st in cam.tracks.values() if st.announced and st.visible]
        index += 1
    cap.release()
    events += pipe.finish()
    pipe.close()
    return {"frames": index, "fps": fps, "seen": seen, "dets": dets, "events": events, "stages": pipe.timer.summary(),
            "thresholds": (cfg.tracker.high_threshold, cfg.tracker.low_threshold)}


def evaluate(gt: dict[str, Any], run: dict[str, Any], min_iou: float) -> dict[str, Any]:
    fps = run["fps"]
    seen: dict[int, list[tuple[int, np.ndarray]]] = run["seen"]
    appeared = [e.track_id for e in run["events"] if e.type == "face.appeared"]
    # lifetimes of confirmed tracks: first to last frame in which they were seen
    life: dict[int, list[int]] = defaultdict(list)
    for f, tracks in seen.items():
        for tid, _ in tracks:
            life[tid].append(f)
    lifetimes = {tid: (min(fs), max(fs)) for tid, fs in life.items()}

    visible = missed = false = 0
    unmatched: list[dict[str, Any]] = []  # the false tracks at the samples, to look at
    per_person: dict[int, list[tuple[int, int | None, bool]]] = defaultdict(list)  # (frame, track or None, hard)
    matched_tracks: dict[int, Counter[int]] = defaultdict(Counter)  # track -> person -> samples
    for fr in gt["frames"]:
        f = fr["frame"]
        faces = fr["faces"]
        tracks = seen.get(f, [])
        gt_boxes = np.asarray([x["box"] for x in faces], np.float64).reshape(-1, 4)
        tr_boxes = np.asarray([b for _, b in tracks], np.float64).reshape(-1, 4)
        pairs = dict(match(gt_boxes, tr_boxes, min_iou))
        for gi, face in enumerate(faces):
            tid = tracks[pairs[gi]][0] if gi in pairs else None
            per_person[face["person"]].append((f, tid, face["hard"]))
            if tid is not None:
                matched_tracks[tid][face["person"]] += 1
            if not face["hard"]:
                visible += 1
                missed += tid is None
        false += len(tracks) - len(pairs)
        hit = set(pairs.values())
        unmatched += [{"frame": f, "track": tid, "box": [round(float(v)) for v in box]}
                      for j, (tid, box) in enumerate(tracks) if j not in hit]

    id_switches = fragmentation = 0
    people = {}
    for person, samples in sorted(per_person.items()):
        ids = [tid for _, tid, _ in samples if tid is not None]
        switches = sum(1 for a, b in pairwise(ids) if a != b)
        # interruptions: a clearly visible sample without a match between two matched samples
        state, frags = "none", 0
        for _, tid, hard in samples:
            if tid is not None:
                if state == "gap":
                    frags += 1
                state = "on"
            elif not hard and state == "on":
                state = "gap"
        id_switches += switches
        fragmentation += frags
        people[str(person)] = {
            "samples": len(samples), "clear": sum(not h for _, _, h in samples),
            "matched": len(ids), "tracks": sorted(set(ids)), "id_switches": switches, "fragmentation": frags,
        }
    # the detector alone at the sampled frames: clearly visible faces it finds above the tracker's thresholds
    det_recall = {}
    for name, thr in zip(("high", "low"), run["thresholds"], strict=True):
        found = total = 0
        for fr in gt["frames"]:
            clear = [x["box"] for x in fr["faces"] if not x["hard"]]
            boxes, scores = run["dets"].get(fr["frame"], (np.zeros((0, 4)), np.zeros(0)))
            found += len(match(np.asarray(clear, np.float64).reshape(-1, 4), boxes[scores >= thr], min_iou))
            total += len(clear)
        det_recall[f"{name}_{thr:g}"] = round(found / max(total, 1), 3)
    clear_people = [p for p, s in per_person.items() if any(not h for _, _, h in s)]
    never = [tid for tid in appeared_numbers(appeared) if tid not in matched_tracks]
    return {
        "people_with_visible_face": len(clear_people),
        "confirmed_tracks": len(appeared),
        "tracks_matched_to_people": len(matched_tracks),
        "tracks_never_matched": len(never),
        "lifetimes_frames": {str(t): b - a + 1 for t, (a, b) in sorted(lifetimes.items())},
        "median_lifetime_s": round(float(np.median([b - a + 1 for a, b in lifetimes.values()])) / fps, 2)
        if lifetimes else 0.0,
        "visible_faces": visible, "missed": missed, "recall": round(1 - missed / max(visible, 1), 3),
        "detector_recall": det_recall,
        "false_tracks_at_samples": false, "false_at_samples": unmatched, "id_switches": id_switches,
        "fragmentation": fragmentation,
        "tracks_per_person": {p: len(v["tracks"]) for p, v in people.items()},
        "people": people,
    }


def appeared_numbers(track_ids: list[str]) -> list[int]:
    return [int(t.rsplit("-", 1)[1]) for t in track_ids]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, help="default: $EDGE_MTL_DATA/videos/pedestrians_1080p.mp4")
    ap.add_argument("--sizes", default="640,960", help="detector input sizes to compare")
    ap.add_argument("--config", type=Path)
    ap.add_argument("--detector", type=Path)
    ap.add_argument("--recognizer", type=Path)
    ap.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="a config setting (TOML value), e.g. --set tracker.high_threshold=0.3 (repeat)")
    ap.add_argument("--iou", type=float, default=0.3, help="minimum IoU of a track box with a listed face")
    ap.add_argument("--json", action="store_true", help="one JSON line instead of indented JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(REPO))
    from edge_mtl.paths import data_root

    gt = json.loads(GT.read_text())
    video = args.video
    if video is None:
        root = data_root()
        if root is None:
            ap.error("no --video and no ../shared/data (set EDGE_MTL_DATA)")
        video = root / "videos" / gt["video"]
    result: dict[str, Any] = {"video": video.name, "annotated_frames": len(gt["frames"]), "iou": args.iou,
                              "settings": args.set or [], "sizes": {}}
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        run = run_pipeline(args, video, size, {fr["frame"] for fr in gt["frames"]})
        rep = evaluate(gt, run, args.iou)
        rep["stages"] = run["stages"]
        result["sizes"][str(size)] = rep
    sys.stdout.write((json.dumps(result) if args.json else json.dumps(result, indent=1)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
