"""The real inputs the GPU check carries to a machine that has the working tree but not ../shared/data.

A GPU box lent for a few minutes gets the checkout and at most 64 MiB of carried, git-ignored folders. `make_bundle`
writes, from ../shared/data, the held-out inputs of `edge-mtl quantize`'s accuracy gate plus a clip for the end to
end run into one such folder (default `.gpucheck/`, ignored by git: derived images are never committed):

- `faces.npy`: the recognizer gate's aligned crops (`calibration.recognizer_eval_set`: UTKFace validation split,
  seed 1, detector + 4-point alignment as at runtime), uint8 BGR; normalising them again gives the gate's float
  inputs bit for bit (checked when the bundle is made);
- `frames/`: the detector gate's Caltech WebFaces validation images (`calibration.detector_eval_set`), copied as
  they are; the check letterboxes them with the same `calibration.letterbox`;
- `landmark_crops.npy`: the 64x64 crops the landmark refiner is given at runtime (every refinement pass of
  `LandmarkRefiner.refine`) for the faces the FP32 detector finds in those frames and in frames of the clip;
- `video.mp4`: `videos/pedestrians_1080p.mp4` (1920x1080, 25 fps), the end to end run's camera;
- `manifest.json`: where every row came from, the seeds and the command that made it.

`load_inputs` reads a bundle back, or makes clearly labelled synthetic inputs (`source: synthetic`) when there is
none: good for throughput, not for parity (which the check then skips) nor for the end to end run (no clip).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_mtl.errors import InputError
from edge_mtl.runtime.engine import ModelMetadata, normalize

log = logging.getLogger(__name__)

BUNDLE_VERSION = 1
DEFAULT_BUNDLE = Path(".gpucheck")
VIDEO = "pedestrians_1080p.mp4"
FULL = {"faces": 128, "frames": 64, "video_frames": 8, "landmark_crops": 256}
QUICK = {"faces": 16, "frames": 6, "video_frames": 2, "landmark_crops": 32}
U8 = npt.NDArray[np.uint8]


@dataclass
class Inputs:
    """What the check feeds the models: uint8 BGR images, before each model's own normalisation."""

    source: str  # "real" (a bundle) or "synthetic"
    faces: U8  # N x S x S x 3, recognizer crops
    landmark_crops: U8  # N x 64 x 64 x 3
    frames: list[U8]  # detector gate images as read (letterboxed by the check)
    video: Path | None
    manifest: dict[str, Any] = field(default_factory=dict)


def denormalize(x: npt.NDArray[np.float32], meta: ModelMetadata) -> U8:
    """Inverse of `normalize(images, meta, bgr_input=True)`: N x 3 x H x W float32 -> N x H x W x 3 uint8 BGR."""
    img = x.transpose(0, 2, 3, 1) * np.asarray(meta.std, np.float32) + np.asarray(meta.mean, np.float32)
    if meta.color != "BGR":
        img = img[..., ::-1]
    return np.ascontiguousarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))


def _exact_uint8(x: npt.NDArray[np.float32], meta: ModelMetadata, what: str) -> U8:
    u = denormalize(x, meta)
    if not np.array_equal(normalize(u, meta, bgr_input=True), x):
        raise InputError(f"bundle: {what} do not round-trip through uint8 (mean/std of {meta.kind} changed?)")
    return u


class _Recorder:
    """An Engine that passes batches through and keeps a copy of each (the refiner's crops as it sees them)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.metadata = engine.metadata
        self.provider = engine.provider
        self.batches: list[npt.NDArray[np.float32]] = []

    def run(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        self.batches.append(batch.copy())
        out: dict[str, npt.NDArray[np.float32]] = self.engine.run(batch)
        return out


def make_bundle(
    out: str | Path = DEFAULT_BUNDLE,
    data: str | Path | None = None,
    models: str | Path | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """Write the bundle to `out` (replacing one there) from the shared data; returns its manifest."""
    from edge_mtl.export_tools.calibration import (
        detector_eval_set,
        read_bgr,
        recognizer_eval_set,
        require_data,
        video_frames,
    )
    from edge_mtl.export_tools.onnx_utils import read_metadata
    from edge_mtl.paths import default_model
    from edge_mtl.runtime.detector import FaceDetector
    from edge_mtl.runtime.landmarks import LandmarkRefiner
    from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine

    counts = QUICK if quick else FULL
    root = require_data(data)
    mdir = Path(models) if models else default_model("detector.onnx").parent
    det_path, rec_path, lm_path = (mdir / f"{k}.onnx" for k in ("detector", "recognizer", "landmarks"))
    for p in (det_path, rec_path, lm_path):
        if not p.is_file():
            raise InputError(f"bundle: model {p} not found")
    video_src = root / "videos" / VIDEO
    if not video_src.is_file():
        raise InputError(f"bundle: {video_src} not found")
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "frames").mkdir(parents=True)

    rec_meta = read_metadata(rec_path)
    faces_set = recognizer_eval_set(det_path, rec_meta, data=root, n=counts["faces"])
    faces = _exact_uint8(faces_set.inputs, rec_meta, "recognizer crops")
    np.save(tmp / "faces.npy", faces)

    det_meta = read_metadata(det_path)
    frames_set = detector_eval_set(det_meta, data=root, n=counts["frames"])
    frame_files = []
    for i, rel in enumerate(frames_set.manifest):
        name = f"{i:03d}_{Path(rel).name}"
        shutil.copyfile(root / rel, tmp / "frames" / name)
        frame_files.append({"file": f"frames/{name}", "source": rel})

    recorder = _Recorder(OnnxRuntimeEngine(lm_path, device="cpu"))
    detector = FaceDetector(OnnxRuntimeEngine(det_path, device="cpu"), refiner=LandmarkRefiner(recorder, 2))
    lm_sources = [f"{f['source']}" for f in frame_files]
    images = [im for im in (read_bgr(root / s) for s in lm_sources) if im is not None]
    vids = video_frames(video_src, counts["video_frames"])
    images += [im for _, im in vids]
    lm_sources += [f"videos/{VIDEO}#{idx}" for idx, _ in vids]
    for im in images:
        detector.detect(im)
        if sum(len(b) for b in recorder.batches) >= counts["landmark_crops"]:
            break
    if not recorder.batches:
        raise InputError("bundle: the detector found no face for the landmark refiner in the held-out frames")
    lm_meta = read_metadata(lm_path)
    crops = _exact_uint8(np.concatenate(recorder.batches)[: counts["landmark_crops"]], lm_meta, "landmark crops")
    np.save(tmp / "landmark_crops.npy", crops)
    shutil.copyfile(video_src, tmp / "video.mp4")

    manifest = {
        "version": BUNDLE_VERSION,
        "quick": quick,
        "made_by": "scripts/gpu_check.sh bundle" + (" --quick" if quick else ""),
        "models": {p.name: str(p) for p in (det_path, rec_path, lm_path)},
        "faces": {"file": "faces.npy", "shape": list(faces.shape), "recipe": "calibration.recognizer_eval_set",
                  **faces_set.info, "images": faces_set.manifest},
        "frames": {"recipe": "calibration.detector_eval_set", "input_size": det_meta.input_size,
                   "files": frame_files},
        "landmark_crops": {"file": "landmark_crops.npy", "shape": list(crops.shape),
                           "recipe": "LandmarkRefiner.refine passes (2) on faces found by the FP32 detector",
                           "images": lm_sources},
        "video": {"file": "video.mp4", "source": f"videos/{VIDEO}"},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    manifest["bytes"] = size
    log.info("bundle %s: %d faces, %d frames, %d landmark crops, clip; %.1f MiB", out, len(faces),
             len(frame_files), len(crops), size / 2**20)
    return manifest


def read_bundle(path: str | Path) -> Inputs:
    """A bundle written by `make_bundle`; a missing or foreign folder is an InputError naming what is wrong."""
    from edge_mtl.export_tools.calibration import read_bgr

    path = Path(path)
    mf = path / "manifest.json"
    if not mf.is_file():
        raise InputError(f"bundle {path}: no manifest.json (make it with: scripts/gpu_check.sh bundle)")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
        if manifest.get("version") != BUNDLE_VERSION:
            raise InputError(f"bundle {path}: version {manifest.get('version')}, expected {BUNDLE_VERSION}; "
                             "make it again with: scripts/gpu_check.sh bundle")
        faces = np.load(path / manifest["faces"]["file"], allow_pickle=False)
        crops = np.load(path / manifest["landmark_crops"]["file"], allow_pickle=False)
        frames = []
        for f in manifest["frames"]["files"]:
            im = read_bgr(path / f["file"])
            if im is None:
                raise InputError(f"bundle {path}: {f['file']} is not a readable image")
            frames.append(im)
        video = path / manifest["video"]["file"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"bundle {path}: unreadable ({type(e).__name__}: {e})") from None
    if faces.dtype != np.uint8 or faces.ndim != 4 or crops.dtype != np.uint8 or crops.ndim != 4:
        raise InputError(f"bundle {path}: faces.npy / landmark_crops.npy are not N x H x W x 3 uint8")
    if not video.is_file():
        raise InputError(f"bundle {path}: {video.name} missing")
    return Inputs("real", faces, crops, frames, video, manifest)


def synthetic_inputs(face_size: int, crop_size: int, quick: bool, seed: int = 0) -> Inputs:
    """Uniform-noise images: shapes and dtypes of the real inputs, no faces. For throughput only."""
    rng = np.random.default_rng(seed)
    counts = QUICK if quick else FULL
    faces = rng.integers(0, 256, (counts["faces"], face_size, face_size, 3), dtype=np.uint8)
    crops = rng.integers(0, 256, (counts["landmark_crops"], crop_size, crop_size, 3), dtype=np.uint8)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(counts["frames"])]
    return Inputs("synthetic", faces, crops, frames, None, {"synthetic": f"uniform noise, seed {seed}"})
