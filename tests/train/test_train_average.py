"""Checkpoint averaging: known means, dtypes kept, mismatches refused, and an averaged checkpoint is a model to
start from (init, export), not a run to resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from test_train_trainer import ToyTask, _trainer  # noqa: E402

from edge_mtl.commands.cli import main  # noqa: E402
from edge_mtl.errors import InputError, ModelError  # noqa: E402
from edge_mtl.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from edge_mtl.train.post.average import average_checkpoints, average_state_dicts  # noqa: E402


def test_average_state_dicts_known_answer() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([1.0], dtype=torch.float16),
         "n": torch.tensor(10), "sub": {"c": torch.tensor([[0.0, 4.0]])}, "tag": "a"}
    b = {"w": torch.tensor([3.0, 6.0]), "h": torch.tensor([2.0], dtype=torch.float16),
         "n": torch.tensor(20), "sub": {"c": torch.tensor([[2.0, 0.0]])}, "tag": "b"}
    c = {"w": torch.tensor([5.0, 1.0]), "h": torch.tensor([4.0], dtype=torch.float16),
         "n": torch.tensor(30), "sub": {"c": torch.tensor([[4.0, 2.0]])}, "tag": "c"}
    m = average_state_dicts([a, b, c])
    assert torch.equal(m["w"], torch.tensor([3.0, 3.0]))
    assert m["h"].dtype == torch.float16 and float(m["h"]) == pytest.approx(7.0 / 3.0, abs=2e-3)
    assert int(m["n"]) == 30 and m["n"].dtype == torch.int64  # counters come from the last
    assert torch.equal(m["sub"]["c"], torch.tensor([[2.0, 2.0]])) and m["tag"] == "c"
    assert torch.equal(a["w"], torch.tensor([1.0, 2.0]))  # inputs untouched


def test_average_state_dicts_refuses_mismatches() -> None:
    with pytest.raises(ModelError, match="different parameters"):
        average_state_dicts([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])
    with pytest.raises(ModelError, match=r"\(3,\)"):
        average_state_dicts([{"w": torch.zeros(3)}, {"w": torch.zeros(2)}])
    with pytest.raises(InputError):
        average_state_dicts([])


def test_averaged_checkpoint_is_a_start_point_not_a_resume_point(tmp_path: Path) -> None:
    paths = []
    for i in range(3):  # three "epochs" of one run
        task = ToyTask()
        tr = _trainer(task, tmp_path / f"run{i}")
        tr.fit()
        paths.append(tmp_path / f"run{i}" / "last.pt")
        if i:
            st = load_checkpoint(paths[-1])
            st["model"] = {k: v + float(i) for k, v in st["model"].items()}
            st["epoch"] = 3 + i
            save_checkpoint(paths[-1], st)
    out = tmp_path / "avg.pt"
    report = average_checkpoints(paths, out)
    assert [a["epoch"] for a in report["averaged_from"]] == [3, 4, 5]
    avg = load_checkpoint(out)
    base = load_checkpoint(paths[0])["model"]
    for k, v in avg["model"].items():  # mean of w, w+1, w+2
        assert torch.allclose(v, base[k] + 1.0, atol=1e-6)
    assert "optimizer" not in avg and avg["kind"] == "toy" and avg["model_args"] == {"toy": {"in": 4}}
    # a new run may start from it ...
    task = ToyTask()
    tr = _trainer(task, tmp_path / "ft")
    tr.init_weights(out)
    assert all(torch.equal(task.model.state_dict()[k], v) for k, v in avg["model"].items())
    # ... but not resume it as if it were the run's own last checkpoint
    with pytest.raises(ModelError, match="no optimizer state"):
        _trainer(ToyTask(), tmp_path / "r").resume(out)


def test_average_refuses_other_models_and_overwriting(tmp_path: Path) -> None:
    task = ToyTask()
    _trainer(task, tmp_path / "a").fit()
    a = tmp_path / "a" / "last.pt"
    st = load_checkpoint(a)
    st["model_args"] = {"toy": {"in": 5}}
    save_checkpoint(tmp_path / "other.pt", st)
    with pytest.raises(ModelError, match="one model"):
        average_checkpoints([a, tmp_path / "other.pt"], tmp_path / "x.pt")
    with pytest.raises(InputError, match="also an input"):
        average_checkpoints([a, tmp_path / "other.pt"], a)
    with pytest.raises(InputError, match="at least two"):
        average_checkpoints([a], tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_cli_average_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = ToyTask()
    _trainer(task, tmp_path / "a").fit()
    a, b = tmp_path / "a" / "last.pt", tmp_path / "a" / "best.pt"
    assert main(["average-checkpoints", str(a), str(b), "-o", str(tmp_path / "avg.pt")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["output"] == str(tmp_path / "avg.pt") and len(report["averaged_from"]) == 2
    assert main(["average-checkpoints", str(a), str(tmp_path / "missing.pt"), "-o", str(tmp_path / "y.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.pt" in err[0]
