"""End-to-end fixtures: the installed `edge-mtl` command run as a user would, on real videos.

Models: the shipped ones in export/ (`shipped_models`). Two environment variables let the same tests run against
other models while developing (the shipped ones are what CI and releases test):

* ``EDGE_MTL_TEST_MODELS=DIR``: take detector.onnx and recognizer.onnx from DIR instead of export/;
* ``EDGE_MTL_TEST_CONFIG=FILE``: a TOML file whose settings are laid under every config these tests write (e.g.
  lower tracker thresholds for an early detector checkpoint whose scores never reach the defaults).

Tests that start `edge-mtl run` take `model_args` (``--detector ... --recognizer ... --config ...``) rather than
relying on the default model paths, so both variables reach them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.proc_helpers import REPO, child_env


def edge_mtl(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess (the same entry point as the console script)."""
    proc = subprocess.run(
        [sys.executable, "-m", "edge_mtl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=child_env(),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"edge-mtl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v))  # a JSON string is a valid TOML basic string
    raise TypeError(f"cannot write {v!r} to TOML")


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write an edge-mtl TOML config: `sections` ({"tracker": {"lost_frames": 5}, ...}) laid over the settings of
    $EDGE_MTL_TEST_CONFIG, if set (the test's own settings win)."""
    merged: dict[str, dict[str, Any]] = {}
    base = os.environ.get("EDGE_MTL_TEST_CONFIG")
    if base:
        for name, table in tomllib.loads(Path(base).read_text()).items():
            assert isinstance(table, dict), f"{base}: only [section] tables are supported, got {name} = {table!r}"
            merged[name] = dict(table)
    for name, table in (sections or {}).items():
        merged.setdefault(name, {}).update(table)
    lines = []
    for name, table in merged.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="session")
def shipped_models() -> tuple[Path, Path]:
    folder = Path(os.environ.get("EDGE_MTL_TEST_MODELS") or REPO / "export")
    det, rec = folder / "detector.onnx", folder / "recognizer.onnx"
    assert det.is_file() and rec.is_file(), f"the shipped models in {folder}/ are missing"
    return det, rec


@pytest.fixture
def model_args(shipped_models: tuple[Path, Path], tmp_path: Path) -> list[str]:
    """`edge-mtl run` options naming the models and a config (only $EDGE_MTL_TEST_CONFIG's settings, if any)."""
    det, rec = shipped_models
    cfg = write_config(tmp_path / "edge-mtl.toml")
    return ["--detector", str(det), "--recognizer", str(rec), "--config", str(cfg)]


@pytest.fixture
def app_config(shipped_models: tuple[Path, Path], tmp_path: Path) -> Any:
    """An AppConfig for in-process runs: the models under test and $EDGE_MTL_TEST_CONFIG's settings, if any."""
    from edge_mtl.config import load_config

    cfg = load_config(write_config(tmp_path / "in-process.toml"))
    cfg.detector.model, cfg.recognizer.model = shipped_models
    return cfg
