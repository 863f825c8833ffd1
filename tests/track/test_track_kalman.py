"""BoxKalmanFilter on synthetic trajectories with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from edge_mtl.track.kalman import CHI2_95_4DOF, BoxKalmanFilter, cxcywh_to_xyxy, xyxy_to_cxcywh


def test_box_conversions_round_trip() -> None:
    xyxy = np.array([[10.0, 20.0, 70.0, 100.0], [0.0, 0.0, 1.0, 2.0]])
    c = xyxy_to_cxcywh(xyxy)
    np.testing.assert_allclose(c, [[40.0, 60.0, 60.0, 80.0], [0.5, 1.0, 1.0, 2.0]])
    np.testing.assert_allclose(cxcywh_to_xyxy(c), xyxy)


def test_initiate_starts_at_box_with_zero_velocity() -> None:
    kf = BoxKalmanFilter()
    mean, cov = kf.initiate([[10, 20, 70, 100], [200, 200, 230, 240]])
    assert mean.shape == (2, 8) and cov.shape == (2, 8, 8)
    np.testing.assert_allclose(mean[0], [40, 60, 60, 80, 0, 0, 0, 0])
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    # Larger boxes get proportionally larger uncertainty.
    assert cov[0, 0, 0] > cov[1, 0, 0]


def test_predict_moves_by_velocity_and_grows_uncertainty() -> None:
    kf = BoxKalmanFilter()
    mean, cov = kf.initiate([[0, 0, 50, 60]])
    mean[0, 4:] = [3.0, -2.0, 0.5, 0.25]
    m2, c2 = kf.predict(mean, cov)
    np.testing.assert_allclose(m2[0, :4], mean[0, :4] + [3.0, -2.0, 0.5, 0.25])
    np.testing.assert_allclose(m2[0, 4:], mean[0, 4:])
    assert np.all(np.diag(c2[0]) > np.diag(cov[0]))


def test_predict_is_vectorised_consistently() -> None:
    kf = BoxKalmanFilter()
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (7, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 120, (7, 2))], axis=1)
    mean, cov = kf.initiate(boxes)
    mean[:, 4:] = rng.normal(0, 3, (7, 4))
    m_all, c_all = kf.predict(mean, cov)
    for i in range(7):
        m_i, c_i = kf.predict(mean[i : i + 1], cov[i : i + 1])
        np.testing.assert_allclose(m_all[i], m_i[0])
        np.testing.assert_allclose(c_all[i], c_i[0])
    # Updating all rows at once equals updating each row alone.
    z = boxes + rng.normal(0, 2, boxes.shape)
    mu, cu = kf.update(m_all, c_all, z)
    for i in range(7):
        m_i, c_i = kf.update(m_all[i : i + 1], c_all[i : i + 1], z[i : i + 1])
        np.testing.assert_allclose(mu[i], m_i[0], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(cu[i], c_i[0], rtol=1e-9, atol=1e-9)


def test_freeze_size_zeroes_only_size_velocity_of_marked_tracks() -> None:
    kf = BoxKalmanFilter()
    mean, cov = kf.initiate([[0, 0, 50, 50], [100, 100, 150, 150]])
    mean[:, 4:] = [2.0, 2.0, 1.0, 1.0]
    m2, _ = kf.predict(mean, cov, freeze_size=np.array([True, False]))
    np.testing.assert_allclose(m2[0, 4:], [2.0, 2.0, 0.0, 0.0])
    np.testing.assert_allclose(m2[0, 2:4], [50.0, 50.0])
    np.testing.assert_allclose(m2[1, 2:4], [51.0, 51.0])


def test_update_pulls_towards_measurement_and_shrinks_uncertainty() -> None:
    kf = BoxKalmanFilter()
    mean, cov = kf.predict(*kf.initiate([[100, 100, 160, 170]]))
    z = np.array([[110.0, 104.0, 172.0, 176.0]])  # moved and grew
    m2, c2 = kf.update(mean, cov, z)
    before = np.abs(xyxy_to_cxcywh(z)[0] - mean[0, :4])
    after = np.abs(xyxy_to_cxcywh(z)[0] - m2[0, :4])
    assert np.all(after < before)
    assert np.trace(c2[0, :4, :4]) < np.trace(cov[0, :4, :4])
    np.testing.assert_allclose(c2[0], c2[0].T)
    assert np.all(np.linalg.eigvalsh(c2[0]) > 0)


def test_velocity_converges_on_linear_trajectory() -> None:
    kf = BoxKalmanFilter()
    v = np.array([4.0, -1.5, 0.3, 0.35])
    start = np.array([100.0, 300.0, 60.0, 70.0])
    mean, cov = kf.initiate(cxcywh_to_xyxy(start[None]))
    for t in range(1, 40):
        mean, cov = kf.predict(mean, cov)
        mean, cov = kf.update(mean, cov, cxcywh_to_xyxy((start + t * v)[None]))
    np.testing.assert_allclose(mean[0, 4:], v, atol=0.05)
    pred, _ = kf.predict(mean, cov)
    np.testing.assert_allclose(pred[0, :4], start + 40 * v, atol=0.2)


def test_gating_distance_matches_explicit_formula() -> None:
    kf = BoxKalmanFilter()
    mean, cov = kf.predict(*kf.initiate([[100, 100, 160, 170], [300, 50, 340, 100]]))
    boxes = np.array([[100, 100, 160, 170], [104, 100, 164, 170], [300, 50, 340, 100], [0, 0, 10, 10.0]])
    d2 = kf.gating_distance(mean, cov, boxes)
    assert d2.shape == (2, 4)
    pm, ps = kf.project(mean, cov)
    z = xyxy_to_cxcywh(boxes)
    for i in range(2):
        inv = np.linalg.inv(ps[i])
        for j in range(4):
            d = z[j] - pm[i]
            assert d2[i, j] == pytest.approx(d @ inv @ d, rel=1e-9, abs=1e-9)
    assert d2[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert d2[0, 0] < d2[0, 1] < CHI2_95_4DOF < d2[0, 3]
    assert kf.gating_distance(mean, cov, np.zeros((0, 4))).shape == (2, 0)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="position_noise"):
        BoxKalmanFilter(position_noise=0.0)
    with pytest.raises(ValueError, match="measurement_noise"):
        BoxKalmanFilter(measurement_noise=float("nan"))
    kf = BoxKalmanFilter()
    mean, cov = kf.initiate([[0, 0, 10, 10]])
    with pytest.raises(ValueError, match="expected 1 boxes, got 2"):
        kf.update(mean, cov, [[0, 0, 10, 10], [1, 1, 11, 11]])
