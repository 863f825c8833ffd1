"""Parsers for the face datasets this project trains and evaluates on.

Each parser returns `FaceRecord`s: one face, where its image is, and whatever labels the source has (identity,
age, gender, landmarks). Partially labelled sources are normal: the multi-task losses mask what is missing.
Identities are namespaced strings ("celeba:7399") so sources that share an identity space merge cleanly.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_mtl.errors import InputError
from edge_mtl.vision.align import face_box_from_landmarks

log = logging.getLogger(__name__)


@dataclass
class FaceRecord:
    """One face in one image, with the labels its source provides (None where it has none)."""

    source: str
    path: str
    key: str
    identity: str | None = None
    age: float | None = None
    gender: int | None = None  # 0 male, 1 female (UTKFace's coding)
    landmarks: npt.NDArray[np.float32] | None = None  # K x 2 in image pixels, as annotated
    box: npt.NDArray[np.float32] | None = None  # x1, y1, x2, y2 in image pixels
    extra: dict[str, object] = field(default_factory=dict)


def _files(folder: Path, suffix: str = ".jpg") -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(suffix))


# ---------------------------------------------------------------- UTKFace
_UTK = re.compile(r"^(\d+)_([01])_(\d)_(\d+)\.jpg\.chip\.jpg$")


def parse_utkface_name(name: str) -> tuple[int, int] | None:
    """(age, gender) from `AGE_GENDER_RACE_DATE.jpg.chip.jpg`; None for the few malformed names."""
    m = _UTK.match(name)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2))


def utkface(folder: str | Path, source: str = "utkface", exclude: Iterable[str] = ()) -> list[FaceRecord]:
    """UTKFace aligned chips (200x200). Names in `exclude` (reserved or validation names) are dropped."""
    folder = Path(folder)
    skip = set(exclude)
    out = []
    bad = 0
    for f in _files(folder):
        if f in skip:
            continue
        parsed = parse_utkface_name(f)
        if parsed is None:
            bad += 1
            continue
        age, gender = parsed
        out.append(FaceRecord(source, str(folder / f), f"{source}/{f}", age=float(age), gender=gender))
    if bad:
        log.info("utkface %s: skipped %d malformed names", folder, bad)
    return out


def read_name_list(path: str | Path) -> list[str]:
    return [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]


def utkface_split(
    folder: str | Path, val_fraction: float = 0.15, seed: int = 0
) -> tuple[list[str], list[str]]:
    """A seeded train/validation split of a UTKFace folder by file name (the shared 8,778-image copy)."""
    names = [f for f in _files(Path(folder)) if parse_utkface_name(f) is not None]
    rng = random.Random(seed)
    rng.shuffle(names)
    n_val = round(len(names) * val_fraction)
    return sorted(names[n_val:]), sorted(names[:n_val])


# ---------------------------------------------------------------- CelebA
def celeba_crops(folder: str | Path) -> list[FaceRecord]:
    """The shared CelebA crops: `meta.txt` lines `image identity lex ley rex rey nx ny` (dlib points)."""
    folder = Path(folder)
    out = []
    for line in (folder / "meta.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) != 8:
            continue
        img, ident = parts[0], parts[1]
        pts = np.array(parts[2:], dtype=np.float32).reshape(3, 2)
        out.append(
            FaceRecord(
                "celeba_crops",
                str(folder / "images" / img),
                f"celeba_crops/{img}",
                identity=f"celeba:{ident}",
                landmarks=pts,
            )
        )
    return out


def celeba_samples(folder: str | Path) -> list[FaceRecord]:
    """CelebA aligned images named `<identity>_<celeba image>.jpg` (ShaharKSegal/CelebA_Samples)."""
    folder = Path(folder)
    out = []
    for f in _files(folder):
        ident, _, img = f.partition("_")
        out.append(
            FaceRecord(
                "celeba_samples",
                str(folder / f),
                f"celeba_samples/{f}",
                identity=f"celeba:{int(ident)}",
                extra={"celeba_image": img},
            )
        )
    return out


def celeba_identity_map(identity_file: str | Path) -> dict[str, str]:
    """CelebA image name -> identity id, from `identity_CelebA.txt`."""
    out = {}
    for line in Path(identity_file).read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


def celeba_gender(
    folder: str | Path, identity_file: str | Path | None = None, exclude_images: Iterable[str] = ()
) -> list[FaceRecord]:
    """Tight CelebA crops in `{Train,Validation}/{male,female}/NNNNNN.jpg.jpg` (naheri/gender_detection).

    Gender from the folder; identity joined through `identity_CelebA.txt` when given. CelebA images listed in
    `exclude_images` (already present from another source) are skipped so no face is counted twice.
    """
    folder = Path(folder)
    ids = celeba_identity_map(identity_file) if identity_file else {}
    skip = set(exclude_images)
    seen: set[str] = set()
    out = []
    for split in ("Train", "Validation"):
        for gname, g in (("male", 0), ("female", 1)):
            d = folder / split / gname
            if not d.is_dir():
                continue
            for f in _files(d):
                img = f[: -len(".jpg")] if f.endswith(".jpg.jpg") else f
                if img in skip or img in seen:
                    continue
                seen.add(img)
                ident = ids.get(img)
                out.append(
                    FaceRecord(
                        "celeba_gender",
                        str(d / f),
                        f"celeba_gender/{img}",
                        identity=f"celeba:{ident}" if ident else None,
                        gender=g,
                        extra={"celeba_image": img},
                    )
                )
    return out


def gender_by_identity(records: Iterable[FaceRecord], min_agreement: float = 0.8) -> dict[str, int]:
    """One gender per identity from gender-labelled records (e.g. `celeba_gender`'s): the majority label where at
    least `min_agreement` of that identity's labelled images agree; identities below it are left out (CelebA's
    per-image attribute disagrees with itself on some identities)."""
    votes: dict[str, list[int]] = {}
    for r in records:
        if r.identity and r.gender is not None:
            votes.setdefault(r.identity, [0, 0])[r.gender] += 1
    out = {}
    for ident, (m, f) in votes.items():
        if max(m, f) >= min_agreement * (m + f):
            out[ident] = int(f > m)
    return out


# ---------------------------------------------------------------- Caltech WebFaces
def caltech(folder: str | Path) -> dict[str, list[FaceRecord]]:
    """Caltech 10k Web Faces: image -> its annotated faces (4 points; box by `face_box_from_landmarks`)."""
    folder = Path(folder)
    by_image: dict[str, list[FaceRecord]] = {}
    for line in (folder / "landmarks.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) != 9:
            continue
        img = parts[0]
        pts = np.array(parts[1:], dtype=np.float32).reshape(4, 2)
        if pts[0, 0] > pts[1, 0]:  # keep "left eye" = smaller x, as everywhere else
            pts[[0, 1]] = pts[[1, 0]]
        faces = by_image.setdefault(img, [])
        faces.append(
            FaceRecord(
                "caltech",
                str(folder / "images" / img),
                f"caltech/{img}#{len(faces)}",
                landmarks=pts,
                box=face_box_from_landmarks(pts),
            )
        )
    return by_image


def split_images(names: Iterable[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of image names (so all faces of an image land on the same side)."""
    names = sorted(set(names))
    rng = random.Random(seed)
    rng.shuffle(names)
    n_val = round(len(names) * val_fraction)
    return sorted(names[n_val:]), sorted(names[:n_val])


# ---------------------------------------------------------------- WIDER FACE (YOLO labels), MaskON (VOC)
def wider_yolo(images: str | Path, labels: str | Path) -> dict[str, list[FaceRecord]]:
    """WIDER FACE subset with YOLO labels `0 cx cy w h` (normalised); boxes only, no landmarks."""
    images, labels = Path(images), Path(labels)
    out: dict[str, list[FaceRecord]] = {}
    for f in _files(images):
        recs = wider_yolo_image(images, labels, f)
        if recs is not None:
            out[f] = recs
    return out


def wider_yolo_image(images: Path, labels: Path, f: str) -> list[FaceRecord] | None:
    """The faces of one WIDER FACE image `f` (its YOLO label file beside, in `labels`); None when it has no label
    file or cannot be read."""
    import cv2

    lab = labels / (Path(f).stem + ".txt")
    if not lab.exists():
        return None
    im = cv2.imread(str(images / f), cv2.IMREAD_REDUCED_COLOR_2)
    if im is None:
        return None
    h, w = im.shape[0] * 2, im.shape[1] * 2
    recs = []
    for i, line in enumerate(lab.read_text().splitlines()):
        p = line.split()
        if len(p) != 5:
            continue
        cx, cy, bw, bh = (float(v) for v in p[1:])
        box = np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], np.float32)
        recs.append(FaceRecord("wider", str(images / f), f"wider/{f}#{i}", box=box))
    return recs


def read_gender_labels(label_file: str | Path) -> dict[str, int]:
    """A hand-labelled gender file: lines `KEY M|F|?` (`#` comments, blank lines allowed) -> {key: 0 man / 1 woman};
    faces labelled `?` are left out. A malformed line, or a key given twice, is an InputError naming the line."""
    out: dict[str, int] = {}
    seen: set[str] = set()
    for n, line in enumerate(Path(label_file).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("M", "F", "?"):
            raise InputError(f"{label_file}:{n}: expected 'KEY M|F|?', got {line.strip()!r}")
        if parts[0] in seen:
            raise InputError(f"{label_file}:{n}: {parts[0]} is labelled twice")
        seen.add(parts[0])
        if parts[1] != "?":
            out[parts[0]] = 0 if parts[1] == "M" else 1
    return out


def wider_gender(images: str | Path, labels: str | Path, label_file: str | Path) -> list[FaceRecord]:
    """The WIDER FACE faces of a hand-labelled gender file (lines `wider/IMAGE#INDEX M|F|?`, `#` comments), with
    their boxes from the YOLO labels; faces labelled `?` are left out. A key the subset does not hold is an
    InputError: the labels belong to another copy of the data."""
    wanted = read_gender_labels(label_file)
    images = Path(images)
    found: dict[str, FaceRecord] = {}
    for img in sorted({k.split("/", 1)[1].split("#")[0] for k in wanted}):
        for r in wider_yolo_image(images, Path(labels), img) or []:
            if r.key in wanted:
                r.gender = wanted[r.key]
                found[r.key] = r
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise InputError(f"{label_file}: {len(missing)} labelled faces are not in {images} (first: {missing[0]})")
    return [found[k] for k in sorted(found)]


def maskon_voc(images: str | Path, annotations: str | Path) -> dict[str, list[FaceRecord]]:
    """MaskON faces with and without masks: Pascal VOC boxes; no landmarks."""
    import xml.etree.ElementTree as ET

    images, annotations = Path(images), Path(annotations)
    out: dict[str, list[FaceRecord]] = {}
    for f in sorted(os.listdir(annotations)):
        if not f.endswith(".xml"):
            continue
        root = ET.parse(annotations / f).getroot()
        fname = root.findtext("filename") or (Path(f).stem + ".png")
        path = images / fname
        if not path.exists():
            continue
        recs = []
        for i, obj in enumerate(root.iter("object")):
            bb = obj.find("bndbox")
            if bb is None:
                continue
            box = np.array(
                [float(bb.findtext(k) or 0) for k in ("xmin", "ymin", "xmax", "ymax")], dtype=np.float32
            )
            recs.append(
                FaceRecord("maskon", str(path), f"maskon/{fname}#{i}", box=box, extra={"label": obj.findtext("name")})
            )
        out[fname] = recs
    return out


MASKON_MIN_WIDTH = 32.0  # px: a face narrower than this can be neither aligned reliably nor labelled by eye


def maskon_faces(images: str | Path, annotations: str | Path, min_width: float = MASKON_MIN_WIDTH) -> list[FaceRecord]:
    """MaskON's faces (masked, badly masked and bare; `maskon_voc`) at least `min_width` px wide, in image order:
    the recognizer's source of faces from the wild with masks. Boxes only, so the crop cache aligns each at the face
    the detector finds in its box; a face it misses is left out of training."""
    return [r for recs in maskon_voc(images, annotations).values() for r in recs
            if r.box is not None and float(r.box[2] - r.box[0]) >= min_width]


# ------------------------------------------------------------------ per-image view (detector training, evaluation)
@dataclass
class DetImage:
    """One training image and its annotated faces. Landmarks are NaN for faces (or sources) without them."""

    path: str
    boxes: npt.NDArray[np.float32]
    landmarks: npt.NDArray[np.float32]


def to_det_images(by_image: dict[str, list[FaceRecord]], points: int = 4) -> list[DetImage]:
    out = []
    for recs in by_image.values():
        if not recs:
            continue
        boxes = np.stack([r.box for r in recs if r.box is not None]).astype(np.float32)
        lms = np.full((len(recs), points, 2), np.nan, np.float32)
        for i, r in enumerate(recs):
            if r.landmarks is not None and r.landmarks.shape == (points, 2):
                lms[i] = r.landmarks
        out.append(DetImage(recs[0].path, boxes, lms))
    return out
