"""Augmentations that matter for cameras: scale and crop, flip with landmark swap, colour, blur, JPEG, low light,
grayscale. Functions take and return uint8 images and numpy geometry; randomness comes from a passed Generator."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

# Landmark order: left eye, right eye, nose, mouth centre (K=4) or left/right mouth corners (K=5).
FLIP_ORDER = {4: [1, 0, 2, 3], 5: [1, 0, 2, 4, 3], 3: [1, 0, 2]}


def hflip(img: U8, boxes: F32, lms: F32) -> tuple[U8, F32, F32]:
    """Mirror the image; boxes and landmarks follow, and left/right points swap so 'left' stays smaller-x.

    Coordinates are pixel indices (pixel centres at integers, as the annotations and cv2.warpAffine use them), so
    the mirror of x is (w - 1) - x; using w - x would move every flipped target one pixel and bias the landmarks.
    """
    w = img.shape[1]
    img = np.ascontiguousarray(img[:, ::-1])
    boxes = boxes.copy()
    boxes[:, [0, 2]] = (w - 1) - boxes[:, [2, 0]]
    lms = lms.copy()
    if lms.shape[0]:
        lms[..., 0] = (w - 1) - lms[..., 0]
        lms = lms[:, FLIP_ORDER[lms.shape[1]]]
    return img, boxes, lms


def color_jitter(img: U8, rng: np.random.Generator, strength: float = 0.3) -> U8:
    """Brightness, contrast, saturation and a small hue shift, in one pass."""
    out = img.astype(np.float32)
    b = rng.uniform(-32, 32) * strength / 0.3
    c = rng.uniform(1 - strength, 1 + strength)
    out = (out - 127.5) * c + 127.5 + b
    s = rng.uniform(1 - strength, 1 + strength)
    gray = out.mean(axis=2, keepdims=True)
    out = gray + (out - gray) * s
    img = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + rng.integers(-8, 9)) % 180).astype(np.uint8)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return img


def low_light(img: U8, rng: np.random.Generator) -> U8:
    """Dark, noisy frames as from a camera at night: gamma > 1, gain, sensor noise."""
    gamma = rng.uniform(1.5, 3.0)
    out = 255.0 * (img.astype(np.float32) / 255.0) ** gamma
    out += rng.normal(0, rng.uniform(2, 8), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def blur(img: U8, rng: np.random.Generator) -> U8:
    """Defocus (Gaussian) or motion blur."""
    if rng.random() < 0.5:
        k = int(rng.choice([3, 5]))
        return cv2.GaussianBlur(img, (k, k), 0)
    k = int(rng.integers(3, 8))
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2, :] = 1.0 / k
    m = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(rng.uniform(0, 180)), 1.0)
    kernel = cv2.warpAffine(kernel, m, (k, k))
    kernel /= max(float(kernel.sum()), 1e-6)
    return cv2.filter2D(img, -1, kernel)


def jpeg(img: U8, rng: np.random.Generator) -> U8:
    """Re-encode as JPEG at a random quality (camera streams are compressed)."""
    q = int(rng.integers(25, 90))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        return img
    dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return dec if dec is not None else img


def grayscale(img: U8) -> U8:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return np.repeat(g[:, :, None], 3, axis=2)


def photometric(img: U8, rng: np.random.Generator, p: float = 1.0) -> U8:
    """The camera-like photometric chain used by both the detector and the recognizer training."""
    if rng.random() < 0.8 * p:
        img = color_jitter(img, rng)
    if rng.random() < 0.1 * p:
        img = low_light(img, rng)
    if rng.random() < 0.2 * p:
        img = blur(img, rng)
    if rng.random() < 0.3 * p:
        img = jpeg(img, rng)
    if rng.random() < 0.08 * p:
        img = grayscale(img)
    return img


def random_square_crop(
    img: U8, boxes: F32, lms: F32, size: int, rng: np.random.Generator, scales: tuple[float, float] = (0.3, 1.6)
) -> tuple[U8, F32, F32, npt.NDArray[np.bool_]]:
    """SCRFD-style square crop of side (scale x short side), padded where it leaves the image, resized to `size`.

    Returns the crop, transformed boxes and landmarks, and a mask of the faces whose centre lies in the crop.
    """
    h, w = img.shape[:2]
    short = min(h, w)
    for _ in range(10):
        side = max(int(short * rng.uniform(*scales)), 8)
        x0 = int(rng.integers(min(0, w - side), max(0, w - side) + 1))
        y0 = int(rng.integers(min(0, h - side), max(0, h - side) + 1))
        if len(boxes) == 0:
            break
        c = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = (c[:, 0] > x0) & (c[:, 0] < x0 + side) & (c[:, 1] > y0) & (c[:, 1] < y0 + side)
        if inside.any():
            break
    s = size / side
    m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
    mean = tuple(float(v) for v in img.reshape(-1, img.shape[2]).mean(0))
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=mean)
    boxes = (boxes - np.array([x0, y0, x0, y0], np.float32)) * s
    lms = (lms - np.array([x0, y0], np.float32)) * s
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    keep = (c[:, 0] > 0) & (c[:, 0] < size) & (c[:, 1] > 0) & (c[:, 1] < size)
    return out.astype(np.uint8), boxes.astype(np.float32), lms.astype(np.float32), keep
