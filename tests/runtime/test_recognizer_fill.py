"""A recognizer file says what grey level its aligned crops hold beyond the image (`RecognizerArgs.fill`), and the
runtime aligns with it: `analyze` on a face that fills its image (a UTKFace chip) reads it differently with a
model trained on black than with the same weights declaring mid grey; on a face well inside its photo, the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.commands.cli import main
from edge_mtl.errors import ModelError
from edge_mtl.runtime.engine import ModelMetadata
from edge_mtl.runtime.recognizer import model_fill
from edge_mtl.runtime.registry import open_recognizer
from tests.tiny_models import export_tiny_recognizer


@pytest.fixture(scope="module")
def black_and_grey(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("fill")
    return (export_tiny_recognizer(d / "black.onnx", seed=3),
            export_tiny_recognizer(d / "grey.onnx", seed=3, fill=128))


def test_the_model_file_declares_its_fill(black_and_grey: tuple[Path, Path], repo_root: Path) -> None:
    black, grey = black_and_grey
    assert open_recognizer(black).fill == 0 and open_recognizer(grey).fill == 128
    shipped = open_recognizer(repo_root / "export" / "recognizer.onnx")
    assert "fill" not in shipped.meta.args and shipped.fill == 0  # files from before the field: black


@pytest.mark.parametrize("bad", [-1, 256, 12.5, "grey", True])
def test_a_malformed_fill_is_a_model_error(bad: object) -> None:
    meta = ModelMetadata("recognizer", "r-x", "input", ("embedding",), "RGB", (127.5,) * 3, (127.5,) * 3, 112,
                         args={"fill": bad})
    with pytest.raises(ModelError, match="malformed fill"):
        model_fill(meta)


def _embedding(image: Path, recognizer: Path, capsys: pytest.CaptureFixture[str]) -> np.ndarray:  # type: ignore[type-arg]
    assert main(["analyze", str(image), "--json", "--recognizer", str(recognizer), "--threads", "1"]) == 0
    faces = json.loads(capsys.readouterr().out)["faces"]
    assert len(faces) == 1
    return np.asarray(faces[0]["embedding"], np.float32)


def test_analyze_aligns_with_the_models_fill(
    black_and_grey: tuple[Path, Path], data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    black, grey = black_and_grey
    chip = sorted((data_dir / "utkface").glob("3*_0_0_*.jpg.chip.jpg"))[0]  # the face fills the 200x200 chip
    photo = sorted((data_dir / "lfw" / "images_deepfunneled" / "Colin_Powell").glob("*.jpg"))[0]
    assert np.abs(_embedding(chip, black, capsys) - _embedding(chip, grey, capsys)).max() > 1e-3
    np.testing.assert_allclose(_embedding(photo, black, capsys), _embedding(photo, grey, capsys), atol=1e-6)
