"""TAR at low FAR over every pair of images (edge_mtl.eval.every_pair): by hand, and against the listed-pairs
functions over the explicit list of all pairs."""

from __future__ import annotations

import numpy as np
import pytest

from edge_mtl.eval.every_pair import every_pair_tar
from edge_mtl.eval.verification import far_threshold, tar_at_far


def _unit(angles: list[float]) -> np.ndarray:  # type: ignore[type-arg]
    a = np.radians(angles)
    return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)


def test_hand_computed() -> None:
    # A at 0 and 10 degrees, B at 30 and 90: genuine cos 10 = .985 and cos 60 = .5; impostors (4 of them)
    # cos 30 = .866, cos 90 = 0, cos 20 = .940, cos 80 = .174. At FAR 1e-3, k = floor(.004) = 0: the threshold is
    # the highest impostor (.940): only the A pair passes.
    r = every_pair_tar(_unit([0, 10, 30, 90]), ["A", "A", "B", "B"], fars=(1e-3,), block=1)
    assert r["images"] == 4 and r["genuine_pairs"] == 2 and r["impostor_pairs"] == 4
    assert r["threshold_at_far_0.001"] == round(float(np.cos(np.radians(20))), 4)
    assert r["tar_at_far_0.001"] == 0.5
    # FAR 0.5: k = 2, the third highest impostor (.174): both genuine pairs pass
    assert every_pair_tar(_unit([0, 10, 30, 90]), ["A", "A", "B", "B"], fars=(0.5,))["tar_at_far_0.5"] == 1.0


@pytest.mark.parametrize("block", [1, 7, 1000])
def test_matches_the_explicit_list_of_pairs(block: int) -> None:
    rng = np.random.default_rng(3)
    people = rng.integers(0, 12, 90)
    centres = rng.normal(size=(12, 16))
    e = centres[people] + 0.9 * rng.normal(size=(90, 16))
    e = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)
    iu = np.triu_indices(90, 1)
    sims = (e @ e.T)[iu].astype(np.float64)
    same = (people[:, None] == people[None, :])[iu]
    r = every_pair_tar(e, [str(p) for p in people], fars=(1e-2, 1e-3), block=block)
    assert r["impostor_pairs"] == int((~same).sum()) and r["genuine_pairs"] == int(same.sum())
    for far in (1e-2, 1e-3):
        assert r[f"threshold_at_far_{far:g}"] == pytest.approx(far_threshold(sims, same, far), abs=1e-4)
        assert r[f"tar_at_far_{far:g}"] == round(tar_at_far(sims, same, far), 4)


def test_one_person_is_refused() -> None:
    with pytest.raises(ValueError, match="at least two people"):
        every_pair_tar(_unit([0, 10]), ["A", "A"])
