"""Training that covers people: rebalancing by race x age x gender, weighting the groups a model gets wrong, and
in-the-wild augmentation.

UTKFace codes race, age and gender in its file names (`AGE_GENDER_RACE_DATE.jpg.chip.jpg`), so every UTKFace
face has a group such as `asian|60+|female`. Groups are made closer in size by repeating faces of the smaller
ones within an epoch: with `power` p, a group of n faces is seen as if it held (n_max / n)^(1 - p) times as many
(p = 1: as found, p = 0: every group as large as the largest), times the `group_weights` of its parts (for example
`{"female" = 1.5, "60+" = 1.5, "child" = 1.5}`: the groups recognizer-1.5 reads worst), at most `max_repeat` times.
A fractional repeat is drawn per face (seeded). Faces of other sources (CelebA) have no group and are seen once.

`wild` adds what the project's `degrade` lacks for faces from the wild: strong colour casts (white balance of
cheap cameras, sodium and LED light) and head pose (a yaw-like perspective warp of the aligned crop).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from edge_mtl.eval.populations import UTKFACE_RACES

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Age groups of the rebalancing (years, [lo, hi)).
AGE_GROUPS: tuple[tuple[str, int, int], ...] = (("child", 0, 13), ("adult", 13, 60), ("60+", 60, 1000))


def utkface_group(name: str) -> str | None:
    """`race|age group|gender` of a UTKFace file name; None for any other name."""
    parts = name.split("_")
    if len(parts) < 4 or not (parts[0].isdigit() and parts[1] in ("0", "1") and parts[2].isdigit()):
        return None
    age, race = int(parts[0]), int(parts[2])
    if race >= len(UTKFACE_RACES):
        return None
    band = next(g for g, lo, hi in AGE_GROUPS if lo <= age < hi)
    return f"{UTKFACE_RACES[race]}|{band}|{'female' if parts[1] == '1' else 'male'}"


def group_factors(
    groups: Sequence[str | None], power: float, weights: Mapping[str, float], max_repeat: float
) -> dict[str, float]:
    """How many times each group's faces are seen per epoch (see the module's docstring); at least 1."""
    counts = Counter(g for g in groups if g is not None)
    if not counts:
        return {}
    n_max = max(counts.values())
    out = {}
    for g, n in counts.items():
        f = (n_max / n) ** (1.0 - power)
        for part in g.split("|"):
            f *= weights.get(part, 1.0)
        out[g] = float(min(max(f, 1.0), max_repeat))
    return out


def repeats(
    groups: Sequence[str | None], power: float, weights: Mapping[str, float], max_repeat: float, seed: int
) -> npt.NDArray[np.int64]:
    """Times each face is seen per epoch: its group's factor, its fractional part drawn per face; 1 without a
    group."""
    f = group_factors(groups, power, weights, max_repeat)
    want = np.array([f.get(g, 1.0) if g is not None else 1.0 for g in groups], np.float64)
    base = np.floor(want)
    rng = np.random.default_rng(seed)
    return (base + (rng.random(len(want)) < want - base)).astype(np.int64)


def rebalanced(
    samples: Sequence[T], names: Sequence[str | None], power: float, weights: Mapping[str, float],
    max_repeat: float, seed: int,
) -> list[T]:
    """`samples` with each face repeated as `repeats` says for the group its file name (`names[i]`; None: no
    group) gives: the originals first, then the extra copies."""
    groups = [utkface_group(n) if n else None for n in names]
    rep = repeats(groups, power, weights, max_repeat, seed)
    extra = [s for s, k in zip(samples, rep, strict=True) for _ in range(int(k) - 1)]
    log.info("rebalancing: %d faces in %d groups, %d extra copies", sum(g is not None for g in groups),
             len({g for g in groups if g}), len(extra))
    return [*samples, *extra]


def colour_cast(img: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """A strong white-balance error: per-channel gains (BGR) of 0.6-1.4 around a random tint."""
    gains = np.clip(1 + rng.normal(0, 0.18, 3), 0.6, 1.4)
    return np.clip(img.astype(np.float32) * gains[None, None, :], 0, 255).astype(np.uint8)


def yaw_warp(img: npt.NDArray[np.uint8], rng: np.random.Generator, max_shift: float = 0.12,
             fill: int = 0) -> npt.NDArray[np.uint8]:
    """A head turned a little: one side of the crop narrowed vertically and shifted inward, as a yaw of about 15-25
    degrees foreshortens the far side of the face; what it uncovers is `fill`."""
    h, w = img.shape[:2]
    s = float(rng.uniform(0.04, max_shift))
    side = 1 if rng.random() < 0.5 else -1
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dx, dy = s * w, s * h / 2
    if side > 0:  # the right side is farther
        dst = np.array([[0, 0], [w - dx, dy], [w - dx, h - dy], [0, h]], np.float32)
    else:
        dst = np.array([[dx, dy], [w, 0], [w, h], [dx, h - dy]], np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(img, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(fill, fill, fill))


def wild(img: npt.NDArray[np.uint8], rng: np.random.Generator, p: float, fill: int = 0) -> npt.NDArray[np.uint8]:
    """Each of the colour cast and the yaw warp with probability `p` (the warp uncovering `fill`)."""
    if p <= 0:
        return img
    if rng.random() < p:
        img = colour_cast(img, rng)
    if rng.random() < p:
        img = yaw_warp(img, rng, fill=fill)
    return img
