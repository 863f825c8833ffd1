"""Per-track aggregation and identity decisions, so that what a track reports does not flicker.

Each analysis of a track's face is weighted by its quality: the embedding is a quality-weighted mean of unit
embeddings (renormalised), age a weighted mean with the spread combining the model's own uncertainty and the
disagreement between frames, gender a weighted sum of log-odds. The identity decision compares the aggregated
embedding with the gallery and changes only with evidence: a name needs `min_observations` analyses and a
similarity above `threshold`; switching from one name to another needs the newcomer to beat the incumbent by
`margin` (hysteresis); below threshold the track is explicitly unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge_mtl import defaults as D
from edge_mtl.identity.gallery import Matcher
from edge_mtl.runtime.engine import ModelMetadata, far_key
from edge_mtl.types import gender_reading

MIN_WEIGHT = 0.02  # a face of quality 0 still counts a little, so a track of bad faces still gets attributes


@dataclass
class TrackAggregate:
    """Running quality-weighted statistics of one track's analyses."""

    dim: int = 0
    emb_sum: npt.NDArray[np.float64] | None = None
    weight: float = 0.0
    age_w: float = 0.0
    age_sum: float = 0.0
    age_sq: float = 0.0
    age_var_model: float = 0.0
    gender_logodds: float = 0.0
    gender_w: float = 0.0
    best_quality: float = 0.0
    observations: int = 0

    def add(self, embedding: npt.NDArray[np.float32], age: float, age_std: float, female_prob: float,
            quality: float) -> None:
        w = max(float(quality), MIN_WEIGHT)
        e = embedding.astype(np.float64)
        self.emb_sum = e * w if self.emb_sum is None else self.emb_sum + e * w
        self.dim = e.shape[0]
        self.weight += w
        self.age_w += w
        self.age_sum += w * age
        self.age_sq += w * age * age
        self.age_var_model += w * age_std * age_std
        p = min(max(float(female_prob), 1e-4), 1 - 1e-4)
        self.gender_logodds += w * math.log(p / (1 - p))
        self.gender_w += w
        self.best_quality = max(self.best_quality, float(quality))
        self.observations += 1

    @property
    def embedding(self) -> npt.NDArray[np.float32] | None:
        if self.emb_sum is None:
            return None
        v = self.emb_sum / max(float(np.linalg.norm(self.emb_sum)), 1e-12)
        return v.astype(np.float32)

    def age(self) -> dict[str, float] | None:
        if self.age_w <= 0:
            return None
        mean = self.age_sum / self.age_w
        between = max(self.age_sq / self.age_w - mean * mean, 0.0)
        std = math.sqrt(self.age_var_model / self.age_w + between)
        return {"years": round(min(max(mean, 0.0), 120.0), 1), "std": round(min(std, 100.0), 1)}

    def gender(self, min_confidence: float = 0.5, min_age: float = 0.0) -> dict[str, object] | None:
        """Label and confidence from the quality-weighted mean log-odds; None before any analysis, while the
        confidence is below `min_confidence` (a coin flip is not reported as a gender) and while the track's
        aggregated age is under `min_age` years (nor is an infant's)."""
        if self.gender_w <= 0:
            return None
        lo = self.gender_logodds / self.gender_w
        shown = self.age()  # the floor compares the age the event shows
        age = shown["years"] if shown else None
        label, confidence = gender_reading(1 / (1 + math.exp(-lo)), min_confidence, age, min_age)
        if label is None:
            return None
        return {"label": label, "confidence": round(confidence, 3)}


@dataclass
class IdentityDecider:
    """Threshold + hysteresis + explicit unknown. `decide` returns (changed, current name or None, similarity)."""

    threshold: float = D.IDENTITY_THRESHOLD
    margin: float = D.IDENTITY_MARGIN
    min_observations: int = D.IDENTITY_MIN_OBSERVATIONS
    current: str | None = None
    similarity: float = 0.0
    decided: bool = False
    history: list[str | None] = field(default_factory=list)

    def decide(self, agg: TrackAggregate, matcher: Matcher | None) -> bool:
        """Update the decision from the aggregate; True when it changed (or was first made)."""
        emb = agg.embedding
        if emb is None or agg.observations < self.min_observations:
            return False
        if matcher is not None and len(matcher):
            scores = matcher.scores(emb)  # once: with a score cohort each call also scores the probe against it
            name, sim, _ = matcher.best(emb, scores)
            # similarity of the incumbent, for hysteresis
            cur_sim = float(scores[matcher.people.index(self.current)]) if self.current in matcher.people else -1.0
        else:
            name, sim, cur_sim = None, -1.0, -1.0
        new: str | None
        if name is None or sim < self.threshold:
            # stay with the incumbent while it is still within margin of the threshold
            new = self.current if self.current is not None and cur_sim >= self.threshold - self.margin else None
        elif self.current is None or name == self.current:
            new = name
        else:
            new = name if sim >= cur_sim + self.margin else self.current
        shown = sim if new == name else (cur_sim if new is not None else max(sim, -1.0))
        changed = (not self.decided) or new != self.current
        self.current, self.similarity, self.decided = new, shown, True
        if changed:
            self.history.append(new)
        return changed


def resolve_threshold(
    configured: float | None, false_accept_rate: float, meta: ModelMetadata, flip: bool = False
) -> tuple[float, str]:
    """The identity threshold to run with, and where it comes from (for the log).

    A configured number wins. Otherwise the loaded recognizer's own measured threshold for `false_accept_rate`
    (its `operating_points`; with `flip`, the flip measurement, else the plain one: flip moves it little, 0.378 vs
    0.381 for recognizer-1.6), else the built-in default (`edge_mtl.defaults`), right only for the model it was
    measured on."""
    key = far_key(false_accept_rate)
    measured = next(((mode, th) for mode in (("flip", "plain") if flip else ("plain",))
                     if (th := meta.operating_points.get(mode, {}).get(key)) is not None), None)
    if configured is not None:
        note = f"; {meta.version} measured {measured[1]:.3f} for false-accept rate {key}" if measured else ""
        return configured, f"identity.threshold as configured{note}"
    if measured is not None:
        mode, th = measured
        how = f"{meta.precision}{', flip' if mode == 'flip' else ''}"
        src = f"; {meta.operating_points_source}" if meta.operating_points_source else ""
        return th, f"{meta.version} ({how}) at false-accept rate {key}{src}"
    return D.identity_threshold(false_accept_rate), (
        f"built-in default for false-accept rate {key}: {meta.version} ({meta.precision}) carries no measured "
        "threshold (measure it: edge-mtl eval verification --stamp)"
    )
