"""One prepared check that turns a short GPU loan into figures: parity, throughput and streams per GPU.

Run by `scripts/gpu_check.sh` (which says how to carry its wheels and inputs to a lent machine). For each shipped
model (detector, landmark refiner, recognizer in export/) and each way of running it on the GPU:

- the torch backend (`TorchEngine`, the project's deploy modules with the ONNX file's weights, see
  `edge_mtl.export_tools.onnx_weights`) in FP32, FP16 and BF16;
- ONNX Runtime's CUDA and TensorRT execution providers, when this onnxruntime has them (FP32, FP16 made by
  `edge_mtl.export_tools.fp16`, the shipped INT8);
- TensorRT engines built by `build_engine` (what `edge-mtl build-engine` runs), when `tensorrt` imports,

it measures parity against ONNX Runtime FP32 on the CPU on the real inputs of `edge-mtl quantize`'s gate, judged
by the same gate (`quantize.gate_values` / `judge` with FP16_THRESHOLDS, INT8_THRESHOLDS for INT8; the landmark
refiner, which the gate does not cover, by `parity.compare_heads` at FP16_TOLERANCES), and the throughput at batch
sizes 1 to 256 through the engine's `run` (host arrays in and out, as the runtime calls it). End to end, it finds
how many 1080p streams at 25 fps one GPU serves with the project's `Pipeline` (decode on CPU threads, detection
batched across streams, per-track recognition) by raising the number of streams until frames drop.

A global time budget bounds the whole run; every step that does not run is listed with its reason (no CUDA, no
TensorRT, no real inputs, out of time). With `device="cpu"` the same code runs on the CPU (the suite's test).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_mtl.errors import InputError
from edge_mtl.eval.gpu_bundle import DEFAULT_BUNDLE, Inputs, read_bundle, synthetic_inputs
from edge_mtl.export_tools.parity import EXPORT_TOLERANCES, FP16_TOLERANCES, compare_heads
from edge_mtl.runtime.engine import Engine, ModelMetadata, normalize

log = logging.getLogger(__name__)

KINDS = ("detector", "landmarks", "recognizer")
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
QUICK_BATCHES = (1, 2)
# --quick (the suite's CPU run): parity on the first few real inputs only
QUICK_MAX_STREAMS = 2
QUICK_PARITY = {"detector": 2, "landmarks": 8, "recognizer": 8}
TORCH_PRECISIONS = ("fp32", "fp16", "bf16")
STREAM_FPS = 25.0
DROP_LIMIT = 0.01  # a stream count is served when at most 1% of the frames its cameras produce are dropped
DELIVERED_MIN = 0.95  # ... and the decoders produced at least 95% of the frames 25 fps asks for
FRAME_HW = (1080, 1920)
REPORT = "gpu_check.json"
SUMMARY = "gpu_check.txt"
TABLES = "gpu_check.md"
F32 = npt.NDArray[np.float32]


@dataclass
class CheckOptions:
    device: str = "cuda"  # "cuda" or "cpu"
    quick: bool = False
    bundle: Path | None = None  # None: DEFAULT_BUNDLE when present, else synthetic inputs
    synthetic: bool = False  # synthetic inputs even when a bundle is there
    out: Path = Path("gpu-check-out")
    budget_s: float = 420.0
    models: Path | None = None  # folder with detector/landmarks/recognizer(.int8).onnx; default export/
    batches: tuple[int, ...] | None = None
    max_streams: int = 256
    e2e_reserve_s: float = 120.0  # kept back for the end to end run while earlier steps run
    argv: list[str] = field(default_factory=list)


class Budget:
    """Seconds left of the run's global budget; `why_not` names the reason a step must be skipped."""

    def __init__(self, total: float) -> None:
        self.total = total
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.total - self.elapsed()

    def why_not(self, need: float, reserve: float = 0.0) -> str | None:
        if self.left() - reserve >= need:
            return None
        return (f"out of time: {self.left():.0f} s left of the {self.total:.0f} s budget"
                + (f" ({reserve:.0f} s kept for later steps)" if reserve else "") + f", needs about {need:.0f} s")


@dataclass
class Candidate:
    backend: str  # "torch", "ort-cuda", "ort-tensorrt", "tensorrt"
    precision: str
    make: Callable[[], Engine]


@dataclass
class ModelSet:
    kind: str
    path: Path
    meta: ModelMetadata
    inputs: F32  # parity inputs, normalised
    input_hw: tuple[int, int]
    throughput_hw: tuple[int, int]
    throughput_inputs: F32 | None  # real inputs at throughput_hw (tiled to each batch), else synthetic noise
    reference: dict[str, F32] | None = None
    module: Any = None  # torch deploy module (CPU, fp32)


# ------------------------------------------------------------------ environment
def environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "cpu_count": os.cpu_count(), "device": device}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda_available"] = bool(torch.cuda.is_available())
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            env.update({"gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2**30, 1),
                        "compute_capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda,
                        "cudnn": torch.backends.cudnn.version(),
                        "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
                        "matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32)})
    except ImportError:
        env["torch"] = None
        env["cuda_available"] = False
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = list(ort.get_available_providers())
    except ImportError:
        env["onnxruntime"] = None
    try:
        from edge_mtl.runtime.tensorrt_build import import_tensorrt

        env["tensorrt"] = str(import_tensorrt().__version__)
    except Exception as e:
        env["tensorrt"] = None
        env["tensorrt_missing"] = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
    import cv2

    env["opencv"] = cv2.__version__
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20, check=False)
            env["nvidia_smi"] = q.stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            env["nvidia_smi"] = f"failed: {e}"
    return env


# ------------------------------------------------------------------ inputs and models
def _model_sets(models: Path, inputs: Inputs, quick: bool) -> dict[str, ModelSet]:
    from edge_mtl.export_tools.calibration import letterbox
    from edge_mtl.export_tools.onnx_utils import read_metadata
    from edge_mtl.runtime.detector import PAD

    sets = {}
    for kind in KINDS:
        tp_x: F32 | None = None
        path = models / f"{kind}.onnx"
        if not path.is_file():
            raise InputError(f"gpu check: model {path} not found (--models)")
        meta = read_metadata(path)
        if meta.kind != kind:
            raise InputError(f"gpu check: {path} is a {meta.kind} model, expected a {kind} model")
        if kind == "detector":
            frames = inputs.frames[: QUICK_PARITY[kind]] if quick else inputs.frames
            canv = np.stack([letterbox(im, meta.input_size) for im in frames])
            x = normalize(canv, meta, bgr_input=True)
            # a 1080p camera frame as FaceDetector.prepare feeds it: long side to input_size, padded to PAD
            h = -(-round(FRAME_HW[0] * meta.input_size / FRAME_HW[1]) // PAD) * PAD
            tp_hw = (h, meta.input_size)
            if inputs.video is not None:
                from edge_mtl.export_tools.calibration import video_frames

                clip = [letterbox(im, meta.input_size, square=False) for _, im in video_frames(inputs.video, 4)]
                clip = [c for c in clip if c.shape[:2] == tp_hw]
                tp_x = normalize(np.stack(clip), meta, bgr_input=True) if clip else None
        else:
            imgs = inputs.faces if kind == "recognizer" else inputs.landmark_crops
            imgs = imgs[: QUICK_PARITY[kind]] if quick else imgs
            if imgs.shape[1:3] != (meta.input_size, meta.input_size):
                raise InputError(f"gpu check: {kind} inputs are {imgs.shape[1]}x{imgs.shape[2]}, "
                                 f"{path.name} takes {meta.input_size}")
            x = normalize(imgs, meta, bgr_input=True)
            tp_hw = (meta.input_size, meta.input_size)
            tp_x = x if inputs.source == "real" else None
        sets[kind] = ModelSet(kind, path, meta, x, (x.shape[2], x.shape[3]), tp_hw, tp_x)
    return sets


def run_chunked(engine: Engine, x: F32, chunk: int = 16) -> dict[str, F32]:
    parts: dict[str, list[F32]] = {}
    for i in range(0, len(x), chunk):
        for n, v in engine.run(np.ascontiguousarray(x[i : i + chunk])).items():
            parts.setdefault(n, []).append(np.asarray(v, np.float32))
    return {n: np.concatenate(v) for n, v in parts.items()}


# ------------------------------------------------------------------ candidates
def _cuda_ok(device: str) -> str | None:
    if device != "cuda":
        return None
    try:
        import torch
    except ImportError:
        return "no CUDA: torch is not installed"
    return None if torch.cuda.is_available() else "no CUDA: torch.cuda.is_available() is False"


def torch_candidates(ms: ModelSet, device: str) -> list[Candidate]:
    from edge_mtl.runtime.torch_engine import TorchEngine

    def maker(precision: str) -> Callable[[], Engine]:
        return lambda: TorchEngine(copy.deepcopy(ms.module), ms.meta, device,
                                   half=precision == "fp16", bf16=precision == "bf16")

    return [Candidate("torch", p, maker(p)) for p in TORCH_PRECISIONS]


def onnx_files(ms: ModelSet, work: Path) -> dict[str, Path]:
    """fp32 (shipped), fp16 (made here by the project's converter), int8 (shipped, when there is one)."""
    from edge_mtl.export_tools.fp16 import to_fp16

    files = {"fp32": ms.path}
    fp16 = work / f"{ms.kind}.fp16.onnx"
    if not fp16.is_file():
        to_fp16(ms.path, fp16, check=False)
    files["fp16"] = fp16
    int8 = ms.path.with_name(f"{ms.kind}.int8.onnx")
    if int8.is_file():
        files["int8"] = int8
    return files


def ort_candidates(ms: ModelSet, provider: str, work: Path) -> list[Candidate]:
    from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine

    dev = "cuda" if provider == "CUDAExecutionProvider" else "tensorrt"
    cache = work / "ort-trt-cache"
    cache.mkdir(exist_ok=True)

    def maker(p: Path) -> Callable[[], Engine]:
        return lambda: OnnxRuntimeEngine(p, device=dev, trt_cache=cache if dev == "tensorrt" else None)

    return [Candidate(f"ort-{dev}", prec, maker(p)) for prec, p in onnx_files(ms, work).items()]


def tensorrt_candidates(ms: ModelSet, work: Path, max_batch: int) -> list[Candidate]:
    from edge_mtl.runtime.tensorrt import TensorRTEngine

    side = max(*ms.input_hw, *ms.throughput_hw) if ms.kind == "detector" else None

    def maker(p: Path) -> Callable[[], Engine]:
        return lambda: TensorRTEngine(p, work / "engines", max_batch=max_batch, max_side=side)

    return [Candidate("tensorrt", prec, maker(p)) for prec, p in onnx_files(ms, work).items()]


# ------------------------------------------------------------------ parity and throughput
def parity(ms: ModelSet, precision: str, got: dict[str, F32]) -> dict[str, Any]:
    """Gate verdict (the quantize gate's metrics and thresholds) plus per-head differences."""
    from edge_mtl.export_tools.quantize import FP16_THRESHOLDS, INT8_THRESHOLDS, gate_values, judge

    assert ms.reference is not None
    tol = EXPORT_TOLERANCES if precision == "fp32" else FP16_TOLERANCES
    heads = compare_heads(ms.reference, got, tol)
    out: dict[str, Any] = {"inputs": len(ms.inputs), "head_tolerances": "export" if precision == "fp32" else "fp16",
                           "heads": heads}
    if ms.kind == "landmarks":
        if precision == "int8":
            out.update({"passed": None, "gate": "none for INT8 landmarks"})
        else:
            loose = compare_heads(ms.reference, got, FP16_TOLERANCES)
            out.update({"passed": all(e["ok"] for e in loose.values()),
                        "gate": "parity.compare_heads at FP16_TOLERANCES (quantize gates no landmark model)"})
        return out
    thresholds = INT8_THRESHOLDS if precision == "int8" else FP16_THRESHOLDS
    verdict = judge(gate_values(ms.reference, got, ms.meta, ms.input_hw), thresholds)
    out.update({"passed": verdict["passed"], "failed": verdict["failed"], "metrics": verdict["metrics"],
                "gate": "quantize " + ("INT8_THRESHOLDS" if precision == "int8" else "FP16_THRESHOLDS")})
    return out


def _batch(x: F32 | None, n: int, hw: tuple[int, int]) -> F32:
    if x is not None:
        reps = -(-n // len(x))
        return np.ascontiguousarray(np.concatenate([x] * reps)[:n])
    rng = np.random.default_rng(n)
    return rng.uniform(-1, 1, (n, 3, *hw)).astype(np.float32)


def _is_oom(e: BaseException) -> bool:
    s = f"{type(e).__name__}: {e}".lower()
    return "out of memory" in s or "outofmemory" in s or "cuda_error_out_of_memory" in s


def throughput(
    engine: Engine, ms: ModelSet, batches: tuple[int, ...], budget: Budget, reserve: float, min_time: float,
    quick: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """Items per second at each batch size through `engine.run` (host in, host out): the median of at least 3
    timed calls (1 with `quick`) after 2 warm-up calls (1), for `min_time` seconds; stops at the first OOM."""
    warm, least = (1, 1) if quick else (2, 3)
    rows: list[dict[str, Any]] = []
    for b in batches:
        why = budget.why_not(2 * min_time + 1, reserve)
        if why:
            return rows, f"batch {b} and up: {why}"
        hw = ms.throughput_hw
        x = _batch(ms.throughput_inputs, b, hw)
        try:
            for _ in range(warm):
                engine.run(x)
            times: list[float] = []
            t_end = time.perf_counter() + min_time
            while len(times) < least or time.perf_counter() < t_end:
                t = time.perf_counter()
                engine.run(x)
                times.append(time.perf_counter() - t)
                if len(times) >= 200:
                    break
        except Exception as e:
            if _is_oom(e):
                _empty_cache()
                return rows, f"batch {b} and up: out of GPU memory"
            raise
        med = float(np.median(times))
        rows.append({"batch": b, "shape": list(x.shape), "iters": len(times), "ms_per_batch": round(med * 1000, 3),
                     "items_per_s": round(b / med, 1)})
    return rows, None


def _empty_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# ------------------------------------------------------------------ end to end: streams per GPU
class _Streams:
    """N simulated cameras: each a thread decoding the clip on the CPU at STREAM_FPS, looping, into a latest-frame
    slot. A frame replaced before the pipeline took it is dropped; ticks a decoder fell behind on are lost."""

    def __init__(self, video: Path, n: int) -> None:
        self.video, self.n = video, n
        self.lock = threading.Lock()
        self.slots: list[tuple[Any, float] | None] = [None] * n
        self.produced = [0] * n
        self.dropped = [0] * n
        self.lost = [0] * n
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True, name=f"gpucheck-cam{i}")
                        for i in range(n)]

    def _open(self) -> Any:
        import cv2

        threads = getattr(cv2, "CAP_PROP_N_THREADS", None)  # one decode thread per stream where OpenCV allows it
        cap = cv2.VideoCapture(str(self.video), cv2.CAP_FFMPEG, [threads, 1]) if threads is not None else None
        if cap is None or not cap.isOpened():
            cap = cv2.VideoCapture(str(self.video))
        return cap

    def _run(self, i: int) -> None:
        try:
            self._decode(i)
        except Exception as e:  # a dead decoder must show in the trial, not vanish with its thread
            self.errors.append(f"cam{i}: {type(e).__name__}: {e}")

    def _decode(self, i: int) -> None:
        from edge_mtl.types import Frame

        period = 1.0 / STREAM_FPS
        cap = self._open()
        t0 = time.monotonic() + i * period / self.n
        k = 0
        try:
            while not self.stop.is_set():
                wait = t0 + k * period - time.monotonic()
                if wait > 0 and self.stop.wait(wait):
                    break
                ok, img = cap.read()
                if not ok:  # end of the clip: start it again; a real camera has no such pause, so the schedule
                    cap.release()  # restarts after the reopen instead of counting its time as lost frames
                    cap = self._open()
                    ok, img = cap.read()
                    if not ok:
                        self.errors.append(f"cam{i}: cannot decode {self.video}")
                        return
                    t0 = time.monotonic() - k * period
                now = time.monotonic()
                frame = Frame(np.asarray(img, np.uint8), f"cam{i}", k, time.time())
                with self.lock:
                    if self.slots[i] is not None:
                        self.dropped[i] += 1
                    self.slots[i] = (frame, now)
                    self.produced[i] += 1
                    behind = int((now - (t0 + k * period)) // period)
                    if behind > 0:
                        self.lost[i] += behind
                k += 1 + max(behind, 0)
        finally:
            cap.release()

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            return sum(self.produced), sum(self.dropped), sum(self.lost)

    def take(self) -> list[tuple[Any, float]]:
        with self.lock:
            got = [s for s in self.slots if s is not None]
            self.slots = [None] * self.n
        return got

    @contextmanager
    def running(self) -> Iterator[_Streams]:
        for t in self.threads:
            t.start()
        try:
            yield self
        finally:
            self.stop.set()
            for t in self.threads:
                t.join(timeout=5)


def stream_trial(make_pipeline: Callable[[], Any], video: Path, n: int, warmup_s: float,
                 window_s: float) -> dict[str, Any]:
    """Run `n` streams through a fresh pipeline; counts over the window after the warm-up."""
    pipeline = make_pipeline()
    streams = _Streams(video, n)
    latencies: list[float] = []
    det_batches: Counter[int] = Counter()
    processed = 0
    with streams.running():
        t_window = time.monotonic() + warmup_s
        base: tuple[int, int, int] | None = None
        tb = te = 0.0
        while True:
            now = time.monotonic()
            if base is None and now >= t_window:
                base, tb = streams.counts(), now
                pipeline.batch_sizes.clear()
                for s in pipeline.timer.samples.values():
                    s.clear()
            if base is not None and now >= tb + window_s:
                te = now
                break
            got = streams.take()
            if not got:
                time.sleep(0.0005)
                continue
            pipeline.process([f for f, _ in got])
            done = time.monotonic()
            if base is not None:
                processed += len(got)
                det_batches[len(got)] += 1
                latencies += [done - t for _, t in got]
        end = streams.counts()
    pipeline.close()
    assert base is not None
    window = te - tb  # a pipeline call that overruns the window lengthens it: counts are over what really elapsed
    produced, dropped, lost = (e - b for e, b in zip(end, base, strict=True))
    expected = n * STREAM_FPS * window
    # every camera delivered (decode kept up) and at most DROP_LIMIT of their frames were replaced or missed
    drop_rate = (dropped + lost) / max(produced + lost, 1)
    delivered = produced / max(expected, 1e-9)
    lat = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    rec = pipeline.batch_sizes
    return {
        "streams": n,
        "window_s": round(window, 2),
        "expected": round(expected, 1),
        "produced": produced,
        "processed": processed,
        "dropped": dropped,
        "lost_decode": lost,
        "drop_rate": round(drop_rate, 4),
        "delivered": round(delivered, 3),
        "ok": bool(drop_rate <= DROP_LIMIT and delivered >= DELIVERED_MIN and processed > 0 and not streams.errors),
        "processed_fps_per_stream": round(processed / window / n, 2),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 1),
        "detect_batch_mean": round(sum(k * v for k, v in det_batches.items()) / max(sum(det_batches.values()), 1), 2),
        "recognizer_calls": sum(rec.values()),
        "recognizer_batch_mean": round(sum(k * v for k, v in rec.items()) / max(sum(rec.values()), 1), 2),
        "stages": pipeline.timer.summary(),
        "errors": streams.errors,
    }


def streams_per_gpu(
    make_pipeline: Callable[[], Any], video: Path, budget: Budget, quick: bool, max_streams: int,
) -> dict[str, Any]:
    """Double the number of streams until frames drop, then bisect between the last served and the first not."""
    warmup, window = (0.5, 1.0) if quick else (1.5, 4.0)
    max_streams = min(max_streams, QUICK_MAX_STREAMS) if quick else max_streams
    cost = warmup + window + 2.0
    trials: list[dict[str, Any]] = []
    lo, hi, n, stop = 0, None, 1, None

    def trial(k: int) -> bool:
        r = stream_trial(make_pipeline, video, k, warmup, window)
        trials.append(r)
        log.info("e2e %d streams: drop %.2f%%, %.1f fps/stream, latency p95 %.0f ms -> %s", k, 100 * r["drop_rate"],
                 r["processed_fps_per_stream"], r["latency_ms_p95"], "served" if r["ok"] else "frames drop")
        return bool(r["ok"])

    while n <= max_streams:
        stop = budget.why_not(cost)
        if stop:
            break
        if trial(n):
            lo, n = n, n * 2
        else:
            hi = n
            break
    else:
        stop = f"stopped at the {max_streams}-stream cap (--max-streams) without drops"
    while hi is not None and hi - lo > 1 and not stop:
        stop = budget.why_not(cost)
        if stop:
            break
        mid = (lo + hi) // 2
        if trial(mid):
            lo = mid
        else:
            hi = mid
    return {"max_streams": lo if trials else None, "first_failing": hi, "fps": STREAM_FPS, "drop_limit": DROP_LIMIT,
            "frame": f"{FRAME_HW[1]}x{FRAME_HW[0]}", "search_stopped": stop, "trials": trials}


# ------------------------------------------------------------------ the check
class GpuCheck:
    def __init__(self, opts: CheckOptions) -> None:
        self.opts = opts
        self.budget = Budget(opts.budget_s)
        self.report: dict[str, Any] = {"tool": "edge-mtl gpu check", "command": opts.argv,
                                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                       "skipped": [], "parity": [], "throughput": [], "errors": []}

    def skip(self, step: str, reason: str) -> None:
        log.info("skipped %s: %s", step, reason)
        self.report["skipped"].append({"step": step, "reason": reason})

    def error(self, step: str, e: BaseException) -> None:
        msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        log.warning("%s failed: %s", step, msg)
        self.report["errors"].append({"step": step, "error": msg})

    def _inputs(self) -> Inputs:
        from edge_mtl.export_tools.onnx_utils import read_metadata

        o = self.opts
        if o.bundle is not None and not o.synthetic:
            return read_bundle(o.bundle)
        if not o.synthetic and (DEFAULT_BUNDLE / "manifest.json").is_file():
            return read_bundle(DEFAULT_BUNDLE)
        models = self._models_dir()
        rec, lm = read_metadata(models / "recognizer.onnx"), read_metadata(models / "landmarks.onnx")
        return synthetic_inputs(rec.input_size, lm.input_size, o.quick)

    def _models_dir(self) -> Path:
        from edge_mtl.paths import default_model

        return self.opts.models or default_model("detector.onnx").parent

    def run(self) -> dict[str, Any]:
        o = self.opts
        if o.device not in ("cuda", "cpu"):
            raise InputError(f"--device must be cuda or cpu, got {o.device!r}")
        rep = self.report
        rep["budget_s"] = o.budget_s
        rep["environment"] = environment(o.device)
        inputs = self._inputs()
        rep["inputs"] = {"source": inputs.source, "faces": len(inputs.faces), "frames": len(inputs.frames),
                         "landmark_crops": len(inputs.landmark_crops),
                         "video": str(inputs.video) if inputs.video else None,
                         "bundle": {k: v for k, v in inputs.manifest.items() if k in ("version", "quick", "made_by")}}
        if inputs.source != "real":
            rep["inputs"]["note"] = ("SYNTHETIC inputs (uniform noise, no faces): throughput figures only; parity "
                                     "and the end to end run need the real bundle (scripts/gpu_check.sh bundle)")
        sets = _model_sets(self._models_dir(), inputs, o.quick)
        rep["models"] = {k: {"file": str(s.path), "version": s.meta.version, "parity_inputs": list(s.inputs.shape),
                             "throughput_input": [3, *s.throughput_hw]} for k, s in sets.items()}
        batches = o.batches or (QUICK_BATCHES if o.quick else BATCHES)
        min_time = 0.05 if o.quick else 0.25
        with tempfile.TemporaryDirectory(prefix="edge-mtl-gpucheck-") as tmp:
            work = Path(tmp)
            # a phase that breaks is reported and the next one still runs: a loan is too short to lose to one bug
            for name, phase in (("parity references", lambda: self._references(sets, inputs)),
                                ("torch backend", lambda: self._torch(sets, batches, min_time)),
                                ("onnxruntime providers", lambda: self._onnxruntime(sets, batches, min_time, work)),
                                ("tensorrt engines", lambda: self._tensorrt(sets, batches, min_time, work)),
                                ("end to end", lambda: self._end_to_end(sets, inputs))):
                try:
                    phase()
                except Exception as e:
                    log.debug("%s", name, exc_info=True)
                    self.error(name, e)
                rep["elapsed_s"] = round(self.budget.elapsed(), 1)
                write_report(rep, o.out)  # after every phase: a run cut short keeps what it measured
        rep["elapsed_s"] = round(self.budget.elapsed(), 1)
        return rep

    # -------------------------------------------------------------- steps
    def _references(self, sets: dict[str, ModelSet], inputs: Inputs) -> None:
        from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine

        if inputs.source != "real":
            self.skip("parity (all models and backends)", "no real inputs: the bundle (.gpucheck/) was not carried; "
                      "make it with scripts/gpu_check.sh bundle and carry .gpucheck")
            return
        for s in sets.values():
            s.reference = run_chunked(OnnxRuntimeEngine(s.path, device="cpu"), s.inputs)

    def _candidate(self, ms: ModelSet, c: Candidate, batches: tuple[int, ...], min_time: float) -> None:
        step = f"{ms.kind} {c.backend} {c.precision}"
        why = self.budget.why_not(3.0, self.opts.e2e_reserve_s)
        if why:
            self.skip(step, why)
            return
        try:
            engine = c.make()
        except Exception as e:
            self.error(f"{step}: load", e)
            return
        entry = {"model": ms.kind, "backend": c.backend, "precision": c.precision,
                 "provider": getattr(engine, "provider", "")}
        try:
            if ms.reference is not None:
                got = run_chunked(engine, ms.inputs)
                self.report["parity"].append({**entry, **parity(ms, c.precision, got)})
            rows, stopped = throughput(engine, ms, batches, self.budget, self.opts.e2e_reserve_s, min_time,
                                       self.opts.quick)
            real = ms.throughput_inputs is not None
            self.report["throughput"].append({**entry, "inputs": "real" if real else "synthetic", "rows": rows,
                                              **({"stopped": stopped} if stopped else {})})
            if stopped:
                self.skip(f"{step} throughput", stopped)
        except Exception as e:
            if not _is_oom(e):
                log.debug("%s", step, exc_info=True)
            self.error(step, e)
        finally:
            del engine
            _empty_cache()

    def _torch(self, sets: dict[str, ModelSet], batches: tuple[int, ...], min_time: float) -> None:
        from edge_mtl.export_tools.onnx_weights import load_torch_module

        why = _cuda_ok(self.opts.device)
        try:
            import torch  # noqa: F401
        except ImportError:
            why = "torch is not installed"
        if why:
            self.skip("torch backend (fp32, fp16, bf16)", why)
            return
        loaded = {}
        for s in sets.values():
            s.module, _, report = load_torch_module(s.path)
            loaded[s.kind] = {k: e["max_abs"] for k, e in report.items()}
        self.report["torch_modules"] = {"check": "torch (CPU, FP32) vs ONNX Runtime CPU on random inputs, "
                                        "within export tolerances", "max_abs": loaded}
        for prec in TORCH_PRECISIONS:  # one precision across the models, so that a short budget still covers each
            for s in sets.values():
                c = next(c for c in torch_candidates(s, self.opts.device) if c.precision == prec)
                self._candidate(s, c, batches, min_time)

    def _onnxruntime(self, sets: dict[str, ModelSet], batches: tuple[int, ...], min_time: float, work: Path) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        for provider, name in (("CUDAExecutionProvider", "ONNX Runtime CUDA EP"),
                               ("TensorrtExecutionProvider", "ONNX Runtime TensorRT EP")):
            why = _cuda_ok(self.opts.device) or (None if self.opts.device == "cuda" else "--device cpu")
            if not why and provider not in available:
                why = (f"not in this onnxruntime {ort.__version__} (providers: {', '.join(available)}); it needs "
                       "onnxruntime-gpu, whose wheel is larger than the 64 MiB that can be carried")
            if why:
                self.skip(name, why)
                continue
            for s in sets.values():
                try:
                    cands = ort_candidates(s, provider, work)
                except Exception as e:
                    self.error(f"{s.kind} {name}: fp16 conversion", e)
                    continue
                for c in cands:
                    self._candidate(s, c, batches, min_time)

    def _tensorrt(self, sets: dict[str, ModelSet], batches: tuple[int, ...], min_time: float, work: Path) -> None:
        why = _cuda_ok(self.opts.device) or (None if self.opts.device == "cuda" else "--device cpu")
        if not why and self.report["environment"].get("tensorrt") is None:
            why = f"no TensorRT: {self.report['environment'].get('tensorrt_missing', 'tensorrt does not import')}"
        if why:
            self.skip("TensorRT engines (build-engine)", why)
            return
        for s in sets.values():
            for c in tensorrt_candidates(s, work, max(batches)):
                self._candidate(s, c, batches, min_time)

    def _e2e_precision(self) -> str:
        """On the GPU FP16 when the torch FP16 gate passed for all three models, else FP32 (always on the CPU)."""
        if self.opts.device == "cpu":
            return "fp32"
        passed = {(p["model"], p["precision"]) for p in self.report["parity"]
                  if p["backend"] == "torch" and p.get("passed")}
        return "fp16" if all((k, "fp16") in passed for k in KINDS) else "fp32"

    def _end_to_end(self, sets: dict[str, ModelSet], inputs: Inputs) -> None:
        step = "end to end (streams per GPU)"
        why = _cuda_ok(self.opts.device)
        if not why and inputs.video is None:
            why = "no real clip: the bundle (.gpucheck/) was not carried"
        if not why and any(s.module is None for s in sets.values()):
            why = "the torch backend did not load"
        if why:
            self.skip(step, why)
            return
        from edge_mtl.config import AppConfig
        from edge_mtl.defaults import detector_score_threshold
        from edge_mtl.pipeline import Pipeline
        from edge_mtl.runtime.detector import FaceDetector
        from edge_mtl.runtime.landmarks import LandmarkRefiner
        from edge_mtl.runtime.recognizer import FaceRecognizer
        from edge_mtl.runtime.torch_engine import TorchEngine

        prec = self._e2e_precision()
        dev = self.opts.device
        engines = {k: TorchEngine(copy.deepcopy(s.module), s.meta, dev, half=prec == "fp16")
                   for k, s in sets.items()}
        cfg = AppConfig()
        d = cfg.detector

        def make_pipeline() -> Pipeline:
            refiner = LandmarkRefiner(engines["landmarks"], d.refine_iterations) if d.refine_iterations else None
            det = FaceDetector(engines["detector"], d.input_size, detector_score_threshold(prec), d.nms_threshold,
                               d.min_face, refiner=refiner)
            rec = FaceRecognizer(engines["recognizer"], cfg.recognizer.max_batch, cfg.recognizer.flip)
            return Pipeline(cfg, det, rec, gallery=None)

        assert inputs.video is not None
        try:
            res = streams_per_gpu(make_pipeline, inputs.video, self.budget, self.opts.quick, self.opts.max_streams)
        except Exception as e:
            self.error(step, e)
            return
        res.update({"backend": f"torch-{dev}", "precision": prec, "video": inputs.manifest.get("video", {}),
                    "decode": "OpenCV FFmpeg, one thread per stream", "cpu_count": os.cpu_count(),
                    "config": f"AppConfig() defaults: detector input {d.input_size}, refiner {d.refine_iterations} "
                              f"passes, recognizer max batch {cfg.recognizer.max_batch}"})
        self.report["end_to_end"] = res
        if res["search_stopped"]:
            self.skip(f"{step}: further stream counts" if res["trials"] else step, res["search_stopped"])


# ------------------------------------------------------------------ output
def summary_text(rep: dict[str, Any]) -> str:
    env = rep.get("environment", {})
    lines = [f"edge-mtl GPU check, {rep.get('started', '')}: device {env.get('device')}, "
             f"{env.get('gpu', 'no GPU')}, torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, "
             f"TensorRT {env.get('tensorrt') or 'absent'}; {rep.get('elapsed_s', '?')} s of {rep.get('budget_s')} s",
             f"inputs: {rep.get('inputs', {}).get('source', '?')}"
             + (f" ({rep['inputs']['note']})" if rep.get("inputs", {}).get("note") else "")]
    if rep.get("parity"):
        lines.append("parity vs ONNX Runtime FP32 CPU (gate):")
        for p in rep["parity"]:
            verdict = {True: "pass", False: "FAIL", None: "n/a"}[p.get("passed")]
            worst = max(p["heads"].items(), key=lambda kv: kv[1]["max_abs"])
            extra = f", failed {p['failed']}" if p.get("failed") else ""
            lines.append(f"  {p['model']:<10} {p['backend']:<12} {p['precision']:<5} {verdict}{extra} "
                         f"(max |diff| {worst[1]['max_abs']:.3g} on {worst[0]})")
    if rep.get("throughput"):
        lines.append("throughput, items/s by batch:")
        for t in rep["throughput"]:
            cells = " ".join(f"{r['batch']}:{_rate(r['items_per_s'])}" for r in t["rows"])
            lines.append(f"  {t['model']:<10} {t['backend']:<12} {t['precision']:<5} {cells}"
                         + (f" [{t['inputs']}]" if t["inputs"] != "real" else ""))
    e = rep.get("end_to_end")
    if e and e["max_streams"] is None:
        lines.append(f"end to end: not measured ({e['search_stopped']})")
    elif e:
        lines.append(f"end to end: {e['max_streams']} streams of {e['frame']} at {e['fps']:.0f} fps served "
                     f"({e['backend']} {e['precision']}; first failing: {e['first_failing']}"
                     + (f"; {e['search_stopped']}" if e["search_stopped"] else "") + ")")
        for t in e["trials"]:
            lines.append(f"  {t['streams']:>4} streams: drop {100 * t['drop_rate']:.2f}%, "
                         f"{t['processed_fps_per_stream']:.1f} fps/stream, latency p95 {t['latency_ms_p95']:.0f} ms,"
                         f" detect batch {t['detect_batch_mean']}")
    for s in rep.get("skipped", []):
        lines.append(f"skipped: {s['step']}: {s['reason']}")
    for s in rep.get("errors", []):
        lines.append(f"error: {s['step']}: {s['error']}")
    return "\n".join(lines) + "\n"


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def markdown_tables(rep: dict[str, Any]) -> str:
    """The tables of docs/acceleration.md's GPU section, filled from a report (pasted there by hand)."""
    env = rep.get("environment", {})
    out = [f"GPU: {env.get('gpu', 'none')} ({env.get('nvidia_smi', '')}), torch {env.get('torch')} (CUDA "
           f"{env.get('cuda')}, cuDNN {env.get('cudnn')}, TF32 convolutions {env.get('cudnn_tf32')}), onnxruntime "
           f"{env.get('onnxruntime')}, TensorRT {env.get('tensorrt') or 'absent'}, {env.get('cpu_count')} CPU cores; "
           f"{rep.get('started')}; inputs {rep.get('inputs', {}).get('source')}; command: "
           f"`{' '.join(rep.get('command', []))}`", ""]
    par = rep.get("parity", [])
    if par:
        cols = list(dict.fromkeys(f"{p['backend']} {p['precision']}" for p in par))
        out += ["| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for model in KINDS:
            cells = []
            for c in cols:
                p = next((p for p in par if p["model"] == model and f"{p['backend']} {p['precision']}" == c), None)
                if p is None:
                    cells.append("")
                    continue
                worst = max(p["heads"].items(), key=lambda kv: kv[1]["max_abs"])
                verdict = {True: "pass", False: "FAIL " + ", ".join(p.get("failed", [])), None: "n/a"}[p["passed"]]
                cells.append(f"{verdict} ({worst[0]} {worst[1]['max_abs']:.2g})")
            out.append(f"| {model} | " + " | ".join(cells) + " |")
        out.append("")
    tp = rep.get("throughput", [])
    if tp:
        batches = sorted({r["batch"] for t in tp for r in t["rows"]})
        out += ["| model | backend | precision | " + " | ".join(f"batch {b}" for b in batches) + " |",
                "|---|---|---|" + "---|" * len(batches)]
        for t in tp:
            by = {r["batch"]: r["items_per_s"] for r in t["rows"]}
            out.append(f"| {t['model']} | {t['backend']} | {t['precision']} | "
                       + " | ".join(_rate(by[b]) if b in by else "" for b in batches) + " |")
        out.append("")
    e = rep.get("end_to_end")
    if e and e.get("trials"):
        out += [f"End to end ({e['backend']} {e['precision']}, {e['frame']} at {e['fps']:.0f} fps, drops allowed "
                f"{100 * e['drop_limit']:.0f}%): **{e['max_streams']} streams** per GPU"
                + (f" ({e['search_stopped']})" if e.get("search_stopped") else ""), "",
                "| streams | drop | fps per stream | latency p50 / p95 ms | detect batch | recognizer calls, "
                "mean batch |", "|---|---|---|---|---|---|"]
        for t in e["trials"]:
            out.append(f"| {t['streams']} | {100 * t['drop_rate']:.2f}% | {t['processed_fps_per_stream']:.1f} | "
                       f"{t['latency_ms_p50']:.0f} / {t['latency_ms_p95']:.0f} | {t['detect_batch_mean']} | "
                       f"{t['recognizer_calls']}, {t['recognizer_batch_mean']} |")
        out.append("")
    if rep.get("skipped"):
        out += ["Skipped: " + "; ".join(f"{s['step']} ({s['reason']})" for s in rep["skipped"]), ""]
    return "\n".join(out)


def write_report(rep: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """OUT/gpu_check.json, OUT/gpu_check.txt (summary) and OUT/gpu_check.md (the docs' tables)."""
    out.mkdir(parents=True, exist_ok=True)
    j, t = out / REPORT, out / SUMMARY
    tmp = j.with_suffix(".tmp")
    tmp.write_text(json.dumps(rep, indent=1, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, j)
    t.write_text(summary_text(rep), encoding="utf-8")
    (out / TABLES).write_text(markdown_tables(rep), encoding="utf-8")
    return j, t


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def run_check(opts: CheckOptions) -> dict[str, Any]:
    """Run the check and write OUT/gpu_check.json and OUT/gpu_check.txt; returns the report."""
    rep = GpuCheck(opts).run()
    j, t = write_report(rep, opts.out)
    log.info("wrote %s and %s", j, t)
    return rep
