"""Side-by-side face detector comparison on edge-mtl's Caltech WebFaces validation split (issue 4, item 3).

Detectors: edge-mtl (an ONNX file, through the product's `FaceDetector`), MTCNN (our own inference code in
`mtcnn.py` with the pretrained weights from the facenet-pytorch wheel), dlib's HOG frontal face detector and
OpenCV's Haar cascade (both in a worker process in the peers' environment, `peer_worker.py`).

Protocol (docs/detector_peers.md has the long form):
- Accuracy: every detector sees the same pixels: each image resized so its long side is `--long-side` (640, what
  `FaceDetector` does with the default `input_size`), detections mapped back to the original image.
- Box conventions differ, so a per-detector calibration (centre offset as a fraction of width/height, width and
  height scale; least squares after a 3-MAD outlier cut) is fitted on a seeded subset of the TRAINING split, where a
  detection is paired with a face when both annotated eye centres lie inside it (one-to-one, nearest first), and
  applied on validation before `edge_mtl.eval.detection.evaluate` (IoU 0.5 against the documented rule boxes).
- Alignment-free recall: a face counts as found when both its eye centres lie inside a detection (one-to-one).
- Speed: every validation image letterboxed to 640x480; for each frame all detectors run one after another (order
  rotated per frame) so machine load hits them alike; median ms per frame, once single-threaded, once with each
  library's default threads.

Usage: python benchmarks/peer_detectors.py --model MODEL.onnx [--limit N] [--out r.json] [--markdown r.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_mtl.data import sources as S
from edge_mtl.data.sources import DetImage, to_det_images
from edge_mtl.eval.detection import BANDS, GroundTruth, evaluate, iod
from edge_mtl.types import Detections

log = logging.getLogger("peer_detectors")
F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
DEFAULT_WHEEL = "/tmp/fp/facenet_pytorch-2.6.0-py3-none-any.whl"
ALL = ("edge-mtl", "mtcnn", "hog", "haar")


# ------------------------------------------------------------------------------------------------ detectors
@dataclass
class Peer:
    """One detector: `detect(bgr)` -> raw detections in the given image's pixels, plus how to read its scores."""

    name: str
    detect: Callable[[U8], Detections]
    set_threads: Callable[[int], int]  # 0 = library default; returns the thread count in use
    op_threshold: float  # the detector's own operating point (recall, precision, calibration)
    has_scores: bool
    has_landmarks: bool
    settings: dict[str, Any] = field(default_factory=dict)
    timing_detect: Callable[[U8], Detections] | None = None  # at the operating point, if it differs


def resize_long_side(img: U8, long_side: int) -> tuple[U8, float, float]:
    """The resize FaceDetector.prepare applies (area when shrinking, bilinear when growing); per-axis scales."""
    h, w = img.shape[:2]
    s = long_side / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    out = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return out, nw / w, nh / h


def letterbox(img: U8, w: int = 640, h: int = 480) -> U8:
    """Fit inside w x h keeping the aspect ratio, centred on black: a camera-sized frame for timing."""
    ih, iw = img.shape[:2]
    s = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * s)), max(1, round(ih * s))
    r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    out = np.zeros((h, w, 3), np.uint8)
    y0, x0 = (h - nh) // 2, (w - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = r
    return out


def _at_long_side(fn: Callable[[U8], Detections], long_side: int | None) -> Callable[[U8], Detections]:
    """Run `fn` on the image resized to `long_side` and map its output back (None: native pixels)."""
    if not long_side:
        return fn

    def run(img: U8) -> Detections:
        r, sx, sy = resize_long_side(img, long_side)
        d = fn(r)
        s = np.array([sx, sy], np.float32)
        return Detections((d.boxes / np.tile(s, 2)).astype(np.float32), d.scores,
                          (d.landmarks / s).astype(np.float32))

    return run


def edge_peer(model: str, input_size: int, threshold: float, landmarks: str | None = None) -> Peer:
    """edge-mtl's detector as the product runs it: FaceDetector, with the landmark refiner when `landmarks` names
    one (the shipped export/landmarks.onnx by default; its cost is in the timing)."""
    from edge_mtl.runtime.detector import FaceDetector
    from edge_mtl.runtime.landmarks import LandmarkRefiner
    from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine

    def refiner(n: int) -> LandmarkRefiner | None:
        return LandmarkRefiner(OnnxRuntimeEngine(landmarks, threads=n), 2) if landmarks else None

    dets = {n: FaceDetector(OnnxRuntimeEngine(model, threads=n), input_size=input_size,
                            score_threshold=min(0.05, threshold), refiner=refiner(n)) for n in (0, 1)}
    op = {n: FaceDetector(OnnxRuntimeEngine(model, threads=n), input_size=input_size,
                          score_threshold=threshold, refiner=refiner(n)) for n in (0, 1)}
    state = {"n": 0}

    def set_threads(n: int) -> int:
        state["n"] = 1 if n == 1 else 0
        return n if n == 1 else int(os.cpu_count() or 1)

    return Peer("edge-mtl", lambda im: dets[state["n"]].detect(im), set_threads, threshold, True, True,
                {"model": model, "landmarks": landmarks, "input_size": input_size, "score_threshold": threshold,
                 "nms": 0.4,
                 "runtime": "onnxruntime CPU (FaceDetector)", "ap_scores_from": min(0.05, threshold)},
                timing_detect=lambda im: op[state["n"]].detect(im))


def mtcnn_peer(wheel: str, min_face: float, long_side: int | None) -> Peer:
    import torch
    from mtcnn import MTCNN

    net = MTCNN(wheel, min_face=min_face)
    default = torch.get_num_threads()

    def detect(bgr: U8) -> Detections:
        r = net.detect(np.ascontiguousarray(bgr[:, :, ::-1]))
        p = r.landmarks
        eyes = p[:, :2].copy()
        swap = eyes[:, 0, 0] > eyes[:, 1, 0]  # our convention: left eye = smaller x
        eyes[swap] = eyes[swap][:, ::-1]
        lm4 = np.concatenate([eyes, p[:, 2:3], p[:, 3:5].mean(axis=1, keepdims=True)], axis=1)
        return Detections(r.boxes.astype(np.float32), r.scores.astype(np.float32), lm4.astype(np.float32))

    def set_threads(n: int) -> int:
        torch.set_num_threads(n or default)
        return torch.get_num_threads()

    return Peer("mtcnn", _at_long_side(detect, long_side), set_threads, net.thresholds[2], True, True,
                {"min_face_px": min_face, "scale_factor": net.factor, "thresholds": list(net.thresholds),
                 "nms": list(net.nms_thresholds), "runtime": f"PyTorch {torch.__version__} CPU (own implementation)",
                 "weights": "facenet-pytorch 2.6.0 wheel data/{pnet,rnet,onet}.pt"},
                timing_detect=detect)


class Worker:
    """The dlib/OpenCV-4 worker process (peer_worker.py) in the peers' environment."""

    def __init__(self, python: str, pythonpath: str | None) -> None:
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        script = str(Path(__file__).resolve().parent / "peer_worker.py")
        self.proc = subprocess.Popen([python, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.info = self._reply()
        self.last_ms = self.last_cpu_ms = 0.0

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"peer worker exited with {self.proc.wait()}")
        return dict(json.loads(line))

    def _send(self, req: dict[str, Any], payload: bytes = b"") -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(req).encode() + b"\n" + payload)
        self.proc.stdin.flush()
        return self._reply()

    def threads(self, n: int) -> int:
        return int(self._send({"cmd": "threads", "n": n})["threads"])

    def detect(self, det: str, bgr: U8, adjust: float) -> Detections:
        img = np.ascontiguousarray(bgr)
        r = self._send({"cmd": "detect", "det": det, "h": img.shape[0], "w": img.shape[1], "adjust": adjust},
                       img.tobytes())
        self.last_ms = float(r["ms"])
        self.last_cpu_ms = float(r["cpu_ms"])
        n = len(r["boxes"])
        boxes = np.asarray(r["boxes"], np.float32).reshape(n, 4)
        return Detections(boxes, np.asarray(r["scores"], np.float32).reshape(n),
                          np.full((n, 4, 2), np.nan, np.float32))

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b'{"cmd": "quit"}\n')
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)


def worker_peers(worker: Worker, long_side: int | None, which: Sequence[str]) -> list[Peer]:
    out = []
    if "hog" in which:
        out.append(Peer("hog", _at_long_side(lambda im: worker.detect("hog", im, -0.5), long_side), lambda n: 1,
                        0.0, True, False,
                        {"upsample": 1, "operating_threshold": 0.0, "ap_scores_from": -0.5,
                         "runtime": f"dlib {worker.info['dlib']} (dlib-bin), single-threaded by design"},
                        timing_detect=lambda im: worker.detect("hog", im, 0.0)))
    if "haar" in which:
        out.append(Peer("haar", _at_long_side(lambda im: worker.detect("haar", im, 0.0), long_side),
                        worker.threads, 0.5, False, False,
                        {"cascade": worker.info["cascade"], "scale_factor": 1.1, "min_neighbors": 3,
                         "min_size": "24x24 (cascade window)", "grey, no histogram equalisation": True,
                         "runtime": f"OpenCV {worker.info['opencv']} (opencv-python-headless)"}))
    return out


# ------------------------------------------------------------------------------------------------ matching
def eye_pairs(det: Detections, gt: GroundTruth, threshold: float) -> list[tuple[int, int]]:
    """(face, detection) pairs where both annotated eye centres lie inside the detection, one-to-one, nearest
    (box centre to the face's landmark centre, relative to box size) first."""
    keep = np.nonzero(det.scores >= threshold)[0]
    cands = []
    for g in range(gt.landmarks.shape[0]):
        eyes = gt.landmarks[g, :2]
        if not np.isfinite(eyes).all():
            continue
        centre = np.nanmean(gt.landmarks[g], axis=0)
        for p in keep.tolist():
            x1, y1, x2, y2 = det.boxes[p]
            if (eyes[:, 0] >= x1).all() and (eyes[:, 0] <= x2).all() and (eyes[:, 1] >= y1).all() \
                    and (eyes[:, 1] <= y2).all():
                c = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
                size = max(float(np.sqrt((x2 - x1) * (y2 - y1))), 1e-6)
                cands.append((float(np.linalg.norm(c - centre)) / size, g, p))
    cands.sort()
    used_g: set[int] = set()
    used_p: set[int] = set()
    out: list[tuple[int, int]] = []
    for _, gi, pi in cands:
        if gi not in used_g and pi not in used_p:
            used_g.add(gi)
            used_p.add(pi)
            out.append((gi, pi))
    return out


def fit_calibration(dets: Sequence[Detections], gts: Sequence[GroundTruth], threshold: float) -> dict[str, float]:
    """Least-squares box calibration: target centre = centre + (ux*w, uy*h), target size = (kw*w, kh*h), fitted in
    units of the detection's own size after dropping pairs more than 3 MADs off in any of the four terms."""
    rows = []
    for d, g in zip(dets, gts, strict=True):
        for gi, p in eye_pairs(d, g, threshold):
            b, t = d.boxes[p].astype(np.float64), g.boxes[gi].astype(np.float64)
            w, h = max(b[2] - b[0], 1e-6), max(b[3] - b[1], 1e-6)
            rows.append(((t[0] + t[2] - b[0] - b[2]) / 2 / w, (t[1] + t[3] - b[1] - b[3]) / 2 / h,
                         (t[2] - t[0]) / w, (t[3] - t[1]) / h))
    if len(rows) < 10:
        return {"ux": 0.0, "uy": 0.0, "kw": 1.0, "kh": 1.0, "pairs": float(len(rows)), "inliers": 0.0}
    a = np.asarray(rows)
    med = np.median(a, axis=0)
    mad = np.median(np.abs(a - med), axis=0) * 1.4826 + 1e-9
    inl = (np.abs(a - med) <= 3 * mad).all(axis=1)
    m = a[inl].mean(axis=0)  # least squares for a constant model = the mean of the inliers
    return {"ux": round(float(m[0]), 4), "uy": round(float(m[1]), 4), "kw": round(float(m[2]), 4),
            "kh": round(float(m[3]), 4), "pairs": float(len(rows)), "inliers": float(inl.sum())}


def apply_calibration(d: Detections, c: dict[str, float]) -> Detections:
    b = d.boxes.astype(np.float64)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx = (b[:, 0] + b[:, 2]) / 2 + c["ux"] * w
    cy = (b[:, 1] + b[:, 3]) / 2 + c["uy"] * h
    hw, hh = c["kw"] * w / 2, c["kh"] * h / 2
    boxes = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1).astype(np.float32)
    return Detections(boxes, d.scores, d.landmarks)


def eyes_in_box_recall(dets: Sequence[Detections], gts: Sequence[GroundTruth], threshold: float) -> dict[str, Any]:
    hit = {b: 0 for b, _, _ in BANDS}
    n = {b: 0 for b, _, _ in BANDS}
    for d, g in zip(dets, gts, strict=True):
        found = np.zeros(g.landmarks.shape[0], bool)
        for gi, _ in eye_pairs(d, g, threshold):
            found[gi] = True
        dist = iod(g.landmarks)
        for b, lo, hi in BANDS:
            inb = (dist >= lo) & (dist < hi)
            n[b] += int(inb.sum())
            hit[b] += int((found & inb).sum())
    out: dict[str, Any] = {f"recall_{b}": round(hit[b] / n[b], 4) if n[b] else None for b, _, _ in BANDS}
    h10 = hit["iod_10_30"] + hit["iod_gt30"]
    n10 = n["iod_10_30"] + n["iod_gt30"]
    out["recall_iod_ge10"] = round(h10 / n10, 4) if n10 else None
    out["recall"] = round(sum(hit.values()) / max(sum(n.values()), 1), 4)
    return out


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def metrics(peer: Peer, dets: Sequence[Detections], gts: Sequence[GroundTruth]) -> dict[str, Any]:
    m: dict[str, Any] = dict(evaluate(dets, gts, score_threshold=peer.op_threshold))
    if not peer.has_scores:
        m["ap50"] = None
    if not peer.has_landmarks:
        m["nme"] = m["nme_median"] = None
    return _clean(m)


# ------------------------------------------------------------------------------------------------ runs
def read_bgr(path: str) -> U8:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read {path}")
    return np.asarray(img, np.uint8)


def run_accuracy(peers: Sequence[Peer], images: Sequence[DetImage], what: str) -> dict[str, list[Detections]]:
    out: dict[str, list[Detections]] = {p.name: [] for p in peers}
    t0 = time.time()
    for i, it in enumerate(images):
        img = read_bgr(it.path)
        for p in peers:
            out[p.name].append(p.detect(img))
        if (i + 1) % 100 == 0:
            log.info("%s: %d/%d images (%.0f s)", what, i + 1, len(images), time.time() - t0)
    return out


def run_timing(peers: Sequence[Peer], worker: Worker | None, frames: Sequence[U8], threads: int,
               warmup: int = 3) -> dict[str, dict[str, float]]:
    """Median wall and CPU ms per frame; every frame goes through all detectors (order rotated per frame)."""
    used = {p.name: p.set_threads(threads) for p in peers}
    cv2.setNumThreads(1 if threads == 1 else -1)
    wall: dict[str, list[float]] = {p.name: [] for p in peers}
    cpu: dict[str, list[float]] = {p.name: [] for p in peers}
    for i, f in enumerate(list(frames[:warmup]) + list(frames)):
        k = i % len(peers)
        for p in list(peers[k:]) + list(peers[:k]):
            fn = p.timing_detect or p.detect
            t, c = time.perf_counter(), time.process_time()
            fn(f)
            ms, cms = 1000 * (time.perf_counter() - t), 1000 * (time.process_time() - c)
            if worker is not None and p.name in ("hog", "haar"):
                ms, cms = worker.last_ms, worker.last_cpu_ms  # the detector's own time, not the transfer
            if i >= warmup:
                wall[p.name].append(ms)
                cpu[p.name].append(cms)
    return {n: {"median_ms": round(float(np.median(v)), 2), "p90_ms": round(float(np.percentile(v, 90)), 2),
                "median_cpu_ms": round(float(np.median(cpu[n])), 2), "threads": float(used[n])}
            for n, v in wall.items()}


def markdown(res: dict[str, Any]) -> str:
    def f(x: Any, pct: bool = True) -> str:
        if x is None:
            return "n/a"
        return f"{100 * x:.1f}" if pct else f"{x:.3f}"

    lines = ["| detector | recall IOD>=10 (calibrated) | raw boxes | eyes-in-box | IOD<10 | 10-30 | >30 | precision | "
             "AP50 | NME | 640x480, 1 thread: CPU ms (wall ms) | default threads: wall ms (threads) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["detectors"].items():
        c, raw, e, t = r["calibrated"], r["raw"], r["eyes_in_box"], r.get("timing", {})
        t1, td = t.get("threads_1", {}), t.get("threads_default", {})
        lines.append(
            f"| {name} | {f(c['recall_iod_ge10'])} | {f(raw['recall_iod_ge10'])} | {f(e['recall_iod_ge10'])} | "
            f"{f(c['recall_iod_lt10'])} | {f(c['recall_iod_10_30'])} | {f(c['recall_iod_gt30'])} | "
            f"{f(c['precision'])} | {f(c['ap50'])} | {f(c['nme'], False)} | "
            f"{t1.get('median_cpu_ms', 'n/a')} ({t1.get('median_ms', 'n/a')}) | "
            f"{td.get('median_ms', 'n/a')} ({int(td.get('threads', 0))}) |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="edge-mtl detector ONNX (required when edge-mtl is among --detectors)")
    ap.add_argument("--data", default=os.environ.get("EDGE_MTL_DATA", "../shared/data"))
    ap.add_argument("--detectors", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    ap.add_argument("--limit", type=int, default=0, help="first N validation (and at most N calibration) images")
    ap.add_argument("--calib-images", type=int, default=400, help="training images for the box calibration")
    ap.add_argument("--timing-images", type=int, default=150, help="validation frames timed (0: all used)")
    ap.add_argument("--timing-default-images", type=int, default=50,
                    help="frames timed with default threads (slow under load: multi-threaded runtimes stall)")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--long-side", type=int, default=640, help="all detectors see images with this long side")
    ap.add_argument("--input-size", type=int, default=0, help="edge-mtl FaceDetector input_size (0: --long-side)")
    ap.add_argument("--landmarks", default=str(Path(__file__).resolve().parents[1] / "export" / "landmarks.onnx"),
                    help="edge-mtl landmark refiner (default: the shipped one)")
    ap.add_argument("--no-refiner", action="store_true", help="edge-mtl without its landmark refiner")
    ap.add_argument("--score-threshold", type=float, default=0.45,
                    help="edge-mtl operating threshold (the config default)")
    ap.add_argument("--mtcnn-min-face", type=float, default=20.0)
    ap.add_argument("--wheel", default=DEFAULT_WHEEL, help="facenet-pytorch wheel holding the MTCNN weights")
    ap.add_argument("--peer-python", default="/work/peers/bin/python", help="Python with dlib-bin")
    ap.add_argument("--peer-pythonpath", default="/tmp/peers_cv4", help="where opencv-python-headless 4.x is")
    ap.add_argument("--out", help="write the JSON result here too")
    ap.add_argument("--markdown", help="write the markdown table here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    which = [w.strip() for w in args.detectors.split(",") if w.strip()]
    bad = [w for w in which if w not in ALL]
    if bad or ("edge-mtl" in which and not args.model):
        ap.error(f"unknown detectors {bad}" if bad else "--model is required for edge-mtl")

    root = Path(args.data)
    by_image = S.caltech(root / "caltech_webfaces")
    train, val = S.split_images(by_image, 0.1, 0)
    if args.limit:
        val = val[: args.limit]
    rng = np.random.default_rng(0)
    n_cal = min(args.calib_images, args.limit or args.calib_images, len(train))
    cal = sorted(rng.choice(train, size=n_cal, replace=False).tolist())
    val_items = to_det_images({n: by_image[n] for n in val})
    cal_items = to_det_images({n: by_image[n] for n in cal})
    val_gt = [GroundTruth(it.boxes, it.landmarks) for it in val_items]
    cal_gt = [GroundTruth(it.boxes, it.landmarks) for it in cal_items]

    peers: list[Peer] = []
    worker = None
    if "edge-mtl" in which:
        peers.append(edge_peer(args.model, args.input_size or args.long_side, args.score_threshold,
                               None if args.no_refiner else args.landmarks))
    if "mtcnn" in which:
        peers.append(mtcnn_peer(args.wheel, args.mtcnn_min_face, args.long_side))
    if "hog" in which or "haar" in which:
        worker = Worker(args.peer_python, args.peer_pythonpath)
        peers += worker_peers(worker, args.long_side, which)
    try:
        for p in peers:  # accuracy does not depend on threads; one thread each copes best with a loaded machine
            p.set_threads(1)
        cv2.setNumThreads(1)
        t0 = time.time()
        cal_dets = run_accuracy(peers, cal_items, "calibration (train)")
        val_dets = run_accuracy(peers, val_items, "validation")
        res: dict[str, Any] = {
            "split": "caltech_webfaces val (split_images(names, 0.1, seed 0))",
            "val_images": len(val_items), "val_faces": int(sum(g.boxes.shape[0] for g in val_gt)),
            "calibration_images": len(cal_items), "long_side": args.long_side,
            "machine": {"cpus": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]},
            "detectors": {}, "accuracy_seconds": round(time.time() - t0, 1),
        }
        for p in peers:
            cal_fit = fit_calibration(cal_dets[p.name], cal_gt, p.op_threshold)
            calibrated = [apply_calibration(d, cal_fit) for d in val_dets[p.name]]
            res["detectors"][p.name] = {
                "settings": p.settings, "operating_threshold": p.op_threshold, "calibration": cal_fit,
                "raw": metrics(p, val_dets[p.name], val_gt), "calibrated": metrics(p, calibrated, val_gt),
                "eyes_in_box": eyes_in_box_recall(val_dets[p.name], val_gt, p.op_threshold),
            }
        if not args.no_timing:
            t0 = time.time()
            names = [it.path for it in val_items][: args.timing_images or None]
            frames = [letterbox(read_bgr(pth)) for pth in names]
            for n, key, count in ((1, "threads_1", len(frames)), (0, "threads_default", args.timing_default_images)):
                log.info("timing %s on %d frames", key, min(count, len(frames)))
                for name, t in run_timing(peers, worker, frames[:count], n).items():
                    t["frames"] = float(min(count, len(frames)))
                    res["detectors"][name].setdefault("timing", {})[key] = t
            res["timing"] = {"frame": "640x480, validation images letterboxed (centred), first N of the split",
                             "seconds": round(time.time() - t0, 1),
                             "load_avg_after": [round(x, 2) for x in os.getloadavg()]}
            d = res["detectors"]
            if "edge-mtl" in d and "mtcnn" in d:
                ratio = {k: round(d["mtcnn"]["timing"][k]["median_ms"] / d["edge-mtl"]["timing"][k]["median_ms"], 2)
                         for k in ("threads_1", "threads_default")}
                t1 = {k: d[k]["timing"]["threads_1"]["median_cpu_ms"] for k in ("mtcnn", "edge-mtl")}
                ratio["threads_1_cpu"] = round(t1["mtcnn"] / max(t1["edge-mtl"], 1e-6), 2)
                res["speed_ratio_mtcnn_over_edge_mtl"] = ratio
    finally:
        if worker is not None:
            worker.close()
    text = json.dumps(res, indent=1)
    sys.stdout.write(text + "\n")
    if args.out:
        Path(args.out).write_text(text + "\n")
    md = markdown(res)
    if args.markdown:
        Path(args.markdown).write_text(md)
    sys.stderr.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
