"""Dataset parsers: UTKFace names and split, Caltech landmarks (real files where available)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_mtl.data.sources import (
    caltech,
    celeba_crops,
    parse_utkface_name,
    split_images,
    utkface,
    utkface_split,
)


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("25_1_0_20170116174525125.jpg.chip.jpg", (25, 1)),
        ("1_0_2_20161219140530307.jpg.chip.jpg", (1, 0)),
        ("116_0_0_20170120134921760.jpg.chip.jpg", (116, 0)),
        ("39_1_20170116174525125.jpg.chip.jpg", None),  # race missing (a known malformed UTKFace name)
        ("25_2_0_20170116174525125.jpg.chip.jpg", None),  # gender is 0 or 1
        ("25_1_0_20170116174525125.jpg", None),
        ("x_1_0_1.jpg.chip.jpg", None),
        ("", None),
    ],
)
def test_parse_utkface_name(name: str, want: tuple[int, int] | None) -> None:
    assert parse_utkface_name(name) == want


def _fake_utk(folder: Path, n: int) -> list[str]:
    folder.mkdir()
    names = [f"{20 + i % 50}_{i % 2}_{i % 5}_2017011{i:07d}.jpg.chip.jpg" for i in range(n)]
    for f in [*names, "39_1_20170116174525125.jpg.chip.jpg", "notes.txt"]:
        (folder / f).write_bytes(b"")
    return names


def test_utkface_split_deterministic_and_disjoint(tmp_path: Path) -> None:
    names = _fake_utk(tmp_path / "utk", 200)
    tr, va = utkface_split(tmp_path / "utk", 0.15, seed=3)
    assert (tr, va) == utkface_split(tmp_path / "utk", 0.15, seed=3)
    assert not set(tr) & set(va)
    assert sorted(tr + va) == sorted(names), "malformed names are left out, nothing else"
    assert len(va) == 30
    assert utkface_split(tmp_path / "utk", 0.15, seed=4)[1] != va
    recs = utkface(tmp_path / "utk", exclude=va)
    assert len(recs) == 170 and all(r.age is not None and r.gender in (0, 1) for r in recs)
    assert {Path(r.path).name for r in recs} == set(tr)


def test_split_images_deterministic_and_disjoint() -> None:
    names = [f"img{i:04d}.jpg" for i in range(100)] + ["img0001.jpg"]
    tr, va = split_images(names, 0.2, seed=0)
    assert (tr, va) == split_images(reversed(names), 0.2, seed=0), "order of input does not matter"
    assert not set(tr) & set(va) and len(tr) + len(va) == 100 and len(va) == 20


def test_utkface_split_real(data_dir: Path) -> None:
    folder = data_dir / "utkface"
    tr, va = utkface_split(folder, 0.15, seed=0)
    assert (tr, va) == utkface_split(folder, 0.15, seed=0)
    assert not set(tr) & set(va)
    assert len(tr) + len(va) == 8778 and len(va) == round(8778 * 0.15)
    reserved = data_dir / "utkface_reserved.txt"
    if reserved.is_file():
        res = {ln.strip() for ln in reserved.read_text().splitlines() if ln.strip()}
        assert not res & set(tr + va), "reserved names are not in the shared copy"


def test_caltech_real(data_dir: Path) -> None:
    folder = data_dir / "caltech_webfaces"
    by_image = caltech(folder)
    faces = [r for recs in by_image.values() for r in recs]
    lines = [ln for ln in (folder / "landmarks.txt").read_text().splitlines() if len(ln.split()) == 9]
    assert len(faces) == len(lines) and len(by_image) > 6000
    lm = np.stack([r.landmarks for r in faces if r.landmarks is not None])
    box = np.stack([r.box for r in faces if r.box is not None])
    assert lm.shape == (len(faces), 4, 2) and box.shape == (len(faces), 4)
    assert (lm[:, 0, 0] < lm[:, 1, 0]).all(), "left eye = smaller x"
    # every box is a square around its eyes, nose and mouth
    assert np.allclose(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1], rtol=1e-4)
    assert ((lm[..., 0] > box[:, None, 0]) & (lm[..., 0] < box[:, None, 2])).all()
    assert ((lm[..., 1] > box[:, None, 1]) & (lm[..., 1] < box[:, None, 3])).all()
    first = by_image["pic00001.jpg"][0]
    assert first.key == "caltech/pic00001.jpg#0" and Path(first.path).is_file()
    np.testing.assert_allclose(first.landmarks[0], [211.43, 178.66], rtol=1e-6)
    multi = next(k for k, v in by_image.items() if len(v) > 1)
    assert [r.key for r in by_image[multi]] == [f"caltech/{multi}#{i}" for i in range(len(by_image[multi]))]


def test_caltech_swaps_mirrored_eyes(tmp_path: Path) -> None:
    (tmp_path / "landmarks.txt").write_text("a.jpg 70 50 30 52 50 70 50 85\nbad line\n")
    (rec,) = caltech(tmp_path)["a.jpg"]
    assert rec.landmarks is not None
    np.testing.assert_array_equal(rec.landmarks, [[30, 52], [70, 50], [50, 70], [50, 85]])


def test_celeba_crops_real(data_dir: Path) -> None:
    recs = celeba_crops(data_dir / "celeba_crops")
    assert len(recs) == 6015
    assert len({r.identity for r in recs}) == 298
    assert all(r.identity is not None and r.identity.startswith("celeba:") for r in recs)
    lm = np.stack([r.landmarks for r in recs if r.landmarks is not None])
    assert lm.shape == (6015, 3, 2) and (lm[:, 0, 0] < lm[:, 1, 0]).all()


def _fake_wider(root: Path) -> tuple[Path, Path]:
    import cv2

    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for name in ("a", "b"):
        cv2.imwrite(str(images / f"{name}.jpg"), np.full((100, 200, 3), 128, np.uint8))
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n0 0.25 0.25 0.1 0.2\n")
    (labels / "b.txt").write_text("0 0.75 0.5 0.1 0.2\n")
    return images, labels


def test_wider_gender_reads_labels_and_boxes(tmp_path: Path) -> None:
    from edge_mtl.data.sources import wider_gender

    images, labels = _fake_wider(tmp_path)
    lab = tmp_path / "labels.txt"
    lab.write_text("# comment\n\nwider/a.jpg#1 F\nwider/a.jpg#0 ?\nwider/b.jpg#0 M\n")
    recs = wider_gender(images, labels, lab)
    assert [(r.key, r.gender) for r in recs] == [("wider/a.jpg#1", 1), ("wider/b.jpg#0", 0)]
    np.testing.assert_allclose(recs[0].box, [40, 15, 60, 35])  # cx .25, cy .25, w .1, h .2 of 200 x 100
    lab.write_text("wider/a.jpg#5 M\n")
    from edge_mtl.errors import InputError

    with pytest.raises(InputError, match="1 labelled faces are not in"):
        wider_gender(images, labels, lab)


def test_shipped_wider_gender_labels_are_well_formed() -> None:
    import re

    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    keys: list[str] = []
    for name, faces, labelled in (("wider_gender_labels.txt", 560, 347), ("wider_gender_labels_2.txt", 583, 363)):
        lines = [ln for ln in (bench / name).read_text().splitlines() if ln and not ln.startswith("#")]
        assert all(re.fullmatch(r"wider/\d+_[\w-]+\.jpg#\d+ [MF?]", ln) for ln in lines), name
        assert len(lines) == faces and sum(ln.endswith((" M", " F")) for ln in lines) == labelled, name
        keys += [ln.split()[0] for ln in lines]
    assert len(keys) == len(set(keys)) == 1143  # the two batches are disjoint


def test_gender_by_identity_keeps_identities_that_agree() -> None:
    from edge_mtl.data.sources import FaceRecord, gender_by_identity

    def rec(ident: str | None, g: int | None) -> FaceRecord:
        return FaceRecord("celeba_gender", "p", "k", identity=ident, gender=g)

    recs = [rec("a", 1)] * 4 + [rec("a", 0)]  # 80% female: kept
    recs += [rec("b", 0)] * 3 + [rec("b", 1)] * 2  # 60%: left out
    recs += [rec("c", 0), rec(None, 1), rec("d", None)]
    assert gender_by_identity(recs) == {"a": 1, "c": 0}
    assert gender_by_identity(recs, min_agreement=0.6) == {"a": 1, "b": 0, "c": 0}


def test_read_gender_labels_parses_and_rejects_bad_lines(tmp_path: Path) -> None:
    from edge_mtl.data.sources import read_gender_labels
    from edge_mtl.errors import InputError

    lab = tmp_path / "labels.txt"
    lab.write_text("# who labelled, how\n\ncaltech/a.jpg#0 F\ncaltech/a.jpg#1 ?\ncaltech/b.jpg#0 M\n")
    assert read_gender_labels(lab) == {"caltech/a.jpg#0": 1, "caltech/b.jpg#0": 0}
    lab.write_text("caltech/a.jpg#0 F\ncaltech/a.jpg#0 ?\n")
    with pytest.raises(InputError, match=r"labels.txt:2: caltech/a.jpg#0 is labelled twice"):
        read_gender_labels(lab)
    lab.write_text("caltech/a.jpg#0 female\n")
    with pytest.raises(InputError, match=r"labels.txt:1: expected 'KEY M\|F\|\?'"):
        read_gender_labels(lab)


def test_apply_gender_labels_labels_by_key_and_rejects_unknown_keys(tmp_path: Path) -> None:
    from edge_mtl.data.sources import FaceRecord
    from edge_mtl.errors import InputError
    from edge_mtl.train.tasks.recognizer import apply_gender_labels

    recs = [FaceRecord("caltech", f"/x/{n}.jpg", f"caltech/{n}.jpg#0") for n in "abc"]
    recs[2].gender = 0
    lab = tmp_path / "labels.txt"
    lab.write_text("caltech/a.jpg#0 F\ncaltech/b.jpg#0 ?\ncaltech/c.jpg#0 F\n")
    assert apply_gender_labels(recs, [lab]) == {"caltech/a.jpg#0", "caltech/c.jpg#0"}
    assert [r.gender for r in recs] == [1, None, 1]  # a hand label overrides a source's own
    lab.write_text("caltech/z.jpg#0 M\n")
    with pytest.raises(InputError, match="1 labelled faces are in none of the sources"):
        apply_gender_labels(recs, [lab])


def test_shipped_caltech_gender_labels_match_the_caltech_faces(data_dir: Path, repo_root: Path) -> None:
    """configs/labels/caltech_gender*.txt name faces of the shared Caltech WebFaces copy, each once, and give the
    faces their labels through the training path."""
    from edge_mtl.data.sources import caltech, read_gender_labels
    from edge_mtl.train.tasks.recognizer import apply_gender_labels

    paths = [repo_root / "configs" / "labels" / f"caltech_gender{n}.txt" for n in ("", "_2", "_3")]
    keys = []
    counts = ((2880, 2576, 997), (1604, 1445, 565), (1327, 1108, 450))  # faces, labelled, women
    for path, (faces, labelled, women) in zip(paths, counts, strict=True):
        lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
        keys += [ln.split()[0] for ln in lines]
        labels = read_gender_labels(path)
        assert len(lines) == faces and len(labels) == labelled and sum(labels.values()) == women, path.name
    assert len(keys) == len(set(keys)) == 5811  # the batches are disjoint
    recs = [r for rs in caltech(data_dir / "caltech_webfaces").values() for r in rs]
    labels = {k: g for f in paths for k, g in read_gender_labels(f).items()}
    assert apply_gender_labels(recs, paths) == set(labels)
    by_key = {r.key: r for r in recs}
    assert all(by_key[k].gender == g for k, g in labels.items())
    assert sum(r.gender is not None for r in recs) == 2576 + 1445 + 1108


def _voc(path: Path, filename: str, boxes: list[tuple[str, int, int, int, int]]) -> None:
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                   f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in boxes)
    path.write_text(f"<annotation><filename>{filename}</filename>{objs}</annotation>")


def test_maskon_faces_keep_faces_wide_enough_to_label(tmp_path: Path) -> None:
    import cv2

    from edge_mtl.data.sources import MASKON_MIN_WIDTH, maskon_faces, maskon_voc

    images, ann = tmp_path / "images", tmp_path / "annotations"
    images.mkdir()
    ann.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(images / name), np.zeros((100, 200, 3), np.uint8))
    _voc(ann / "a.xml", "a.png", [("con_mascarilla", 10, 10, 50, 60), ("sin_mascarilla", 60, 10, 80, 30)])
    _voc(ann / "b.xml", "b.png", [("mascarilla_mal_puesta", 100, 20, 132, 60)])
    _voc(ann / "c.xml", "c.png", [("con_mascarilla", 10, 10, 90, 90)])  # its image is absent: skipped
    assert sum(len(v) for v in maskon_voc(images, ann).values()) == 3
    recs = maskon_faces(images, ann)
    assert MASKON_MIN_WIDTH == 32.0
    assert [(r.key, r.extra["label"]) for r in recs] == [
        ("maskon/a.png#0", "con_mascarilla"), ("maskon/b.png#0", "mascarilla_mal_puesta")]  # 20 px wide: left out
    np.testing.assert_allclose(recs[1].box, [100, 20, 132, 60])
    assert all(r.gender is None and r.landmarks is None for r in recs)
    assert [r.key for r in maskon_faces(images, ann, min_width=10)] == [
        "maskon/a.png#0", "maskon/a.png#1", "maskon/b.png#0"]


def test_shipped_maskon_gender_labels_are_well_formed(repo_root: Path) -> None:
    """configs/labels/maskon_gender.txt: one line per face of the `maskon` source the detector finds, each once.
    (MaskON is not in the shared data; a run with a copy checks the keys: `apply_gender_labels` rejects unknown
    ones.)"""
    import re

    from edge_mtl.data.sources import read_gender_labels

    path = repo_root / "configs" / "labels" / "maskon_gender.txt"
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    assert all(re.fullmatch(r"maskon/[\w.-]+\.(jpg|jpeg|png)#\d+ [MF?]", ln) for ln in lines)
    keys = [ln.split()[0] for ln in lines]
    labels = read_gender_labels(path)
    assert len(keys) == len(set(keys)) == 2423
    assert (len(labels), sum(labels.values())) == (1060 + 897, 897)
