"""Default thresholds are written once (edge_mtl/defaults.py): config and runtime classes agree, and the detector's
default follows the loaded variant's precision (the INT8 detector needs 0.35) unless the config sets one."""

from __future__ import annotations

import inspect

import pytest

from edge_mtl import defaults as D
from edge_mtl.config import AppConfig, DetectorConfig, TrackerConfig
from edge_mtl.models_registry import load_detector
from edge_mtl.paths import default_model
from edge_mtl.runtime.detector import FaceDetector
from edge_mtl.track.bytetrack import ByteTracker


def _ctor_defaults(cls: type) -> dict[str, object]:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_tracker_constructor_defaults_are_the_config_defaults() -> None:
    ctor = _ctor_defaults(ByteTracker)
    for name, value in TrackerConfig().model_dump().items():
        assert ctor[name] == value, name


def test_detector_constructor_defaults_are_the_config_defaults() -> None:
    ctor = _ctor_defaults(FaceDetector)
    assert ctor["nms_threshold"] == DetectorConfig().nms_threshold
    assert ctor["score_threshold"] == D.detector_score_threshold("fp32") == D.DETECTOR_SCORE_THRESHOLD
    assert D.detector_score_threshold("fp16") == D.DETECTOR_SCORE_THRESHOLD
    assert D.detector_score_threshold("int8") == D.DETECTOR_SCORE_THRESHOLD_INT8 > D.DETECTOR_SCORE_THRESHOLD


@pytest.mark.parametrize(
    ("precision", "configured", "want"),
    [
        ("fp32", None, D.DETECTOR_SCORE_THRESHOLD),
        ("int8", None, D.DETECTOR_SCORE_THRESHOLD_INT8),
        ("int8", 0.25, 0.25),  # a configured threshold applies to every precision
        ("fp32", 0.5, 0.5),
    ],
)
def test_loaded_detector_threshold_follows_precision(precision: str, configured: float | None, want: float) -> None:
    if not default_model(f"detector{'.int8' if precision == 'int8' else ''}.onnx").exists():
        pytest.skip("shipped detector variant missing")
    cfg = AppConfig()
    cfg.detector.backend.precision = precision  # type: ignore[assignment]
    cfg.detector.score_threshold = configured
    det = load_detector(cfg)
    assert det.score_threshold == want
    assert det.meta.precision == precision


def test_identity_decider_defaults_are_the_config_defaults() -> None:
    from edge_mtl.config import IdentityConfig
    from edge_mtl.identity.aggregate import IdentityDecider

    cfg, dec = IdentityConfig(), IdentityDecider()
    assert (dec.margin, dec.min_observations) == (cfg.margin, cfg.min_observations)
    # the threshold is unset in the config (it follows the loaded model); the decider's default is the fallback
    assert cfg.threshold is None and dec.threshold == D.identity_threshold(cfg.false_accept_rate)
