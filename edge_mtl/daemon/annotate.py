"""`edge-mtl run --annotate`: an annotated video per camera (boxes, track ids, names, age, gender)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_mtl.errors import InputError


class Annotator:
    """Writes one annotated video per camera (`--annotate out.mp4`; more cameras: out.<camera>.mp4)."""

    def __init__(self, path: Path, cameras: Sequence[str]) -> None:
        self.path = path
        self.multi = len(cameras) > 1
        self.writers: dict[str, Any] = {}

    def write(self, camera: str, image: Any, labels: Any, fps: float, header: str) -> None:
        import cv2

        from edge_mtl.vision.draw import draw_labels

        w = self.writers.get(camera)
        if w is None:
            p = self.path.with_name(f"{self.path.stem}.{camera}{self.path.suffix}") if self.multi else self.path
            p.parent.mkdir(parents=True, exist_ok=True)
            h, wd = image.shape[:2]
            w = cv2.VideoWriter(str(p), cv2.VideoWriter.fourcc(*"mp4v"), fps or 25.0, (wd, h))
            if not w.isOpened():
                raise InputError(f"{p}: cannot write video")
            self.writers[camera] = w
        w.write(draw_labels(image, labels, header))

    def close(self) -> None:
        for w in self.writers.values():
            w.release()
