"""Fixtures for the build tests: small randomly initialised models exported once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
torch.set_num_threads(1)  # tiny models: threads only add contention on a shared 2-core machine

from build_helpers import DET_ARGS, REC_ARGS, make_detector, make_recognizer  # noqa: E402

from edge_mtl.build.export import export_module  # noqa: E402


@pytest.fixture(scope="session")
def rec_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict[str, Any]]:
    model = make_recognizer()
    out = tmp_path_factory.mktemp("rec") / "recognizer.onnx"
    report = export_module(model, "recognizer", REC_ARGS.to_dict(), out, version="test-1", provenance="unit tests")
    return out, model, report


@pytest.fixture(scope="session")
def det_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict[str, Any]]:
    model = make_detector()
    out = tmp_path_factory.mktemp("det") / "detector.onnx"
    report = export_module(model, "detector", DET_ARGS.to_dict(), out, version="test-1")
    return out, model, report


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
