"""Operating-point defaults, written once: the config models (`edge_mtl.config`) and the runtime classes
(`FaceDetector`, `ByteTracker`) both take them from here, so a re-tuned default cannot drift between the two.
Each default is defined here and nowhere else.

Where each figure comes from: export/detector.md (detector thresholds, measured on Caltech validation and the CCTV
clip), docs/pipeline.md (tracker thresholds), docs/acceleration.md (the INT8 detector's threshold).
"""

from __future__ import annotations

#: The detector's score threshold; where it acts: `edge-mtl analyze` and `eval detection` report the faces at or above
#: it, and in `edge-mtl run` it is the tracker's high threshold (tracker.high_threshold left unset): detections at or
#: above it match tracks first and may open them, those between tracker.low_threshold and it only keep tracks alive.
DETECTOR_SCORE_THRESHOLD = 0.3
# The INT8 detector scores the CCTV clip's recurring false object higher than FP32 does: 0.106 false detections per
# frame at 0.3, 0.023 at 0.35 (recall IOD >= 10: 98.37% -> 98.10%); its default is 0.35.
DETECTOR_SCORE_THRESHOLD_INT8 = 0.35
DETECTOR_NMS_THRESHOLD = 0.4

# Cosine similarity for a name, for recognizers that carry no measured thresholds of their own (each shipped one does:
# `edge-mtl eval verification --stamp`, and an unset `identity.threshold` follows them). These are recognizer-1.6's
# LFW View 2 points on plain cosine similarity, as a file just exported scores: 1% of mismatched pairs falsely
# accepted at 0.381, 0.1% at 0.492; export/recognizer.md (the shipped files normalise against their score cohort and
# carry their own points for that).
IDENTITY_THRESHOLD = 0.38
IDENTITY_THRESHOLD_FAR_1E3 = 0.49
IDENTITY_FALSE_ACCEPT_RATE = 0.01
# the rates every recognizer's thresholds are measured at (`edge-mtl eval verification --stamp`)
IDENTITY_FALSE_ACCEPT_RATES = (0.01, 0.001)
IDENTITY_MARGIN = 0.05
#: Below this aggregated confidence an event's gender is null. recognizer-1.6 on the UTKFace validation split
#: (`edge-mtl eval attributes --json`, gender_selective): 0.6 keeps 95.1% of faces at 91.5% accuracy (89.5% at
#: 0.5, all faces); 70% of the faces it leaves out are children under 13 (30% of the split), whose gender the
#: face barely shows.
GENDER_MIN_CONFIDENCE = 0.6
#: Below this estimated age (years) an event's gender is null whatever its confidence: an infant's sex is barely in
#: the face (recognizer-1.5: 65.5% on the 194 UTKFace validation faces aged 0-2, as often confidently wrong as
#: not), and the age estimate tells infants well (MAE 1.3 years at 0-2). With the 0.6 confidence floor, 3 years keeps
#: 82.3% of the validation faces at 94.9% accuracy with recognizer-1.6 (the confidence floor alone: 95.1% at 91.5%)
#: and costs the faces aged 13 and over nothing more (`edge-mtl eval attributes --json`, gender_selective_by_age).
GENDER_MIN_AGE = 3.0
IDENTITY_MIN_OBSERVATIONS = 2

TRACK_LOW_THRESHOLD = 0.15
TRACK_NEW_THRESHOLD = 0.4
TRACK_MATCH_IOU = 0.3
TRACK_LOST_FRAMES = 30
TRACK_CONFIRM_FRAMES = 3


def detector_score_threshold(precision: str) -> float:
    """The default detector score threshold for a model variant ("fp32", "fp16" or "int8")."""
    return DETECTOR_SCORE_THRESHOLD_INT8 if precision == "int8" else DETECTOR_SCORE_THRESHOLD


def identity_threshold(false_accept_rate: float) -> float:
    """The fallback identity threshold for a false-accept rate (0.01 or 0.001), when the model carries none."""
    return IDENTITY_THRESHOLD_FAR_1E3 if false_accept_rate <= 0.001 else IDENTITY_THRESHOLD


#: Still images above this many pixels are refused before decoding (images.max_pixels): 50 MP is a 8660 x 5773
#: photo, more than any camera a face is enrolled from; OpenCV's own limit (2^30) decodes to 3.2 GB.
MAX_IMAGE_PIXELS = 50_000_000
