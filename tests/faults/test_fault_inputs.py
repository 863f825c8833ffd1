"""Bad input met as an operator would: huge images, out-of-range flags, a model of the wrong kind, misspelt keys,
and configs that `run` refuses, which `check-config` must refuse with the same line (issue 23, cases 3 to 5)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fault_helpers import huge_png

from edge_mtl.commands.cli import main
from tests.service.service_helpers import edge_mtl, one_line_error


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The command in this process (the same entry point as the console script): (exit code, stderr)."""
    rc = main([*args, "--threads", "1"] if args[0] in ("analyze", "detect", "run") else list(args))
    return rc, capsys.readouterr().err


@pytest.fixture
def quiet_args(models: dict[str, Path]) -> list[str]:
    """Models that find no face in random pixels: these tests are about reading images, not about faces."""
    return ["--detector", str(models["quiet_detector"]), "--recognizer", str(models["recognizer"])]


def test_analyze_reports_an_oversized_image_and_goes_on_with_the_folder(
    tmp_path: Path, quiet_args: list[str]
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    huge_png(folder / "a_huge.png", 40000, 40000)  # over OpenCV's own 2^30-pixel limit
    huge_png(folder / "b_big.png", 9000, 9000)  # under it, over the 50 MP default cap
    cv2.imwrite(str(folder / "c_ok.jpg"), np.random.default_rng(0).integers(0, 256, (96, 128, 3), np.uint8))
    t0 = time.monotonic()
    r = edge_mtl("analyze", str(folder), *quiet_args)
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr[-2000:]
    assert "c_ok.jpg: " in r.stdout  # the rest of the folder was analysed
    assert "a_huge.png" not in r.stdout and "b_big.png" not in r.stdout
    errors = [ln for ln in r.stderr.splitlines() if " ERROR " in ln]
    assert len(errors) == 2 and "40000x40000 pixels" in errors[0] and "9000x9000 pixels" in errors[1], r.stderr
    assert "images.max_pixels" in errors[0] and "Traceback" not in r.stderr and "cv::" not in r.stderr
    final = [ln for ln in r.stderr.splitlines() if ln.startswith("edge-mtl:")]
    assert final == [f"edge-mtl: error: 2 input(s) could not be read; first: {errors[0].split('analyze: ', 1)[1]}"]
    assert took < 30  # refused from the header: nothing decoded (decoding 40000x40000 takes GBs and seconds)


def test_the_pixel_cap_is_configurable(
    tmp_path: Path, quiet_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    img = tmp_path / "photo.jpg"
    cv2.imwrite(str(img), np.random.default_rng(1).integers(0, 256, (300, 400, 3), np.uint8))
    cfg = tmp_path / "edge-mtl.toml"
    cfg.write_text("[images]\nmax_pixels = 100000\n")
    rc, err = cli(capsys, "analyze", "--config", str(cfg), str(img), *quiet_args)
    assert rc == 2
    assert f"{img}: 400x300 pixels (0 MP) is over images.max_pixels (0.1 MP)" in err, err
    cfg.write_text("[images]\nmax_pixels = 120000\n")
    assert cli(capsys, "analyze", "--config", str(cfg), str(img), *quiet_args)[0] == 0


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--input-size", "7", "edge-mtl: error: --input-size 7: Input should be greater than or equal to 128"),
    ("--threshold", "5", "edge-mtl: error: --threshold 5.0: Input should be less than 1"),
])
def test_out_of_range_flags_are_one_line(
    tmp_path: Path, model_args: list[str], flag: str, value: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = cli(capsys, "detect", str(tmp_path), flag, value, *model_args[:2])
    assert rc == 2
    assert one_line_error(err) == expected


def test_a_model_of_the_wrong_kind_given_by_flag_names_the_file(
    tmp_path: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    img = tmp_path / "x.jpg"
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    rc, err = cli(capsys, "analyze", str(img), "--detector", str(models["detector"]), "--recognizer",
                  str(models["detector"]))
    assert rc == 2
    assert one_line_error(err) == (f"edge-mtl: error: {models['detector']}: expected a recognizer model, "
                                        "got a 'detector' model")


def test_a_misspelt_key_is_named_with_a_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "edge-mtl.toml"
    cfg.write_text('[[cameras]]\nname = "door"\nsourc = "rtsp://cam.local/stream"\n')
    rc, err = cli(capsys, "check-config", str(cfg))
    assert rc == 2
    assert one_line_error(err) == (f"edge-mtl: error: {cfg}:3: unknown key 'sourc' in cameras.0; did you mean "
                                        "'source'? (and 1 more)")


def _refused_configs(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """{case: (config text, what the one line must say)}: each one passes the schema but `run` refuses it."""
    secret = tmp_path / "mqtt.pass"
    secret.write_text("s3cret\n")
    secret.chmod(0o000)
    cam = '[[cameras]]\nname = "door"\nsource = "rtsp://127.0.0.1:9/stream"\n'
    mqtt = (f'[[forwarders]]\ntype = "mqtt"\nhost = "127.0.0.1"\nusername = "edge"\n'
            f'password_file = "{secret}"\n')
    return {
        "metrics_host": (cam + '[service]\nmetrics_port = 9105\nmetrics_host = "0.0.0.0"\n', "loopback"),
        "no_cameras": ("[service]\nmetrics_port = 9105\n", "no source"),
        "password_file": (cam + mqtt, str(secret)),
        "privileged_port": (cam + "[service]\nmetrics_port = 80\n", "metrics_port 80"),
        "missing_file": ('[[cameras]]\nname = "door"\nsource = "/nonexistent/door.mp4"\n', "/nonexistent/door.mp4"),
    }


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file and binds any port; run as a user to test")
def test_check_config_refuses_what_run_refuses_as_a_user(
    tmp_path: Path, model_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    _check_parity(tmp_path, model_args, _refused_configs(tmp_path), capsys)


def test_check_config_refuses_what_run_refuses(
    tmp_path: Path, model_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Also as root (CI): the password file is made unreadable by being a folder, which no one can read."""
    cases = _refused_configs(tmp_path)
    folder = tmp_path / "pass.d"
    folder.mkdir()
    text, _ = cases["password_file"]
    cases["password_file"] = (text.replace(str(tmp_path / "mqtt.pass"), str(folder)), str(folder))
    _check_parity(tmp_path, model_args, cases, capsys)


def _check_parity(tmp_path: Path, model_args: list[str], cases: dict[str, tuple[str, str]],
                  capsys: pytest.CaptureFixture[str]) -> None:
    for case, (text, needle) in cases.items():
        cfg = tmp_path / f"{case}.toml"
        cfg.write_text(text)
        rc, err = cli(capsys, "check-config", str(cfg))
        assert rc == 2, (case, err)
        line = one_line_error(err)
        assert needle in line, (case, line)
        rc, err = cli(capsys, "run", "--config", str(cfg), "--events", str(tmp_path / f"{case}.db"), *model_args)
        assert rc == 2, (case, err[-2000:])
        assert one_line_error(err) == line, case  # the same check, the same words
        assert not (tmp_path / f"{case}.db").exists(), case  # refused before anything was opened
