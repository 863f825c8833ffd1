"""Default thresholds are written once (edge_mtl/defaults.py): config and runtime classes agree, and the detector's
default follows the loaded variant's precision (the INT8 detector needs 0.35) unless the config sets one."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

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
    assert TrackerConfig().high_threshold is None  # follows the detector's threshold
    for name, value in TrackerConfig().tracker_options(D.DETECTOR_SCORE_THRESHOLD).items():
        assert ctor[name] == value, name


@pytest.mark.parametrize(
    ("precision", "score", "high", "want"),
    [
        ("fp32", None, None, D.DETECTOR_SCORE_THRESHOLD),
        ("fp16", None, None, D.DETECTOR_SCORE_THRESHOLD),
        ("int8", None, None, D.DETECTOR_SCORE_THRESHOLD_INT8),  # the INT8 detector's default applies in run too
        ("int8", 0.5, None, 0.5),  # detector.score_threshold is the tracker's high threshold
        ("int8", 0.5, 0.25, 0.25),  # unless tracker.high_threshold is set
    ],
)
def test_run_tracker_high_threshold_is_the_detector_threshold(
    precision: str, score: float | None, high: float | None, want: float
) -> None:
    from edge_mtl.pipeline import CameraState

    cfg = AppConfig.model_validate({"detector": {"score_threshold": score, "backend": {"precision": precision}},
                                    "tracker": {"high_threshold": high}})
    cam = CameraState("c", cfg)
    assert cfg.track_high_threshold() == cam.tracker.high_threshold == want
    assert cam.tracker.low_threshold == D.TRACK_LOW_THRESHOLD


def test_pipeline_detects_down_to_the_tracker_low_threshold() -> None:
    if not default_model("detector.int8.onnx").exists():
        pytest.skip("shipped detector variant missing")
    from edge_mtl.pipeline import Pipeline
    from edge_mtl.runtime.registry import load_recognizer

    cfg = AppConfig.model_validate({"detector": {"backend": {"precision": "int8"}}})
    det = load_detector(cfg)
    assert det.score_threshold == D.DETECTOR_SCORE_THRESHOLD_INT8
    pipe = Pipeline(cfg, det, load_recognizer(cfg))
    assert det.score_threshold == D.TRACK_LOW_THRESHOLD  # the tracker's second stage sees the doubtful boxes
    pipe.close()


def test_low_threshold_above_the_detector_threshold_is_a_config_error(tmp_path: Path) -> None:
    from edge_mtl.config import load_config
    from edge_mtl.errors import ConfigError

    cfg = tmp_path / "c.toml"
    cfg.write_text('[tracker]\nlow_threshold = 0.32\n[detector.backend]\nprecision = "int8"\n')
    assert load_config(cfg).track_high_threshold() == D.DETECTOR_SCORE_THRESHOLD_INT8  # 0.32 <= 0.35: fine
    cfg.write_text("[tracker]\nlow_threshold = 0.32\n")
    msg = re.escape("tracker.low_threshold 0.32 exceeds the detector's score threshold 0.3,")
    with pytest.raises(ConfigError, match=msg):
        load_config(cfg)
    # the same through a command-line override: one line, exit 2
    cfg.write_text("[tracker]\nlow_threshold = 0.2\n")
    r = subprocess.run([sys.executable, "-m", "edge_mtl", "run", "--config", str(cfg), "--threshold", "0.18",
                        "--source", str(tmp_path / "none.mp4")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "tracker.low_threshold 0.2 exceeds the detector's score threshold 0.18" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


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
    """Each shipped recognizer file carries its score cohort and its own LFW View 2 points measured with it
    (`edge-mtl eval verification --stamp`). The built-in fallback, for a file without points (and so, as a file just
    exported, without a cohort), is the shipped network's cosine points (0.381 / 0.492, export/recognizer.md); the
    normalised scores are mapped onto the cosine scale, so the shipped points stay within a few hundredths of it."""
    from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine

    fp32, int8 = default_model("recognizer.onnx"), default_model("recognizer.int8.onnx")
    if not (fp32.exists() and int8.exists()):
        pytest.skip("shipped recognizer missing")
    m32, m8 = OnnxRuntimeEngine(fp32).metadata, OnnxRuntimeEngine(int8).metadata
    assert set(m32.operating_points) == {"plain", "flip"} and set(m8.operating_points) == {"plain"}
    for points in (*m32.operating_points.values(), *m8.operating_points.values()):
        assert set(points) == {"0.01", "0.001"} and 0 < points["0.01"] < points["0.001"] < 1
    assert "LFW View 2, 6000 pairs, scores normalised against its cohort" in m32.operating_points_source
    assert m32.score_cohort and m8.score_cohort == m32.score_cohort
    assert abs(m32.operating_points["plain"]["0.01"] - D.IDENTITY_THRESHOLD) < 0.02
    assert abs(m32.operating_points["plain"]["0.001"] - D.IDENTITY_THRESHOLD_FAR_1E3) < 0.05
