"""The multi-task recognizer at runtime: aligned crops in, `FaceAnalysis` out, through any `Engine`."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge_mtl.errors import ModelError
from edge_mtl.identity.scorenorm import ScoreNorm
from edge_mtl.runtime.engine import Engine, ModelMetadata, normalize
from edge_mtl.types import FaceAnalysis


def model_fill(meta: ModelMetadata) -> int:
    """The grey level a recognizer was trained with where its aligned crops reach beyond the image
    (`RecognizerArgs.fill`; 0, black, for a model that does not say)."""
    value = meta.args.get("fill", 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise ModelError(f"recognizer {meta.version}: malformed fill {value!r} (expected 0-255)")
    return value


def model_score_norm(meta: ModelMetadata) -> ScoreNorm | None:
    """The cohort a recognizer's similarities are normalised against (`edge_mtl.identity.scorenorm`); None for a
    model that carries none (plain cosine similarity)."""
    if not meta.score_cohort:
        return None
    try:
        return ScoreNorm.from_metadata(meta.score_cohort)
    except ValueError as e:
        raise ModelError(f"recognizer {meta.version}: malformed {e}") from None


class FaceRecognizer:
    """Runs aligned BGR crops (N x S x S x 3, S = the model's input size) in batches of at most `max_batch`."""

    def __init__(self, engine: Engine, max_batch: int = 32, flip: bool = False) -> None:
        meta = engine.metadata
        if meta.kind != "recognizer":
            raise ModelError(f"expected a recognizer model, got a {meta.kind!r} model")
        self.engine = engine
        self.meta = meta
        self.max_batch = max_batch
        self.size = meta.input_size
        self.fill = model_fill(meta)  # the grey level it wants beyond the image in its aligned crops: for align_faces
        self.flip = flip
        self.score_norm = model_score_norm(meta)  # identity scores against a cohort (None: plain cosine)

    @property
    def embedding_dim(self) -> int:
        return int(self.meta.args.get("embedding_dim", 128))

    def analyze(self, crops: npt.NDArray[np.uint8]) -> FaceAnalysis:
        """Embedding, age, gender and quality of each crop. With `flip`, each crop also runs mirrored and the two
        readings are combined (embeddings summed, probabilities and quality averaged, the age as the mixture of the
        two distributions): the result no longer depends on which way a face is mirrored, at twice the cost."""
        if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"recognizer: expected crops of shape (N, {self.size}, {self.size}, 3), got {crops.shape}")
        if not self.flip or crops.shape[0] == 0:
            return self._analyze(crops)
        n = crops.shape[0]
        both = self._analyze(np.concatenate([crops, crops[:, :, ::-1]]))
        emb = both.embeddings[:n] + both.embeddings[n:]
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        a, b = both.age_years[:n], both.age_years[n:]
        var = (both.age_std[:n] ** 2 + both.age_std[n:] ** 2) / 2 + ((a - b) / 2) ** 2
        return FaceAnalysis(
            emb.astype(np.float32),
            ((a + b) / 2).astype(np.float32),
            np.sqrt(var).astype(np.float32),
            ((both.female_prob[:n] + both.female_prob[n:]) / 2).astype(np.float32),
            ((both.quality[:n] + both.quality[n:]) / 2).astype(np.float32),
        )

    def _analyze(self, crops: npt.NDArray[np.uint8]) -> FaceAnalysis:
        embs, ages, stds, fem, qual = [], [], [], [], []
        for s in range(0, crops.shape[0], self.max_batch):
            out = self.engine.run(normalize(crops[s : s + self.max_batch], self.meta, bgr_input=True))
            embs.append(out["embedding"])
            ages.append(out["age"][:, 0])
            stds.append(out["age"][:, 1])
            fem.append(out["gender"][:, 1])
            qual.append(out["quality"].reshape(-1))
        if not embs:
            d = self.embedding_dim
            z = np.zeros((0,), np.float32)
            return FaceAnalysis(np.zeros((0, d), np.float32), z, z.copy(), z.copy(), z.copy())
        emb = np.concatenate(embs).astype(np.float32)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return FaceAnalysis(
            emb,
            np.concatenate(ages).astype(np.float32),
            np.concatenate(stds).astype(np.float32),
            np.concatenate(fem).astype(np.float32),
            np.concatenate(qual).astype(np.float32),
        )
