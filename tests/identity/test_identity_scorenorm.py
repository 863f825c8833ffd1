"""Score normalisation against a cohort (edge_mtl.identity.scorenorm): the statistics and scores by hand, the
metadata round trip, the matcher and the every-pair evaluation scoring as the runtime does, the effect it is for
(a face that resembles everybody needs more to match), and `edge-mtl score-cohort` writing a file the runtime
reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.eval.every_pair import every_pair_tar
from edge_mtl.eval.verification import tar_at_far
from edge_mtl.identity.gallery import Matcher
from edge_mtl.identity.scorenorm import ScoreNorm, fit_cohort, pair_scores


def _unit(x: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_statistics_and_scores_by_hand() -> None:
    # cohort on the unit circle at 0, 90 and 180 degrees; a face at 0 degrees has similarities 1, 0, -1
    cohort = _unit(np.array([[1, 0], [0, 1], [-1, 0]]))
    norm = ScoreNorm(cohort, top=2, center=0.3, spread=0.1)
    mu, sd = norm.stats(_unit(np.array([[1, 0]])))
    assert mu[0] == pytest.approx(0.5) and sd[0] == pytest.approx(0.5)  # top two: 1 and 0
    # a pair with similarity 0.8 between two such faces: z = ((0.8 - 0.5) / 0.5 + (0.8 - 0.5) / 0.5) / 2 = 0.6
    s = norm.scores(np.float32(0.8), (mu, sd), (mu, sd))
    assert float(s[0]) == pytest.approx(0.3 + 0.1 * 0.6)


def test_metadata_round_trip_and_malformed_values() -> None:
    rng = np.random.default_rng(0)
    norm = ScoreNorm(_unit(rng.normal(size=(300, 16))), top=50, center=0.31, spread=0.07)
    back = ScoreNorm.from_metadata(norm.to_metadata())
    assert back.cohort.shape == (300, 16) and back.top == 50
    assert (back.center, back.spread) == (0.31, 0.07)
    assert np.abs(back.cohort - norm.cohort).max() < 2e-3  # float16 in the file
    for bad in ["", "{}", json.dumps({"shape": [2, 2], "top": 2, "center": 0, "spread": 1, "float16": "!!"}),
                json.dumps({"shape": [300, 16], "top": 1, "center": 0, "spread": 1,
                            "float16": json.loads(norm.to_metadata())["float16"]})]:
        with pytest.raises(ValueError, match="score_cohort"):
            ScoreNorm.from_metadata(bad)


def _people(seed: int = 1, n_people: int = 40, per: int = 6, dim: int = 32,
            hub_share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    """Faces of `n_people`, `per` each, around their own centres; with `hub_share`, every centre also leans towards
    one common direction by that much (faces that resemble everybody)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, dim))
    lean = np.zeros(n_people)
    lean[: n_people // 2] = hub_share  # half of the people resemble the common direction
    centres = centres + lean[:, None] * np.sqrt(dim) * np.eye(dim)[0]
    ids = np.repeat(np.arange(n_people), per)
    e = _unit(centres[ids] + 0.8 * rng.normal(size=(n_people * per, dim)))
    return e, ids


def test_fit_cohort_and_the_effect_it_is_for() -> None:
    """Half of the people lean towards one common direction, so their impostor pairs score high and set the strict
    thresholds. Normalised against a cohort of other people (drawn the same way), TAR at a strict FAR rises."""
    train, train_ids = _people(seed=1, n_people=300, per=4, hub_share=0.9)
    norm = fit_cohort(train, train_ids.astype(str), top=30)
    assert norm.cohort.shape == (300, 32) and 0 < norm.spread < 1
    mu, _ = norm.stats(train)
    assert norm.center == pytest.approx(float(np.median(mu)), abs=1e-3)
    test, ids = _people(seed=2, n_people=60, per=6, hub_share=0.9)
    iu = np.triu_indices(len(ids), 1)
    same = (ids[:, None] == ids[None, :])[iu]
    a, b = iu[0].astype(np.int64), iu[1].astype(np.int64)
    plain, normed = pair_scores(test, a, b, None), pair_scores(test, a, b, norm)
    assert np.allclose(plain, (test[a] * test[b]).sum(1), atol=1e-6)
    assert tar_at_far(normed, same, 1e-3) > tar_at_far(plain, same, 1e-3) + 0.02
    # every_pair_tar scores as pair_scores does
    r = every_pair_tar(test, [str(i) for i in ids], fars=(1e-3,), block=37, norm=norm)
    assert r["tar_at_far_0.001"] == round(tar_at_far(normed, same, 1e-3), 4)
    with pytest.raises(ValueError, match="need more than top"):
        fit_cohort(train[:40], train_ids[:40].astype(str), top=30)


def test_matcher_scores_with_the_cohort() -> None:
    train, train_ids = _people(seed=3, n_people=120, per=3)
    norm = fit_cohort(train, train_ids.astype(str), top=20)
    gallery, _ = _people(seed=4, n_people=5, per=2)
    names = [f"p{i // 2}" for i in range(10)]
    probe = gallery[3]
    m = Matcher(names, gallery, norm=norm)
    want = norm.scores(gallery @ probe, norm.stats(probe), norm.stats(gallery))
    best = np.full(5, -np.inf)
    np.maximum.at(best, np.arange(10) // 2, want)
    assert np.allclose(m.scores(probe), best, atol=1e-5)
    assert m.best(probe)[0] == "p1"
    plain = Matcher(names, gallery).scores(probe)
    assert not np.allclose(plain, m.scores(probe))  # the cohort changes the scores
    assert Matcher(names, gallery[:, :16], norm=norm).norm is None  # another dimension: plain cosine


def test_score_cohort_command_writes_a_file_the_runtime_reads(tmp_path: Path) -> None:
    """`edge-mtl score-cohort` on a (tiny) recognizer and a crop cache of known identities: the file then carries
    the cohort, its stamped thresholds are gone, FaceRecognizer.score_norm reads it, and --from copies it."""
    from edge_mtl.commands.cli import main
    from edge_mtl.export_tools.onnx_utils import load_model, metadata_of
    from edge_mtl.runtime.registry import open_recognizer
    from tests.tiny_models import export_tiny_recognizer

    model = export_tiny_recognizer(tmp_path / "r.onnx")
    rng = np.random.default_rng(0)
    keys = [f"celeba_samples/{p:05d}_{k:06d}.jpg" for p in range(60) for k in range(3)]
    crops = tmp_path / "crops"
    crops.mkdir()
    with open(crops / "celeba_samples.u8", "wb") as f:
        np.save(f, rng.integers(0, 255, size=(len(keys), 112, 112, 3), dtype=np.uint8))
    status = ["detected"] * len(keys)
    status[5] = "missing"  # a face not found is left out
    (crops / "celeba_samples.json").write_text(json.dumps({"keys": keys, "status": status}))
    assert main(["score-cohort", str(model), "--crops", str(crops), "--people", "50", "--top", "10",
                 "-o", str(tmp_path / "n.onnx")]) == 0
    meta = metadata_of(load_model(tmp_path / "n.onnx"), "n")
    norm = ScoreNorm.from_metadata(meta.score_cohort)
    assert norm.cohort.shape == (50, 16) and norm.top == 10 and meta.operating_points == {}
    assert open_recognizer(tmp_path / "n.onnx").score_norm is not None
    assert open_recognizer(model).score_norm is None
    assert main(["score-cohort", str(model), "--from", str(tmp_path / "n.onnx"), "-o", str(tmp_path / "c.onnx")]) == 0
    assert metadata_of(load_model(tmp_path / "c.onnx"), "c").score_cohort == meta.score_cohort
    assert main(["score-cohort", str(model), "--crops", str(crops), "--top", "80"]) == 2  # 60 people: too few
