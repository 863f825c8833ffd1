"""Task weighting strategies for the joint loss: static, uncertainty, DWA, GradNorm.

- static: fixed weights from the config.
- uncertainty (Kendall, Gal & Cipolla 2018): a learned log-variance s_i per task; L = sum(exp(-s_i) L_i + s_i).
  A noisy task learns a large s_i and so a small weight.
- DWA (Liu, Johns & Davison 2019): weights from how fast each loss fell over the last two epochs,
  w_i = K softmax(r_i / T), r_i = L_i(t-1) / L_i(t-2); slow tasks get more weight.
- GradNorm (Chen et al. 2018): learned weights pushed so that each task's gradient norm on the last shared layer
  is proportional to its relative inverse training rate to the power alpha; weights renormalised to sum to K.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class TaskWeighting(nn.Module):
    """Combine per-task losses into one. `combine` returns (total, weights used)."""

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        self.tasks = list(tasks)

    def combine(
        self, losses: dict[str, torch.Tensor], shared: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Called with each task's mean loss of the epoch just finished."""
        return None

    @property
    def needs_shared(self) -> bool:
        return False


class StaticWeighting(TaskWeighting):
    def __init__(self, tasks: Sequence[str], weights: dict[str, float]) -> None:
        super().__init__(tasks)
        self.weights = {t: float(weights.get(t, 1.0)) for t in self.tasks}

    def combine(
        self, losses: dict[str, torch.Tensor], shared: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total = sum((self.weights[t] * losses[t] for t in self.tasks), torch.zeros(()))
        return total, dict(self.weights)


class UncertaintyWeighting(TaskWeighting):
    def __init__(self, tasks: Sequence[str], init: dict[str, float] | None = None) -> None:
        super().__init__(tasks)
        # Start from the static weights if given: s = -log(w).
        init = init or {}
        self.log_vars = nn.Parameter(
            torch.tensor([-math.log(max(init.get(t, 1.0), 1e-3)) for t in self.tasks], dtype=torch.float32)
        )

    def combine(
        self, losses: dict[str, torch.Tensor], shared: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total = torch.zeros(())
        weights = {}
        for i, t in enumerate(self.tasks):
            s = self.log_vars[i]
            total = total + torch.exp(-s) * losses[t] + s
            weights[t] = float(torch.exp(-s).detach())
        return total, weights


class DWAWeighting(TaskWeighting):
    def __init__(self, tasks: Sequence[str], temperature: float = 2.0, base: dict[str, float] | None = None) -> None:
        super().__init__(tasks)
        self.temperature = temperature
        self.base = {t: float((base or {}).get(t, 1.0)) for t in self.tasks}
        self.history: list[dict[str, float]] = []
        self.weights = {t: 1.0 for t in self.tasks}

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        self.history.append({t: float(mean_losses[t]) for t in self.tasks})
        if len(self.history) >= 2:
            prev, last = self.history[-2], self.history[-1]
            r = torch.tensor([last[t] / max(prev[t], 1e-8) for t in self.tasks])
            w = len(self.tasks) * torch.softmax(r / self.temperature, dim=0)
            self.weights = {t: float(w[i]) for i, t in enumerate(self.tasks)}

    def combine(
        self, losses: dict[str, torch.Tensor], shared: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        eff = {t: self.weights[t] * self.base[t] for t in self.tasks}
        total = sum((eff[t] * losses[t] for t in self.tasks), torch.zeros(()))
        return total, eff

    def get_extra_state(self) -> dict[str, object]:
        return {"history": self.history, "weights": self.weights}

    def set_extra_state(self, state: dict[str, object]) -> None:
        self.history = list(state.get("history", []))  # type: ignore[call-overload]
        self.weights = dict(state.get("weights", self.weights))  # type: ignore[call-overload]


class GradNormWeighting(TaskWeighting):
    def __init__(
        self, tasks: Sequence[str], alpha: float = 1.5, lr: float = 0.025, base: dict[str, float] | None = None
    ) -> None:
        super().__init__(tasks)
        self.alpha = alpha
        self.base = {t: float((base or {}).get(t, 1.0)) for t in self.tasks}
        self.w = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial", torch.full((len(self.tasks),), float("nan")))
        self._opt = torch.optim.Adam([self.w], lr=lr)

    @property
    def needs_shared(self) -> bool:
        return True

    def combine(
        self, losses: dict[str, torch.Tensor], shared: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if shared is None:
            raise ValueError("GradNorm needs the last shared layer's parameters")
        lv = torch.stack([losses[t] * self.base[t] for t in self.tasks])
        initial: torch.Tensor = self.initial  # type: ignore[assignment]
        if torch.isnan(initial).any():
            initial.copy_(lv.detach().clamp_min(1e-8))
        params = [p for p in shared if p.requires_grad]
        norms = []
        for i in range(len(self.tasks)):
            if not lv[i].requires_grad:
                norms.append(torch.zeros(()))
                continue
            g = torch.autograd.grad(lv[i], params, retain_graph=True, allow_unused=True)
            flat = torch.cat([x.flatten() for x in g if x is not None]) if any(x is not None for x in g) else None
            norms.append(flat.norm() if flat is not None else torch.zeros(()))
        gn = self.w * torch.stack(norms).detach()
        ratio = lv.detach() / initial
        inv_rate = ratio / ratio.mean().clamp_min(1e-8)
        target = (gn.mean() * inv_rate**self.alpha).detach()
        gn_loss = (gn - target).abs().sum()
        self._opt.zero_grad(set_to_none=True)
        self.w.grad = torch.autograd.grad(gn_loss, self.w)[0]
        self._opt.step()
        with torch.no_grad():
            self.w.clamp_(min=1e-3)
            self.w.mul_(len(self.tasks) / self.w.sum())
        wd = self.w.detach()
        total = (wd * lv).sum()
        return total, {t: float(wd[i] * self.base[t]) for i, t in enumerate(self.tasks)}


def make_weighting(kind: str, tasks: Sequence[str], static: dict[str, float]) -> TaskWeighting:
    if kind == "static":
        return StaticWeighting(tasks, static)
    if kind == "uncertainty":
        return UncertaintyWeighting(tasks, static)
    if kind == "dwa":
        return DWAWeighting(tasks, base=static)
    if kind == "gradnorm":
        return GradNormWeighting(tasks, base=static)
    raise ValueError(f"unknown task weighting {kind!r}")
