"""Multi-task losses on tiny problems with known answers, and the task weighting strategies."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

from torch import nn  # noqa: E402

from edge_mtl.train.losses.recognizer import MarginHead, age_loss, distill_loss, gender_loss, quality_loss  # noqa: E402
from edge_mtl.train.losses.weighting import (  # noqa: E402
    DWAWeighting,
    GradNormWeighting,
    StaticWeighting,
    UncertaintyWeighting,
    make_weighting,
)


def _at(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), math.sin(a)]])


def _head(kind: str, s: float = 10.0, m: float = 0.3) -> MarginHead:
    h = MarginHead(2, 2, kind=kind, s=s, m=m)
    with torch.no_grad():
        h.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.5]]))  # normalised inside: class 0 = x axis, 1 = y axis
    return h


# ------------------------------------------------------------------ margin head
def test_cosface_hand_checked() -> None:
    h = _head("cosface", s=10.0, m=0.3)
    loss, acc = h(_at(30.0) * 5.0, torch.tensor([0]))  # the embedding norm does not matter
    # logits 10 * [cos 30 - 0.3, sin 30] = [5.66, 5.0]
    want = math.log(1 + math.exp(10 * (0.5 - (math.cos(math.radians(30)) - 0.3))))
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(acc) == 1.0
    loss1, acc1 = h(_at(30.0), torch.tensor([1]))
    want1 = math.log(1 + math.exp(10 * (math.cos(math.radians(30)) - (0.5 - 0.3))))
    assert float(loss1) == pytest.approx(want1, rel=1e-5) and float(acc1) == 0.0


def test_arcface_margin_and_fallback() -> None:
    h = _head("arcface", s=10.0, m=0.5)
    loss, _ = h(_at(30.0), torch.tensor([0]))
    target = math.cos(math.radians(30) + 0.5)
    want = math.log(1 + math.exp(10 * (0.5 - target)))
    assert float(loss) == pytest.approx(want, rel=1e-5)
    # theta + m beyond pi: the monotonic fallback cos(theta) - m sin(m) is used
    loss, _ = h(_at(170.0), torch.tensor([0]))
    target = math.cos(math.radians(170)) - 0.5 * math.sin(0.5)
    other = math.cos(math.radians(80))
    want = math.log(1 + math.exp(10 * (other - target)))
    assert float(loss) == pytest.approx(want, rel=1e-4)
    # the margin makes the loss larger than plain softmax on the same cosines
    plain = math.log(1 + math.exp(10 * (0.5 - math.cos(math.radians(30)))))
    assert float(h(_at(30.0), torch.tensor([0]))[0]) > plain
    with pytest.raises(ValueError, match="cosface' or 'arcface'"):
        MarginHead(2, 2, kind="sphereface")


def test_margin_head_masks_unlabelled_and_trains() -> None:
    torch.manual_seed(0)
    h = MarginHead(8, 3, s=16.0, m=0.2)
    emb = torch.randn(6, 8, requires_grad=True)
    labels = torch.tensor([0, -1, 2, -1, 1, 0])
    loss_mixed, _ = h(emb, labels)
    keep = labels >= 0
    loss_only, _ = h(emb[keep], labels[keep])
    assert float(loss_mixed) == pytest.approx(float(loss_only), rel=1e-6)
    loss_mixed.backward()
    assert emb.grad is not None and emb.grad[~keep].abs().sum() == 0 and emb.grad[keep].abs().sum() > 0
    # a few steps of SGD separate three well-defined classes
    centres = torch.randn(3, 8)
    x = centres.repeat_interleave(10, 0) + 0.05 * torch.randn(30, 8)
    y = torch.arange(3).repeat_interleave(10)
    opt = torch.optim.SGD(h.parameters(), lr=0.5)
    first = None
    for _ in range(50):
        loss, acc = h(x, y)
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first / 2 and float(acc) == 1.0


def _assert_zero_with_graph(loss: torch.Tensor, *params: torch.Tensor) -> None:
    assert float(loss) == 0.0 and loss.requires_grad
    loss.backward()
    for p in params:
        assert p.grad is not None and float(p.grad.abs().sum()) == 0.0


def test_masked_losses_are_zero_with_graph_when_nothing_is_labelled() -> None:
    h = MarginHead(4, 3)
    emb = torch.randn(5, 4, requires_grad=True)
    loss, acc = h(emb, torch.full((5,), -1))
    assert math.isnan(float(acc))
    _assert_zero_with_graph(loss, emb, h.weight)
    none = torch.zeros(5, dtype=torch.bool)
    s = torch.randn(5, 4, requires_grad=True)
    _assert_zero_with_graph(distill_loss(s, torch.full((5, 4), float("nan")), none), s)
    lg = torch.randn(5, 101, requires_grad=True)
    _assert_zero_with_graph(age_loss(lg, torch.zeros(5), none), lg)
    g = torch.randn(5, 2, requires_grad=True)
    _assert_zero_with_graph(gender_loss(g, torch.zeros(5, dtype=torch.long), none), g)
    q = torch.randn(5, 1, requires_grad=True)
    _assert_zero_with_graph(quality_loss(q, torch.zeros(5), none), q)


# ------------------------------------------------------------------ other task losses
def test_distill_loss_known_values() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    t = torch.tensor([[3.0, 0.0], [1.0, 0.0], [float("nan"), 0.0]])
    mask = torch.tensor([True, True, False])
    # first row identical in direction (0), second orthogonal (1); the NaN teacher row is masked out
    assert float(distill_loss(s, t, mask)) == pytest.approx(0.5)


def test_age_loss_minimised_at_true_age() -> None:
    years = torch.arange(101, dtype=torch.float32)
    ages = torch.tensor([37.0, 8.0])
    mask = torch.tensor([True, True])

    def loss_at(c: torch.Tensor) -> float:
        logits = -0.5 * ((years[None, :] - c[:, None]) / 2.5) ** 2  # a Gaussian guess centred on c
        return float(age_loss(logits, ages, mask))

    best = min(range(101), key=lambda c: loss_at(torch.tensor([float(c), 8.0])))
    assert best == 37
    # free logits trained from scratch read out the true age as their expectation
    logits = torch.zeros(2, 101, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.3)
    for _ in range(200):
        loss = age_loss(logits, ages, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    expectation = (logits.softmax(1) * years).sum(1)
    torch.testing.assert_close(expectation, ages, atol=0.5, rtol=0)


def test_gender_loss() -> None:
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0], [0.0, 0.0]])
    g = torch.tensor([0, 1, 1])
    mask = torch.tensor([True, True, False])
    right = float(gender_loss(logits, g, mask, smoothing=0.0))
    assert right == pytest.approx(math.log(1 + math.exp(-10)), rel=1e-2)
    wrong = float(gender_loss(logits, 1 - g, mask, smoothing=0.0))
    assert wrong == pytest.approx(10.0, rel=1e-3)
    assert float(gender_loss(logits, g, mask, smoothing=0.1)) > right  # smoothing penalises over-confidence


def test_quality_loss_minimum_at_target() -> None:
    target = torch.tensor([0.7, 1.4])  # above 1 is clamped
    mask = torch.tensor([True, True])
    logit = torch.tensor([[math.log(0.7 / 0.3)], [30.0]], requires_grad=True)
    loss = quality_loss(logit, target, mask)
    loss.backward()
    assert logit.grad is not None and float(logit.grad.abs().max()) < 1e-6
    for delta in (-0.5, 0.5):
        assert float(quality_loss(logit.detach() + delta, target, mask)) > float(loss)


# ------------------------------------------------------------------ task weighting
def test_static_weighting() -> None:
    w = StaticWeighting(["a", "b"], {"a": 2.0})
    total, used = w.combine({"a": torch.tensor(3.0), "b": torch.tensor(5.0)})
    assert float(total) == 11.0 and used == {"a": 2.0, "b": 1.0}
    assert isinstance(make_weighting("static", ["a"], {}), StaticWeighting)
    with pytest.raises(ValueError, match="unknown task weighting"):
        make_weighting("magic", ["a"], {})


def test_uncertainty_weighting_down_weights_the_noisy_task() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    clean = x @ torch.tensor([1.0, -1.0, 2.0, 0.5]) + 0.05 * torch.randn(256)
    noisy = x @ torch.tensor([0.5, 1.0, -1.0, 1.0]) + 2.0 * torch.randn(256)
    shared = nn.Linear(4, 16)
    heads = nn.ModuleDict({"clean": nn.Linear(16, 1), "noisy": nn.Linear(16, 1)})
    w = UncertaintyWeighting(["clean", "noisy"])
    opt = torch.optim.Adam([*shared.parameters(), *heads.parameters(), *w.parameters()], lr=0.03)
    for _ in range(200):
        f = shared(x)
        losses = {
            "clean": ((heads["clean"](f).squeeze(1) - clean) ** 2).mean(),
            "noisy": ((heads["noisy"](f).squeeze(1) - noisy) ** 2).mean(),
        }
        total, weights = w.combine(losses)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert weights["noisy"] < 0.5 * weights["clean"], weights
    # the optimum of exp(-s) L + s is exp(-s) = 1 / L: weights track the inverse losses
    assert weights["noisy"] == pytest.approx(1 / float(losses["noisy"]), rel=0.5)


def test_uncertainty_weighting_starts_from_static_weights() -> None:
    w = UncertaintyWeighting(["a", "b"], {"a": 2.0, "b": 0.5})
    total, used = w.combine({"a": torch.tensor(1.0), "b": torch.tensor(1.0)})
    assert used == pytest.approx({"a": 2.0, "b": 0.5})
    assert float(total) == pytest.approx(2.0 + 0.5 - math.log(2.0) - math.log(0.5))


def test_dwa_follows_the_loss_ratio_formula() -> None:
    w = DWAWeighting(["a", "b", "c"], temperature=2.0, base={"c": 3.0})
    losses = {"a": torch.tensor(1.0), "b": torch.tensor(1.0), "c": torch.tensor(1.0)}
    _, used = w.combine(losses)
    assert used == {"a": 1.0, "b": 1.0, "c": 3.0}
    w.end_epoch({"a": 1.0, "b": 2.0, "c": 4.0})
    assert w.weights == {"a": 1.0, "b": 1.0, "c": 1.0}, "one epoch is not enough history"
    w.end_epoch({"a": 0.5, "b": 1.8, "c": 4.0})
    r = [0.5 / 1.0, 1.8 / 2.0, 4.0 / 4.0]
    e = [math.exp(v / 2.0) for v in r]
    want = [3 * v / sum(e) for v in e]
    assert [w.weights[t] for t in "abc"] == pytest.approx(want, rel=1e-6)
    assert sum(w.weights.values()) == pytest.approx(3.0)
    assert w.weights["c"] > w.weights["b"] > w.weights["a"], "the slowest task gets the most weight"
    total, used = w.combine(losses)
    assert float(total) == pytest.approx(want[0] + want[1] + 3 * want[2], rel=1e-6)
    # the history survives a checkpoint
    w2 = DWAWeighting(["a", "b", "c"], temperature=2.0, base={"c": 3.0})
    w2.load_state_dict(w.state_dict())
    assert w2.weights == w.weights and w2.history == w.history


def test_gradnorm_keeps_sum_and_favours_the_slower_task() -> None:
    torch.manual_seed(0)
    x = torch.randn(128, 4)
    easy = x @ torch.tensor([1.0, 0.0, 0.0, 0.0])
    hard = torch.sin(3 * x[:, 1]) * x[:, 2] + x[:, 3] ** 2  # not linear: its loss falls slowly
    shared = nn.Linear(4, 16)
    heads = nn.ModuleDict({"easy": nn.Linear(16, 1), "hard": nn.Linear(16, 1)})
    w = GradNormWeighting(["easy", "hard"], alpha=1.5, lr=0.05)
    assert w.needs_shared
    opt = torch.optim.Adam([*shared.parameters(), *heads.parameters()], lr=0.02)
    for _ in range(60):
        f = torch.relu(shared(x))
        losses = {
            "easy": ((heads["easy"](f).squeeze(1) - easy) ** 2).mean(),
            "hard": ((heads["hard"](f).squeeze(1) - hard) ** 2).mean(),
        }
        total, weights = w.combine(losses, shared=list(shared.parameters()))
        assert sum(weights.values()) == pytest.approx(2.0, rel=1e-5)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert weights["hard"] > 1.2 > 0.8 > weights["easy"], weights
    with pytest.raises(ValueError, match="last shared layer"):
        w.combine(losses)
