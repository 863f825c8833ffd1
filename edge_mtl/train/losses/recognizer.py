"""Losses for the multi-task recognizer. Every loss takes a mask: batches mix partially labelled sources
(identity-labelled CelebA, age/gender-labelled UTKFace, teacher embeddings for any face), and a task contributes
only through the samples that carry its label."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _zero(ref: torch.Tensor) -> torch.Tensor:
    """A zero that keeps the graph connected (so every parameter gets a gradient, possibly zero)."""
    return ref.sum() * 0.0


class MarginHead(nn.Module):
    """Training-only classifier with an additive margin: CosFace (cos θ - m) or ArcFace (cos(θ + m)), scale s.

    Its class weights never enter the deploy model (docs/architecture.md, adding a model).
    """

    def __init__(self, dim: int, classes: int, kind: str = "cosface", s: float = 32.0, m: float = 0.3) -> None:
        super().__init__()
        if kind not in ("cosface", "arcface"):
            raise ValueError(f"margin head: expected 'cosface' or 'arcface', got {kind!r}")
        self.kind, self.s, self.m = kind, s, m
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss over samples with label >= 0, their top-1 accuracy)."""
        mask = labels >= 0
        if not mask.any():
            return _zero(emb) + _zero(self.weight), torch.tensor(float("nan"))
        e = F.normalize(emb[mask], dim=1)
        w = F.normalize(self.weight, dim=1)
        cos = (e @ w.t()).clamp(-1 + 1e-7, 1 - 1e-7)
        y = labels[mask]
        onehot = F.one_hot(y, cos.shape[1]).bool()
        if self.kind == "cosface":
            target = cos - self.m
        else:
            theta = torch.acos(cos)
            target = torch.where(theta + self.m < math.pi, torch.cos(theta + self.m), cos - self.m * math.sin(self.m))
        logits = self.s * torch.where(onehot, target, cos)
        loss = F.cross_entropy(logits, y)
        acc = (cos.argmax(1) == y).float().mean().detach()
        return loss, acc


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - cosine between student and teacher embeddings (teacher rows may be NaN where not available)."""
    if not mask.any():
        return _zero(student)
    s = F.normalize(student[mask], dim=1)
    t = F.normalize(teacher[mask], dim=1)
    return (1 - (s * t).sum(1)).mean()


def age_loss(logits: torch.Tensor, age: torch.Tensor, mask: torch.Tensor, sigma: float = 2.5) -> torch.Tensor:
    """Label-distribution learning (Gao et al. 2017): cross-entropy against a Gaussian over years centred on the
    true age, plus an L1 term on the expectation so the read-out itself is optimised (mean-variance style)."""
    if not mask.any():
        return _zero(logits)
    lg = logits[mask]
    a = age[mask].float()
    years = torch.arange(lg.shape[1], dtype=lg.dtype, device=lg.device)
    target = torch.exp(-0.5 * ((years[None, :] - a[:, None]) / sigma) ** 2)
    target = target / target.sum(1, keepdim=True)
    logp = F.log_softmax(lg, dim=1)
    ce = -(target * logp).sum(1).mean()
    expectation = (logp.exp() * years).sum(1)
    return ce + 0.1 * (expectation - a).abs().mean()


def gender_loss(
    logits: torch.Tensor, gender: torch.Tensor, mask: torch.Tensor, smoothing: float = 0.05
) -> torch.Tensor:
    if not mask.any():
        return _zero(logits)
    return F.cross_entropy(logits[mask], gender[mask], label_smoothing=smoothing)


def soft_gender_loss(logits: torch.Tensor, p_female: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a teacher's soft label (P(female); logits ordered male, female)."""
    if not mask.any():
        return _zero(logits)
    logp = F.log_softmax(logits[mask], dim=1)
    p = p_female[mask].clamp(0, 1)
    return -(p * logp[:, 1] + (1 - p) * logp[:, 0]).mean()


def quality_loss(logit: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE against a soft target in [0, 1] (how well this crop's embedding agrees with its identity's reference)."""
    if not mask.any():
        return _zero(logit)
    return F.binary_cross_entropy_with_logits(logit[mask].squeeze(-1), target[mask].clamp(0, 1))
