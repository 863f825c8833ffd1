"""Drawing what the system saw: boxes, track ids, names, age and gender on a frame (for `run --annotate`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt


@dataclass
class Label:
    box: Sequence[float]  # x1, y1, x2, y2
    text: str
    known: bool | None  # True: a gallery match; False: explicit unknown; None: not decided yet
    landmarks: npt.NDArray[np.float32] | None = None


COLORS = {True: (60, 200, 60), False: (40, 40, 230), None: (230, 180, 40)}


def draw_labels(frame: npt.NDArray[np.uint8], labels: Sequence[Label], header: str = "") -> npt.NDArray[np.uint8]:
    out = frame.copy()
    h = out.shape[0]
    scale = max(0.4, min(1.2, h / 900))
    thick = max(1, round(h / 500))
    for lb in labels:
        x1, y1, x2, y2 = (round(v) for v in lb.box)
        color = COLORS[lb.known]
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick)
        if lb.landmarks is not None:
            for x, y in lb.landmarks:
                cv2.circle(out, (round(float(x)), round(float(y))), thick + 1, (255, 255, 255), -1)
        (tw, th), base = cv2.getTextSize(lb.text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = max(th + base, y1 - 4)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 4, ty + 2), color, -1)
        cv2.putText(out, lb.text, (x1 + 2, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick,
                    cv2.LINE_AA)
    if header:
        cv2.putText(out, header, (8, round(28 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick + 1,
                    cv2.LINE_AA)
    return out
