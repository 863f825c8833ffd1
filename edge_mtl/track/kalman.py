"""Constant-velocity Kalman filter on face boxes, vectorised over many tracks.

State (8 numbers per track): centre x, centre y, width, height, and the per-frame velocity of each. Width and
height are filtered directly (not aspect + height as in ByteTrack) because a face box's width is as well
measured as its height; the filter then predicts both without an aspect term that would need its own tiny
noise constant.

Noise is proportional to the box size (x terms to the width, y terms to the height): a 20-pixel face far from
the camera and a 300-pixel face close to it jitter by similar *fractions* of their size, so one set of
constants fits both. The three constants are fractions of the box side:

- ``position_noise``: how far (as a fraction of the box side, per frame) the box may wander off the
  constant-velocity path. Raise it to follow erratic motion sooner; lower it for smoother, laggier tracks.
- ``velocity_noise``: how fast the velocity itself may change per frame. Raise it for faces that accelerate
  and turn (people walking, pan cameras); lower it to trust the current velocity longer during occlusions.
- ``measurement_noise``: how noisy the detector's boxes are. Raise it to smooth detector jitter more (the
  filter trusts its prediction); lower it to make the filtered box snap to each detection.

All arrays are float64: ``mean`` is (N, 8), ``cov`` is (N, 8, 8), boxes are (N, 4) as (x1, y1, x2, y2).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

# Transition for one frame: position += velocity.
_F = np.eye(8)
_F[:4, 4:] = np.eye(4)

# Noise scales never drop below one pixel, so a degenerate (tiny) box cannot make a covariance singular.
_MIN_SCALE = 1.0

# Squared Mahalanobis distance with 4 degrees of freedom (x, y, w, h) at the 95 % level of a chi-square
# distribution: a common gate for "this detection is consistent with this track's prediction".
CHI2_95_4DOF = 9.4877


def xyxy_to_cxcywh(boxes: npt.ArrayLike) -> F64:
    """(x1, y1, x2, y2) -> (centre x, centre y, width, height)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    wh = b[:, 2:] - b[:, :2]
    return np.concatenate([b[:, :2] + wh / 2.0, wh], axis=1)


def cxcywh_to_xyxy(boxes: npt.ArrayLike) -> F64:
    """(centre x, centre y, width, height) -> (x1, y1, x2, y2)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    half = b[:, 2:] / 2.0
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


class BoxKalmanFilter:
    """Constant-velocity Kalman filter for (cx, cy, w, h); stateless, so one instance serves every track.

    The filter holds only the noise constants; the per-track state (mean, covariance) is owned by the caller
    and passed in as stacked arrays, so a tracker predicts all its tracks in one vectorised call.
    """

    def __init__(
        self,
        *,
        position_noise: float = 1.0 / 20.0,
        velocity_noise: float = 1.0 / 160.0,
        measurement_noise: float = 1.0 / 20.0,
    ) -> None:
        """See the module docstring for what raising or lowering each constant does."""
        for name, value in (
            ("position_noise", position_noise),
            ("velocity_noise", velocity_noise),
            ("measurement_noise", measurement_noise),
        ):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"BoxKalmanFilter: {name} must be a positive finite number, got {value!r}")
        self.position_noise = float(position_noise)
        self.velocity_noise = float(velocity_noise)
        self.measurement_noise = float(measurement_noise)

    @staticmethod
    def _scale(wh: F64) -> F64:
        """(N, 2) widths and heights -> (N, 4) per-coordinate scale (w, h, w, h), floored at one pixel."""
        s = np.maximum(np.abs(wh), _MIN_SCALE)
        return np.concatenate([s, s], axis=1)

    def initiate(self, boxes: npt.ArrayLike) -> tuple[F64, F64]:
        """Start tracks at these (x1, y1, x2, y2) boxes with zero velocity and a wide velocity uncertainty."""
        z = xyxy_to_cxcywh(boxes)
        n = z.shape[0]
        mean = np.zeros((n, 8))
        mean[:, :4] = z
        s = self._scale(z[:, 2:])
        std = np.concatenate([2.0 * self.position_noise * s, 10.0 * self.velocity_noise * s], axis=1)
        cov = np.zeros((n, 8, 8))
        idx = np.arange(8)
        cov[:, idx, idx] = std**2
        return mean, cov

    def predict(self, mean: F64, cov: F64, freeze_size: B | None = None) -> tuple[F64, F64]:
        """Advance every track by one frame.

        ``freeze_size`` (N,) marks tracks whose size velocity is zeroed first: for a track that is not being
        seen, extrapolating a shrinking or growing box only makes it wrong, and can drive it to zero size.
        """
        mean = np.array(mean, dtype=np.float64, copy=True)
        if freeze_size is not None and mean.shape[0]:
            mean[np.asarray(freeze_size, dtype=bool), 6:8] = 0.0
        s = self._scale(mean[:, 2:4])
        std = np.concatenate([self.position_noise * s, self.velocity_noise * s], axis=1)
        q = np.zeros((mean.shape[0], 8, 8))
        idx = np.arange(8)
        q[:, idx, idx] = std**2
        new_mean = mean @ _F.T
        new_cov = _F @ cov @ _F.T + q
        return new_mean, new_cov

    def project(self, mean: F64, cov: F64) -> tuple[F64, F64]:
        """The predicted measurement (N, 4) and its covariance (N, 4, 4), detector noise included."""
        s = self._scale(mean[:, 2:4])
        r = (self.measurement_noise * s) ** 2
        proj_cov = np.array(cov[:, :4, :4], copy=True)
        idx = np.arange(4)
        proj_cov[:, idx, idx] += r
        return np.array(mean[:, :4], copy=True), proj_cov

    def update(self, mean: F64, cov: F64, boxes: npt.ArrayLike) -> tuple[F64, F64]:
        """Correct each track i with its own measured box i (row-aligned, (x1, y1, x2, y2))."""
        z = xyxy_to_cxcywh(boxes)
        if z.shape[0] != mean.shape[0]:
            raise ValueError(f"BoxKalmanFilter.update: expected {mean.shape[0]} boxes, got {z.shape[0]}")
        if z.shape[0] == 0:
            return np.array(mean, copy=True), np.array(cov, copy=True)
        proj_mean, s = self.project(mean, cov)
        pht = cov[:, :, :4]  # P H^T, (N, 8, 4)
        # K = P H^T S^-1; S is symmetric, so solve S K^T = (P H^T)^T instead of inverting S.
        gain = np.linalg.solve(s, pht.transpose(0, 2, 1)).transpose(0, 2, 1)
        innovation = z - proj_mean
        new_mean = mean + (gain @ innovation[:, :, None])[:, :, 0]
        new_cov = cov - gain @ s @ gain.transpose(0, 2, 1)
        new_cov = 0.5 * (new_cov + new_cov.transpose(0, 2, 1))
        return new_mean, new_cov

    def gating_distance(self, mean: F64, cov: F64, boxes: npt.ArrayLike) -> F64:
        """Squared Mahalanobis distance (N tracks, M boxes) between each prediction and each box.

        Compare with ``CHI2_95_4DOF`` (9.49): larger means the box is implausible for that track's motion.
        """
        z = xyxy_to_cxcywh(boxes)
        n, m = mean.shape[0], z.shape[0]
        if n == 0 or m == 0:
            return np.zeros((n, m))
        proj_mean, s = self.project(mean, cov)
        d = z.T[None, :, :] - proj_mean[:, :, None]  # (N, 4, M)
        sol = np.linalg.solve(s, d)
        return np.asarray(np.sum(d * sol, axis=1), dtype=np.float64)
