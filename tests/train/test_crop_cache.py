"""The aligned crop cache (edge_mtl.data.crops) with the shipped detector on real faces: what each face's status
says, and that a face in a photo the detector does not find is never filled in with a guess."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_mtl.data.crops import cache_source, load_source
from edge_mtl.data.sources import FaceRecord
from edge_mtl.train.tasks.recognizer import load_detector


def test_box_faces_missed_are_missing_chips_missed_are_canonical(data_dir: Path, repo_root: Path,
                                                                 tmp_path: Path) -> None:
    chip = sorted((data_dir / "utkface").glob("3*_*.jpg"))[0]  # an adult's chip: the detector finds it
    blank = tmp_path / "blank.jpg"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    recs = [
        FaceRecord("t", str(chip), "chip"),
        FaceRecord("t", str(blank), "chip_missed"),  # a pre-aligned source: the median landmarks of its found faces
        FaceRecord("t", str(blank), "photo_missed", box=np.array([50, 50, 150, 150], np.float32)),
        FaceRecord("t", str(tmp_path / "absent.jpg"), "unreadable"),
    ]
    det = load_detector(repo_root / "export" / "detector.onnx", landmarks=repo_root / "export" / "landmarks.onnx")
    cs = cache_source(recs, det, tmp_path / "crops", "t")
    assert cs.status == ["detected", "canonical", "missing", "missing"]
    assert load_source(tmp_path / "crops", "t").status == cs.status
    imgs = np.asarray(cs.images)
    assert imgs[0].std() > 10 and not imgs[2].any()  # the missed photo face stays black, not a crop of anything


def test_ensure_source_builds_once_and_refuses_a_cache_of_other_faces(data_dir: Path, repo_root: Path,
                                                                      tmp_path: Path) -> None:
    import pytest

    from edge_mtl.data.crops import ensure_source
    from edge_mtl.errors import InputError

    chips = sorted((data_dir / "utkface").glob("3*_*.jpg"))[:2]
    recs = [FaceRecord("t", str(c), c.name) for c in chips]
    calls: list[int] = []

    def detector() -> object:
        calls.append(1)
        return load_detector(repo_root / "export" / "detector.onnx", landmarks=repo_root / "export" / "landmarks.onnx")

    built = ensure_source(recs, detector, tmp_path, "t", "two chips")  # type: ignore[arg-type]
    again = ensure_source(recs, detector, tmp_path, "t", "two chips")  # type: ignore[arg-type]
    assert len(calls) == 1, "the detector is loaded only to build the cache"
    assert again.keys == built.keys == [c.name for c in chips] and again.status == built.status
    with pytest.raises(InputError, match=r"t holds other faces than one chip: remove it to rebuild"):
        ensure_source(recs[:1], detector, tmp_path, "t", "one chip")  # type: ignore[arg-type]
    assert len(calls) == 1


def test_a_cut_source_is_each_face_cut_at_its_box_then_aligned(data_dir: Path, repo_root: Path,
                                                               tmp_path: Path) -> None:
    """`cut=True`: the tight version of photos with context, as an ID photo shows the face. The aligned crop holds
    the face where the version with context does, and black where the photo held hair, neck and background."""
    base = data_dir / "lfw" / "images_deepfunneled"
    photos = [base / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg", base / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg"]
    blank = tmp_path / "blank.jpg"
    cv2.imwrite(str(blank), np.full((250, 250, 3), 127, np.uint8))
    recs = [FaceRecord("lfw", str(p), p.name) for p in photos] + [FaceRecord("lfw", str(blank), "nobody")]
    det = load_detector(repo_root / "export" / "detector.onnx", landmarks=repo_root / "export" / "landmarks.onnx")
    context = cache_source(recs, det, tmp_path / "crops", "ctx")
    tight = cache_source(recs, det, tmp_path / "crops", "tight", cut=True)
    assert context.status == ["detected", "detected", "canonical"]
    assert tight.status == ["detected", "detected", "missing"]  # no face to cut at: nothing to guess from
    c, t = np.asarray(context.images, np.float32), np.asarray(tight.images)
    for i in range(2):
        kept = t[i].any(axis=2)
        assert not kept[:8].any() and 0.5 < kept.mean() < 0.85  # black above the brow line and around
        centre = np.s_[46:96, 38:74]  # eyes, nose and mouth: the same face in both, give or take alignment
        assert np.abs(t[i][centre].astype(np.float32) - c[i][centre]).mean() < 25
    # landmarks in each cut-out's pixels (about 120 px a side), not the 250 px photo's (the eyes there: 100-165)
    assert tight.landmarks is not None and context.landmarks is not None
    assert tight.landmarks[:2].max() < 100 < context.landmarks[:2].min()


def test_the_cache_serves_its_crops_with_another_fill(data_dir: Path, repo_root: Path, tmp_path: Path) -> None:
    """Stored black beyond their images, the crops come back as alignment with another fill makes them (a model
    trained on a neutral fill, `RecognizerArgs.fill`): a UTKFace chip, padded for detection, and a cut-out, against
    the runtime's own alignment of the same image with the same landmarks. A cache built before sizes were kept gets
    them from its files; a cut one must be rebuilt."""
    import json

    import pytest

    from edge_mtl.data.crops import add_sizes, read_bgr
    from edge_mtl.errors import InputError
    from edge_mtl.vision.align import align_faces
    from edge_mtl.vision.anycrop import cut_at_box

    chip = sorted((data_dir / "utkface").glob("3*_*.jpg"))[0]
    photo = data_dir / "lfw" / "images_deepfunneled" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    det = load_detector(repo_root / "export" / "detector.onnx", landmarks=repo_root / "export" / "landmarks.onnx")
    out = tmp_path / "crops"
    chips = cache_source([FaceRecord("t", str(chip), "chip")], det, out, "chips")
    cuts = cache_source([FaceRecord("lfw", str(photo), "cut")], det, out, "cuts", cut=True)
    img = read_bgr(str(chip))
    first = det.detect(read_bgr(str(photo)))
    cut = cut_at_box(read_bgr(str(photo)), first.boxes[int(np.argmax(first.scores))])
    for cs, image in ((chips, img), (cuts, cut)):
        assert cs.sizes is not None and cs.landmarks is not None
        assert tuple(cs.sizes[0]) == (image.shape[1], image.shape[0])
        np.testing.assert_array_equal(cs.rendered(0), np.asarray(cs.images))
        want = align_faces(image, cs.landmarks[:1], fill=128)[0]
        got = cs.rendered(128)[0]
        assert (got == 128).mean() > 0.1 and np.abs(got.astype(int) - want.astype(int)).max() <= 2
    # a cache from before sizes were kept
    for name in ("chips", "cuts"):
        index = out / f"{name}.json"
        meta = json.loads(index.read_text())
        del meta["sizes"], meta["cut"]
        index.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="image sizes"):
        load_source(out, "chips").rendered(128)
    again = add_sizes([FaceRecord("t", str(chip), "chip")], out, "chips")
    assert again.sizes is not None and tuple(again.sizes[0]) == (img.shape[1], img.shape[0])
    np.testing.assert_array_equal(again.rendered(128), chips.rendered(128))
    with pytest.raises(InputError, match="rebuild"):
        add_sizes([FaceRecord("lfw", str(photo), "cut")], out, "cuts", cut=True)
