"""Face alignment: a similarity transform that maps detected landmarks onto the 112x112 template.

Training and runtime both call `align_faces`, with landmarks from the same detector, so the network never sees a
crop geometry at runtime that it did not see in training.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

# The standard 5-point template for 112x112 faces (left eye, right eye, nose tip, left and right mouth corner),
# as used by ArcFace/InsightFace. With 4 points (the detector's layout) the mouth is the corners' midpoint.
TEMPLATE_5 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
TEMPLATE_4 = np.concatenate([TEMPLATE_5[:3], TEMPLATE_5[3:].mean(axis=0, keepdims=True)]).astype(np.float32)
TEMPLATE_SIZE = 112


def template(points: int, size: int = TEMPLATE_SIZE) -> npt.NDArray[np.float32]:
    """The template for `points` landmarks (4 or 5) scaled to a `size` x `size` crop."""
    if points == 5:
        t = TEMPLATE_5
    elif points == 4:
        t = TEMPLATE_4
    else:
        raise ValueError(f"alignment template: expected 4 or 5 points, got {points}")
    return (t * (size / TEMPLATE_SIZE)).astype(np.float32)


def similarity_transform(src: npt.ArrayLike, dst: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst (Umeyama 1991).

    Returns a 2x3 matrix. Degenerate input (all points equal) yields a pure translation.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 2:
        raise ValueError(f"similarity_transform: expected two (K, 2) arrays, got {s.shape} and {d.shape}")
    ms, md = s.mean(0), d.mean(0)
    sc, dc = s - ms, d - md
    var = (sc**2).sum() / len(s)
    if var < 1e-12:
        m = np.zeros((2, 3))
        m[0, 0] = m[1, 1] = 1.0
        m[:, 2] = md - ms
        return m
    cov = dc.T @ sc / len(s)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    r = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var
    m = np.zeros((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = md - scale * r @ ms
    return m


def align_matrix(landmarks: npt.ArrayLike, size: int = TEMPLATE_SIZE) -> npt.NDArray[np.float64]:
    """The 2x3 image->crop matrix for one face's landmarks (K x 2, K in {4, 5})."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return similarity_transform(lm, template(lm.shape[0], size))


def align_faces(
    image: npt.NDArray[np.uint8], landmarks: npt.ArrayLike, size: int = TEMPLATE_SIZE, fill: int = 0
) -> npt.NDArray[np.uint8]:
    """Warp every face (landmarks N x K x 2) of `image` to an aligned `size` x `size` crop: N x size x size x C.
    Where the crop reaches beyond the image it is `fill`: the recognizer's (`FaceRecognizer.fill`, from its
    `RecognizerArgs.fill`; 0, black, for every shipped model), as its training aligned its crops."""
    lms = np.asarray(landmarks, dtype=np.float64)
    if lms.ndim != 3 or lms.shape[2] != 2:
        raise ValueError(f"align_faces: expected landmarks of shape (N, K, 2), got {lms.shape}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    out = np.zeros((lms.shape[0], size, size, channels), dtype=np.uint8)
    for i, lm in enumerate(lms):
        crop = cv2.warpAffine(
            image, align_matrix(lm, size), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
            borderValue=(fill, fill, fill),
        )
        out[i] = crop.reshape(size, size, channels)
    if image.ndim == 2:
        return out[..., 0]
    return out


def beyond_image(landmarks: npt.ArrayLike, image_wh: tuple[int, int], size: int = TEMPLATE_SIZE) -> npt.NDArray[
        np.float32]:
    """For the crop `align_faces` makes of a face (landmarks K x 2) in an image of `image_wh` (width, height): the
    share of each crop pixel that comes from beyond the image, 0 inside to 1 wholly outside (OpenCV's own bilinear
    weights: the warp of an image of ones)."""
    w, h = int(image_wh[0]), int(image_wh[1])
    inside = cv2.warpAffine(np.ones((h, w), np.float32), align_matrix(landmarks, size), (size, size),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return np.asarray(1.0 - inside, np.float32)


def refill(crop: npt.NDArray[np.uint8], landmarks: npt.ArrayLike, image_wh: tuple[int, int],
           fill: int) -> npt.NDArray[np.uint8]:
    """A crop that `align_faces` made with black beyond its image, as it would have made it with `fill` (within one
    grey level): how the crop cache, stored black, serves a model trained on another fill."""
    if fill == 0:
        return crop
    share = beyond_image(landmarks, image_wh, crop.shape[0])
    if not share.any():
        return crop
    if crop.ndim == 3:
        share = share[..., None]
    return np.clip(np.rint(crop.astype(np.float32) + fill * share), 0, 255).astype(np.uint8)


def face_box_from_landmarks(landmarks: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """The documented rule that turns 4 (or 5) landmarks into a face box (x1, y1, x2, y2).

    Fit the similarity transform of the face to the 112x112 template and take, in template coordinates, the
    square of side 88 centred at (56, 62): it spans brow to chin and cheek to cheek of an aligned face (the eyes sit
    at 38% of its height, the mouth at 84%). Mapped back to the image it is a square whose side is 2.5 times the
    template's inter-ocular distance at the fitted scale. Using all points (not just the eyes) keeps the box
    size right for turned heads, where the eye distance shrinks but the eye-mouth distance does not.
    Accepts (K, 2) or (N, K, 2).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    single = lm.ndim == 2
    if single:
        lm = lm[None]
    boxes = np.zeros((lm.shape[0], 4), dtype=np.float32)
    for i, pts in enumerate(lm):
        m = align_matrix(pts)
        a = m[:, :2]
        scale = float(np.sqrt(abs(np.linalg.det(a))))
        inv = cv2.invertAffineTransform(m)
        cx, cy = inv @ np.array([56.0, 62.0, 1.0])
        half = 44.0 / max(scale, 1e-9)
        boxes[i] = (cx - half, cy - half, cx + half, cy + half)
    return boxes[0] if single else boxes
