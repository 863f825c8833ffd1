"""FairFace balanced 540 (`thlaiquid-ai/demographic-test-images` @ 3225e93b, folder `fairface/`, CC BY 4.0):
in-the-wild Flickr faces, 60 per age bin, 30 women and 30 men each. Evaluation only, never training or tuning.

`ground_truth.json` lists `{"filename": ..., "age": "3-9", "gender": "Female"}` per image; the folder is given by
`edge-mtl eval attributes --split fairface --fairface DIR` (a copy made with `git archive`; never a fixed path).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edge_mtl.errors import InputError
from edge_mtl.eval.populations import FAIRFACE_BIN_LABELS

GENDERS = {"male": 0, "female": 1}


@dataclass(frozen=True)
class FairFaceItem:
    path: Path
    age_bin: int  # index into populations.FAIRFACE_AGE_BINS
    gender: int  # 0 male, 1 female (UTKFace's coding)


def read_fairface(folder: Path | None) -> list[FairFaceItem]:
    """Every image of `folder/ground_truth.json`, checked: an absent folder, file or image, or a label outside
    FairFace's bins and genders is an InputError naming it."""
    if folder is None:
        raise InputError("--split fairface: needs --fairface DIR, the fairface/ folder of "
                         "thlaiquid-ai/demographic-test-images (with ground_truth.json)")
    listing = Path(folder) / "ground_truth.json"
    if not listing.is_file():
        raise InputError(f"--fairface: no {listing}")
    try:
        entries = json.loads(listing.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{listing}: not JSON ({err})") from None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{listing}: expected a non-empty list of {{filename, age, gender}} entries")
    items = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not {"filename", "age", "gender"} <= set(e):
            raise InputError(f"{listing}: entry {i} lacks filename, age or gender")
        age, gender = str(e["age"]), str(e["gender"]).lower()
        if age not in FAIRFACE_BIN_LABELS or gender not in GENDERS:
            raise InputError(f"{listing}: entry {i} ({e['filename']}): unknown age bin {e['age']!r} or gender "
                             f"{e['gender']!r}")
        path = Path(folder) / str(e["filename"])
        if not path.is_file():
            raise InputError(f"--fairface: {path} is listed in ground_truth.json but absent")
        items.append(FairFaceItem(path, FAIRFACE_BIN_LABELS.index(age), GENDERS[gender]))
    return items
