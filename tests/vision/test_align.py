"""Alignment: the similarity fit, the warp to the 112x112 template and the landmark -> face box rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_mtl.vision.align import (
    TEMPLATE_4,
    TEMPLATE_5,
    align_faces,
    align_matrix,
    beyond_image,
    face_box_from_landmarks,
    refill,
    similarity_transform,
    template,
)


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    m = np.zeros((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = (tx, ty)
    return m


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image: bilinear warps of it are accurate to about one grey level."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.02, 0.06), rng.uniform(0.02, 0.06), rng.uniform(0, 6)
        img[..., c] = 127 + 100 * np.sin(fx * xx + ph) * np.cos(fy * yy)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("scale", "angle", "tx", "ty"), [(1.0, 0.0, 0.0, 0.0), (0.37, 23.0, -5.0, 80.0),
                                                          (3.2, -170.0, 400.5, 12.25), (1.5, 90.0, 0.0, -3.0)])
def test_similarity_transform_recovers_known_transform(scale: float, angle: float, tx: float, ty: float) -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (5, 2))
    m = _similarity(scale, angle, tx, ty)
    got = similarity_transform(src, _apply(m, src))
    np.testing.assert_allclose(got, m, atol=1e-9)


def test_similarity_transform_least_squares_and_no_reflection() -> None:
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 100, (5, 2))
    m = _similarity(2.0, 30.0, 10.0, -4.0)
    noisy = _apply(m, src) + rng.normal(0, 0.5, (5, 2))
    got = similarity_transform(src, noisy)
    np.testing.assert_allclose(got, m, atol=0.5)
    # a mirrored target cannot be fitted by a reflection: the result stays a proper rotation
    mirrored = src * np.array([-1.0, 1.0])
    got = similarity_transform(src, mirrored)
    assert np.linalg.det(got[:, :2]) > 0
    assert abs(got[0, 0] - got[1, 1]) < 1e-9 and abs(got[0, 1] + got[1, 0]) < 1e-9


def test_similarity_transform_degenerate_and_bad_shapes() -> None:
    src = np.full((4, 2), 7.0)
    dst = np.full((4, 2), 9.0)
    np.testing.assert_allclose(similarity_transform(src, dst), [[1, 0, 2], [0, 1, 2]])
    with pytest.raises(ValueError, match=r"expected two \(K, 2\) arrays"):
        similarity_transform(np.zeros((4, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((4, 3)), np.zeros((4, 3)))


def test_templates_consistent() -> None:
    np.testing.assert_allclose(TEMPLATE_4[:3], TEMPLATE_5[:3])
    np.testing.assert_allclose(TEMPLATE_4[3], (TEMPLATE_5[3] + TEMPLATE_5[4]) / 2)
    np.testing.assert_allclose(template(5, 224), TEMPLATE_5 * 2, rtol=1e-6)
    np.testing.assert_allclose(template(4, 56), TEMPLATE_4 / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="4 or 5 points, got 3"):
        template(3)


def test_align_matrix_4_and_5_points_agree() -> None:
    m = _similarity(1.7, 12.0, 40.0, 25.0)
    face5 = _apply(m, TEMPLATE_5.astype(np.float64))
    face4 = np.concatenate([face5[:3], face5[3:].mean(0, keepdims=True)])
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    np.testing.assert_allclose(align_matrix(face5), inv, atol=1e-5)  # the template is float32
    np.testing.assert_allclose(align_matrix(face4), inv, atol=1e-5)
    np.testing.assert_allclose(face_box_from_landmarks(face4), face_box_from_landmarks(face5), atol=1e-3)


def test_align_template_face_is_identity_crop() -> None:
    img = _smooth_image(112, 112)
    crops = align_faces(img, TEMPLATE_5[None])
    assert crops.shape == (1, 112, 112, 3) and crops.dtype == np.uint8
    assert np.abs(crops[0].astype(int) - img.astype(int)).max() <= 1
    crops4 = align_faces(img, TEMPLATE_4[None])
    assert np.abs(crops4[0].astype(int) - img.astype(int)).max() <= 1


def test_align_translated_and_scaled_face() -> None:
    face = _smooth_image(112, 112, seed=3)
    big = np.zeros((300, 400, 3), np.uint8)
    big[50:162, 200:312] = face
    lm = TEMPLATE_5 + np.array([200, 50], np.float32)
    two = np.stack([lm, lm])
    crops = align_faces(big, two)
    assert crops.shape == (2, 112, 112, 3)
    assert np.abs(crops[0].astype(int) - face.astype(int)).max() <= 1
    np.testing.assert_array_equal(crops[0], crops[1])
    # the same face at twice the size (pixel centres map by x' = 2x + 0.5)
    import cv2

    big2 = cv2.resize(face, (224, 224), interpolation=cv2.INTER_LINEAR)
    crop2 = align_faces(big2, (TEMPLATE_5 * 2 + 0.5)[None])[0]
    assert np.abs(crop2.astype(int) - face.astype(int))[4:-4, 4:-4].mean() < 2.0


def test_align_fill_beyond_the_image() -> None:
    """Where the crop reaches beyond its image it is black, or the `fill` asked for (grey or colour images); the
    image's own pixels are the same either way."""
    face = _smooth_image(112, 112, seed=5)
    half = np.ascontiguousarray(face[:, 56:])  # the face's right half: the left half of the crop is beyond it
    lm = (TEMPLATE_5 - np.array([56, 0], np.float32))[None]
    black, grey = align_faces(half, lm)[0], align_faces(half, lm, fill=128)[0]
    assert (black[:, :50] == 0).all() and (grey[:, :50] == 128).all()
    np.testing.assert_array_equal(black[:, 60:], grey[:, 60:])
    assert np.abs(grey[:, 60:].astype(int) - face[:, 60:].astype(int)).max() <= 1
    assert (align_faces(np.ascontiguousarray(half[..., 0]), lm, fill=200)[0][:, :50] == 200).all()


@pytest.mark.parametrize("fill", [128, 255, 37])
def test_refill_is_aligning_with_that_fill(fill: int) -> None:
    """A crop aligned with black beyond its image, refilled, is the crop aligned with `fill` (within one level, the
    rounding of the stored crop): at the border's soft edge too. Inside the image nothing changes."""
    img = _smooth_image(200, 160, seed=7)
    wh = (img.shape[1], img.shape[0])
    for lm in (np.array([[40, 60], [150, 62], [95, 120], [95, 170]], np.float32),  # larger than the image
               np.array([[-10, 60], [50, 55], [20, 100], [22, 130]], np.float32)):  # half beyond its left edge
        share = beyond_image(lm, wh)
        assert (share == 1).mean() > 0.3 and ((share > 0) & (share < 1)).any() and (share == 0).mean() > 0.2
        want, black = align_faces(img, lm[None], fill=fill)[0], align_faces(img, lm[None])[0]
        got = refill(black, lm, wh, fill)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        np.testing.assert_array_equal(got[share == 0], black[share == 0])
    inside = TEMPLATE_4 + np.array([40, 20], np.float32)
    assert not beyond_image(inside, wh).any()
    crop = align_faces(img, inside[None])[0]
    assert refill(crop, inside, wh, 128) is crop and refill(crop, inside, wh, 0) is crop


def test_align_grayscale_and_empty() -> None:
    gray = _smooth_image(112, 112)[..., 0].copy()
    crops = align_faces(gray, TEMPLATE_5[None])
    assert crops.shape == (1, 112, 112)
    assert np.abs(crops[0].astype(int) - gray.astype(int)).max() <= 1
    assert align_faces(gray, np.zeros((0, 5, 2))).shape == (0, 112, 112)
    assert align_faces(_smooth_image(50, 50), np.zeros((0, 4, 2)), size=64).shape == (0, 64, 64, 3)
    with pytest.raises(ValueError, match="expected landmarks of shape"):
        align_faces(gray, TEMPLATE_5)


def test_face_box_of_template_face() -> None:
    box = face_box_from_landmarks(TEMPLATE_4)
    np.testing.assert_allclose(box, [12.0, 18.0, 100.0, 106.0], atol=1e-3)
    iod = float(np.linalg.norm(TEMPLATE_4[0] - TEMPLATE_4[1]))
    side = box[2] - box[0]
    assert side == pytest.approx(box[3] - box[1], abs=1e-4)
    assert side == pytest.approx(2.5 * iod, rel=0.01)


@pytest.mark.parametrize(("scale", "angle", "tx", "ty"), [(0.25, 0.0, 3.0, 4.0), (4.0, 0.0, -100.0, 250.0),
                                                          (1.3, 35.0, 60.0, 70.0), (0.8, -120.0, 500.0, 9.0)])
def test_face_box_equivariance(scale: float, angle: float, tx: float, ty: float) -> None:
    rng = np.random.default_rng(4)
    base = TEMPLATE_4 + rng.normal(0, 2.0, TEMPLATE_4.shape)  # a not-quite-template face
    b0 = face_box_from_landmarks(base).astype(np.float64)
    m = _similarity(scale, angle, tx, ty)
    b1 = face_box_from_landmarks(_apply(m, base.astype(np.float64))).astype(np.float64)
    side0, side1 = b0[2] - b0[0], b1[2] - b1[0]
    assert side1 == pytest.approx(scale * side0, rel=1e-5)
    c0 = (b0[:2] + b0[2:]) / 2
    c1 = (b1[:2] + b1[2:]) / 2
    np.testing.assert_allclose(c1, _apply(m, c0[None])[0], atol=1e-3 * max(1.0, scale))


def test_face_box_batch_matches_single() -> None:
    faces = np.stack([TEMPLATE_4, TEMPLATE_4 * 2 + 10, TEMPLATE_5[[0, 1, 2, 3]]])
    boxes = face_box_from_landmarks(faces)
    assert boxes.shape == (3, 4) and boxes.dtype == np.float32
    for f, b in zip(faces, boxes, strict=True):
        np.testing.assert_allclose(face_box_from_landmarks(f), b)
