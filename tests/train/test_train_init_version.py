"""`init_version`: a fine-tune config that names the release it starts from refuses any other file at that path
(export/ moves on with every release), before any data is loaded, with a one-line error and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from edge_mtl.commands.cli import main
from edge_mtl.config import ConfigError, parse_toml
from edge_mtl.errors import InputError
from edge_mtl.train.config import TrainConfig
from edge_mtl.train.loop.run import check_init_version
from tests.tiny_models import export_tiny_recognizer


def _config(tmp_path: Path, init: Path, version: str) -> Path:
    p = tmp_path / "ft.toml"
    p.write_text(f'out = "{tmp_path / "run"}"\ninit = "{init}"\ninit_version = "{version}"\n'
                 '[task]\nkind = "recognizer"\n', encoding="utf-8")
    return p


def test_the_named_release_passes_another_is_refused(tmp_path: Path) -> None:
    model = export_tiny_recognizer(tmp_path / "recognizer.onnx")  # its metadata version is "tiny-test"
    ok = parse_toml(_config(tmp_path, model, "tiny-test").read_text(), "ft.toml", TrainConfig)
    check_init_version(ok)  # no error: the file is the release the config names
    other = parse_toml(_config(tmp_path, model, "recognizer-1.4").read_text(), "ft.toml", TrainConfig)
    with pytest.raises(InputError, match=r"is tiny-test, not recognizer-1.4 \(init_version\)"):
        check_init_version(other)
    missing = other.model_copy(update={"init": tmp_path / "gone.onnx"})
    with pytest.raises(InputError, match="no such model"):
        check_init_version(missing)
    unnamed = other.model_copy(update={"init_version": None})
    check_init_version(unnamed)  # nothing named, nothing checked


def test_train_cli_refuses_before_loading_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = export_tiny_recognizer(tmp_path / "recognizer.onnx")
    assert main(["train", "--config", str(_config(tmp_path, model, "recognizer-1.4"))]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "not recognizer-1.4 (init_version)" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "run").exists()  # nothing was started


def test_init_version_needs_a_deploy_init() -> None:
    with pytest.raises(ConfigError, match="init_version"):
        parse_toml('init = "runs/r/last.pt"\ninit_version = "recognizer-1.4"\n[task]\nkind = "recognizer"\n',
                   "t.toml", TrainConfig)
    with pytest.raises(ConfigError, match="init_version"):
        parse_toml('init_version = "recognizer-1.4"\n[task]\nkind = "recognizer"\n', "t.toml", TrainConfig)
