"""Recognizer training data and state: oversampling of young faces, margin centres kept only for the same classes."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")

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
