"""Where data lives. Code never hard-codes ../shared/data: it asks here (setting, then EDGE_MTL_DATA)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ENV_DATA = "EDGE_MTL_DATA"


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The shared data folder: an explicit setting, else $EDGE_MTL_DATA, else ../shared/data next to the
    checkout (the layout CI uses). None when none of them exists, so tests can skip."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    env = os.environ.get(ENV_DATA)
    if env:
        candidates.append(Path(env))
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


def default_model(name: str) -> Path:
    """A shipped model in export/ (source checkout) or installed under share/edge-mtl/export."""
    local = project_root() / "export" / name
    return local


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (model files, engine cache keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
