"""Face tracker: ByteTrack-style two-stage association over a constant-velocity Kalman filter.

Pure numpy/scipy, per-instance ids, ``reset()``; see ``bytetrack`` for the algorithm and the knobs.
"""

from edge_mtl.track.bytetrack import ByteTracker, TrackInfo, box_iou, min_cost_matching
from edge_mtl.track.kalman import CHI2_95_4DOF, BoxKalmanFilter

__all__ = ["CHI2_95_4DOF", "BoxKalmanFilter", "ByteTracker", "TrackInfo", "box_iou", "min_cost_matching"]
