"""PyTorch backend: runs an in-memory export wrapper (or a checkpoint) behind the same `Engine` protocol.

Used for validation during training and for parity checks; torch is imported only when this is constructed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from edge_mtl.runtime.engine import ModelMetadata


class TorchEngine:
    def __init__(self, module: Any, metadata: ModelMetadata, device: str = "cpu", half: bool = False) -> None:
        import torch

        self._torch = torch
        self.module = module.eval().to(device)
        self.device = device
        self.half = half
        if half:
            self.module = self.module.half()
        self.metadata = metadata
        self.provider = f"torch-{device}{'-fp16' if half else ''}"

    def run(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        torch = self._torch
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            if self.half:
                x = x.half()
            outs = self.module(x)
        return {
            n: o.float().cpu().numpy() for n, o in zip(self.metadata.output_names, outs, strict=True)
        }
