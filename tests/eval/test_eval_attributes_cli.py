"""`edge-mtl eval attributes` through the real detector and recognizer on real UTKFace images: the validation split,
the held-out (reserved) set inside a copy of the full UTKFace, and its refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge_mtl.commands.cli import main
from edge_mtl.eval.attributes import AGE_BANDS

pytestmark = pytest.mark.data


def _eval(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    rc = main(["eval", "attributes", "--json", *args])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 else {}), err


def test_val_split_limited(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, res, _ = _eval(capsys, "--data", str(data_dir), "--limit", "12")
    assert rc == 0 and res["images"] == 12 and res["split"] == "val"
    # recognizer-1.5 on these 12 faces (eleven aged 10, one 100): MAE 1.96 years, 11 of 12 genders right; the
    # floors on a representative subset are in tests/e2e/test_shipped_floors.py
    assert res["age_mae"] < 2.5 and res["gender_accuracy"] >= 10 / 12, res
    rows = res["gender_selective"]
    assert [r["min_confidence"] for r in rows] == [0.6, 0.7, 0.8, 0.9]
    assert [r["coverage"] for r in rows] == sorted((r["coverage"] for r in rows), reverse=True)


def test_text_report_is_tables(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "attributes", "--data", str(data_dir), "--limit", "12"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "images: 12" in out and "split: val" in out
    i = out.index("gender_selective_by_age:")
    assert out[i + 1].split() == ["min_age", "min_confidence", "coverage", "accuracy", "dropped_under_13",
                                  "adults_dropped"]
    assert len(out[i + 2].split()) == 6 and out[i + 2].split()[:2] == ["0", "0.5"]


def _fake_full(data_dir: Path, tmp_path: Path, names: list[str]) -> tuple[Path, Path]:
    """A data root whose reserved list names real images of the shared UTKFace copy, and a 'full' folder of them."""
    root, full = tmp_path / "data", tmp_path / "full"
    root.mkdir()
    full.mkdir()
    for entry in os.listdir(data_dir):
        if entry != "utkface_reserved.txt":
            (root / entry).symlink_to(data_dir / entry)
    (root / "utkface_reserved.txt").write_text("".join(n + "\n" for n in names))
    for n in names:
        (full / n).symlink_to(data_dir / "utkface" / n)
    return root, full


def test_reserved_split_reads_the_listed_images(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = sorted(os.listdir(data_dir / "utkface"))[::1400][:6]  # ages spread over the bands
    root, full = _fake_full(data_dir, tmp_path, names)
    rc, res, _ = _eval(capsys, "--data", str(root), "--split", "reserved", "--utkface-full", str(full))
    assert rc == 0 and res["images"] == 6 and res["split"] == "reserved"
    # exactly the listed images were read: the per-band counts are those of the listed ages
    ages = [int(n.split("_")[0]) for n in names]
    want = {f"{lo}-{hi - 1}": sum(lo <= a < hi for a in ages) for lo, hi in AGE_BANDS}
    assert {k: b["n"] for k, b in res["bands"].items()} == {k: n for k, n in want.items() if n}


def test_reserved_split_refusals(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = sorted(os.listdir(data_dir / "utkface"))[:3]
    root, full = _fake_full(data_dir, tmp_path, names)
    rc, _, err = _eval(capsys, "--data", str(root), "--split", "reserved")
    assert rc == 2 and "needs --utkface-full" in err and len(err.strip().splitlines()) == 1
    (full / names[1]).unlink()
    rc, _, err = _eval(capsys, "--data", str(root), "--split", "reserved", "--utkface-full", str(full))
    assert rc == 2 and "1 of the 3 reserved images are not in" in err and names[1] in err
    (root / "utkface_reserved.txt").unlink()
    rc, _, err = _eval(capsys, "--data", str(root), "--split", "reserved", "--utkface-full", str(full))
    assert rc == 2 and "utkface_reserved.txt" in err


# ------------------------------------------------------------------ FairFace-style folders, populations
def _fairface_dir(data_dir: Path, tmp_path: Path, names: list[str]) -> Path:
    """A folder laid out like FairFace-540 (ground_truth.json beside the images) holding real UTKFace chips,
    labelled with their own age bins and genders."""
    from edge_mtl.eval.populations import FAIRFACE_BIN_LABELS, age_bin

    folder = tmp_path / "fairface"
    folder.mkdir()
    entries = []
    for i, n in enumerate(names):
        age, gender = int(n.split("_")[0]), int(n.split("_")[1])
        (folder / f"ff_{i}.jpg").symlink_to(data_dir / "utkface" / n)
        entries.append({"filename": f"ff_{i}.jpg", "age": FAIRFACE_BIN_LABELS[int(age_bin([age])[0])],
                        "gender": ["Male", "Female"][gender]})
    (folder / "ground_truth.json").write_text(json.dumps(entries))
    return folder


def test_fairface_split_agrees_with_analyze(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every figure of the FairFace table recomputed by hand from `edge-mtl analyze --json` on the same images
    (the gender label it prints, null when withheld; its age), for the face the evaluation takes (central_face)."""
    import numpy as np

    from edge_mtl.eval.populations import FAIRFACE_BIN_LABELS, age_bin
    from edge_mtl.eval.suites import central_face
    from edge_mtl.types import Detections

    names = sorted(os.listdir(data_dir / "utkface"))[5::700][:10]
    folder = _fairface_dir(data_dir, tmp_path, names)
    assert main(["analyze", "--json", "--no-embedding", str(folder)]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    by_file = {Path(r["image"]).name: r["faces"] for r in lines}
    single = json.loads((folder / "ground_truth.json").read_text())

    def face(faces: list[dict]) -> dict:
        d = Detections(np.array([f["box"] for f in faces], np.float32), np.array([f["score"] for f in faces],
                       np.float32), np.array([f["landmarks"] for f in faces], np.float32))
        return faces[central_face(d, (200, 200))]

    rc, res, _ = _eval(capsys, "--split", "fairface", "--fairface", str(folder))
    assert rc == 0 and res["images"] == len(single) and res["images_without_face"] == 0
    labelled = right = w2m = m2w = exact = near = 0
    for t in single:
        f = face(by_file[t["filename"]])
        g = f["gender"]["label"]
        true_g = t["gender"].lower()
        labelled += g is not None
        right += g == true_g
        w2m += g == "male" and true_g == "female"
        m2w += g == "female" and true_g == "male"
        d = abs(int(age_bin([f["age"]["years"]])[0]) - FAIRFACE_BIN_LABELS.index(t["age"]))
        exact += d == 0
        near += d <= 1
    n = len(single)
    o = res["overall"]
    assert o["n"] == n and o["coverage"] == round(labelled / n, 4)
    assert o["gender_accuracy_all"] == round(right / n, 4)
    assert o["gender_accuracy_labelled"] == round(right / labelled, 4)
    assert (o["women_read_as_men"], o["men_read_as_women"]) == (w2m, m2w)
    assert (o["age_bin_exact"], o["age_bin_within_one"]) == (round(exact / n, 4), round(near / n, 4))
    assert sum(r["n"] for r in res["by_age_bin"].values()) == n


def test_fairface_split_refusals(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _eval(capsys, "--split", "fairface")
    assert rc == 2 and "needs --fairface DIR" in err and len(err.strip().splitlines()) == 1
    folder = _fairface_dir(data_dir, tmp_path, sorted(os.listdir(data_dir / "utkface"))[:2])
    (folder / "ff_1.jpg").unlink()
    rc, _, err = _eval(capsys, "--split", "fairface", "--fairface", str(folder))
    assert rc == 2 and "ff_1.jpg is listed in ground_truth.json but absent" in err
    (folder / "ground_truth.json").write_text(json.dumps([{"filename": "ff_0.jpg", "age": "5-9", "gender": "F"}]))
    rc, _, err = _eval(capsys, "--split", "fairface", "--fairface", str(folder))
    assert rc == 2 and "unknown age bin '5-9'" in err
    (folder / "ground_truth.json").write_text("{")
    rc, _, err = _eval(capsys, "--split", "fairface", "--fairface", str(folder))
    assert rc == 2 and "not JSON" in err


def test_utkface_populations_by_race(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_mtl.data import sources as S
    from edge_mtl.eval.populations import UTKFACE_RACES, utkface_race

    rc, res, _ = _eval(capsys, "--data", str(data_dir), "--limit", "24")
    assert rc == 0
    _, names = S.utkface_split(data_dir / "utkface")
    races = [utkface_race(n) for n in names[:24]]
    want = {UTKFACE_RACES[c]: races.count(c) for c in set(races) if c is not None}
    assert {k: v["n"] for k, v in res["by_race"].items() if " " not in k} == want
    cells = res["by_race_and_age"]
    assert sum(v["n"] for v in cells.values()) == sum(want.values())
    for row in [*cells.values(), *res["by_race"].values()]:
        assert row["gender_accuracy_all"] <= row["coverage"] + 1e-9
        assert 0 <= row["gender_ece"] <= 1
