"""The shipped recognizer at runtime on real aligned faces (LFW through the shipped detector), with and without
test-time flip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from edge_mtl.config import AppConfig
from edge_mtl.eval.suites import crops_for_images
from edge_mtl.runtime.registry import load_detector, open_recognizer

PEOPLE = ["Aaron_Eckhart", "AJ_Cook", "Colin_Powell", "Serena_Williams"]


@pytest.fixture(scope="module")
def crops(data_dir: Path, repo_root: Path) -> npt.NDArray[np.uint8]:
    base = data_dir / "lfw" / "images_deepfunneled"
    paths = [sorted((base / p).glob("*.jpg"))[0] for p in PEOPLE]
    out, missing, _ = crops_for_images(paths, load_detector(AppConfig()), 112)
    assert missing == 0
    return out


def test_flip_makes_every_output_mirror_invariant(crops: npt.NDArray[np.uint8], repo_root: Path) -> None:
    model = repo_root / "export" / "recognizer.onnx"
    plain, flip = open_recognizer(model), open_recognizer(model, flip=True)
    mirrored = np.ascontiguousarray(crops[:, :, ::-1])
    p, pm = plain.analyze(crops), plain.analyze(mirrored)
    f, fm = flip.analyze(crops), flip.analyze(mirrored)
    # without flip the network is not exactly mirror-symmetric: its readings of a face and of its mirror differ
    assert np.abs(p.female_prob - pm.female_prob).max() > 1e-4
    assert np.abs(p.age_years - pm.age_years).max() > 1e-3
    # with flip they are the same reading
    for name in ("embeddings", "age_years", "age_std", "female_prob", "quality"):
        np.testing.assert_allclose(getattr(f, name), getattr(fm, name), rtol=1e-4, atol=1e-5, err_msg=name)
    # and it is the combination of the two plain readings
    emb = p.embeddings + pm.embeddings
    np.testing.assert_allclose(f.embeddings, emb / np.linalg.norm(emb, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(f.female_prob, (p.female_prob + pm.female_prob) / 2, atol=1e-5)
    np.testing.assert_allclose(f.age_years, (p.age_years + pm.age_years) / 2, atol=1e-4)
    np.testing.assert_allclose(f.quality, (p.quality + pm.quality) / 2, atol=1e-5)
    # the age spread is the two-component mixture's: never below the smaller of the two spreads
    assert (f.age_std >= np.minimum(p.age_std, pm.age_std) - 1e-4).all()
    assert np.allclose(np.linalg.norm(f.embeddings, axis=1), 1.0, atol=1e-5)


def test_flip_keeps_faces_in_order_across_batches(crops: npt.NDArray[np.uint8], repo_root: Path) -> None:
    model = repo_root / "export" / "recognizer.onnx"
    whole = open_recognizer(model, flip=True).analyze(crops)
    # 2N mirrored-and-plain crops split into batches of 3: no face's halves may be paired with another's
    small = open_recognizer(model, max_batch=3, flip=True).analyze(crops)
    one = [open_recognizer(model, flip=True).analyze(crops[i : i + 1]) for i in range(len(crops))]
    np.testing.assert_allclose(small.embeddings, whole.embeddings, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([o.age_years for o in one]), whole.age_years, atol=1e-4)
    # different people stay different: each face's embedding is closest to itself
    sims = whole.embeddings @ whole.embeddings.T
    assert (sims.argmax(1) == np.arange(len(crops))).all()
    empty = open_recognizer(model, flip=True).analyze(np.zeros((0, 112, 112, 3), np.uint8))
    assert len(empty) == 0 and empty.embeddings.shape == (0, 128)


def test_analyze_cli_flip_agrees_with_itself_on_mirrored_photos(data_dir: Path, tmp_path: Path) -> None:
    """`edge-mtl analyze --flip`: photos and their mirrors get nearly the same readings (the detector's landmarks
    of the two differ by a pixel or two, so not exactly: one photo's age can still move a year), on average much
    nearer than without the flip."""
    import cv2

    lfw = data_dir / "lfw" / "images_deepfunneled"
    people = ["Colin_Powell", "George_W_Bush", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon",
              "Hugo_Chavez", "Jacques_Chirac"]
    photos = [sorted((lfw / p).glob("*.jpg"))[0] for p in people]
    mirrors = [tmp_path / f"mirror{i}.png" for i in range(len(photos))]
    for photo, mirror in zip(photos, mirrors, strict=True):
        cv2.imwrite(str(mirror), cv2.imread(str(photo))[:, ::-1])

    def disagreement(*extra: str) -> tuple[np.ndarray, np.ndarray]:
        r = subprocess.run([sys.executable, "-m", "edge_mtl", "analyze", *map(str, photos), *map(str, mirrors),
                            "--json", *extra], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        faces = [json.loads(line)["faces"][0] for line in r.stdout.splitlines() if line.strip()]
        assert len(faces) == 2 * len(photos)
        pairs = list(zip(faces[: len(photos)], faces[len(photos):], strict=True))
        emb = np.array([1.0 - float(np.dot(a["embedding"], b["embedding"])) for a, b in pairs])
        age = np.array([abs(a["age"]["years"] - b["age"]["years"]) for a, b in pairs])
        return emb, age

    (d_emb, d_age), (f_emb, f_age) = disagreement(), disagreement("--flip")
    assert f_emb.mean() < d_emb.mean() / 2
    assert f_age.mean() < d_age.mean() / 2
    assert f_emb.max() < 0.02 and f_age.mean() < 1.0
