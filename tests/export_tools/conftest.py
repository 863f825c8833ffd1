"""Fixtures for the build tests: small randomly initialised models exported once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from build_helpers import DET_ARGS, REC_ARGS, make_detector, make_recognizer, one_torch_thread  # noqa: E402

from edge_mtl.export_tools.export import export_module  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    """Tiny models: extra torch threads only add contention on a shared 2-core machine (8x slower exports).
    Restored after each test, so other test areas keep torch's default."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def rec_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict[str, Any]]:
    model = make_recognizer()
    out = tmp_path_factory.mktemp("rec") / "recognizer.onnx"
    with one_torch_thread():
        report = export_module(model, "recognizer", REC_ARGS.to_dict(), out, version="test-1", provenance="unit tests")
    return out, model, report


@pytest.fixture(scope="session")
def det_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict[str, Any]]:
    model = make_detector()
    out = tmp_path_factory.mktemp("det") / "detector.onnx"
    with one_torch_thread():
        report = export_module(model, "detector", DET_ARGS.to_dict(), out, version="test-1")
    return out, model, report


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
