"""The training loop: exact mid-epoch resume, divergence stops, checkpoints that refuse bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from edge_mtl.errors import InputError, ModelError  # noqa: E402
from edge_mtl.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from edge_mtl.train.loop import trainer as T  # noqa: E402

Diverged = getattr(T, "TrainingDivergedError", None) or T.TrainingDiverged


class ToyTask:
    """Linear regression on a fixed synthetic set; `noise` adds torch-RNG noise to every step (as dropout would)."""

    main_metric = "mse"
    higher_is_better = False

    def __init__(self, noise: float = 0.0, nan_at: int | None = None) -> None:
        torch.manual_seed(123)
        self.model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        g = torch.Generator().manual_seed(7)
        self.x = torch.randn(64, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(64, generator=g)
        self.noise, self.nan_at = noise, nan_at
        self.epochs_started: list[int] = []

    def dataset(self) -> TensorDataset:
        return TensorDataset(self.x, self.y)

    def train_modules(self) -> nn.Module:
        return self.model

    def training_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        if self.noise:
            x = x + self.noise * torch.randn_like(x)
        loss = ((self.model(x).squeeze(1) - y) ** 2).mean()
        if self.nan_at is not None and step >= self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "loss_mse": loss.detach()}

    def validate(self) -> dict[str, float]:
        return {"mse": float(((self.model(self.x).squeeze(1) - self.y) ** 2).mean())}

    def model_args(self) -> dict[str, Any]:
        return {"toy": {"in": 4}}

    def extra_state(self) -> dict[str, Any]:
        return {"epochs_started": list(self.epochs_started)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.epochs_started = list(state.get("epochs_started", []))

    def on_epoch_start(self, epoch: int) -> None:
        self.epochs_started.append(epoch)


def _trainer(task: ToyTask, out: Path, max_steps: int | None = None, keep_epochs: int = 0,
             lr_scales: dict[str, float] | None = None) -> Any:
    return T.Trainer(
        task, task.dataset(), None, out, config={"toy": True}, kind="toy", epochs=3, batch_size=8, lr=0.05,
        weight_decay=0.01, warmup_steps=4, grad_clip=1.0, workers=0, seed=5, max_steps=max_steps,
        keep_epochs=keep_epochs, lr_scales=lr_scales,
    )


def _weights(task: ToyTask) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in task.model.state_dict().items()}


@pytest.mark.parametrize("noise", [0.0, 0.3])
@pytest.mark.parametrize("k", [3, 8, 11])
def test_resume_is_exact(tmp_path: Path, k: int, noise: float) -> None:
    torch.set_num_threads(1)
    straight = ToyTask(noise)
    tr = _trainer(straight, tmp_path / "a")
    metrics = tr.fit()
    assert tr.global_step == 24 and tr.epoch == 3
    assert metrics["mse"] < 5.0, "the toy task learns"
    ref = _weights(straight)

    first = ToyTask(noise)
    tr1 = _trainer(first, tmp_path / "b", max_steps=k)
    tr1.fit()
    assert tr1.global_step == k
    del tr1, first

    resumed = ToyTask(noise)
    torch.manual_seed(999)  # a fresh process has other RNG state; the checkpoint must restore it
    tr2 = _trainer(resumed, tmp_path / "b")
    tr2.resume(tmp_path / "b" / "last.pt")
    assert tr2.global_step == k
    tr2.fit()
    assert tr2.global_step == 24
    for name, w in _weights(resumed).items():
        torch.testing.assert_close(w, ref[name], atol=1e-6, rtol=0, msg=f"{name} differs after resume at {k}")
    assert resumed.epochs_started[-1] == 2


def test_checkpoint_contents_and_metrics_log(tmp_path: Path) -> None:
    task = ToyTask()
    tr = _trainer(task, tmp_path)
    tr.fit()
    st = load_checkpoint(tmp_path / "last.pt")
    assert st["kind"] == "toy" and st["model_args"] == {"toy": {"in": 4}} and st["config"] == {"toy": True}
    assert (st["epoch"], st["step_in_epoch"], st["global_step"]) == (3, 0, 24)
    assert (tmp_path / "best.pt").is_file()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all('"val_mse"' in ln and '"train_loss"' in ln for ln in lines)


def test_keep_epochs_keeps_the_last_n_epoch_checkpoints(tmp_path: Path) -> None:
    # interrupted inside epoch 2 and resumed: each kept file is the state at the end of its epoch
    tr = _trainer(ToyTask(), tmp_path, max_steps=12, keep_epochs=2)
    tr.fit()
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == []
    tr = _trainer(ToyTask(), tmp_path, keep_epochs=2)
    tr.resume(tmp_path / "last.pt")
    tr.fit()
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_2.pt", "epoch_3.pt"]
    for n in (2, 3):
        st = load_checkpoint(tmp_path / f"epoch_{n}.pt")
        assert (st["epoch"], st["step_in_epoch"], st["global_step"]) == (n, 0, 8 * n)
    last = load_checkpoint(tmp_path / "last.pt")["model"]
    for k, w in load_checkpoint(tmp_path / "epoch_3.pt")["model"].items():
        torch.testing.assert_close(w, last[k], atol=0, rtol=0)


def test_non_finite_loss_stops(tmp_path: Path) -> None:
    task = ToyTask(nan_at=5)
    tr = _trainer(task, tmp_path)
    with pytest.raises(Diverged, match="non-finite loss at step 5"):
        tr.fit()
    assert tr.global_step == 5
    st = load_checkpoint(tmp_path / "diverged.pt")
    assert st["global_step"] == 5
    # the weights saved are the last finite ones: no NaN was applied
    assert all(torch.isfinite(v).all() for v in st["model"].values())


def test_lr_schedule() -> None:
    assert T.lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert T.lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert T.lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert T.lr_at(100, 100, 10, 1.0) == pytest.approx(0.01)
    assert T.lr_at(55, 100, 10, 1.0) == pytest.approx(0.01 + 0.99 * 0.5)


def test_epoch_sampler_is_seeded_and_resumable() -> None:
    s = T.EpochSampler(20, seed=3)
    s.set(1)
    full = list(s)
    assert sorted(full) == list(range(20))
    s.set(1, start=8)
    assert list(s) == full[8:] and len(s) == 12
    s.set(2)
    assert list(s) != full
    assert list(T.EpochSampler(20, seed=3).order()) == T.EpochSampler(20, seed=3).order()


def test_checkpoint_refuses_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {"w": torch.ones(100)}, "model_args": {"x": 1}, "epoch": 1})
    assert load_checkpoint(good)["epoch"] == 1
    assert not list(tmp_path.glob("*.tmp")), "written atomically: no temp file left"
    data = good.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"trunc\.pt: not a readable checkpoint"):
        load_checkpoint(trunc)
    with pytest.raises(ModelError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    with pytest.raises(ModelError):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ModelError, match="not an edge-mtl checkpoint"):
        load_checkpoint(foreign)


def test_init_weights_fine_tunes_from_another_run(tmp_path: Path) -> None:
    src = ToyTask()
    first = _trainer(src, tmp_path / "a")
    first.fit()
    trained = _weights(src)
    fresh = ToyTask()
    assert not all(torch.equal(trained[k], v) for k, v in _weights(fresh).items())
    ft = _trainer(fresh, tmp_path / "b")
    ft.init_weights(tmp_path / "a" / "best.pt")
    best = load_checkpoint(tmp_path / "a" / "best.pt")["model"]
    assert all(torch.equal(best[k], v) for k, v in _weights(fresh).items())
    assert ft.epoch == 0 and ft.global_step == 0 and ft.best is None  # schedule and selection start afresh
    assert fresh.epochs_started == [0, 1, 2]  # the task's own state (a margin head's centres) comes along
    ft.fit()
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["epoch"] == 0 and lines[0]["init"] == str(tmp_path / "a" / "best.pt")
    with torch.no_grad():
        names = src.validate()
    assert set(lines[0]) >= {f"val_{k}" for k in names}  # the starting point, measured like an epoch
    assert [x["epoch"] for x in lines[1:]] == list(range(1, ft.epochs + 1))

    class OtherArgs(ToyTask):
        def model_args(self) -> dict[str, Any]:
            return {"toy": {"in": 5}}

    with pytest.raises(ModelError, match="model args"):
        _trainer(OtherArgs(), tmp_path / "c").init_weights(tmp_path / "a" / "best.pt")


def test_init_from_a_deploy_model_needs_a_task_that_can(tmp_path: Path) -> None:
    """Only a recognizer task unfolds a deploy ONNX; any other task names the problem instead of misloading it."""
    with pytest.raises(ModelError, match="only a recognizer run"):
        _trainer(ToyTask(), tmp_path / "a").init_weights(tmp_path / "recognizer.onnx")

    seen: list[Path] = []

    class Recovering(ToyTask):
        def init_from_deploy(self, path: Path) -> None:
            seen.append(path)

    task = Recovering()
    _trainer(task, tmp_path / "b").init_weights(tmp_path / "recognizer.onnx")
    assert seen == [tmp_path / "recognizer.onnx"]


def test_init_can_carry_the_optimizer_moments(tmp_path: Path) -> None:
    """init_optimizer: the other run's AdamW moments come along, this run's hyperparameters stay; checkpoints without
    (or with another optimizer's) state are refused by name."""
    src = ToyTask()
    _trainer(src, tmp_path / "a").fit()
    saved = load_checkpoint(tmp_path / "a" / "last.pt")["optimizer"]
    ft = T.Trainer(
        ToyTask(), src.dataset(), None, tmp_path / "b", config={"toy": True}, kind="toy", epochs=2, batch_size=8,
        lr=0.001, weight_decay=0.2, warmup_steps=4, grad_clip=1.0, workers=0, seed=5,
    )
    ft.init_weights(tmp_path / "a" / "last.pt", optimizer=True)
    state = list(ft.opt.state.values())
    assert len(state) == len(saved["state"]) > 0
    for mine, theirs in zip(state, saved["state"].values(), strict=True):
        assert torch.equal(mine["exp_avg"], theirs["exp_avg"]) and torch.equal(mine["exp_avg_sq"], theirs["exp_avg_sq"])
    assert [g["weight_decay"] for g in ft.opt.param_groups] == [0.2, 0.0]  # this run's, not the source's 0.01
    assert ft.epoch == 0 and ft.global_step == 0
    ft.fit()
    assert ft.global_step == 2 * ft.steps_per_epoch

    fresh = _trainer(ToyTask(), tmp_path / "c")
    fresh.init_weights(tmp_path / "a" / "last.pt")
    assert len(fresh.opt.state) == 0  # the default: moments start from zero

    averaged = tmp_path / "avg.pt"
    st = load_checkpoint(tmp_path / "a" / "last.pt")
    del st["optimizer"]
    save_checkpoint(averaged, st)
    with pytest.raises(ModelError, match="no optimizer state"):
        _trainer(ToyTask(), tmp_path / "d").init_weights(averaged, optimizer=True)
    sgd = T.Trainer(
        ToyTask(), src.dataset(), None, tmp_path / "e", config={"toy": True}, kind="toy", epochs=1, batch_size=8,
        lr=0.01, weight_decay=0.0, optimizer="sgd", workers=0,
    )
    with pytest.raises(ModelError, match="not from a SGD run"):
        sgd.init_weights(tmp_path / "a" / "last.pt", optimizer=True)
    with pytest.raises(ModelError, match="no optimizer state"):
        _trainer(ToyTask(), tmp_path / "f").init_weights(tmp_path / "recognizer.onnx", optimizer=True)


def test_resume_keeps_best_only_when_chosen_by_the_same_metric(tmp_path: Path) -> None:
    """best.pt follows `main_metric`; a checkpoint whose best was chosen by another metric (the recognizer moved
    from the 1,000-pair View 1 figure to the 10-fold one) does not compare numbers of two different figures."""
    tr = _trainer(ToyTask(), tmp_path / "a", max_steps=16)
    tr.fit()
    assert tr.best is not None
    st = load_checkpoint(tmp_path / "a" / "last.pt")
    assert st["best_metric"] == "mse"
    same = _trainer(ToyTask(), tmp_path / "a")
    same.resume(tmp_path / "a" / "last.pt")
    assert same.best == tr.best

    class OtherMetric(ToyTask):
        main_metric = "mae"

    other = _trainer(OtherMetric(), tmp_path / "a")
    other.resume(tmp_path / "a" / "last.pt")
    assert other.best is None
    # a checkpoint from before best_metric was recorded keeps its best
    st.pop("best_metric")
    save_checkpoint(tmp_path / "old.pt", st)
    old = _trainer(OtherMetric(), tmp_path / "a")
    old.resume(tmp_path / "old.pt")
    assert old.best == tr.best


def test_lr_scales_split_the_groups_by_prefix() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 1)))
    model[1][1].weight.requires_grad_(False)
    groups = T.param_groups(model, 0.05, {"1": 0.1, "1.0.bias": 0.5})
    got = {(g["lr_scale"], g["weight_decay"]): [p.shape for p in g["params"]] for g in groups}
    assert got == {
        (1.0, 0.05): [torch.Size([8, 4])], (1.0, 0.0): [torch.Size([8])],  # layer 0
        (0.1, 0.05): [torch.Size([8, 8])], (0.1, 0.0): [torch.Size([1])],  # layer 1's, frozen weight left out
        (0.5, 0.0): [torch.Size([8])],  # the longest prefix wins
    }
    assert [g["lr_scale"] for g in groups][:2] == [1.0, 1.0], "unscaled groups first, as before the option"
    with pytest.raises(InputError, match="names no trained parameter"):
        T.param_groups(model, 0.05, {"1.1.weight": 0.1})  # frozen
    with pytest.raises(InputError, match="2"):
        T.param_groups(model, 0.05, {"2": 0.1})


def test_lr_scales_slow_the_named_parameters_and_resume_exactly(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    moves = {}
    for scale in (1.0, 0.01):
        task = ToyTask()
        before = _weights(task)
        _trainer(task, tmp_path / f"s{scale}", lr_scales={"0": scale}).fit()
        after = _weights(task)
        moves[scale] = {k: float((after[k] - before[k]).abs().max()) for k in before}
    assert moves[0.01]["0.weight"] < 0.1 * moves[1.0]["0.weight"], moves
    assert moves[0.01]["2.weight"] > 0.1 * moves[1.0]["2.weight"], "the unscaled layer still learns"

    ref = ToyTask()
    _trainer(ref, tmp_path / "a", lr_scales={"0": 0.01}).fit()
    first = ToyTask()
    _trainer(first, tmp_path / "b", max_steps=7, lr_scales={"0": 0.01}).fit()
    resumed = ToyTask()
    tr = _trainer(resumed, tmp_path / "b", lr_scales={"0": 0.01})
    tr.resume(tmp_path / "b" / "last.pt")
    assert {g["lr_scale"] for g in tr.opt.param_groups} == {1.0, 0.01}
    tr.fit()
    for name, w in _weights(resumed).items():
        torch.testing.assert_close(w, _weights(ref)[name], atol=1e-6, rtol=0, msg=name)
