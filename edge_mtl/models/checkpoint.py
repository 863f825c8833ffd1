"""Checkpoints that describe themselves: weights + optimizer + progress + model args + resolved config.

Written atomically (temp file, then rename), so a run killed mid-save resumes from the previous checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from edge_mtl.errors import ModelError


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such checkpoint") from None
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise ModelError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "model" not in state or "model_args" not in state:
        raise ModelError(f"{path}: not an edge-mtl checkpoint (no model weights or model args)")
    return state
