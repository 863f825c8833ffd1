"""Fixtures for capture tests: clip paths and a running GStreamer RTSP server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from capture_helpers import SMALL_CLIP, RtspServer, free_port, gst_rtsp_missing

from edge_mtl.paths import data_root


@pytest.fixture(scope="session")
def videos_dir(data_dir: Path) -> Path:
    d = data_dir / "videos"
    if not (d / SMALL_CLIP).is_file():
        pytest.skip(f"{d / SMALL_CLIP} is not available")
    return d


@pytest.fixture(scope="session")
def small_clip(videos_dir: Path) -> Path:
    return videos_dir / SMALL_CLIP


@pytest.fixture
def rtsp_server() -> Iterator[RtspServer]:
    """A running RTSP server streaming the small clip when the data is present, else a synthetic pattern."""
    why = gst_rtsp_missing()
    if why:
        pytest.skip(why)
    root = data_root()
    clip = root / "videos" / SMALL_CLIP if root is not None else None
    server = RtspServer(free_port(), clip if clip is not None and clip.is_file() else None)
    server.start()
    try:
        yield server
    finally:
        server.kill()
