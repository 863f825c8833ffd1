"""End-to-end fixtures: the installed `edge-mtl` command run as a user would, on real videos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def edge_mtl(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess (the same entry point as the console script)."""
    proc = subprocess.run(
        [sys.executable, "-m", "edge_mtl.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"edge-mtl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def shipped_models() -> tuple[Path, Path]:
    det, rec = REPO / "export" / "detector.onnx", REPO / "export" / "recognizer.onnx"
    assert det.is_file() and rec.is_file(), "the shipped models in export/ are missing"
    return det, rec
