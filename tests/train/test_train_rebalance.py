"""Rebalancing by race x age x gender and the in-the-wild augmentation (edge_mtl.train.data.rebalance): hand-computed
factors, the seeded draw, real UTKFace names, and the augmentations on a real face crop."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_mtl.train.config import RecognizerTrain
from edge_mtl.train.data.rebalance import (
    colour_cast,
    group_factors,
    rebalanced,
    repeats,
    utkface_group,
    wild,
    yaw_warp,
)


def test_utkface_group_from_names() -> None:
    assert utkface_group("26_1_2_20170116174525125.jpg.chip.jpg") == "asian|adult|female"
    assert utkface_group("5_0_1_20170110183726390.jpg.chip.jpg") == "black|child|male"
    assert utkface_group("61_1_3_20170109142408075.jpg.chip.jpg") == "indian|60+|female"
    assert utkface_group("000123.jpg") is None and utkface_group("61_1_20170109142408075.jpg") is None


def test_group_factors_hand_computed() -> None:
    groups = ["white|adult|male"] * 100 + ["asian|60+|female"] * 25 + [None] * 7
    # power 0.5: (100 / 25) ** 0.5 = 2 for the small group, 1 for the largest
    assert group_factors(groups, 0.5, {}, 6) == {"white|adult|male": 1.0, "asian|60+|female": 2.0}
    # weights multiply by part: 2 x 1.5 (female) x 1.5 (60+) = 4.5
    assert group_factors(groups, 0.5, {"female": 1.5, "60+": 1.5}, 6)["asian|60+|female"] == 4.5
    # power 0: as large as the largest (4x), capped at max_repeat
    assert group_factors(groups, 0.0, {}, 3)["asian|60+|female"] == 3.0
    # a weight below 1 never drops a face
    assert group_factors(groups, 1.0, {"male": 0.5}, 6)["white|adult|male"] == 1.0


def test_repeats_draw_fractions_seeded() -> None:
    groups = ["a|child|male"] * 400 + ["b|adult|female"] * 100 + [None] * 10
    r = repeats(groups, 0.7, {}, 6, seed=0)  # (400 / 100) ** 0.3 = 1.516
    assert (r[:400] == 1).all() and (r[-10:] == 1).all()
    assert set(r[400:500].tolist()) == {1, 2} and abs(r[400:500].mean() - 4 ** 0.3) < 0.12
    assert (repeats(groups, 0.7, {}, 6, seed=0) == r).all()


def test_rebalanced_on_real_utkface_names(data_dir: Path) -> None:
    names = sorted(os.listdir(data_dir / "utkface"))[:3000]
    samples = list(range(len(names)))
    out = rebalanced(samples, [*names[:-1], None], 0.5, {"60+": 1.2}, 6, seed=1)
    assert out[: len(samples)] == samples  # the originals first, then the copies
    groups = [utkface_group(n) for n in names[:-1]]
    before = Counter(groups)
    after = Counter(utkface_group(names[i]) for i in out if i < len(names) - 1)
    # the spread of group sizes shrinks (the largest keeps its size, the small ones grow)
    largest = max(before, key=lambda g: before[g])
    assert "60+" not in str(largest)
    assert after[largest] == before[largest]
    ratio_before = max(before.values()) / min(before.values())
    ratio_after = max(after.values()) / min(after.values())
    assert ratio_after < ratio_before
    assert out.count(len(names) - 1) == 1  # no group: seen once


def test_config_fields() -> None:
    t = RecognizerTrain(rebalance_power=0.5, group_weights={"female": 1.5, "60+": 1.5}, wild_augment=0.3)
    assert t.rebalance_power == 0.5 and t.group_weights["60+"] == 1.5
    with pytest.raises(ValueError):
        RecognizerTrain(rebalance_power=1.5)


def test_wild_augmentations_on_a_real_crop(data_dir: Path) -> None:
    import cv2

    img = cv2.resize(cv2.imread(str(data_dir / "utkface" / sorted(os.listdir(data_dir / "utkface"))[100])),
                     (112, 112))
    rng = np.random.default_rng(0)
    cast = colour_cast(img, rng)
    means = cast.reshape(-1, 3).mean(0) / np.maximum(img.reshape(-1, 3).mean(0), 1)
    assert cast.shape == img.shape and np.ptp(means) > 0.02  # the channels moved apart
    warped = yaw_warp(img, np.random.default_rng(1))
    # one side narrowed: black corners appear on exactly one side
    left, right = warped[:4, :4].sum(), warped[:4, -4:].sum()
    assert (left == 0) != (right == 0)
    assert wild(img, rng, 0.0) is img


def test_tight_cut_blacks_out_what_a_photo_cut_at_its_face_box_does_not_hold(data_dir: Path, tmp_path: Path) -> None:
    """A face cut out at its box (an ID photo) aligns to a crop that is black outside a square about the box rule's
    (side 85-99 px, centre (55-58, 61-65) of 112, as measured): the augmentation keeps the face and blacks out the
    rest, and the dataset applies it at the configured rate."""
    import cv2

    from edge_mtl.train.data.recognizer import RecognizerDataset, RecSample, tight_cut

    img = cv2.resize(cv2.imread(str(data_dir / "utkface" / sorted(os.listdir(data_dir / "utkface"))[100])),
                     (112, 112))
    img = np.maximum(img, 1)  # no black pixel of its own
    for seed in range(20):
        cut = tight_cut(img, np.random.default_rng(seed))
        assert cut.shape == img.shape and cut.dtype == np.uint8
        # the square starts at y >= 61 - 49.5 and x >= 55 - 49.5: those rows and columns are black
        assert not cut[:11].any() and not cut[:, :5].any()
        # and it is at least 85 px: the eyes, nose and mouth (38..74 x 46..96) are kept as they were
        assert np.array_equal(cut[46:96, 38:74], img[46:96, 38:74])
        kept = (cut > 0).any(axis=2).mean()
        assert 0.55 < kept < 0.8, kept  # 85^2 .. 99^2 of 112^2

    crops = tmp_path / "crops.npy"
    np.save(crops, img[None])
    samples = [RecSample(0, 0)]
    off = RecognizerDataset([crops], samples, None, train=True, seed=3, strength=0.0)[0]["image"]
    on = RecognizerDataset([crops], samples, None, train=True, seed=3, strength=0.0, tight_p=1.0)[0]["image"]
    assert off[:, :11].all() and not on[:, :11].any()  # CHW: the top rows
    assert np.array_equal(on[:, 46:96, 38:74].numpy(), off[:, 46:96, 38:74].numpy())


def test_the_dataset_serves_the_models_fill(data_dir: Path, tmp_path: Path) -> None:
    """With a fill other than black (`RecognizerArgs.fill`), the training crop holds it wherever alignment reached
    beyond the image, where a cut-out's square leaves nothing and where the jitter uncovers the crop's edge; the
    face itself is the crop as stored. No fill without each source's landmarks and sizes."""
    import cv2

    from edge_mtl.train.data.recognizer import RecognizerDataset, RecSample
    from edge_mtl.vision.align import align_faces, beyond_image

    chip = cv2.imread(str(data_dir / "utkface" / sorted(os.listdir(data_dir / "utkface"))[100]))
    chip = np.maximum(chip, 1)  # no black pixel of its own
    lm = np.array([[[40, 60], [150, 62], [95, 120], [95, 170]]], np.float32)  # a face larger than its image
    crops = tmp_path / "crops.npy"
    np.save(crops, align_faces(chip, lm))
    geometry = [(lm, np.array([[chip.shape[1], chip.shape[0]]], np.int32))]
    samples = [RecSample(0, 0)]

    def image(strength: float = 0.0, **kw: object) -> np.ndarray:
        item = RecognizerDataset([crops], samples, None, train=True, seed=3, strength=strength, **kw)[0]  # type: ignore[arg-type]
        return item["image"].permute(1, 2, 0).numpy()[:, :, ::-1]  # back to HWC BGR

    black, grey = image(), image(fill=128, geometry=geometry)
    beyond = (black == 0).all(axis=2)
    assert beyond.mean() > 0.3 and (grey[beyond] == 128).all()
    share = beyond_image(lm[0], (chip.shape[1], chip.shape[0]))
    inside = (share == 0) & (share[:, ::-1] == 0)  # wholly inside the image, mirrored by the flip or not
    assert inside.mean() > 0.2
    np.testing.assert_array_equal(grey[inside], black[inside])
    cut = image(fill=128, geometry=geometry, tight_p=1.0)
    assert (cut[:11] == 128).all() and (cut[:, :5] == 128).all()
    jittered = [image(fill=f, geometry=geometry if f else None, tight_p=1.0, strength=1.0) for f in (0, 128)]
    assert (jittered[0] == 0).all(axis=2).mean() > 0.2 and not (jittered[1] == 0).all(axis=2).any()
    with pytest.raises(ValueError, match="landmarks and sizes"):
        RecognizerDataset([crops], samples, None, fill=128)


def test_stage12_config_loads(repo_root: Path) -> None:
    """The prepared stage-12 config is valid and asks for what its comment says."""
    from edge_mtl.config import load_toml
    from edge_mtl.train.config import TrainConfig

    cfg = load_toml(repo_root / "configs" / "experiments" / "recognizer_stage12.toml", TrainConfig)
    t = cfg.task
    assert isinstance(t, RecognizerTrain)
    assert t.rebalance_power == 0.5 and t.group_weights == {"female": 1.5, "60+": 1.5, "child": 1.5}
    assert t.wild_augment == 0.3 and t.oversample_factor == 1 and cfg.threads == 2
    assert cfg.optim.epochs == 1 and not cfg.bf16 and cfg.data.teacher is not None
    assert str(cfg.data.teacher).endswith("teacher_r15")


def test_stage13_config_loads(repo_root: Path) -> None:
    """The stage-13 config continues stage 12 with the gender teacher, as its comment says."""
    from edge_mtl.config import load_toml
    from edge_mtl.train.config import TrainConfig

    cfg = load_toml(repo_root / "configs" / "experiments" / "recognizer_stage13.toml", TrainConfig)
    t = cfg.task
    assert isinstance(t, RecognizerTrain)
    assert str(cfg.init) == "runs/recognizer12/epoch_1.pt" and cfg.init_version is None
    assert t.gender_teacher_weight == 0.5 and str(cfg.data.gender_teacher).endswith("gender_ag")
    assert t.rebalance_power == 0.5 and t.wild_augment == 0.3 and str(cfg.data.teacher).endswith("teacher_r15")
    assert cfg.optim.epochs == 1 and cfg.optim.lr == pytest.approx(3e-4) and not cfg.bf16


def test_stage14_config_loads(repo_root: Path) -> None:
    """The stage-14 config trains the gender head alone from recognizer-1.5, with the gender teacher."""
    from edge_mtl.config import load_toml
    from edge_mtl.train.config import TrainConfig

    cfg = load_toml(repo_root / "configs" / "experiments" / "recognizer_stage14.toml", TrainConfig)
    t = cfg.task
    assert isinstance(t, RecognizerTrain)
    assert str(cfg.init) == "export/recognizer.onnx" and cfg.init_version == "recognizer-1.5"
    assert t.train_heads == ["gender"] and t.tasks == ["gender"] and t.gender_teacher_weight == 0.5
    assert cfg.data.teacher is None and cfg.optim.epochs == 1 and cfg.optim.lr == pytest.approx(1e-3)


def test_stage18_config_loads(repo_root: Path) -> None:
    """The stage-18 config trains the gender head alone from recognizer-1.5 with hand labels on Caltech faces, no
    teacher."""
    from edge_mtl.config import load_toml
    from edge_mtl.train.config import TrainConfig

    cfg = load_toml(repo_root / "configs" / "experiments" / "recognizer_stage18.toml", TrainConfig)
    t = cfg.task
    assert isinstance(t, RecognizerTrain)
    assert str(cfg.init) == "export/recognizer.onnx" and cfg.init_version == "recognizer-1.5"
    assert t.train_heads == ["gender"] and t.gender_teacher_weight == 0 and not t.celeba_samples_gender
    assert [str(p) for p in t.gender_labels] == ["configs/labels/caltech_gender.txt"] and t.gender_labels_repeat == 6


def _dumps(repo_root: Path, *names: str) -> list[dict[str, Any]]:
    """The configs `names` (under configs/, e.g. "experiments/recognizer_stage19.toml"), each as `model_dump()`."""
    from edge_mtl.config import load_toml
    from edge_mtl.train.config import TrainConfig

    return [load_toml(repo_root / "configs" / n, TrainConfig).model_dump() for n in names]


def test_stage19_config_is_stage18_with_both_label_batches(repo_root: Path) -> None:
    s18, s19 = _dumps(repo_root, "experiments/recognizer_stage18.toml", "experiments/recognizer_stage19.toml")
    assert [str(p) for p in s19["task"].pop("gender_labels")] == [
        "configs/labels/caltech_gender.txt", "configs/labels/caltech_gender_2.txt"]
    s18["task"].pop("gender_labels")
    assert (s19.pop("out"), s19.pop("seed"), s18.pop("out"), s18.pop("seed")) == (
        Path("runs/recognizer19"), 19, Path("runs/recognizer18"), 18)
    assert s19 == s18


def test_stage20_config_is_stage19_with_small_faces_and_more_repeats(repo_root: Path) -> None:
    s19, s20 = _dumps(repo_root, "experiments/recognizer_stage19.toml", "experiments/recognizer_stage20.toml")
    assert [p.name for p in s20["task"].pop("gender_labels")] == [
        "caltech_gender.txt", "caltech_gender_2.txt", "caltech_gender_3.txt"]
    got = (s20["task"].pop("gender_labels_repeat"), s20.pop("out"), s20.pop("seed"))
    assert got == (8, Path("runs/recognizer20"), 20)
    for k in ("gender_labels", "gender_labels_repeat"):
        s19["task"].pop(k)
    s19.pop("out"), s19.pop("seed")
    assert s20 == s19


def test_stage21_config_is_stage12_whole_network_with_stage20_gender_recipe(repo_root: Path) -> None:
    """Stage 21 = stage 12's whole-network recipe + stage 20's hand labels, the gender head at stage 20's rate."""
    s12, s20, s21 = _dumps(repo_root, "experiments/recognizer_stage12.toml", "experiments/recognizer_stage20.toml",
                           "shipped/13_recognizer_stage21.toml")
    assert s21["optim"].pop("lr_scales") == {"model.heads.gender": 10.0}
    assert s21["optim"]["lr"] * 10.0 == s20["optim"]["lr"]
    for k in ("gender_labels", "gender_labels_repeat"):
        assert s21["task"].pop(k) == s20["task"][k]
        s12["task"].pop(k)
    assert (s21.pop("out"), s21.pop("seed"), s12.pop("out"), s12.pop("seed")) == (
        Path("runs/recognizer21"), 21, Path("runs/recognizer12"), 9)
    s12["optim"].pop("lr_scales")
    assert s21 == s12


def test_stage22_config_is_stage20_with_maskon_labels(repo_root: Path) -> None:
    s20, s22 = _dumps(repo_root, "experiments/recognizer_stage20.toml", "experiments/recognizer_stage22.toml")
    assert [p.name for p in s22["task"].pop("gender_labels")] == [
        *(p.name for p in s20["task"].pop("gender_labels")), "maskon_gender.txt"]
    assert s22["task"].pop("sources") == [*s20["task"].pop("sources"), "maskon"]
    assert (s22["data"].pop("maskon_images").parts[-3:], s22["data"].pop("maskon_annotations").parts[-3:]) == (
        ("maskon", "archive", "images"), ("maskon", "archive", "annotations"))
    assert (s22.pop("out"), s22.pop("seed"), s20.pop("out"), s20.pop("seed")) == (
        Path("runs/recognizer22"), 22, Path("runs/recognizer20"), 20)
    s20["data"].pop("maskon_images"), s20["data"].pop("maskon_annotations")
    assert s22 == s20


def test_stage23_config_is_stage21_from_recognizer_16_with_maskon_labels(repo_root: Path) -> None:
    s21, s23 = _dumps(repo_root, "shipped/13_recognizer_stage21.toml", "experiments/recognizer_stage23.toml")
    assert [p.name for p in s23["task"].pop("gender_labels")] == [
        *(p.name for p in s21["task"].pop("gender_labels")), "maskon_gender.txt"]
    assert s23["task"].pop("sources") == [*s21["task"].pop("sources"), "maskon"]
    assert s23["data"].pop("teacher").name == "teacher_r16" and s21["data"].pop("teacher").name == "teacher_r15"
    assert s23["data"].pop("maskon_images").parts[-3:] == ("maskon", "archive", "images")
    s23["data"].pop("maskon_annotations"), s21["data"].pop("maskon_images"), s21["data"].pop("maskon_annotations")
    assert (s23.pop("out"), s23.pop("seed"), s23.pop("init_version"), s21.pop("out"), s21.pop("seed"),
            s21.pop("init_version")) == (Path("runs/recognizer23"), 23, "recognizer-1.6", Path("runs/recognizer21"), 21,
                                         "recognizer-1.5")
    assert s23 == s21


def test_stage24_config_is_stage23_with_the_dlib_teacher(repo_root: Path) -> None:
    """Stage 24 changes one thing against stage 23: the embedding teacher is dlib's network (teacher_dlib), not
    recognizer-1.6 itself; same init, recipe and labels."""
    s23, s24 = _dumps(repo_root, "experiments/recognizer_stage23.toml", "experiments/recognizer_stage24.toml")
    assert s24["data"].pop("teacher").name == "teacher_dlib" and s23["data"].pop("teacher").name == "teacher_r16"
    assert (s24.pop("out"), s24.pop("seed"), s23.pop("out"), s23.pop("seed")) == (
        Path("runs/recognizer24"), 24, Path("runs/recognizer23"), 23)
    assert s24 == s23


def test_stage25_config_is_the_recipe_of_1_6_from_1_6_with_tight_crops(repo_root: Path) -> None:
    """Stage 25 changes one thing against the recipe that made recognizer-1.6 (stage 21, configs/shipped/13): a
    quarter of the faces cut at their box; it starts from 1.6 and distils into it, as stage 21 did from 1.5."""
    s21, s25 = _dumps(repo_root, "shipped/13_recognizer_stage21.toml", "experiments/recognizer_stage25.toml")
    assert (s21["task"].pop("tight_augment"), s25["task"].pop("tight_augment")) == (0.0, 0.25)
    assert (s21.pop("init_version"), s25.pop("init_version")) == ("recognizer-1.5", "recognizer-1.6")
    assert (s21["data"].pop("teacher").name, s25["data"].pop("teacher").name) == ("teacher_r15", "teacher_r16")
    assert (s25.pop("out"), s25.pop("seed"), s21.pop("out"), s21.pop("seed")) == (
        Path("runs/recognizer25"), 25, Path("runs/recognizer21"), 21)
    assert s25 == s21


def test_stage26_config_is_stage25_on_a_neutral_fill(repo_root: Path) -> None:
    """Stage 26 changes one thing against stage 25: the network trains on mid grey beyond its crops' images
    (`[task.model] fill`), which its exported file then declares."""
    s25, s26 = _dumps(repo_root, "experiments/recognizer_stage25.toml", "experiments/recognizer_stage26.toml")
    assert (s25["task"]["model"].pop("fill"), s26["task"]["model"].pop("fill")) == (0, 128)
    assert (s26.pop("out"), s26.pop("seed"), s25.pop("out"), s25.pop("seed")) == (
        Path("runs/recognizer26"), 26, Path("runs/recognizer25"), 25)
    assert s26 == s25


def test_stage27_config_is_a_second_epoch_of_stage26(repo_root: Path) -> None:
    """Stage 27 continues stage 26 (grey fill) from its epoch checkpoint with its optimizer moments, at half the peak
    lr and a shorter warm-up; nothing else changes."""
    s26, s27 = _dumps(repo_root, "experiments/recognizer_stage26.toml", "experiments/recognizer_stage27.toml")
    assert (s27.pop("init"), s27.pop("init_optimizer"), s27.pop("init_version")) == (
        Path("runs/recognizer26/epoch_1.pt"), True, None)
    assert (s26.pop("init"), s26.pop("init_optimizer"), s26.pop("init_version")) == (
        Path("export/recognizer.onnx"), False, "recognizer-1.6")
    assert (s26["optim"].pop("lr"), s27["optim"].pop("lr")) == (1e-4, 5e-5)
    assert (s26["optim"].pop("warmup_steps"), s27["optim"].pop("warmup_steps")) == (300, 100)
    assert (s27.pop("out"), s27.pop("seed"), s26.pop("out"), s26.pop("seed")) == (
        Path("runs/recognizer27"), 27, Path("runs/recognizer26"), 26)
    assert s27 == s26


def test_stage28_config_is_two_more_epochs_of_stage27(repo_root: Path) -> None:
    """Stage 28 continues stage 27 (grey fill) from its epoch checkpoint with its optimizer moments for two epochs at
    a lower peak lr, keeping both epoch checkpoints as candidates; nothing else changes."""
    s27, s28 = _dumps(repo_root, "experiments/recognizer_stage27.toml", "experiments/recognizer_stage28.toml")
    assert (s27.pop("init"), s28.pop("init")) == (Path("runs/recognizer26/epoch_1.pt"),
                                                  Path("runs/recognizer27/epoch_1.pt"))
    assert (s27["optim"].pop("lr"), s28["optim"].pop("lr")) == (5e-5, 3e-5)
    assert (s27["optim"].pop("warmup_steps"), s28["optim"].pop("warmup_steps")) == (100, 50)
    assert (s27["optim"].pop("epochs"), s28["optim"].pop("epochs")) == (1, 2)
    assert (s27.pop("keep_epochs"), s28.pop("keep_epochs")) == (1, 2)
    assert (s28.pop("out"), s28.pop("seed"), s27.pop("out"), s27.pop("seed")) == (
        Path("runs/recognizer28"), 28, Path("runs/recognizer27"), 27)
    assert s28 == s27
