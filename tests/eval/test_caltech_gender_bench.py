"""benchmarks/caltech_gender.py end to end on a few of the shipped hand-labelled Caltech faces: aligned by the shipped
detector and landmark refiner into a cache of their own, scored by the shipped recognizer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_caltech_gender_bench_scores_the_labelled_faces(data_dir: Path, repo_root: Path, tmp_path: Path) -> None:
    shipped = (repo_root / "configs" / "labels" / "caltech_gender.txt").read_text().splitlines()
    lines = [ln for ln in shipped if ln.endswith(" F")][:3] + [ln for ln in shipped if ln.endswith(" M")][:5]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join([*lines, next(ln for ln in shipped if ln.endswith(" ?"))]) + "\n")
    model = str(repo_root / "export" / "recognizer.onnx")
    cmd = [sys.executable, str(repo_root / "benchmarks" / "caltech_gender.py"), "--crops", str(tmp_path / "crops"),
           "--data", str(data_dir), "--labels", str(labels), "--detector", str(repo_root / "export" / "detector.onnx"),
           "--landmarks", str(repo_root / "export" / "landmarks.onnx"), model, model]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert len(rows) == 2 and rows[0] == rows[1]  # one line per model, the same model twice
    row = rows[0]
    assert row["faces"] + row["not_aligned"] == 8 and row["women"] <= 3  # the ? face is left out
    wrong = row["women_read_as_men"] + row["men_read_as_women"]
    assert round((1 - row["gender_accuracy"]) * row["faces"]) == wrong
    assert (tmp_path / "crops" / "caltech_gender_8.json").exists()
    labels.write_text("caltech/nowhere.jpg#0 M\n")  # a face the shared copy does not hold: one line, exit 2
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert r.returncode == 2 and "1 labelled faces are not in" in r.stderr and "Traceback" not in r.stderr
