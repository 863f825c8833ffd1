"""Each recognizer file carries the identity thresholds measured for it (`edge-mtl eval verification --stamp`), and
an unset `identity.threshold` follows them: the stamp round-trips through the real ONNX file, the resolution rules
hold, the pipeline and a SIGHUP-style settings change use them, and a quantized file does not inherit them."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge_mtl import defaults as D
from edge_mtl.config import AppConfig, IdentityConfig
from edge_mtl.errors import InputError, ModelError
from edge_mtl.export_tools.onnx_utils import read_metadata
from edge_mtl.identity.aggregate import IdentityDecider, resolve_threshold
from edge_mtl.runtime.engine import META_PREFIX, ModelMetadata, far_key


def _meta(points: dict[str, dict[str, float]] | None = None, precision: str = "fp32") -> ModelMetadata:
    return ModelMetadata(
        kind="recognizer", version="recognizer-9.9", input_name="input", output_names=("embedding",), color="RGB",
        mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5), input_size=112, precision=precision,
        operating_points=points or {}, operating_points_source="LFW View 2, test" if points else "",
    )


POINTS = {"plain": {"0.01": 0.41, "0.001": 0.52}, "flip": {"0.01": 0.43}}


def test_far_key_spells_rates_as_numbers() -> None:
    assert (far_key(0.01), far_key(1e-3), far_key(0.001)) == ("0.01", "0.001", "0.001")


def test_operating_points_round_trip_through_props() -> None:
    meta = _meta(POINTS)
    back = ModelMetadata.from_props(meta.to_props())
    assert back.operating_points == POINTS and back.operating_points_source == "LFW View 2, test"
    # a model without them says nothing about them
    assert META_PREFIX + "operating_points" not in _meta().to_props()
    assert ModelMetadata.from_props(_meta().to_props()).operating_points == {}
    # rates written as 1e-3 read back in the canonical spelling
    props = meta.to_props() | {META_PREFIX + "operating_points": '{"plain": {"1e-3": 0.5}}'}
    assert ModelMetadata.from_props(props).operating_points == {"plain": {"0.001": 0.5}}
    for bad in ('{"plain": 0.5}', '[1, 2]', '{"plain": {"x": 0.5}}'):
        with pytest.raises(ModelError, match="malformed"):
            ModelMetadata.from_props(meta.to_props() | {META_PREFIX + "operating_points": bad})


@pytest.mark.parametrize(
    ("configured", "far", "flip", "want", "says"),
    [
        (None, 0.01, False, 0.41, "at false-accept rate 0.01"),
        (None, 0.001, False, 0.52, "at false-accept rate 0.001"),
        (None, 0.01, True, 0.43, "fp32, flip"),  # flip measured: its own point
        (None, 0.001, True, 0.52, "(fp32) at false-accept rate 0.001"),  # flip not measured at 1e-3: the plain one
        (0.6, 0.01, False, 0.6, "as configured; recognizer-9.9 measured 0.410"),  # a number always wins
        (0.6, 0.001, True, 0.6, "as configured; recognizer-9.9 measured 0.520"),
    ],
)
def test_resolution_rules(configured: float | None, far: float, flip: bool, want: float, says: str) -> None:
    th, source = resolve_threshold(configured, far, _meta(POINTS), flip)
    assert th == want
    assert says in source


def test_model_without_points_falls_back_to_the_builtin_default_and_says_so() -> None:
    th, source = resolve_threshold(None, 0.01, _meta(precision="int8"))
    assert th == D.IDENTITY_THRESHOLD and "carries no measured threshold" in source and "--stamp" in source
    assert resolve_threshold(None, 0.001, _meta())[0] == D.IDENTITY_THRESHOLD_FAR_1E3 > D.IDENTITY_THRESHOLD
    # the decider's own default is the fallback for the config's default rate
    assert IdentityDecider().threshold == D.identity_threshold(IdentityConfig().false_accept_rate)


def test_config_accepts_only_measured_rates() -> None:
    cfg = IdentityConfig()
    assert cfg.threshold is None and cfg.false_accept_rate == 0.01
    assert IdentityConfig(false_accept_rate=1e-3).false_accept_rate == 0.001
    with pytest.raises(ValidationError, match=r"0\.01 or 0\.001"):
        IdentityConfig(false_accept_rate=0.05)


def _shipped_copy(repo_root: Path, tmp_path: Path, name: str) -> Path:
    src = repo_root / "export" / name
    if not src.exists():
        pytest.skip(f"shipped {name} missing")
    dst = tmp_path / name
    shutil.copy(src, dst)
    return dst


@pytest.fixture()
def rec_copy(repo_root: Path, tmp_path: Path) -> Path:
    return _shipped_copy(repo_root, tmp_path, "recognizer.onnx")


def _stamp(path: Path, result: dict, flip: bool = False, **kw: object) -> dict:
    from edge_mtl.eval.suites import EvalOptions, stamp_operating_points
    from edge_mtl.runtime.registry import open_recognizer

    cfg = AppConfig()
    cfg.recognizer.model = path
    opts = EvalOptions(**({"what": "verification", "limit": 0, "pairs": "pairs.txt"} | kw))
    return stamp_operating_points(opts, cfg, open_recognizer(path, flip=flip), result)


def _result(th2: float, th3: float) -> dict:
    return {"threshold_at_far_0.01": th2, "threshold_at_far_0.001": th3, "pairs": 6000.0,
            "models": {"detector": "detector-x"}}


def test_stamp_writes_into_the_file_and_keeps_the_other_mode(rec_copy: Path) -> None:
    before = read_metadata(rec_copy)
    out = _stamp(rec_copy, _result(0.4012, 0.5034))
    assert out == {"path": str(rec_copy), "mode": "plain", "operating_points": {"0.01": 0.4012, "0.001": 0.5034}}
    after = read_metadata(rec_copy)
    assert after.operating_points["plain"] == {"0.01": 0.4012, "0.001": 0.5034}
    assert "6000 pairs" in after.operating_points_source and "detector-x" in after.operating_points_source
    # nothing else about the model changed
    keep = dataclasses.replace(after, operating_points=before.operating_points,
                               operating_points_source=before.operating_points_source)
    assert keep == before
    _stamp(rec_copy, _result(0.41, 0.51), flip=True)
    both = read_metadata(rec_copy).operating_points
    assert both["plain"] == {"0.01": 0.4012, "0.001": 0.5034} and both["flip"] == {"0.01": 0.41, "0.001": 0.51}


def test_stamp_keeps_the_other_edge_mtl_keys(repo_root: Path, tmp_path: Path) -> None:
    """Stamping a quantized file keeps its `edge_mtl.quantization` record (method, calibration, source hash)."""
    import onnx

    dst = _shipped_copy(repo_root, tmp_path, "recognizer.int8.onnx")
    props = {p.key: p.value for p in onnx.load(str(dst)).metadata_props}
    assert "edge_mtl.quantization" in props
    _stamp(dst, _result(0.45, 0.54))
    after = {p.key: p.value for p in onnx.load(str(dst)).metadata_props}
    assert after["edge_mtl.quantization"] == props["edge_mtl.quantization"]
    assert read_metadata(dst).operating_points["plain"] == {"0.01": 0.45, "0.001": 0.54}
    assert read_metadata(dst).precision == "int8"


@pytest.mark.parametrize("kw", [{"limit": 600}, {"pairs": "pairsDevTest.txt"}])
def test_stamp_refuses_anything_but_the_whole_of_view_2(rec_copy: Path, kw: dict) -> None:
    before = rec_copy.read_bytes()
    with pytest.raises(InputError, match="whole of LFW View 2"):
        _stamp(rec_copy, _result(0.4, 0.5), **kw)
    assert rec_copy.read_bytes() == before


def test_stamp_into_an_unwritable_place_is_a_clear_error(rec_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Permissions cannot be tested as root: the write itself is made to fail.) The measured points are in the
    message, so the run is not wasted, and the file is untouched."""
    import edge_mtl.export_tools.onnx_utils as ou

    def refuse(*_: object, **__: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ou, "save_model_atomic", refuse)
    before = rec_copy.read_bytes()
    with pytest.raises(InputError, match=r"cannot write the measured thresholds .*Permission denied.*0\.4012"):
        _stamp(rec_copy, _result(0.4012, 0.5034))
    assert rec_copy.read_bytes() == before


def test_stamp_refuses_non_finite_thresholds(rec_copy: Path) -> None:
    with pytest.raises(InputError, match="no finite threshold"):
        _stamp(rec_copy, _result(float("nan"), 0.5))


def test_pipeline_follows_the_loaded_model_and_live_changes(rec_copy: Path) -> None:
    from edge_mtl.pipeline import CameraState, Pipeline, TrackState
    from edge_mtl.runtime.registry import load_detector, load_recognizer

    _stamp(rec_copy, _result(0.4012, 0.5034))
    cfg = AppConfig()
    cfg.recognizer.model = rec_copy
    pipe = Pipeline(cfg, load_detector(cfg), load_recognizer(cfg))
    assert pipe.identity_threshold == 0.4012
    assert pipe._decider().threshold == 0.4012
    cam = pipe.cameras["door"] = CameraState("door", cfg)
    running = cam.tracks[1] = TrackState("door", 1, 0, 0.0, 0, 0.0, np.zeros(4, np.float32), decider=pipe._decider())
    cfg.identity.false_accept_rate = 0.001
    cfg.identity.margin = 0.08
    pipe.apply_identity_settings()
    assert pipe.identity_threshold == 0.5034 and pipe._decider().threshold == 0.5034
    assert (running.decider.threshold, running.decider.margin) == (0.5034, 0.08)  # tracks already running too
    cfg.identity.threshold = 0.47
    pipe.apply_identity_settings()
    assert pipe.identity_threshold == 0.47 and pipe._decider().threshold == 0.47


def test_cli_refuses_stamp_with_other_evaluations() -> None:
    from edge_mtl.eval import suites as eval_cli

    opts = eval_cli.EvalOptions(what="attributes", stamp=True, limit=0, pairs="pairs.txt")
    with pytest.raises(InputError, match="goes with 'eval verification'"):
        eval_cli.run(opts, AppConfig())


def test_cli_refuses_a_partial_stamp_before_evaluating(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `--stamp` that could not be written is refused before minutes of evaluation, not after."""
    from edge_mtl.eval import suites as eval_cli

    def must_not_run(*_: object) -> dict:
        raise AssertionError("evaluated before refusing")

    monkeypatch.setattr(eval_cli, "eval_verification", must_not_run)
    opts = eval_cli.EvalOptions(what="verification", stamp=True, limit=600, pairs="pairs.txt")
    with pytest.raises(InputError, match="whole of LFW View 2"):
        eval_cli.run(opts, AppConfig())
