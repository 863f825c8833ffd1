"""The `torch` backend: a plugin found through the `edge_mtl.backends` entry point (the runtime path never imports
it), running a training checkpoint with the same outputs as its ONNX export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from build_helpers import REC_ARGS, faces_like

from edge_mtl.config import BackendConfig
from edge_mtl.errors import InputError
from edge_mtl.models import torch_backend
from edge_mtl.models.checkpoint import save_checkpoint
from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine
from edge_mtl.runtime.registry import backend_plugin, load_engine


def test_the_registry_finds_the_torch_backend_by_entry_point() -> None:
    assert backend_plugin("torch") is torch_backend.load_engine
    with pytest.raises(InputError, match="no such plugin"):
        backend_plugin("no-such-backend")


def test_a_checkpoint_on_the_torch_backend_matches_its_onnx_export(
    rec_export: tuple[Path, Any, dict[str, Any]], tmp_path: Path
) -> None:
    onnx_path, model, _ = rec_export
    ckpt = tmp_path / "recognizer.pt"
    save_checkpoint(ckpt, {"model_args": {"recognizer": REC_ARGS.to_dict()}, "model": model.state_dict()})
    eng = load_engine(ckpt, BackendConfig(type="torch"))
    assert eng.provider.startswith("torch") and eng.metadata.kind == "recognizer"
    x = faces_like(4)
    a, b = eng.run(x), OnnxRuntimeEngine(onnx_path).run(x)
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-3, err_msg=k)
    with pytest.raises(InputError, match="training checkpoint"):
        load_engine(onnx_path, BackendConfig(type="torch"))
