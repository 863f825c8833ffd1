"""On a box without a GPU execution provider, asking for CUDA or TensorRT fails at once with one clear line and
exit 2 (a configuration this box cannot run): never a silent fallback to the CPU, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from edge_mtl.errors import InputError, ProviderUnavailableError
from edge_mtl.paths import default_model
from edge_mtl.runtime.onnxruntime import OnnxRuntimeEngine
from tests.proc_helpers import REPO, child_env

GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}

pytestmark = pytest.mark.skipif(bool(GPU_PROVIDERS & set(ort.get_available_providers())),
                                reason="a GPU execution provider is installed: not a CPU box")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_mtl", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=child_env())


@pytest.mark.parametrize(("device", "provider"), [("cuda", "CUDAExecutionProvider"),
                                                  ("tensorrt", "TensorrtExecutionProvider")])
def test_engine_refuses_a_missing_gpu_provider(device: str, provider: str) -> None:
    model = default_model("landmarks.onnx")
    if not model.exists():
        pytest.skip("shipped landmarks.onnx missing")
    with pytest.raises(ProviderUnavailableError, match=f"{provider} is not available here") as e:
        OnnxRuntimeEngine(model, device=device)
    assert isinstance(e.value, InputError)


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_run_with_a_gpu_device_exits_2_in_one_line(device: str, tmp_path: Path) -> None:
    video = REPO.parent / "shared" / "data" / "videos" / "selfie_portrait.mp4"
    if not video.exists():
        pytest.skip("../shared/data is not available")
    db = tmp_path / "events.db"
    r = _cli("run", "--device", device, "--source", str(video), "--max-frames", "2", "--events", str(db))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("edge-mtl: error: onnxruntime provider"), r.stderr
    assert "is not available here" in lines[0] and "device='cpu'" in lines[0]
    assert not db.exists() or db.stat().st_size == 0 or "face." not in db.read_bytes().decode("latin-1")


def test_analyze_with_cuda_exits_2(tmp_path: Path) -> None:
    img = tmp_path / "blank.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    r = _cli("analyze", "--device", "cuda", str(img))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "CUDAExecutionProvider" in r.stderr, r.stderr
    assert r.stdout == ""
