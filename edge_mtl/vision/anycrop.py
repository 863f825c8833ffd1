"""Faces that fill the whole image: detect again on the image with a border added, and map the result back.

A face detector learns faces with some context around them. Given a tight crop (an ID photo, a UTKFace-style
chip, a face cut out by another program), where the face touches the image's edges, it finds the face less
reliably and places its box and landmarks worse, or reports a forehead or an eye as a small face at the edge;
the aligned crop, and so age, gender and the embedding, suffer. The remedy is cheap and exact: when the largest
face found spans most of the image, or (for a still image) nothing was found or a face touches the image's edge,
run the detector once more on the image with a border around it, and shift the boxes and landmarks back into the
original image's pixels. The faces found then stand, with those of the first pass that neither touch the edge nor
overlap one of them (a group photo keeps its small faces). Landmarks may lie outside the image; alignment fills
whatever falls outside with black, as the training crops were made (`edge_mtl.train.crops` pads the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge_mtl.types import Detections

Border = Literal["replicate", "grey", "black"]
When = Literal["stills", "always", "never"]
EDGE_PX = 1.0  # a box within this many pixels of the image's edge touches it
KEEP_IOU = 0.3  # a first-pass face overlapping a retried one at least this much is the same face


@dataclass(frozen=True)
class PadRetry:
    """When and how to retry detection on a bordered copy of the image.

    pad: border added on every side, as a share of the image's longer side (0 turns the retry off);
    fill: retry when the largest face's box spans at least this share of the image's width or height;
    border: how the border is filled (replicate the edge pixels, mid grey or black);
    when_empty, when_touching: also retry when nothing was found / when a face touches the image's edge: on
    still images only (`detect`, as `analyze` and `enroll` use: camera frames with nobody in them, or with someone
    walking out of the picture, would pay a second detection), on every image, or never.
    """

    pad: float = 0.25
    fill: float = 0.8
    border: Border = "black"
    when_empty: When = "stills"
    when_touching: When = "stills"

    @property
    def enabled(self) -> bool:
        return self.pad > 0


def fills_image(det: Detections, shape: tuple[int, ...], fill: float) -> bool:
    """Whether the largest face's box spans at least `fill` of the image's width or height."""
    if len(det) == 0:
        return False
    h, w = shape[:2]
    wh = det.boxes[:, 2:] - det.boxes[:, :2]
    span = np.maximum(wh[:, 0] / max(w, 1), wh[:, 1] / max(h, 1))
    return bool(span[int(np.argmax(wh[:, 0] * wh[:, 1]))] >= fill)


def touching(det: Detections, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """Which faces' boxes reach the image's edge (boxes come clipped to the image)."""
    h, w = shape[:2]
    b = det.boxes
    return (b[:, 0] <= EDGE_PX) | (b[:, 1] <= EDGE_PX) | (b[:, 2] >= w - EDGE_PX) | (b[:, 3] >= h - EDGE_PX)


def _applies(when: When, still: bool) -> bool:
    return when == "always" or (when == "stills" and still)


def needs_retry(det: Detections, shape: tuple[int, ...], retry: PadRetry, still: bool) -> bool:
    if not retry.enabled:
        return False
    if len(det) == 0:
        return _applies(retry.when_empty, still)
    return fills_image(det, shape, retry.fill) or (_applies(retry.when_touching, still) and
                                                     bool(touching(det, shape).any()))


def _iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """IoU of every box of `a` with every box of `b` (N x M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return np.asarray(inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9), np.float64)


def square_window(cx: float, cy: float, side: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The pixels (x0, y0, x1, y1; end exclusive) of the square of `side` centred at (cx, cy), clipped to an
    image of `shape`."""
    h, w = shape[:2]
    return (max(0, round(cx - side / 2)), max(0, round(cy - side / 2)),
            min(w, round(cx + side / 2)), min(h, round(cy + side / 2)))


def cut_at_box(image: npt.NDArray[np.uint8], box: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """The face as an ID photo or a tight crop shows it: the square around `box` (x1, y1, x2, y2; side its longer
    side, centred on it), clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, np.float64)[:4])
    x0, y0, x1c, y1c = square_window((x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1), image.shape)
    return np.ascontiguousarray(image[y0:y1c, x0:x1c])


def add_border(image: npt.NDArray[np.uint8], off: int, border: Border) -> npt.NDArray[np.uint8]:
    if border == "replicate":
        return cv2.copyMakeBorder(image, off, off, off, off, cv2.BORDER_REPLICATE)
    value = 128 if border == "grey" else 0
    channels = 1 if image.ndim == 2 else image.shape[2]
    return cv2.copyMakeBorder(image, off, off, off, off, cv2.BORDER_CONSTANT, value=(value,) * channels)


def shift_back(det: Detections, off: int, shape: tuple[int, ...]) -> Detections:
    """Detections on the bordered image in the original image's pixels: boxes clipped to it, landmarks not."""
    h, w = shape[:2]
    boxes = det.boxes - off
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return Detections(boxes.astype(np.float32), det.scores.copy(), (det.landmarks - off).astype(np.float32))


def detect_with_retry(
    detect: Callable[[npt.NDArray[np.uint8]], Detections],
    image: npt.NDArray[np.uint8],
    first: Detections,
    retry: PadRetry,
    still: bool,
) -> Detections:
    """`first` (the detections on `image`), or, when they call for it, those on the bordered image mapped back,
    with the faces of `first` that neither touch the edge nor overlap one of them. When the retry finds nothing,
    `first` stands."""
    if not needs_retry(first, image.shape, retry, still):
        return first
    off = max(1, round(retry.pad * max(image.shape[:2])))
    again = detect(add_border(image, off, retry.border))
    if len(again) == 0:
        return first
    found = shift_back(again, off, image.shape)
    if len(first) == 0:
        return found
    keep = ~touching(first, image.shape) & (_iou(first.boxes, found.boxes).max(axis=1) < KEEP_IOU)
    if not keep.any():
        return found
    kept = first.select(np.flatnonzero(keep))
    return Detections(np.concatenate([found.boxes, kept.boxes]), np.concatenate([found.scores, kept.scores]),
                      np.concatenate([found.landmarks, kept.landmarks]))
