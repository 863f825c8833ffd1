"""`edge-mtl bench --cameras N`: argument errors (exit 2, one line) and the shape of its report from a short real
run (two cameras on the small clip, two variants). Speeds are reported, never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_mtl.commands.cli import main
from edge_mtl.eval.cameras_bench import format_cameras, parse_variant

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cameras", "0"], "argument --cameras: expected at least 1, got 0"),
        (["--cameras", "2", "--seconds", "-1"], "argument --seconds: expected at least 0 seconds, got '-1'"),
        (["--cameras", "2", "--warmup", "soon"], "argument --warmup: expected a number of seconds, got 'soon'"),
        (["--cameras", "2", "--variant", ":x=1"], "argument --variant: expected LABEL or LABEL:key=value,..., "
                                                  "got ':x=1'"),
        (["--cameras", "2", "--variant", "a:detect_fps"], "argument --variant: expected key=value in "
                                                          "'a:detect_fps', got 'detect_fps'"),
        (["--cameras", "2", "--repeat", "0"], "argument --repeat: expected at least 1, got 0"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["bench", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"edge-mtl bench: error: {says}"


@pytest.mark.parametrize(
    ("variant", "says"),
    [
        ("a:camera.detect_fpz=5", "variant setting camera.detect_fpz: unknown key"),
        ("a:detector.nope.x=1", "variant setting detector.nope.x: nope is not a section of the configuration"),
        ("a:camera.detect_fps=-5", "variant settings {'camera.detect_fps': -5}: "),
    ],
)
def test_bad_variant_settings_are_one_line_errors(variant: str, says: str, data_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--cameras", "2", "--variant", variant]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"edge-mtl: error: {says}"), err


def test_parse_variant_reads_toml_values() -> None:
    assert parse_variant("base") == ("base", {})
    assert parse_variant("d5: camera.detect_fps=5, detector.backend.spin=true, camera.detect_source=x.mp4") == (
        "d5", {"camera.detect_fps": 5, "detector.backend.spin": True, "camera.detect_source": "x.mp4"})


def test_report_shape_from_a_short_real_run(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = data_dir / "videos" / "selfie_portrait.mp4"
    assert main(["bench", "--cameras", "2", "--video", str(clip), "--seconds", "1.5", "--warmup", "0.5",
                 "--yardstick-seconds", "0.5", "--variant", "every", "--variant", "d5:camera.detect_fps=5",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cameras"] == 2 and out["video"] == "selfie_portrait.mp4" and out["frame_size"] == [320, 568]
    assert [y["when"] for y in out["yardstick"]] == ["before", "after"]
    for y in out["yardstick"]:
        assert y["streams"] == 2 and len(y["fps_per_stream"]) == 2 and y["fps_total"] > 0
    assert [(r["variant"], r["repeat"]) for r in out["runs"]] == [("every", 1), ("d5", 1)]
    for r in out["runs"]:
        assert set(r["per_camera"]) == {"cam0", "cam1"}
        for cam in r["per_camera"].values():
            assert set(cam) == {"fps", "detect_fps", "read_fps", "dropped_fps", "latency"}
            assert cam["read_fps"] > 0
        assert r["fps_total"] == pytest.approx(sum(c["fps"] for c in r["per_camera"].values()), abs=0.05)
        assert set(r["latency"]) == {"p50_ms", "p95_ms", "p99_ms", "max_ms", "n"}
        assert set(r["fairness"]) == {"min_fps", "max_fps", "jain"}
        assert r["ratio_to_yardstick"] is not None and r["exit_code"] == 0
        assert set(r["targets"]) == {"total_ge_60", "each_ge_15"}
    d5 = out["runs"][1]
    assert d5["settings"] == {"camera.detect_fps": 5}
    assert d5["detect_fps_total"] <= d5["fps_total"]
    text = format_cameras(out)
    assert "decode-only yardstick (before)" in text and "d5 #1" in text and "x yardstick" in text
