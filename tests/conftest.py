"""Shared fixtures. Tests that need ../shared/data skip when it is absent (CI has it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_mtl.paths import data_root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("../shared/data is not available (set EDGE_MTL_DATA)")
    return root


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{'detector', 'quiet_detector', 'recognizer'} -> tiny ONNX files (real ONNX Runtime runs them), made once per
    session for the service and fault suites."""
    pytest.importorskip("onnx")
    pytest.importorskip("torch")
    from tests.service.service_helpers import export_models

    return export_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def model_args(models: dict[str, Path]) -> list[str]:
    return ["--detector", str(models["detector"]), "--recognizer", str(models["recognizer"])]
