"""The multi-task recognizer: one shared backbone, task heads in an `nn.ModuleDict`.

Input: an aligned 112x112 face. Heads: `embedding` (L2-normalised identity embedding), `age` (a distribution over
0..100 years), `gender` (2 logits: male, female), `quality` (how much to trust this crop, in [0, 1]).
The backbone is RepVGG-style: multi-branch while training, plain dense 3x3 convolutions after `fuse()`, which is
what TensorRT and INT8 run best (export/recognizer.md). Training-only parts (margin-loss class weights, teachers)
live in `edge_mtl.train`, never here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from edge_mtl.models.blocks import ConvBNAct, RepVGGBlock, fuse_repvgg

AGE_BINS = 101  # 0..100 years


@dataclass(frozen=True)
class RecognizerArgs:
    """Everything needed to rebuild the network; stored in checkpoints and ONNX metadata."""

    widths: tuple[int, ...] = (32, 64, 128, 224)
    depths: tuple[int, ...] = (1, 2, 6, 2)
    embedding_dim: int = 128
    embedding_hidden: int = 320
    input_size: int = 112
    # the grey level of the aligned crop where it reaches beyond its image (a face at the edge of a frame, a face cut
    # at its box); part of the input convention the network was trained with, so the runtime aligns with it
    # (FaceRecognizer.fill). 0, black, for every model up to recognizer-1.6.
    fill: int = 0

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        if not self.fill:  # black: the args of every checkpoint and model file before the field, unchanged
            del d["fill"]
        return d

    @staticmethod
    def from_dict(d: dict[str, object]) -> RecognizerArgs:
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return RecognizerArgs(**kw)  # type: ignore[arg-type]


class Backbone(nn.Module):
    """RepVGG-style backbone: a stride-2 stem, then stages that each start with a stride-2 block (112 -> 7)."""

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...]) -> None:
        super().__init__()
        self.stem = RepVGGBlock(3, widths[0], 2)
        stages = []
        cin = widths[0]
        for cout, depth in zip(widths[1:], depths[1:], strict=True):
            blocks = [RepVGGBlock(cin, cout, 2)] + [RepVGGBlock(cout, cout) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class EmbeddingHead(nn.Module):
    """1x1 expansion, global depthwise conv (GDC) over the 7x7 map, linear projection, BN (MobileFaceNet's tail).

    GDC keeps where-in-the-face information that average pooling would throw away, for a fraction of the
    parameters of a flatten + linear layer.
    """

    def __init__(self, cin: int, hidden: int, dim: int, spatial: int) -> None:
        super().__init__()
        self.expand = ConvBNAct(cin, hidden, 1)
        self.gdc = nn.Sequential(
            nn.Conv2d(hidden, hidden, spatial, groups=hidden, bias=False), nn.BatchNorm2d(hidden)
        )
        self.proj = nn.Linear(hidden, dim, bias=False)
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.bn(self.proj(self.gdc(self.expand(f)).flatten(1)))


def _mlp(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, cout))


def task_heads(a: RecognizerArgs) -> nn.ModuleDict:
    """The four task heads on the backbone's last feature map (a.widths[-1] channels, input/16 spatial)."""
    c = int(a.widths[-1])
    return nn.ModuleDict(
        {
            "embedding": EmbeddingHead(c, a.embedding_hidden, a.embedding_dim, a.input_size // 16),
            "age": _mlp(c, 128, AGE_BINS),
            "gender": _mlp(c, 64, 2),
            "quality": _mlp(c, 64, 1),
        }
    )


class Recognizer(nn.Module):
    """Shared backbone + heads. `forward` returns raw head outputs as a dict keyed by task.

    embedding: B x D (not normalised; the margin loss and `RecognizerExport` normalise), age: B x 101 logits,
    gender: B x 2 logits, quality: B x 1 logit.
    """

    def __init__(self, args: RecognizerArgs | None = None) -> None:
        super().__init__()
        self.args = args or RecognizerArgs()
        a = self.args
        self.backbone = Backbone(a.widths, a.depths)
        self.heads = task_heads(a)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_heads(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = f.mean(dim=(2, 3))
        out = {"embedding": self.heads["embedding"](f)}
        for task in ("age", "gender", "quality"):
            out[task] = self.heads[task](pooled)
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_heads(self.forward_features(x))


def age_readout(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expectation and standard deviation (years) of the softmax distribution over 0..100."""
    p = F.softmax(logits, dim=-1)
    years = torch.arange(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    mean = (p * years).sum(-1)
    var = (p * (years - mean[:, None]) ** 2).sum(-1)
    return mean, var.clamp_min(1e-6).sqrt()


class RecognizerExport(nn.Module):
    """Deploy form with named outputs: embedding (B x D, unit norm), age (B x 2: years, std),
    gender (B x 2 probabilities: male, female), quality (B x 1 in [0, 1])."""

    def __init__(self, model: Recognizer) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(x)
        emb = F.normalize(out["embedding"], dim=-1)
        mean, std = age_readout(out["age"])
        gender = F.softmax(out["gender"], dim=-1)
        quality = torch.sigmoid(out["quality"])
        return emb, torch.stack([mean, std], dim=-1), gender, quality


def deploy_copy(model: Recognizer) -> Recognizer:
    """An eval-mode copy with RepVGG branches fused; the training model is left untouched."""
    import copy

    m = copy.deepcopy(model).eval()
    fuse_repvgg(m)
    return m


class SoftSharedRecognizer(nn.Module):
    """Soft parameter sharing: one backbone per task group, tied by an L2 penalty between corresponding weights
    (Duong et al. 2015) instead of being one network. Identity embedding and quality read the `identity`
    backbone; age and gender read the `attributes` backbone. Twice the compute of the hard-shared model: it is
    here to measure whether hard sharing costs accuracy, not to ship."""

    GROUPS: ClassVar[dict[str, str]] = {
        "embedding": "identity", "quality": "identity", "age": "attributes", "gender": "attributes"
    }

    def __init__(self, args: RecognizerArgs | None = None) -> None:
        super().__init__()
        self.args = args or RecognizerArgs()
        a = self.args
        self.backbones = nn.ModuleDict(
            {g: Backbone(a.widths, a.depths) for g in ("identity", "attributes")}
        )
        self.heads = task_heads(a)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = {g: b(x) for g, b in self.backbones.items()}
        pooled = {g: f.mean(dim=(2, 3)) for g, f in feats.items()}
        out = {"embedding": self.heads["embedding"](feats["identity"])}
        for task in ("age", "gender", "quality"):
            out[task] = self.heads[task](pooled[self.GROUPS[task]])
        return out

    def soft_penalty(self) -> torch.Tensor:
        """Sum of squared differences between the two backbones' corresponding parameters."""
        a = dict(self.backbones["identity"].named_parameters())
        b = dict(self.backbones["attributes"].named_parameters())
        return sum(((a[k] - b[k]) ** 2).sum() for k in a)  # type: ignore[return-value]
