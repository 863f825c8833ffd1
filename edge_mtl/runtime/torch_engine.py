"""PyTorch backend: runs an in-memory export wrapper (or a checkpoint) behind the same `Engine` protocol.

Used for validation during training and for parity checks; torch is imported only when this is constructed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from edge_mtl.runtime.engine import ModelMetadata


class TorchEngine:
    def __init__(
        self, module: Any, metadata: ModelMetadata, device: str = "cpu", half: bool = False, bf16: bool = False
    ) -> None:
        import torch

        self._torch = torch
        self.module = module.eval().to(device)
        self.device = device
        self.half = half
        # weights and activations in this dtype; outputs come back as float32 either way
        self.dtype = torch.float16 if half else torch.bfloat16 if bf16 else None
        if self.dtype is not None:
            self.module = self.module.to(self.dtype)
        self.metadata = metadata
        self.provider = f"torch-{device}{'-fp16' if half else '-bf16' if bf16 else ''}"

    def run(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        torch = self._torch
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            if self.dtype is not None:
                x = x.to(self.dtype)
            outs = self.module(x)
        return {
            n: o.float().cpu().numpy() for n, o in zip(self.metadata.output_names, outs, strict=True)
        }
