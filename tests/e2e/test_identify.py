"""Enrol a person from a still, then find them in a video: a `face.identified` event with their name."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import cv2
import pytest

from tests.e2e.conftest import edge_mtl, read_jsonl

pytestmark = pytest.mark.data


def _frame(video: Path, index: int, out: Path) -> Path:
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    cap.release()
    assert ok, f"cannot read frame {index} of {video}"
    cv2.imwrite(str(out), frame)
    return out


def test_enrolled_person_is_identified(data_dir: Path, tmp_path: Path, model_args: list[str]) -> None:
    video = data_dir / "videos" / "selfie_portrait.mp4"
    # enrol from two stills taken from the last seconds of the clip, then run on its first 150 frames (5 s):
    # the enrolment images are never the frames being recognised
    stills = [_frame(video, i, tmp_path / f"still{i}.png") for i in (300, 330)]
    gallery = tmp_path / "people.db"
    edge_mtl("enroll", *model_args, "--gallery", str(gallery), "--name", "selfie_person", *map(str, stills))
    listing = edge_mtl("gallery", "list", "--gallery", str(gallery), "--json").stdout
    assert '"selfie_person"' in listing
    log = tmp_path / "events.jsonl"
    edge_mtl("run", *model_args, "--source", str(video), "--gallery", str(gallery), "--events", str(tmp_path / "e.db"),
             "--jsonl", str(log), "--max-frames", "150")
    ident = [e for e in read_jsonl(log) if e["type"] == "face.identified"]
    assert ident, "no face.identified event"
    assert ident[0]["identity"] is not None and ident[0]["identity"]["name"] == "selfie_person", ident[0]
    assert ident[0]["identity"]["similarity"] >= 0.3


def test_stranger_is_unknown(data_dir: Path, tmp_path: Path, model_args: list[str]) -> None:
    """Someone else is enrolled: the selfie person must come out as unknown (identity null), never matched."""
    lfw = data_dir / "lfw" / "images_deepfunneled" / "George_W_Bush"
    imgs = sorted(lfw.glob("*.jpg"))[:3]
    gallery = tmp_path / "people.db"
    edge_mtl("enroll", *model_args, "--gallery", str(gallery), "--name", "someone_else", *map(str, imgs))
    log = tmp_path / "events.jsonl"
    edge_mtl("run", *model_args, "--source", str(data_dir / "videos" / "selfie_portrait.mp4"),
             "--gallery", str(gallery), "--events", str(tmp_path / "e.db"), "--jsonl", str(log), "--max-frames", "90")
    ident = [e for e in read_jsonl(log) if e["type"] == "face.identified"]
    assert ident and all(e["identity"] is None for e in ident), ident


def test_enrolment_refuses_two_people_but_not_a_partial_face(
    data_dir: Path, tmp_path: Path, model_args: list[str]
) -> None:
    """Two comparable, confidently detected faces make an image ambiguous (exit 2, nothing written); a low-score box
    at the border beside the main face (a cut-off second person) does not."""
    gallery = tmp_path / "people.db"
    two = data_dir / "caltech_webfaces" / "images" / "pic01282.jpg"  # two annotated faces, eyes 60 and 65 px apart
    proc = edge_mtl("enroll", *model_args, "--gallery", str(gallery), "--name", "x", str(two), check=False)
    assert proc.returncode == 2 and "2 faces found; enrol from images with one person" in proc.stderr, proc.stderr
    assert not gallery.exists() or '"x"' not in edge_mtl("gallery", "list", "--gallery", str(gallery), "--json").stdout
    # George_W_Bush_0065: the main face (score ~0.9) and, cut by the right border, a box of 0.8x its area at ~0.38
    partial = data_dir / "lfw" / "images_deepfunneled" / "George_W_Bush" / "George_W_Bush_0065.jpg"
    edge_mtl("enroll", *model_args, "--gallery", str(gallery), "--name", "gwb", str(partial))
    assert '"gwb"' in edge_mtl("gallery", "list", "--gallery", str(gallery), "--json").stdout


def test_reenroll_after_a_recognizer_upgrade(data_dir: Path, tmp_path: Path, model_args: list[str]) -> None:
    """A gallery made by an older recognizer: `gallery reenroll` embeds each person's recorded images again with
    the loaded one and keeps the old rows; a person whose images are gone is named in a one-line error (exit 2)
    while the others are still re-enrolled."""
    lfw = data_dir / "lfw" / "images_deepfunneled"
    keep = [shutil.copy(p, tmp_path / p.name) for p in sorted((lfw / "Tony_Blair").glob("*.jpg"))[:2]]
    gone = [shutil.copy(p, tmp_path / p.name) for p in sorted((lfw / "Colin_Powell").glob("*.jpg"))[:1]]
    gallery = tmp_path / "people.db"
    edge_mtl("enroll", *model_args, "--gallery", str(gallery), "--name", "tony", *map(str, keep))
    edge_mtl("enroll", *model_args, "--gallery", str(gallery), "--name", "colin", *map(str, gone))
    with sqlite3.connect(gallery) as db:  # as if enrolled by the previous recognizer
        current = db.execute("SELECT DISTINCT model FROM embeddings").fetchone()[0]
        db.execute("UPDATE embeddings SET model = 'recognizer-0.9'")
    Path(gone[0]).unlink()
    proc = edge_mtl("gallery", "reenroll", *model_args, "--gallery", str(gallery), check=False)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert "1 of 2 people not re-enrolled" in err and "colin" in err and "no such file" in err, err
    assert "re-enrolled tony" in proc.stdout
    listing = edge_mtl("gallery", "list", "--gallery", str(gallery), "--json").stdout
    rows = {r["name"]: r for r in map(json.loads, listing.splitlines())}
    assert rows["tony"]["models"] == sorted(["recognizer-0.9", current]) and rows["tony"]["embeddings"] == 4
    assert rows["colin"]["models"] == ["recognizer-0.9"]
    # nothing left to do for tony: a second run re-enrols nobody new and still names colin
    again = edge_mtl("gallery", "reenroll", *model_args, "--gallery", str(gallery), "--json", check=False)
    assert again.returncode == 2 and '"reenrolled": []' in again.stdout


def test_a_release_declaring_the_old_version_compatible_matches_its_gallery(
    data_dir: Path, tmp_path: Path, model_args: list[str]
) -> None:
    """Upgrading to a recognizer whose metadata lists the gallery's version under `compatible` (`edge-mtl export
    --compatible-with`): people enrolled with that version are identified without re-enrolling, and the daemon says
    so; a recognizer without the declaration leaves them unknown and names them in a warning."""
    import dataclasses

    from edge_mtl.export_tools.onnx_utils import load_model, metadata_of, save_model_atomic, set_metadata

    video = data_dir / "videos" / "selfie_portrait.mp4"
    stills = [_frame(video, i, tmp_path / f"still{i}.png") for i in (300, 330)]
    gallery = tmp_path / "people.db"
    edge_mtl("enroll", *model_args, "--gallery", str(gallery), "--name", "selfie_person", *map(str, stills))
    with sqlite3.connect(gallery) as db:  # as if enrolled by the previous release
        db.execute("UPDATE embeddings SET model = 'recognizer-0.9'")
    rec = Path(model_args[model_args.index("--recognizer") + 1])
    proto = load_model(rec)
    set_metadata(proto, dataclasses.replace(metadata_of(proto), compatible={"recognizer-0.9": 0.0}))
    declared = tmp_path / "recognizer-declared.onnx"
    save_model_atomic(proto, declared)

    def identities(recognizer: Path, name: str) -> tuple[list[dict], str]:  # type: ignore[type-arg]
        args = list(model_args)
        args[args.index("--recognizer") + 1] = str(recognizer)
        log = tmp_path / f"{name}.jsonl"
        proc = edge_mtl("run", *args, "--source", str(video), "--gallery", str(gallery),
                        "--events", str(tmp_path / f"{name}.db"), "--jsonl", str(log), "--max-frames", "150")
        return [e["identity"] for e in read_jsonl(log) if e["type"] == "face.identified"], proc.stderr

    plain, err = identities(rec, "plain")
    assert plain and all(i is None for i in plain), plain
    assert "not matched" in err and "selfie_person" in err
    ident, err = identities(declared, "declared")
    assert ident and ident[0] is not None and ident[0]["name"] == "selfie_person", ident
    assert "1 people are matched with their embeddings of recognizer recognizer-0.9" in err, err
