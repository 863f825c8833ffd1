"""Verification at low false-accept rates over every pair of a set of images (LFW: all 9,056 images).

LFW View 2 lists 3,000 impostor pairs: a false-accept rate of 1e-3 rests on the 3 highest of them, and 1e-4 on
none (its threshold is the highest impostor score). Every pair of different images of different people gives tens
of millions of impostors (LFW: about 41 million) and every pair of different images of one person the genuine
pairs (about 240,000). Pairs share images, so they are not independent, but the threshold for a low FAR then rests
on thousands of impostors. Computed in row blocks, keeping only the highest impostor scores needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge_mtl.identity.scorenorm import ScoreNorm

EVERY_PAIR_FARS: tuple[float, ...] = (1e-3, 1e-4)


def every_pair_tar(
    embeddings: npt.NDArray[np.floating],
    people: Sequence[str],
    fars: tuple[float, ...] = EVERY_PAIR_FARS,
    block: int = 512,
    norm: ScoreNorm | None = None,
) -> dict[str, float | int]:
    """TAR and threshold at each FAR over every unordered pair of different rows of unit-norm `embeddings`
    (`people[i]`: who row i shows); a pair is accepted when its score exceeds the threshold, chosen as in
    `verification.far_threshold` (the (k+1)-th highest impostor score, k = floor(far x impostors)). The score is the
    cosine similarity, normalised against `norm`'s cohort when given (as the runtime matches)."""
    e = np.asarray(embeddings, np.float32)
    stats = norm.stats(e) if norm is not None else None
    ids = np.unique(np.asarray(people), return_inverse=True)[1]
    n = len(ids)
    n_imp = n * (n - 1) // 2 - int(sum(c * (c - 1) // 2 for c in np.bincount(ids)))
    if n_imp <= 0:
        raise ValueError("every_pair_tar: needs images of at least two people")
    keep = int(np.floor(max(fars) * n_imp)) + 1
    top = np.empty(0, np.float32)
    genuine = []
    for s in range(0, n, block):
        rows = np.arange(s, min(n, s + block))
        sims = e[rows] @ e.T
        if norm is not None and stats is not None:
            mu, sd = stats
            sims = norm.scores(sims, (mu[rows, None], sd[rows, None]), (mu[None, :], sd[None, :]))
        later = np.arange(n)[None, :] > rows[:, None]
        same = ids[rows][:, None] == ids[None, :]
        genuine.append(sims[later & same])
        imp = sims[later & ~same]
        if top.size >= keep:
            imp = imp[imp > top[0]]
        top = np.concatenate([top, imp])
        if top.size > keep:
            top = np.partition(top, top.size - keep)[top.size - keep:]
        top = np.sort(top)  # ascending: top[0] is the lowest score kept
    gen = np.concatenate(genuine)
    desc = top[::-1]
    out: dict[str, float | int] = {"images": n, "genuine_pairs": int(gen.size), "impostor_pairs": int(n_imp)}
    for far in fars:
        thr = float(desc[int(np.floor(far * n_imp))])
        out[f"tar_at_far_{far:g}"] = round(float((gen > thr).mean()), 4) if gen.size else float("nan")
        out[f"threshold_at_far_{far:g}"] = round(thr, 4)
    return out
