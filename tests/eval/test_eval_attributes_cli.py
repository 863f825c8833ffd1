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
    assert 0 <= res["age_mae"] < 30 and 0.5 <= res["gender_accuracy"] <= 1
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
