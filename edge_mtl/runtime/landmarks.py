"""Landmark refinement at runtime: aligned 64x64 crops of detected faces -> corrected landmarks."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from edge_mtl.errors import ModelError
from edge_mtl.runtime.engine import Engine, normalize
from edge_mtl.vision.align import align_matrix

F32 = npt.NDArray[np.float32]


class LandmarkRefiner:
    """Runs `iterations` refinement passes over the faces of one image, batched."""

    def __init__(self, engine: Engine, iterations: int = 2) -> None:
        meta = engine.metadata
        if meta.kind != "landmarks":
            raise ModelError(f"expected a landmarks model, got a {meta.kind!r} model")
        self.engine = engine
        self.meta = meta
        self.size = meta.input_size
        self.iterations = iterations
        self.template = np.asarray(meta.template, np.float32)

    def refine(self, image: npt.NDArray[np.uint8], landmarks: F32) -> F32:
        """BGR image and N x K x 2 landmarks (image pixels) -> refined N x K x 2."""
        lms = np.asarray(landmarks, np.float32).copy()
        n = lms.shape[0]
        if n == 0:
            return lms
        for _ in range(self.iterations):
            mats = [align_matrix(lm, self.size) for lm in lms]
            crops = np.stack([
                cv2.warpAffine(image, m, (self.size, self.size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)
                for m in mats
            ])
            out = self.engine.run(normalize(crops, self.meta, bgr_input=True))["offsets"]
            pts = self.template[None] + out.reshape(n, -1, 2) * self.size
            for i, m in enumerate(mats):
                inv = cv2.invertAffineTransform(m)
                lms[i] = pts[i] @ inv[:, :2].T + inv[:, 2]
        return lms.astype(np.float32)
