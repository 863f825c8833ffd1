"""benchmarks/wider_gender.py end to end: the release rule `wild`'s selection figures, from a WIDER-style folder
(images, YOLO labels, a gender label file) built here around real Caltech WebFaces photos, through the shipped
detector, landmark refiner and recognizer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2

from edge_mtl.config import AttributesConfig
from edge_mtl.data.sources import caltech


def test_wider_gender_bench_scores_found_faces_and_counts_missed_ones(data_dir: Path, repo_root: Path,
                                                                      tmp_path: Path) -> None:
    by_image = caltech(data_dir / "caltech_webfaces")
    big = [(img, recs[0]) for img, recs in sorted(by_image.items())
           if len(recs) == 1 and recs[0].box is not None and recs[0].box[2] - recs[0].box[0] > 80][:3]
    assert len(big) == 3
    wider = tmp_path / "widerface"
    (wider / "images" / "train").mkdir(parents=True)
    (wider / "labels" / "train").mkdir(parents=True)
    lines = []
    for k, (img, rec) in enumerate(big):
        name = f"{k}_Caltech_{Path(img).stem}.jpg"
        shutil.copy(rec.path, wider / "images" / "train" / name)
        h, w = cv2.imread(rec.path).shape[:2]
        x1, y1, x2, y2 = (float(v) for v in rec.box)
        yolo = [f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}"]
        yolo.append("0 0.02 0.02 0.03 0.03")  # a "face" in a corner: not found by the detector
        (wider / "labels" / "train" / f"{Path(name).stem}.txt").write_text("\n".join(yolo) + "\n")
        lines += [f"wider/{name}#0 {'MF'[k % 2]}", f"wider/{name}#1 M" if k == 0 else f"wider/{name}#1 ?"]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(lines) + "\n")
    model = repo_root / "export" / "recognizer.onnx"
    cmd = [sys.executable, str(repo_root / "benchmarks" / "wider_gender.py"), "--crops", str(tmp_path / "crops"),
           "--wider", str(wider), "--detector", str(repo_root / "export" / "detector.onnx"),
           "--landmarks", str(repo_root / "export" / "landmarks.onnx"), str(model), str(model), "--labels", str(labels)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert len(rows) == 2 and rows[0] == rows[1]  # one line per model, the same model twice
    assert rows[0]["min_confidence"] == AttributesConfig().gender_min_confidence  # the daemon's floor by default
    a = rows[0]["all"]
    assert a["n"] == 4 and a["without_face"] == 1  # three photos' faces and the corner that is no face
    assert rows[0]["women"]["n"] == 1 and rows[0]["men"]["n"] == 3
    assert a["coverage"] <= 0.75 and 0 <= a["gender_accuracy_all"] <= a["coverage"]
    assert a["women_read_as_men"] + a["men_read_as_women"] == round(a["coverage"] * 4) - round(
        a["gender_accuracy_all"] * 4)
    index = json.loads((tmp_path / "crops" / "wider_gender_4.json").read_text())
    assert index["status"].count("missing") == 1 and index["status"].count("detected") == 3
    r = subprocess.run([*cmd, "--min-confidence", "0.5"], capture_output=True, text=True, cwd=repo_root, timeout=300)
    low = json.loads(r.stdout.splitlines()[0])
    assert low["min_confidence"] == 0.5 and low["all"]["coverage"] >= a["coverage"]  # a lower floor withholds less
    assert rows[0]["input_size"] == 640
    widths = rows[0]["face_width_px"]  # faces picked wider than 80 px; the corner box: 3% of a <= 480 px photo
    assert widths["found_median"] > 80 and widths["not_found_median"] < 15
    r = subprocess.run([*cmd, "--input-size", "960"], capture_output=True, text=True, cwd=repo_root, timeout=300)
    big_input = json.loads(r.stdout.splitlines()[0])
    assert big_input["input_size"] == 960 and big_input["all"]["n"] == 4  # aligned again, into a cache of its own
    assert (tmp_path / "crops" / "wider_gender_4_960.json").exists()
    assert json.loads((tmp_path / "crops" / "wider_gender_4.json").read_text()) == index  # the 640 cache untouched
    labels.write_text("wider/nowhere.jpg#0 M\n")  # labels of another copy of the data: one line, exit 2
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert r.returncode == 2 and "not in" in r.stderr and "Traceback" not in r.stderr

