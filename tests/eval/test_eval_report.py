"""`edge-mtl eval` without --json: the result as name: value lines and aligned tables."""

from __future__ import annotations

from edge_mtl.eval.report import format_report


def test_format_report_scalars_mappings_and_tables() -> None:
    result = {
        "accuracy": 0.975, "pairs": 6000, "std": float("nan"), "split": "val", "missing": None,
        "models": {"recognizer": "recognizer-1.5", "flip": False},
        "bands": {"0-2": {"n": 194, "acc": 0.6546, "thirds": [0.63, 0.69, 0.65]}, "13-19": {"n": 134, "acc": 0.9}},
        "selective": [{"min_age": 0.0, "coverage": 1.0}, {"min_age": 3.0, "coverage": 0.828}],
        "empty": [],
    }
    assert format_report(result) == (
        "accuracy: 0.975\n"
        "pairs: 6000\n"
        "std: -\n"
        "split: val\n"
        "missing: -\n"
        "models: recognizer=recognizer-1.5, flip=false\n"
        "empty: -\n"
        "bands:\n"
        "           n     acc              thirds\n"
        "  0-2    194  0.6546  0.63 / 0.69 / 0.65\n"
        "  13-19  134     0.9                   -\n"
        "selective:\n"
        "  min_age  coverage\n"
        "  0               1\n"
        "  3           0.828\n"
    )
