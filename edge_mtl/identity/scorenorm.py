"""Score normalisation against a cohort: identity at strict false-accept rates without retraining.

A cosine similarity means more for some faces than for others: a face that resembles many people (a common
pose, a blurred photo, a child) scores high against strangers too, and an impostor pair made of two such faces is
what sets the threshold at a false-accept rate of 1e-3 or 1e-4. Adaptive symmetric normalisation (AS-norm, from
speaker verification) measures that per face: its similarities to a fixed cohort of other people, of which the
`top` highest give a mean and a spread; a pair's score is the average of its similarity standardised by each face's
own statistics. Faces that resemble everybody then need a higher similarity to match.

The cohort is part of the recognizer file (`edge_mtl.score_cohort` metadata, written by `edge-mtl score-cohort`):
unit embeddings of the training identities' mean faces, by that very model, stored as float16. Scores are mapped
back onto the cosine scale (`center + spread * z`, the cohort statistics' medians over the training faces), so
thresholds, hysteresis margins and the `similarity` of events keep their meaning and magnitude; the thresholds a
file carries (`edge-mtl eval verification --stamp`) are measured with its normalisation, as the runtime scores.
Measured on LFW: `python benchmarks/score_norm.py` and export/recognizer.md, "Score normalisation".
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

#: How many of a face's highest cohort similarities give its statistics (chosen on LFW View 1, the model-selection
#: split: benchmarks/score_norm.py).
DEFAULT_TOP = 200
#: A spread below this is taken as this (a face whose top similarities are all equal: never seen on real faces).
MIN_SPREAD = 1e-3


@dataclass(frozen=True)
class ScoreNorm:
    """A cohort of unit embeddings (N x D) and how many of a face's highest similarities to it make its statistics."""

    cohort: F32
    top: int
    center: float  # the cosine-scale value of a standardised score of 0
    spread: float  # ... and of one standard deviation

    def stats(self, embeddings: F32) -> tuple[F32, F32]:
        """Per row of `embeddings` (unit vectors, N x D): the mean and spread of its `top` highest cohort
        similarities."""
        e = np.asarray(embeddings, np.float32).reshape(-1, self.cohort.shape[1])
        sims = e @ self.cohort.T
        k = min(self.top, sims.shape[1])
        top = -np.partition(-sims, k - 1, axis=1)[:, :k]
        return top.mean(1).astype(np.float32), np.maximum(top.std(1), MIN_SPREAD).astype(np.float32)

    def scores(self, sims: F32, a: tuple[F32, F32], b: tuple[F32, F32]) -> F32:
        """Normalised scores on the cosine scale of similarities `sims` between faces with statistics `a` and `b`
        (broadcast: a pair list, or one probe against many)."""
        (ma, sa), (mb, sb) = a, b
        z = 0.5 * ((sims - ma) / sa + (sims - mb) / sb)
        return (self.center + self.spread * z).astype(np.float32)

    def to_metadata(self) -> str:
        """The `edge_mtl.score_cohort` metadata value (JSON with the cohort as base64 float16)."""
        c = np.ascontiguousarray(self.cohort, np.float16)
        return json.dumps({"shape": list(c.shape), "top": self.top, "center": round(self.center, 6),
                           "spread": round(self.spread, 6), "float16": base64.b64encode(c.tobytes()).decode()})

    @staticmethod
    def from_metadata(value: str) -> ScoreNorm:
        """ValueError (with what is wrong) for a value that is not one."""
        try:
            d = json.loads(value)
            n, dim = (int(x) for x in d["shape"])
            raw = base64.b64decode(d["float16"], validate=True)
            cohort = np.frombuffer(raw, np.float16).astype(np.float32).reshape(n, dim)
            top, center, spread = int(d["top"]), float(d["center"]), float(d["spread"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"score_cohort: {e}") from None
        if n < 1 or top < 2 or not spread > 0:
            raise ValueError(f"score_cohort: {n} rows, top {top}, spread {spread}")
        cohort /= np.maximum(np.linalg.norm(cohort, axis=1, keepdims=True), 1e-12)
        return ScoreNorm(cohort, top, center, spread)


def pair_scores(embeddings: F32, a: npt.NDArray[np.int64], b: npt.NDArray[np.int64],
                norm: ScoreNorm | None) -> npt.NDArray[np.float64]:
    """The scores of the pairs (`a[i]`, `b[i]`) of rows of unit `embeddings` as the runtime matches them: cosine
    similarity, normalised against `norm`'s cohort when the recognizer carries one."""
    e = np.asarray(embeddings, np.float32)
    sims = (e[a] * e[b]).sum(1)
    if norm is not None:
        mu, sd = norm.stats(e)
        sims = norm.scores(sims, (mu[a], sd[a]), (mu[b], sd[b]))
    return sims.astype(np.float64)


def fit_cohort(embeddings: F32, people: npt.NDArray[np.str_], top: int = DEFAULT_TOP,
               min_images: int = 2) -> ScoreNorm:
    """A cohort from training faces: the unit mean embedding of each person with at least `min_images` faces, and
    the cosine-scale mapping from those faces' own statistics (medians of mean and spread)."""
    e = np.asarray(embeddings, np.float32)
    names, inv, counts = np.unique(people, return_inverse=True, return_counts=True)
    means = np.zeros((len(names), e.shape[1]), np.float64)
    np.add.at(means, inv, e)
    keep = counts >= min_images
    if keep.sum() <= top:
        raise ValueError(f"{int(keep.sum())} people with >= {min_images} faces: need more than top = {top}")
    cohort = means[keep]
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    probe = ScoreNorm(cohort.astype(np.float16).astype(np.float32), top, 0.0, 1.0)
    mu, sd = probe.stats(e)
    return ScoreNorm(probe.cohort, top, float(np.median(mu)), float(np.median(sd)))
