"""SIGTERM while the daemon loads its models (a TensorRT engine build can take minutes): the handler is already in
place, so the daemon exits 0 without opening its sources, queue or events log; nothing half-written is left."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from edge_mtl.config import AppConfig
from edge_mtl.daemon.service import RunOptions, run_service
from edge_mtl.runtime import registry as models_registry
from tests.service.service_helpers import write_video


def test_sigterm_during_model_load_stops_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    video = write_video(tmp_path / "in.mp4", 20)
    real_load = models_registry.load_recognizer
    loaded: list[str] = []

    def load_then_signalled(cfg: AppConfig) -> Any:
        rec = real_load(cfg)  # the real shipped recognizer, on ONNX Runtime
        loaded.append("recognizer")
        os.kill(os.getpid(), signal.SIGTERM)  # systemd stops the unit mid-load
        return rec

    monkeypatch.setattr(models_registry, "load_recognizer", load_then_signalled)
    before = signal.getsignal(signal.SIGTERM)
    cfg = AppConfig()
    cfg.events.db = tmp_path / "events.db"
    cfg.events.jsonl = tmp_path / "events.jsonl"
    assert run_service(RunOptions(sources=(str(video),)), cfg) == 0
    assert loaded == ["recognizer"]
    assert not (tmp_path / "events.db").exists() and not (tmp_path / "events.jsonl").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the daemon's handlers are removed again
