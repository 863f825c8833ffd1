"""Operating-point defaults, written once: the config models (`edge_mtl.config`) and the runtime classes
(`FaceDetector`, `ByteTracker`) both take them from here, so a re-tuned default cannot drift between the two.

Where each figure comes from: export/detector.md (detector thresholds, measured on Caltech validation and the CCTV
clip), docs/pipeline.md (tracker thresholds), docs/acceleration.md (the INT8 detector's threshold).
"""

from __future__ import annotations

DETECTOR_SCORE_THRESHOLD = 0.3
# The INT8 detector scores the CCTV clip's recurring false object higher than FP32 does: 0.106 false detections per
# frame at 0.3, 0.023 at 0.35 (recall IOD >= 10: 98.37% -> 98.10%); its default is 0.35.
DETECTOR_SCORE_THRESHOLD_INT8 = 0.35
DETECTOR_NMS_THRESHOLD = 0.4

# Cosine similarity for a name: recognizer-1.4 falsely accepts 1% of LFW View 2's mismatched pairs at 0.438
# (0.1% at 0.533); export/recognizer.md. (recognizer-1.3: 0.361 / 0.453; 1.2: 0.451 / 0.584; re-enrol after
# upgrading.)
IDENTITY_THRESHOLD = 0.44
IDENTITY_MARGIN = 0.05
IDENTITY_MIN_OBSERVATIONS = 2

TRACK_HIGH_THRESHOLD = 0.3
TRACK_LOW_THRESHOLD = 0.15
TRACK_NEW_THRESHOLD = 0.4
TRACK_MATCH_IOU = 0.3
TRACK_LOST_FRAMES = 30
TRACK_CONFIRM_FRAMES = 3


def detector_score_threshold(precision: str) -> float:
    """The default detector score threshold for a model variant ("fp32", "fp16" or "int8")."""
    return DETECTOR_SCORE_THRESHOLD_INT8 if precision == "int8" else DETECTOR_SCORE_THRESHOLD
