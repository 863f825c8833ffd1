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
