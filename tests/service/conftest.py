"""Fixtures for the service tests: synthetic clips made once per session, and a seeded queue (the tiny models:
tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import NotifySocket, corrupt_middle, populate, write_video

pytest.importorskip("onnx")
pytest.importorskip("torch")


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    noise = write_video(d / "noise.mp4", 40, "noise")
    return {
        "noise": noise,
        "short": write_video(d / "short.mp4", 8, "noise", seed=1),
        "gray": write_video(d / "gray.mp4", 10, "gray"),
        "damaged": corrupt_middle(noise, d / "damaged.mp4"),
    }


@pytest.fixture
def seeded_queue(tmp_path: Path) -> Path:
    """A queue that already holds 20 events and a consumer cursor (what a failing command must not touch)."""
    from edge_mtl.events.queue import EventQueue

    db = tmp_path / "events.db"
    populate(db, 20)
    with EventQueue(db) as q:
        q.set_cursor("dashboard", 7)
    return db


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    s = NotifySocket()
    yield s
    s.close()
