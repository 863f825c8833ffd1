"""Default thresholds are written once (edge_mtl/defaults.py): config and runtime classes agree, and the detector's
default follows the loaded variant's precision (the INT8 detector needs 0.35) unless the config sets one."""

from __future__ import annotations

import inspect

import pytest

from edge_mtl import defaults as D
from edge_mtl.config import AppConfig, DetectorConfig, TrackerConfig
from edge_mtl.paths import default_model
from edge_mtl.runtime.detector import FaceDetector
from edge_mtl.runtime.registry import load_detector
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


def test_shipped_recognizers_carry_their_measured_thresholds() -> None:
    """Each shipped recognizer file carries its own LFW View 2 points (`edge-mtl eval verification --stamp`), and the
    built-in fallback is the shipped FP32 model's, rounded, so a model without points behaves like the default."""
    from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine

    fp32, int8 = default_model("recognizer.onnx"), default_model("recognizer.int8.onnx")
    if not (fp32.exists() and int8.exists()):
        pytest.skip("shipped recognizer missing")
    m32, m8 = OnnxRuntimeEngine(fp32).metadata, OnnxRuntimeEngine(int8).metadata
    assert set(m32.operating_points) == {"plain", "flip"} and set(m8.operating_points) == {"plain"}
    for points in (*m32.operating_points.values(), *m8.operating_points.values()):
        assert set(points) == {"0.01", "0.001"} and 0 < points["0.01"] < points["0.001"] < 1
    assert "LFW View 2, 6000 pairs" in m32.operating_points_source
    assert abs(m32.operating_points["plain"]["0.01"] - D.IDENTITY_THRESHOLD) < 0.005
    assert abs(m32.operating_points["plain"]["0.001"] - D.IDENTITY_THRESHOLD_FAR_1E3) < 0.005
