"""Face detection on frames of any size and orientation, through any `Engine`."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from edge_mtl import defaults as D
from edge_mtl.errors import ModelError
from edge_mtl.runtime.engine import Engine, normalize
from edge_mtl.runtime.landmarks import LandmarkRefiner
from edge_mtl.runtime.postprocess import decode
from edge_mtl.types import Detections
from edge_mtl.vision.anycrop import PadRetry, detect_with_retry

PAD = 32  # the input must be a multiple of the largest stride


def _as_bgr(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Grayscale (2-D or 1-channel) and BGRA frames as 3-channel BGR."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def scale_for_detection(image: npt.NDArray[np.uint8], input_size: int) -> npt.NDArray[np.uint8]:
    """`image` resized so that its long side is `input_size` (what `FaceDetector.prepare` does before padding). A
    capture thread calls this once per frame it delivers, so the main loop only pads (`Frame.detect_image`)."""
    h, w = image.shape[:2]
    scale = input_size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) == (w, h):
        return image
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


class FaceDetector:
    """Letterboxes a frame (long side -> `input_size`, padded to a multiple of 32), runs the engine, decodes.

    Works on portrait and landscape frames, grayscale (2-D or 1-channel) input, and any size from tiny to 4K;
    boxes and landmarks come back in the original frame's pixels.
    """

    def __init__(
        self,
        engine: Engine,
        input_size: int | None = None,
        score_threshold: float = D.DETECTOR_SCORE_THRESHOLD,
        nms_threshold: float = D.DETECTOR_NMS_THRESHOLD,
        min_face: int = 0,
        vote_iou: float | None = 0.6,
        refiner: LandmarkRefiner | None = None,
        pad_retry: PadRetry | None = None,
    ) -> None:
        meta = engine.metadata
        if meta.kind != "detector":
            raise ModelError(f"expected a detector model, got a {meta.kind!r} model")
        self.engine = engine
        self.meta = meta
        self.input_size = int(input_size or meta.input_size)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.min_face = min_face
        self.vote_iou = vote_iou
        self.refiner = refiner
        # a face that fills the image is looked for again on a bordered copy (edge_mtl.vision.anycrop)
        self.pad_retry = pad_retry
        names = list(meta.output_names)
        self._levels = [
            (names.index(f"score_{s}"), names.index(f"box_{s}"), names.index(f"kps_{s}")) for s in meta.strides
        ]

    def prepare(self, image: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint8], float]:
        """BGR uint8 frame -> padded network input (BGR) and the scale applied."""
        image = _as_bgr(image)
        h, w = image.shape[:2]
        scale = self.input_size / max(h, w)
        resized = scale_for_detection(image, self.input_size)
        nh, nw = resized.shape[:2]
        ph, pw = -(-nh // PAD) * PAD, -(-nw // PAD) * PAD
        canvas = np.zeros((ph, pw, 3), np.uint8)
        canvas[:nh, :nw] = resized
        return canvas, scale

    def detect(self, image: npt.NDArray[np.uint8]) -> Detections:
        """Detect on one still image (with `pad_retry`, an image where nothing was found is retried too)."""
        return self.detect_batch([image], still=True)[0]

    def detect_batch(
        self,
        images: list[npt.NDArray[np.uint8]],
        scaled: list[npt.NDArray[np.uint8] | None] | None = None,
        still: bool = False,
        refine: bool = True,
    ) -> list[Detections]:
        """Detect on several frames; frames of equal prepared size run as one batch.

        `scaled[i]`, when given, is frame i already reduced (`scale_for_detection`, or a camera's low-resolution
        stream of the same view): the network sees it, boxes and landmarks come back in frame i's pixels, and the
        landmark refiner crops from the full-resolution frame. With `pad_retry`, a frame whose largest face spans
        most of it is detected again, whole, with a border around it (`still`: analyze and enroll's images).
        `refine=False` returns the detector's own landmarks: the caller refines only the faces it aligns
        (`refine_landmarks`), which on a video frame are few of those found."""
        found = self._detect_batch(images, scaled, refine)
        retry = self.pad_retry
        if retry is None or not retry.enabled:
            return found
        return [
            detect_with_retry(lambda im: self._detect_batch([im], None, refine)[0], image, d, retry, still)
            for image, d in zip(images, found, strict=True)
        ]

    def refine_landmarks(self, image: npt.NDArray[np.uint8], landmarks: npt.NDArray[np.float32]
                         ) -> npt.NDArray[np.float32]:
        """The landmark refiner's pass over N x K x 2 detector landmarks of `image` (unchanged without a refiner)."""
        if self.refiner is None or not len(landmarks) or landmarks.shape[1] != self.refiner.template.shape[0]:
            return landmarks
        return self.refiner.refine(_as_bgr(image), landmarks)

    def _detect_batch(
        self,
        images: list[npt.NDArray[np.uint8]],
        scaled: list[npt.NDArray[np.uint8] | None] | None = None,
        refine: bool = True,
    ) -> list[Detections]:
        prepared: list[tuple[npt.NDArray[np.uint8], float, float]] = []
        for i, im in enumerate(images):
            small = scaled[i] if scaled is not None else None
            if small is None:
                canvas, s = self.prepare(im)
                prepared.append((canvas, s, s))
                continue
            canvas, s = self.prepare(small)
            h, w = im.shape[:2]
            exact = self.input_size / max(h, w)
            if small.shape[:2] == (max(1, round(h * exact)), max(1, round(w * exact))):
                # `scale_for_detection` of this very frame: map back exactly as `prepare` would have
                prepared.append((canvas, exact, exact))
                continue
            # network pixels per frame pixel, per axis (a camera's substream may have another aspect, 704x576 for
            # a 16:9 main stream)
            prepared.append((canvas, s * small.shape[1] / w, s * small.shape[0] / h))
        results: list[Detections | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (canvas, _, _) in enumerate(prepared):
            groups.setdefault(canvas.shape[:2], []).append(i)
        for (ph, pw), idx in groups.items():
            batch = normalize(np.stack([prepared[i][0] for i in idx]), self.meta, bgr_input=True)
            out = self.engine.run(batch)
            arrs = [out[n] for n in self.meta.output_names]
            for j, i in enumerate(idx):
                _, sx, sy = prepared[i]
                boxes, scores, lms = decode(
                    [arrs[a][j] for a, _, _ in self._levels],
                    [arrs[b][j] for _, b, _ in self._levels],
                    [arrs[k][j] for _, _, k in self._levels],
                    self.meta.strides,
                    (ph, pw),
                    self.score_threshold,
                    self.nms_threshold,
                    vote_iou=self.vote_iou,
                )
                boxes /= np.asarray([sx, sy, sx, sy], boxes.dtype)
                lms /= np.asarray([sx, sy], lms.dtype)
                h, w = images[i].shape[:2]
                boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
                boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
                if self.min_face:
                    keep = (boxes[:, 2] - boxes[:, 0]) >= self.min_face
                    boxes, scores, lms = boxes[keep], scores[keep], lms[keep]
                if refine:
                    lms = self.refine_landmarks(images[i], lms)
                results[i] = Detections(boxes.astype(np.float32), scores.astype(np.float32), lms.astype(np.float32))
        return [r if r is not None else Detections.empty(self.meta.points) for r in results]
