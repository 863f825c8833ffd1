"""The CLI contract (docs/architecture.md, rule 5): exit codes 0 / 2 with a one-line reason, JSON lines for detect
and analyze."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mtl import defaults as D
from edge_mtl.commands.cli import main

pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from tests.tiny_models import export_tiny_detector, export_tiny_recognizer  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("models")
    return export_tiny_detector(d / "detector.onnx", score_bias=0.0), export_tiny_recognizer(d / "recognizer.onnx")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    p = tmp_path / "frame.png"
    cv2.imwrite(str(p), cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (160, 120)))
    return p


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("edge-mtl: error: "), err
    return lines[0]


# ------------------------------------------------------------------ check-config
def test_check_config_good(tmp_path: Path, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    det, rec = models
    cfg = tmp_path / "edge-mtl.toml"
    cfg.write_text(
        f'[detector]\nmodel = "{det}"\n\n[recognizer]\nmodel = "{rec}"\n\n'
        '[[cameras]]\nname = "lobby"\nsource = "rtsp://10.0.0.5/stream"\n',
        encoding="utf-8",
    )
    assert main(["check-config", str(cfg)]) == 0
    ok, threshold = capsys.readouterr().err.strip().splitlines()
    assert ok == f"{cfg}: ok"
    # the tiny model carries no measured thresholds: the built-in default, and how to measure the model's own
    assert threshold.startswith(
        f"{cfg}: identity threshold {D.IDENTITY_THRESHOLD:.3f} (built-in default for false-accept rate 0.01")
    assert "--stamp" in threshold
    with cfg.open("a", encoding="utf-8") as f:
        f.write("\n[identity]\nthreshold = 0.5\n")
    assert main(["check-config", str(cfg)]) == 0
    line = capsys.readouterr().err.strip().splitlines()[1]
    assert line == f"{cfg}: identity threshold 0.500 (identity.threshold as configured)"


def test_check_config_bad_key(tmp_path: Path, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[detector]\ninput_size = 640\n\n[tracker]\nlost_frame = 3\n', encoding="utf-8")
    assert main(["check-config", str(cfg)]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"{cfg}:5:" in line and "tracker.lost_frame" in line and "unknown key" in line


def test_check_config_bad_value_and_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('log_level = "INFO"\n[[cameras]]\nname = "a"\nsource = "x"\nwatchdog_s = 0\n', encoding="utf-8")
    assert main(["check-config", str(cfg)]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"{cfg}:5: cameras.0.watchdog_s:" in line
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "no such file" in _one_line_error(capsys.readouterr().err)


def test_check_config_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[detector]\nmodel = "{tmp_path / "missing.onnx"}"\n', encoding="utf-8")
    assert main(["check-config", str(cfg)]) == 2
    assert "missing.onnx" in _one_line_error(capsys.readouterr().err)


# ------------------------------------------------------------------ detect / analyze
def test_detect_json(models: tuple[Path, Path], image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    det, _ = models
    rc = main(["detect", str(image), "--json", "--detector", str(det), "--threshold", "0.3", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    (line,) = out.splitlines()
    rec = json.loads(line)
    assert rec["image"] == str(image) and len(rec["faces"]) >= 1
    for f in rec["faces"]:
        assert set(f) == {"box", "score", "landmarks"}
        x1, y1, x2, y2 = f["box"]
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 120
        assert 0.3 <= f["score"] <= 1 and len(f["landmarks"]) == 4


def test_detect_folder_and_not_an_image(
    tmp_path: Path, models: tuple[Path, Path], image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    det, _ = models
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a JPEG\n")
    rc = main(["detect", str(tmp_path), "--json", "--detector", str(det), "--threshold", "0.3"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert [json.loads(x)["image"] for x in out.splitlines()] == [str(image)]  # the good image is still done
    assert "Traceback" not in err
    assert "1 input(s) could not be read" in err and "notes.jpg" in err


def test_detect_not_an_image_subprocess(tmp_path: Path, models: tuple[Path, Path]) -> None:
    """The real process: exit 2 and a short message on stderr, no traceback."""
    det, _ = models
    bad = tmp_path / "model.bin"
    bad.write_bytes(os.urandom(256))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run(
        [sys.executable, "-m", "edge_mtl", "detect", str(bad), "--json", "--detector", str(det)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert "Traceback" not in r.stderr and "model.bin: not a readable image" in r.stderr
    assert len(r.stderr.splitlines()) <= 2


def test_detect_missing_path(tmp_path: Path, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    det, _ = models
    assert main(["detect", str(tmp_path / "nope.jpg"), "--detector", str(det)]) == 2
    assert "nope.jpg: no such file or folder" in _one_line_error(capsys.readouterr().err)


def test_detect_missing_model(tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect", str(image), "--detector", str(tmp_path / "none.onnx")]) == 2
    assert "none.onnx" in _one_line_error(capsys.readouterr().err)


def test_detect_with_recognizer_as_detector(
    models: tuple[Path, Path], image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, rec = models
    assert main(["detect", str(image), "--detector", str(rec)]) == 2
    assert "expected a detector model" in _one_line_error(capsys.readouterr().err)


def test_analyze_json(models: tuple[Path, Path], image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    det, rec = models
    rc = main(["analyze", str(image), "--json", "--detector", str(det), "--recognizer", str(rec),
               "--threshold", "0.3", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rec_json = json.loads(out)
    assert len(rec_json["faces"]) >= 1
    for f in rec_json["faces"]:
        assert set(f) == {"box", "score", "landmarks", "embedding", "age", "gender", "quality"}
        assert len(f["embedding"]) == 16
        assert float(np.linalg.norm(f["embedding"])) == pytest.approx(1.0, abs=1e-3)
        assert set(f["age"]) == {"years", "std"} and 0.5 <= f["gender"]["confidence"] <= 1 and 0 <= f["quality"] <= 1
        # the label, like an event's gender, only at or above attributes.gender_min_confidence (default 0.6)
        assert f["gender"]["label"] == (None if f["gender"]["confidence"] < 0.6 else f["gender"]["label"])
        assert f["gender"]["label"] in ("female", "male", None)


@pytest.mark.parametrize("floor", [0.5, 1.0])
def test_analyze_applies_the_gender_floor(
    models: tuple[Path, Path], image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], floor: float
) -> None:
    """0.5 reports every face's label (the floor off); 1.0 none (no face is certain), the confidence stays."""
    det, rec = models
    conf = tmp_path / "edge.toml"
    # gender_min_age off: the tiny model's ages are noise
    conf.write_text(f"[attributes]\ngender_min_confidence = {floor}\ngender_min_age = 0\n")
    rc = main(["analyze", str(image), "--json", "--no-embedding", "--config", str(conf), "--detector", str(det),
               "--recognizer", str(rec), "--threshold", "0.3", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    faces = json.loads(out)["faces"]
    assert faces and all(0.5 <= f["gender"]["confidence"] < 1 for f in faces)
    labels = {f["gender"]["label"] for f in faces}
    assert labels <= {"female", "male"} if floor == 0.5 else labels == {None}


# ------------------------------------------------------------------ gallery / argparse
def test_gallery_list_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gallery", "list", "--gallery", str(tmp_path / "g.db")]) == 2
    assert "no such gallery" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "g.db").exists()


def test_gallery_list_and_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_mtl.identity.gallery import Gallery

    db = tmp_path / "g.db"
    with Gallery(db) as g:
        g.add("alice", np.eye(2, 8, dtype=np.float32))
    assert main(["gallery", "list", "--gallery", str(db), "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["name"], r["embeddings"]) for r in rows] == [("alice", 2)]
    assert main(["gallery", "remove", "bob", "--gallery", str(db)]) == 2
    assert "no person named 'bob'" in _one_line_error(capsys.readouterr().err)
    assert main(["gallery", "remove", "alice", "--gallery", str(db)]) == 0
    assert "removed alice (2 embedding(s))" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "verification", "--limit", "-5"],
        ["eval", "verification", "--quality-bins", "-2"],
        ["eval", "attributes", "--threads", "-1"],
        ["analyze", "x.jpg", "--input-size", "0"],
        ["run", "--max-frames", "0"],
        ["train", "--config", "x.toml", "--max-steps", "0"],
        ["build-engine", "x.onnx", "--max-batch", "0"],
        ["demo", "--frames", "ten"],
    ],
)
def test_out_of_range_numbers_are_refused_before_anything_runs(argv: list[str],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """(Were run as given: a negative --limit evaluated everything, --threads -1 failed deep in config validation.)"""
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"error: argument {argv[-2]}: expected" in err.strip().splitlines()[-1]


def test_eval_names_a_missing_pairs_file_or_video(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "verification", "--pairs", "nope.txt"]) == 2
    assert _one_line_error(capsys.readouterr().err).startswith(
        f"edge-mtl: error: --pairs: no {data_dir / 'lfw' / 'nope.txt'}")
    assert main(["eval", "detection", "--video", "/nonexistent/clip.mp4", "--limit", "2"]) == 2
    assert _one_line_error(capsys.readouterr().err) == "edge-mtl: error: --video: no such file: /nonexistent/clip.mp4"


def test_unknown_subcommand_is_argparse_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["frobnicate"])
    assert ei.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ei:
        main([])
    assert ei.value.code == 2
