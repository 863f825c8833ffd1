"""Recognizer training data and state: oversampling of young faces, margin centres kept only for the same classes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edge_mtl.models.recognizer import RecognizerArgs  # noqa: E402
from edge_mtl.train.data.recognizer import RecSample  # noqa: E402
from edge_mtl.train.losses.recognizer import MarginHead  # noqa: E402
from edge_mtl.train.losses.weighting import make_weighting  # noqa: E402
from edge_mtl.train.tasks.recognizer import RecognizerTask, oversample_young  # noqa: E402


def _samples() -> list[RecSample]:
    return [
        RecSample(source=0, row=0, age=4.0, gender=1),
        RecSample(source=0, row=1, age=12.9, gender=0),
        RecSample(source=0, row=2, age=13.0, gender=0),
        RecSample(source=1, row=0, identity=3),  # no age label: never oversampled
        RecSample(source=0, row=3, age=70.0),
    ]


def test_oversample_young_repeats_only_labelled_children() -> None:
    s = _samples()
    out = oversample_young(s, 13.0, 3)
    assert out[: len(s)] == s
    extra = out[len(s):]
    assert len(extra) == 4 and {(x.source, x.row) for x in extra} == {(0, 0), (0, 1)}
    assert sum(x.row == 0 and x.source == 0 for x in out) == 3


@pytest.mark.parametrize(("below", "factor"), [(0.0, 4), (13.0, 1)])
def test_oversample_off(below: float, factor: int) -> None:
    s = _samples()
    assert oversample_young(s, below, factor) == s


def _bare_task(classes: dict[str, int]) -> RecognizerTask:
    task = RecognizerTask.__new__(RecognizerTask)
    task.classes = classes
    task.margin = MarginHead(8, len(classes), "cosface", 32.0, 0.3)
    task.weighting = make_weighting("static", ["identity"], {"identity": 1.0})
    return task


def test_margin_centres_load_only_for_the_same_classes(caplog: pytest.LogCaptureFixture) -> None:
    src = _bare_task({"a": 0, "b": 1})
    state = {"margin": src.margin.state_dict(), "classes": src.classes, "weighting": src.weighting.state_dict()}
    same = _bare_task({"a": 0, "b": 1})
    same.load_extra_state(state)
    assert all(torch.equal(v, same.margin.state_dict()[k]) for k, v in state["margin"].items())
    other = _bare_task({"a": 0, "c": 1})
    before = {k: v.clone() for k, v in other.margin.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        other.load_extra_state(state)
    assert all(torch.equal(v, other.margin.state_dict()[k]) for k, v in before.items())
    assert "differ" in caplog.text


def test_source_records_list_each_celeba_folder_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `celeba_samples_gender`, CelebA_Samples and naheri's folders are read once per data build, and the
    sources come out as reading them apart gives: samples labelled by identity, naheri without the samples' images."""
    from edge_mtl.data import sources as S
    from edge_mtl.train.config import TrainConfig

    samples, naheri = tmp_path / "samples", tmp_path / "naheri"
    samples.mkdir()
    for f in ("1_000001.jpg", "1_000002.jpg", "2_000003.jpg"):
        (samples / f).write_bytes(b"")
    for split, g, imgs in (("Train", "male", ["000003", "000005"]), ("Train", "female", ["000001", "000004"]),
                           ("Validation", "female", ["000002", "000004"])):
        (naheri / split / g).mkdir(parents=True, exist_ok=True)
        for i in imgs:
            (naheri / split / g / f"{i}.jpg.jpg").write_bytes(b"")
    ident = tmp_path / "identity_CelebA.txt"
    ident.write_text("000001.jpg 1\n000002.jpg 1\n000003.jpg 2\n000004.jpg 1\n000005.jpg 2\n")
    cfg = TrainConfig.model_validate({
        "data": {"celeba_samples": str(samples), "celeba_gender": str(naheri), "celeba_identity_file": str(ident)},
        "task": {"kind": "recognizer", "sources": ["celeba_samples", "celeba_gender"], "celeba_samples_gender": True},
    })
    calls: list[str] = []
    for fn in ("celeba_samples", "celeba_gender"):
        real = getattr(S, fn)
        monkeypatch.setattr(S, fn, lambda *a, _real=real, _fn=fn, **k: calls.append(_fn) or _real(*a, **k))
    task = RecognizerTask.__new__(RecognizerTask)
    task.cfg, task.t, task.root = cfg, cfg.task, tmp_path
    read: dict[str, object] = {}
    got = {name: task._source_records(name, read) for name in ("celeba_samples", "celeba_gender")}
    assert sorted(calls) == ["celeba_gender", "celeba_samples"]  # each folder listed once
    # identity 1: female in all three naheri images; identity 2: male in both
    assert [(r.key, r.gender) for r in got["celeba_samples"]] == [
        ("celeba_samples/1_000001.jpg", 1), ("celeba_samples/1_000002.jpg", 1), ("celeba_samples/2_000003.jpg", 0)]
    apart = S.celeba_gender(naheri, ident, exclude_images={"000001.jpg", "000002.jpg", "000003.jpg"})
    assert [(r.key, r.gender, r.identity) for r in got["celeba_gender"]] == [
        (r.key, r.gender, r.identity) for r in apart] == [("celeba_gender/000005.jpg", 0, "celeba:2"),
                                                          ("celeba_gender/000004.jpg", 1, "celeba:1")]


def test_training_refuses_a_crop_cache_of_other_faces(data_dir: Path, repo_root: Path, tmp_path: Path) -> None:
    """A source whose records changed since its crop cache was built (a folder grew, an exclusion list moved) must
    not train on the old crops paired with the new labels: the run stops with a one-line InputError instead. Without
    a detector, a missing cache is an InputError too."""
    from edge_mtl.data.sources import FaceRecord
    from edge_mtl.errors import InputError
    from edge_mtl.train.tasks.recognizer import load_detector

    chips = sorted((data_dir / "utkface").glob("3*_*.jpg"))[:3]
    recs = [FaceRecord("utkface", str(c), f"utkface/{c.name}") for c in chips]
    task = RecognizerTask.__new__(RecognizerTask)
    task.crop_dir = tmp_path / "crops"
    task.args = RecognizerArgs()
    task.detector = None
    with pytest.raises(InputError, match=r"no crop cache for utk in .* and no detector to make one"):
        task._crops("utk", recs)
    task.detector = load_detector(repo_root / "export" / "detector.onnx",
                                  landmarks=repo_root / "export" / "landmarks.onnx")
    built = task._crops("utk", recs)
    assert built.keys == [r.key for r in recs] and built.status.count("missing") == 0
    task.detector = None  # the cache exists now: no detector needed to reuse it
    assert task._crops("utk", recs).keys == built.keys
    with pytest.raises(InputError, match="holds other faces than the utk source's records"):
        task._crops("utk", [recs[0], recs[2], recs[1]])  # same count, another order: labels would pair wrongly
