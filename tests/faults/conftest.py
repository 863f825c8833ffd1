"""Fixtures for the fault-injection suite: short clips made once per session (the tiny models: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("torch")


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.service.service_helpers import write_video

    d = tmp_path_factory.mktemp("clips")
    return {
        "noise": write_video(d / "noise.mp4", 40, "noise"),  # 4 s at 10 fps: many random detections (events)
        "loop": write_video(d / "loop.mp4", 10, "noise", seed=2),  # 1 s: a looping camera stand-in restarts often
    }
