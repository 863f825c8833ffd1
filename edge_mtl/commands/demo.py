"""`edge-mtl demo`: the whole pipeline on CPU with the shipped models and a synthesised sample clip.

The clip is made from scikit-image's bundled `astronaut` photo (Eileen Collins, NASA, public domain): the photo
drifts and zooms across a 960x540 canvas like a person walking toward a camera, a mirrored copy enters midway, and
a plain stretch with no face separates them. The demo enrols the astronaut from the still photo, runs
`edge-mtl run` on the clip, prints the events as JSON lines and writes an annotated video.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_mtl.errors import MissingExtraError

log = logging.getLogger(__name__)
W, H, FPS = 960, 540, 25


def astronaut_bgr() -> npt.NDArray[np.uint8]:
    try:
        from skimage import data
    except ImportError as e:
        raise MissingExtraError("scikit-image", "demo") from e
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def _paste(canvas: npt.NDArray[np.uint8], img: npt.NDArray[np.uint8], cx: float, cy: float, scale: float) -> None:
    m = np.array([[scale, 0, cx - scale * img.shape[1] / 2], [0, scale, cy - scale * img.shape[0] / 2]], np.float32)
    warped = cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    mask = cv2.warpAffine(np.full(img.shape[:2], 255, np.uint8), m, (W, H), flags=cv2.INTER_NEAREST)
    canvas[mask > 0] = warped[mask > 0]


def synthesize_clip(path: Path, frames: int = 150) -> Path:
    """Write the sample clip (mp4v) and return its path."""
    src = astronaut_bgr()
    face = src[0:300, 80:380]  # head and shoulders
    mirrored = np.ascontiguousarray(face[:, ::-1])
    rng = np.random.default_rng(7)
    background = cv2.GaussianBlur(rng.integers(60, 120, (H, W, 3), dtype=np.uint8), (0, 0), 25)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (W, H))
    if not writer.isOpened():
        raise OSError(f"cannot write {path}")
    for i in range(frames):
        t = i / max(frames - 1, 1)
        canvas = background.copy()
        if t < 0.45:  # walks in from the left and comes closer
            u = t / 0.45
            _paste(canvas, face, 150 + 500 * u, 300 - 20 * u, 0.55 + 0.45 * u)
        if t > 0.55:  # the mirrored copy crosses from the right
            u = (t - 0.55) / 0.45
            _paste(canvas, mirrored, 820 - 450 * u, 280, 0.7 + 0.2 * u)
        noise = rng.normal(0, 3, canvas.shape)
        writer.write(np.clip(canvas + noise, 0, 255).astype(np.uint8))
    writer.release()
    return path


def demo(out: Path, frames: int = 150) -> int:
    """Synthesise a clip into `out`, enrol its astronaut, run the daemon on it; returns the exit code."""
    from edge_mtl.config import AppConfig
    from edge_mtl.daemon.service import RunOptions, run_service
    from edge_mtl.identity.enroll import enroll_images

    out.mkdir(parents=True, exist_ok=True)
    clip = synthesize_clip(out / "sample.mp4", frames)
    still = out / "astronaut.png"
    cv2.imwrite(str(still), astronaut_bgr())
    gallery = out / "gallery.db"
    if gallery.exists():
        gallery.unlink()
    cfg = AppConfig()
    res = enroll_images(gallery, "eileen_collins", [still], cfg)
    log.info("enrolled %s from %s", res["name"], still)
    for p in (out / "events.db", out / "events.jsonl"):
        for q in p.parent.glob(p.name + "*"):
            q.unlink()
    opts = RunOptions(
        sources=(str(clip),), camera_names=("demo",), events=out / "events.db", jsonl=out / "events.jsonl",
        gallery=gallery, annotate=out / "annotated.mp4", print_events=True,
    )
    rc = run_service(opts, cfg)
    sys.stderr.write(
        f"\ndemo: events in {out / 'events.jsonl'} (queue {out / 'events.db'}), "
        f"annotated video {out / 'annotated.mp4'}\n"
    )
    return rc
