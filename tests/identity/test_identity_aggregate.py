"""Per-track aggregation (quality weighting, age spread, gender log-odds) and the identity decision
(threshold, hysteresis, explicit unknown, minimum observations)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_mtl.identity.aggregate import MIN_WEIGHT, IdentityDecider, TrackAggregate
from edge_mtl.identity.gallery import Matcher

D = 32


def _basis(i: int) -> np.ndarray:
    v = np.zeros(D, np.float32)
    v[i] = 1.0
    return v


A, B, C = _basis(0), _basis(1), _basis(2)
MATCHER = Matcher(["A", "A", "B"], np.stack([A, (A + 0.05 * _basis(5)) / np.linalg.norm(A + 0.05 * _basis(5)), B]))


def _near(v: np.ndarray, rng: np.random.Generator, noise: float = 0.15) -> np.ndarray:
    x = v + rng.normal(0, noise / math.sqrt(D), D).astype(np.float32)
    return (x / np.linalg.norm(x)).astype(np.float32)


def _exact(sim_a: float, sim_b: float) -> np.ndarray:
    """A unit embedding with cosine sim_a to A and sim_b to B."""
    rest = math.sqrt(1 - sim_a**2 - sim_b**2)
    return (sim_a * A + sim_b * B + rest * C).astype(np.float32)


def _agg(emb: np.ndarray, n: int = 1) -> TrackAggregate:
    agg = TrackAggregate()
    for _ in range(n):
        agg.add(emb, 30.0, 2.0, 0.5, 0.8)
    return agg


# ------------------------------------------------------------------ aggregation
def test_high_quality_frame_dominates() -> None:
    agg = TrackAggregate()
    agg.add(A, 30.0, 2.0, 0.9, 0.9)
    for _ in range(3):
        agg.add(B, 60.0, 2.0, 0.1, 0.05)
    emb = agg.embedding
    assert emb is not None and emb.dtype == np.float32
    assert float(np.linalg.norm(emb)) == pytest.approx(1.0, abs=1e-6)
    # weights 0.9 vs 3 x 0.05: the mean is (0.9 A + 0.15 B) normalised
    np.testing.assert_allclose(emb[:2], np.array([0.9, 0.15]) / math.hypot(0.9, 0.15), rtol=1e-5)
    age = agg.age()
    assert age is not None and age["years"] == round((0.9 * 30 + 0.15 * 60) / 1.05, 1)
    g = agg.gender()
    assert g is not None and g["label"] == "female"
    assert agg.observations == 4 and agg.best_quality == 0.9


def test_zero_quality_still_counts_a_little() -> None:
    agg = TrackAggregate()
    agg.add(A, 20.0, 1.0, 0.2, 0.0)
    agg.add(B, 40.0, 1.0, 0.2, 0.0)
    assert agg.weight == pytest.approx(2 * MIN_WEIGHT)
    age = agg.age()
    assert age is not None and age["years"] == 30.0


def test_age_spread_combines_model_std_and_disagreement() -> None:
    agg = TrackAggregate()
    agg.add(A, 20.0, 3.0, 0.5, 0.5)
    agg.add(A, 40.0, 3.0, 0.5, 0.5)
    # mean 30; between-frame variance 100; model variance 9 -> std sqrt(109)
    assert agg.age() == {"years": 30.0, "std": round(math.sqrt(109), 1)}
    one = TrackAggregate()
    one.add(A, 25.0, 4.0, 0.5, 0.7)
    assert one.age() == {"years": 25.0, "std": 4.0}


def test_gender_is_weighted_log_odds() -> None:
    agg = TrackAggregate()
    agg.add(A, 30.0, 1.0, 0.9, 0.5)
    agg.add(A, 30.0, 1.0, 0.3, 0.5)
    lo = (math.log(9) + math.log(0.3 / 0.7)) / 2
    p = 1 / (1 + math.exp(-lo))
    assert agg.gender() == {"label": "female", "confidence": round(p, 3)}
    # a confident frame outweighs two lukewarm opposite ones (log-odds, not votes)
    agg = TrackAggregate()
    agg.add(A, 30.0, 1.0, 0.02, 0.5)
    agg.add(A, 30.0, 1.0, 0.6, 0.5)
    agg.add(A, 30.0, 1.0, 0.6, 0.5)
    g = agg.gender()
    assert g is not None and g["label"] == "male"
    # extreme probabilities are clipped, not infinite
    agg = TrackAggregate()
    agg.add(A, 30.0, 1.0, 1.0, 1.0)
    g = agg.gender()
    assert g is not None and g["label"] == "female" and g["confidence"] == pytest.approx(1.0, abs=1e-3)


def test_gender_below_min_confidence_is_not_reported() -> None:
    agg = TrackAggregate()
    agg.add(A, 30.0, 1.0, 0.45, 0.5)  # 0.55 male: a coin flip
    assert agg.gender() == {"label": "male", "confidence": 0.55}  # the default floor 0.5 reports everything
    assert agg.gender(0.6) is None
    assert agg.gender(0.55) == {"label": "male", "confidence": 0.55}  # the floor itself is reported
    agg.add(A, 30.0, 1.0, 0.1, 0.5)  # more evidence lifts it over the floor
    g = agg.gender(0.6)
    assert g is not None and g["label"] == "male" and g["confidence"] > 0.6


def test_empty_aggregate() -> None:
    agg = TrackAggregate()
    assert agg.embedding is None and agg.age() is None and agg.gender() is None


# ------------------------------------------------------------------ identity decisions
def test_single_wrong_frame_does_not_flip_established_identity() -> None:
    rng = np.random.default_rng(0)
    agg, dec = TrackAggregate(), IdentityDecider(threshold=0.45, margin=0.05, min_observations=2)
    changes = []
    for i in range(10):
        agg.add(_near(A, rng), 30.0, 2.0, 0.5, float(rng.uniform(0.6, 0.9)))
        if dec.decide(agg, MATCHER):
            changes.append((i, dec.current))
    assert changes == [(1, "A")]
    agg.add(_near(B, rng), 30.0, 2.0, 0.5, 1.0)  # one confident frame of someone else
    assert dec.decide(agg, MATCHER) is False
    assert dec.current == "A" and dec.history == ["A"]
    assert dec.similarity > 0.45


def test_genuine_change_with_evidence_flips() -> None:
    rng = np.random.default_rng(1)
    agg, dec = TrackAggregate(), IdentityDecider(threshold=0.45, margin=0.05, min_observations=2)
    for _ in range(10):
        agg.add(_near(A, rng), 30.0, 2.0, 0.5, 0.8)
        dec.decide(agg, MATCHER)
    flipped_at = None
    for i in range(30):
        agg.add(_near(B, rng), 30.0, 2.0, 0.5, 0.8)
        if dec.decide(agg, MATCHER):
            flipped_at = i
            break
    assert dec.current == "B" and dec.history == ["A", "B"]
    # it takes real evidence: more B frames than A frames before B beats A by the margin
    assert flipped_at is not None and flipped_at >= 9
    emb = agg.embedding
    assert emb is not None
    s = MATCHER.scores(emb)
    assert s[1] >= s[0] + 0.05 and dec.similarity == pytest.approx(float(s[1]), abs=1e-6)


def test_hysteresis_margin_exact() -> None:
    dec = IdentityDecider(threshold=0.45, margin=0.05, min_observations=1)
    assert dec.decide(_agg(_exact(0.70, 0.10)), MATCHER) and dec.current == "A"
    # B ahead by 0.03 < margin: keep A
    assert dec.decide(_agg(_exact(0.60, 0.63)), MATCHER) is False and dec.current == "A"
    assert dec.similarity == pytest.approx(0.60, abs=1e-5)
    # B ahead by 0.07: switch
    assert dec.decide(_agg(_exact(0.55, 0.62)), MATCHER) is True and dec.current == "B"
    assert dec.similarity == pytest.approx(0.62, abs=1e-5)


def test_below_threshold_is_explicit_unknown() -> None:
    dec = IdentityDecider(threshold=0.45, margin=0.05, min_observations=1)
    assert dec.decide(_agg(_exact(0.30, 0.20)), MATCHER) is True, "the first decision is announced, even unknown"
    assert dec.current is None and dec.decided and dec.history == [None]
    assert dec.decide(_agg(_exact(0.35, 0.20)), MATCHER) is False
    assert dec.decide(_agg(_exact(0.80, 0.20)), MATCHER) is True and dec.current == "A"
    # an incumbent slightly below the threshold (within the margin) is kept ...
    assert dec.decide(_agg(_exact(0.42, 0.20)), MATCHER) is False and dec.current == "A"
    # ... but not once it falls further
    assert dec.decide(_agg(_exact(0.38, 0.20)), MATCHER) is True and dec.current is None
    assert dec.history == [None, "A", None]


def test_min_observations_respected() -> None:
    dec = IdentityDecider(threshold=0.45, margin=0.05, min_observations=3)
    agg = TrackAggregate()
    for _ in range(2):
        agg.add(A, 30.0, 2.0, 0.5, 0.9)
        assert dec.decide(agg, MATCHER) is False
        assert dec.current is None and not dec.decided
    agg.add(A, 30.0, 2.0, 0.5, 0.9)
    assert dec.decide(agg, MATCHER) is True and dec.current == "A"
    assert dec.decide(TrackAggregate(), MATCHER) is False


def test_no_gallery_means_unknown() -> None:
    dec = IdentityDecider(min_observations=1)
    assert dec.decide(_agg(A), None) is True and dec.current is None
    empty = Matcher([], np.zeros((0, 0), np.float32))
    dec = IdentityDecider(min_observations=1)
    assert dec.decide(_agg(A), empty) is True and dec.current is None
