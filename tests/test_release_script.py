"""scripts/release_recognizer.py: candidate names, the selection rule, compatibility flags, earlier releases from
real git history, and its argument errors (the full recipe needs a training run and takes about 40 minutes)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "release_recognizer.py"


@pytest.fixture(scope="module")
def rel() -> Any:
    spec = importlib.util.spec_from_file_location("release_recognizer", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_candidate_epochs(rel: Any) -> None:
    assert rel.candidate_epochs("epoch_5") == [5]
    assert rel.candidate_epochs("avg3_5") == [3, 4, 5]
    for bad in ("best", "avg5_3", "avg0_2", "epoch_", "avg3-5"):
        with pytest.raises(ValueError, match="candidate"):
            rel.candidate_epochs(bad)


def _row(model: str, acc: float, tar: float) -> dict[str, Any]:
    return {"model": model, "view1_10fold_accuracy": acc, "every_pair_tar_at_far": {"0.001": tar, "0.01": 0.9}}


def test_pick_winner_needs_the_gain_and_breaks_ties_by_tar(rel: Any) -> None:
    ref = _row("export/recognizer.onnx", 0.9781, 0.80)
    # stage 11's figures: neither candidate reaches 97.81 + 0.3
    assert rel.pick_winner([ref, _row("e5", 0.9747, 0.81), _row("a35", 0.9766, 0.82)], ref["model"], 0.003) is None
    # exactly at the bar passes; the better accuracy wins, then the better TAR
    rows = [ref, _row("e5", 0.9811, 0.79), _row("a35", 0.9811, 0.83), _row("e4", 0.9809, 0.99)]
    assert rel.pick_winner(rows, ref["model"], 0.003)["model"] == "a35"
    assert rel.pick_winner([ref, _row("e5", 0.9790, 0.5)], ref["model"], 0.0)["model"] == "e5"
    with pytest.raises(ValueError, match="reference"):
        rel.pick_winner([_row("e5", 0.99, 0.9)], ref["model"], 0.003)


def _attrs(races: list[float], women60: float, mae: float, sizes: tuple[int, ...] = (600, 40, 80),
           children: tuple[float, float] = (0.40, 0.44)) -> dict[str, Any]:
    by_race = {}
    for name, acc, n in zip(("white", "black", "asian"), races, sizes, strict=True):
        by_race[name] = {"gender_accuracy_all": 0.1, "n": 1000}  # all ages: not read by the rules
        by_race[f"{name} 13+"] = {"gender_accuracy_all": acc, "n": n}
    return {"by_race": by_race, "age_mae": mae,
            "by_gender_and_age": {"female 60+": {"gender_accuracy_all": women60},
                                  "male 0-12": {"gender_accuracy_all": children[0], "n": 200},
                                  "female 0-12": {"gender_accuracy_all": children[1], "n": 200}}}


def test_pick_winner_attributes_holds_identity_and_needs_every_gain(rel: Any) -> None:
    ref = _row("ref", 0.9781, 0.80)
    attrs = {"ref": _attrs([0.93, 0.97, 0.94], 0.80, 4.10)}
    good = _attrs([0.95, 0.97, 0.96], 0.82, 4.15)  # lowest race 0.93 -> 0.95, women 60+ +2, MAE +0.05
    cases = {
        "ok": (_row("ok", 0.9762, 0.80), good),  # View 1 0.19 points lower: within 0.2
        "view1": (_row("view1", 0.9760, 0.85), good),  # 0.21 points lower
        "tar": (_row("tar", 0.9790, 0.79), good),
        "race": (_row("race", 0.9790, 0.85), _attrs([0.9399, 0.99, 0.99], 0.90, 4.0)),  # lowest +0.99 points
        "women": (_row("women", 0.9790, 0.85), _attrs([0.99, 0.99, 0.99], 0.8099, 4.0)),
        "mae": (_row("mae", 0.9790, 0.85), _attrs([0.99, 0.99, 0.99], 0.90, 4.21)),
    }
    for name, (row, a) in cases.items():
        got = rel.pick_winner_attributes([ref, row], {**attrs, name: a}, "ref")
        assert (got is not None) == (name == "ok"), name
    better = _row("better", 0.9781, 0.80)
    rows = [ref, cases["ok"][0], better]
    all_attrs = {**attrs, "ok": good, "better": _attrs([0.96, 0.97, 0.98], 0.85, 4.0)}
    assert rel.pick_winner_attributes(rows, all_attrs, "ref")["model"] == "better"  # the higher lowest race
    assert rel.attribute_figures(good) == {"lowest_race_13+_gender_all": 0.95, "female_60+_gender_all": 0.82,
                                           "adults_13+_gender_all": round((600 * .95 + 40 * .97 + 80 * .96) / 720, 4),
                                           "children_0-12_gender_all": 0.42, "age_mae": 4.15}


def test_pick_winner_adults_needs_a_gain_over_all_adults_and_no_loss_on_the_small_groups(rel: Any) -> None:
    ref = _row("ref", 0.9781, 0.80)
    attrs = {"ref": _attrs([0.93, 0.97, 0.94], 0.80, 4.10)}  # adults (600*.93 + 40*.97 + 80*.94) / 720 = 0.9333
    good = _attrs([0.94, 0.97, 0.93], 0.80, 4.19)  # adults +0.83 points, asian -1 point, women 60+ held
    cases = {
        "ok": (_row("ok", 0.9762, 0.80), good),
        "view1": (_row("view1", 0.9760, 0.85), good),
        "tar": (_row("tar", 0.9790, 0.79), good),
        "gain": (_row("gain", 0.9790, 0.85), _attrs([0.9355, 0.97, 0.94], 0.80, 4.10)),  # adults +0.46 points
        "race": (_row("race", 0.9790, 0.85), _attrs([0.95, 0.97, 0.917], 0.80, 4.10)),  # lowest race -1.3 points
        "women": (_row("women", 0.9790, 0.85), _attrs([0.95, 0.97, 0.94], 0.7999, 4.10)),
        "mae": (_row("mae", 0.9790, 0.85), _attrs([0.95, 0.97, 0.94], 0.80, 4.21)),
    }
    for name, (row, a) in cases.items():
        got = rel.pick_winner_adults([ref, row], {**attrs, name: a}, "ref")
        assert (got is not None) == (name == "ok"), name
    better = _row("better", 0.9781, 0.80)
    all_attrs = {**attrs, "ok": good, "better": _attrs([0.95, 0.97, 0.94], 0.81, 4.0)}
    assert rel.pick_winner_adults([ref, cases["ok"][0], better], all_attrs, "ref")["model"] == "better"
    with pytest.raises(ValueError, match="reference"):
        rel.pick_winner_adults([better], all_attrs, "ref")


def _wild(all_right: float, women_as_men: int) -> dict[str, Any]:
    return {"all": {"gender_accuracy_all": all_right, "women_read_as_men": women_as_men}}


def test_pick_winner_wild_needs_a_gain_in_the_wild_and_no_loss_on_utkface(rel: Any) -> None:
    ref = _row("ref", 0.9781, 0.80)
    a0 = _attrs([0.93, 0.97, 0.94], 0.80, 4.10)  # adults 0.9333, children 0.42
    attrs, wild = {"ref": a0}, {"ref": _wild(0.80, 20)}
    cases = {  # name: (row, UTKFace attributes, WIDER row)
        "ok": (_row("ok", 0.9762, 0.80), _attrs([0.929, 0.97, 0.94], 0.79, 4.19, children=(0.39, 0.41)),
               _wild(0.815, 20)),  # adults -0.3, women 60+ -1, children -2 points: all at the bar
        "view1": (_row("view1", 0.9760, 0.85), a0, _wild(0.85, 10)),
        "tar": (_row("tar", 0.9790, 0.79), a0, _wild(0.85, 10)),
        "wild_gain": (_row("wild_gain", 0.9790, 0.85), a0, _wild(0.8149, 10)),
        "women_as_men": (_row("women_as_men", 0.9790, 0.85), a0, _wild(0.85, 21)),
        "adults": (_row("adults", 0.9790, 0.85), _attrs([0.925, 0.97, 0.94], 0.80, 4.10), _wild(0.85, 10)),
        "race": (_row("race", 0.9790, 0.85), _attrs([0.93, 0.97, 0.917], 0.80, 4.10), _wild(0.85, 10)),  # -1.3 points
        "women60": (_row("women60", 0.9790, 0.85), _attrs([0.93, 0.97, 0.94], 0.7899, 4.10), _wild(0.85, 10)),
        "children": (_row("children", 0.9790, 0.85), _attrs([0.93, 0.97, 0.94], 0.80, 4.10, children=(0.37, 0.42)),
                     _wild(0.85, 10)),
        "mae": (_row("mae", 0.9790, 0.85), _attrs([0.93, 0.97, 0.94], 0.80, 4.21), _wild(0.85, 10)),
    }
    for name, (row, a, w) in cases.items():
        got = rel.pick_winner_wild([ref, row], {**attrs, name: a}, {**wild, name: w}, "ref")
        assert (got is not None) == (name == "ok"), name
    better = _row("better", 0.9781, 0.80)
    rows = [ref, cases["ok"][0], better]
    got = rel.pick_winner_wild(rows, {**attrs, "ok": cases["ok"][1], "better": a0},
                               {**wild, "ok": cases["ok"][2], "better": _wild(0.83, 19)}, "ref")
    assert got["model"] == "better"  # the higher WIDER figure
    figs = rel.attribute_figures(a0, _wild(0.83, 19))
    assert figs["wild_gender_all"] == 0.83 and figs["wild_women_read_as_men"] == 19


def test_pick_winner_identity_needs_a_tar_gain_and_attributes_held(rel: Any) -> None:
    ref = _row("ref", 0.9781, 0.80)
    a0 = _attrs([0.93, 0.97, 0.94], 0.80, 4.10)
    attrs, wild = {"ref": a0}, {"ref": _wild(0.80, 20)}
    cases = {  # name: (row, UTKFace attributes, WIDER row)
        "ok": (_row("ok", 0.9762, 0.81), _attrs([0.929, 0.97, 0.94], 0.79, 4.19, children=(0.39, 0.41)),
               _wild(0.79, 30)),  # TAR +1, View 1 -0.19, WIDER -1, the UTKFace bars at their edge
        "tar": (_row("tar", 0.9790, 0.8099), a0, _wild(0.80, 20)),
        "view1": (_row("view1", 0.9760, 0.85), a0, _wild(0.80, 20)),
        "wild": (_row("wild", 0.9790, 0.85), a0, _wild(0.7899, 20)),
        "adults": (_row("adults", 0.9790, 0.85), _attrs([0.925, 0.97, 0.94], 0.80, 4.10), _wild(0.80, 20)),
        "race": (_row("race", 0.9790, 0.85), _attrs([0.93, 0.97, 0.917], 0.80, 4.10), _wild(0.80, 20)),
        "women60": (_row("women60", 0.9790, 0.85), _attrs([0.93, 0.97, 0.94], 0.7899, 4.10), _wild(0.80, 20)),
        "children": (_row("children", 0.9790, 0.85), _attrs([0.93, 0.97, 0.94], 0.80, 4.10, children=(0.37, 0.42)),
                     _wild(0.80, 20)),
        "mae": (_row("mae", 0.9790, 0.85), _attrs([0.93, 0.97, 0.94], 0.80, 4.21), _wild(0.80, 20)),
    }
    for name, (row, a, w) in cases.items():
        got = rel.pick_winner_identity([ref, row], {**attrs, name: a}, {**wild, name: w}, "ref")
        assert (got is not None) == (name == "ok"), name
    better = _row("better", 0.9781, 0.83)
    got = rel.pick_winner_identity([ref, cases["ok"][0], better], {**attrs, "ok": cases["ok"][1], "better": a0},
                                   {**wild, "ok": cases["ok"][2], "better": _wild(0.80, 20)}, "ref")
    assert got["model"] == "better"  # the higher TAR
    with pytest.raises(ValueError, match="reference"):
        rel.pick_winner_identity([better], {"better": a0}, {"better": _wild(0.8, 1)}, "ref")


def test_pick_winner_tight_needs_a_gain_on_cut_faces_and_identity_and_attributes_held(rel: Any) -> None:
    def row(model: str, acc: float, tar: float, tight: float) -> dict[str, Any]:
        return {**_row(model, acc, tar), "tight_mixed_10fold_accuracy": tight}

    ref = row("ref", 0.9766, 0.8653, 0.9691)
    a0 = _attrs([0.93, 0.97, 0.94], 0.80, 4.10)
    attrs, wild = {"ref": a0}, {"ref": _wild(0.80, 20)}
    cases = {  # name: (row, UTKFace attributes, WIDER row)
        "ok": (row("ok", 0.9746, 0.8603, 0.9741), _attrs([0.929, 0.97, 0.94], 0.79, 4.19, children=(0.39, 0.41)),
               _wild(0.79, 30)),  # tight +0.5, View 1 -0.2, TAR -0.5, WIDER -1, the UTKFace bars at their edge
        "tight": (row("tight", 0.9790, 0.87, 0.9740), a0, _wild(0.80, 20)),
        "view1": (row("view1", 0.9745, 0.87, 0.98), a0, _wild(0.80, 20)),
        "tar": (row("tar", 0.9790, 0.8602, 0.98), a0, _wild(0.80, 20)),
        "wild": (row("wild", 0.9790, 0.87, 0.98), a0, _wild(0.7899, 20)),
        "race": (row("race", 0.9790, 0.87, 0.98), _attrs([0.93, 0.97, 0.917], 0.80, 4.10), _wild(0.80, 20)),
        "mae": (row("mae", 0.9790, 0.87, 0.98), _attrs([0.93, 0.97, 0.94], 0.80, 4.21), _wild(0.80, 20)),
    }
    for name, (r, a, w) in cases.items():
        got = rel.pick_winner_tight([ref, r], {**attrs, name: a}, {**wild, name: w}, "ref")
        assert (got is not None) == (name == "ok"), name
    better = row("better", 0.9766, 0.8653, 0.9760)
    got = rel.pick_winner_tight([ref, cases["ok"][0], better], {**attrs, "ok": cases["ok"][1], "better": a0},
                                {**wild, "ok": cases["ok"][2], "better": _wild(0.80, 20)}, "ref")
    assert got["model"] == "better"  # the higher tight figure


def test_compatible_flags_in_order(rel: Any) -> None:
    flags = rel.compatible_flags([("recognizer-1.5", 0.0036), ("recognizer-1.4", 0.0)])
    assert flags == ["--compatible-with=recognizer-1.5:0.0036", "--compatible-with=recognizer-1.4:0"]


def _model(path: Path, version: str, stamp: dict[str, dict[str, float]] | None = None) -> None:
    """A one-node ONNX model carrying edge-mtl recognizer metadata (`version`, stamped operating points)."""
    import onnx
    from onnx import TensorProto, helper

    from edge_mtl.export_tools.onnx_utils import set_metadata
    from edge_mtl.runtime.engine import ModelMetadata

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    m = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    set_metadata(m, ModelMetadata(kind="recognizer", version=version, input_name="x", output_names=("y",),
                                  color="RGB", mean=(127.5,) * 3, std=(127.5,) * 3, input_size=112,
                                  operating_points=stamp or {}))
    onnx.save(m, str(path))


def test_earlier_releases_are_distinct_versions_newest_first(rel: Any, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from edge_mtl.export_tools.onnx_utils import read_metadata

    repo = tmp_path / "repo"
    (repo / "export").mkdir(parents=True)

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    git("init", "-q")
    # 1.2, 1.3, 1.3 re-stamped (same version, new bytes), 1.4
    restamp = {"plain": {"0.01": 0.4}}
    for version, stamp in (("recognizer-1.2", None), ("recognizer-1.3", None), ("recognizer-1.3", restamp),
                           ("recognizer-1.4", None)):
        _model(repo / "export" / "recognizer.onnx", version, stamp)
        git("add", "-A")
        git("commit", "-q", "-m", f"{version} {stamp}")
    found = rel.earlier_releases(repo, "export/recognizer.onnx", 5, tmp_path / "earlier")
    assert [v for v, _ in found] == ["recognizer-1.4", "recognizer-1.3", "recognizer-1.2"]
    assert all(read_metadata(f).version == v for v, f in found)
    # the re-stamped 1.3 is the one kept (newest bytes of that version)
    assert read_metadata(found[1][1]).operating_points == restamp
    assert [v for v, _ in rel.earlier_releases(repo, "export/recognizer.onnx", 2, tmp_path / "e2")] == [
        "recognizer-1.4", "recognizer-1.3"]


def test_argument_errors_exit_2(rel: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--run", str(tmp_path), "--version", "recognizer-9", "--crops", str(tmp_path), "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        rel.main([*base, "--candidates", "best"])
    assert e.value.code == 2 and "epoch_N or avgA_B" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        rel.main([*base, "--candidates", "avg3_5"])
    assert e.value.code == 2 and "epoch_3.pt" in capsys.readouterr().err
    for n in (3, 4, 5):
        (tmp_path / f"epoch_{n}.pt").write_bytes(b"")
    _model(tmp_path / "ref.onnx", "recognizer-1.5")  # never stamped
    with pytest.raises(SystemExit) as e:
        rel.main([*base, "--candidates", "avg3_5", "--reference", str(tmp_path / "ref.onnx")])
    assert e.value.code == 2 and "no stamped FAR 1e-2 threshold" in capsys.readouterr().err


def test_a_failed_step_is_one_line_with_its_exit_code(rel: Any, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable candidate checkpoint: `edge-mtl calibrate-quality` refuses it (exit 2, its own one-line
    error) and the script stops there, naming the step, with that exit code; no traceback."""
    _model(tmp_path / "ref.onnx", "recognizer-1.5", {"plain": {"0.01": 0.43, "0.001": 0.55}})
    (tmp_path / "epoch_5.pt").write_bytes(b"not a checkpoint")
    args = ["--run", str(tmp_path), "--version", "recognizer-9", "--crops", str(tmp_path), "--out",
            str(tmp_path / "out"), "--candidates", "epoch_5", "--reference", str(tmp_path / "ref.onnx")]
    with pytest.raises(SystemExit) as e:
        rel.run_main(args)  # the run's sources come from that checkpoint: refused before any step
    assert e.value.code == 2 and "name them with --sources" in capsys.readouterr().err
    rc = rel.run_main([*args, "--sources", "lfw_dev"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "release_recognizer: error: this step failed with exit code 2:" in err and "calibrate-quality" in err
