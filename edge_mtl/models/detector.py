"""The face detector: anchor-free, single-shot, strides 8/16/32 (SCRFD / YuNet family).

Per anchor point it predicts a face score, the box as distances (left, top, right, bottom) from the point and the
landmarks as offsets from the point, all in units of the level's stride. Decoding and NMS happen outside the
network (`edge_mtl.runtime.postprocess`), vectorised in numpy, so the same ONNX serves every backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edge_mtl.models.blocks import ConvBNAct, DWSep

STRIDES: tuple[int, ...] = (8, 16, 32)


@dataclass(frozen=True)
class DetectorArgs:
    """Everything needed to rebuild the network; stored in checkpoints and ONNX metadata."""

    widths: tuple[int, ...] = (16, 32, 64, 96, 128)
    depths: tuple[int, ...] = (1, 2, 2, 2)
    neck: int = 48
    head_convs: int = 2
    points: int = 4

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, object]) -> DetectorArgs:
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return DetectorArgs(**kw)  # type: ignore[arg-type]


class Scale(nn.Module):
    """A learnable scalar per level for the box branch (levels share the head but not the box scale)."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Detector(nn.Module):
    """Backbone (strides 2..32) + top-down FPN neck + a head shared across levels.

    `forward` returns, per stride, a tuple (score_logits B x A x 1, box B x A x 4, landmarks B x A x 2K), where A is
    the number of anchor points of that level in row-major order.
    """

    def __init__(self, args: DetectorArgs | None = None) -> None:
        super().__init__()
        self.args = args or DetectorArgs()
        w, d = self.args.widths, self.args.depths
        self.stem = ConvBNAct(3, w[0], 3, 2)
        stages: list[nn.Module] = []
        cin = w[0]
        for cout, depth in zip(w[1:], d, strict=True):
            blocks: list[nn.Module] = [DWSep(cin, cout, 2)]
            blocks += [DWSep(cout, cout) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)  # strides 4, 8, 16, 32
        n = self.args.neck
        self.lateral = nn.ModuleList([ConvBNAct(c, n, 1) for c in w[2:]])
        self.smooth = nn.ModuleList([DWSep(n, n) for _ in w[2:]])
        self.head = nn.Sequential(*[DWSep(n, n) for _ in range(self.args.head_convs)])
        k = self.args.points
        self.cls = nn.Conv2d(n, 1, 1)
        self.box = nn.Conv2d(n, 4, 1)
        self.kps = nn.Conv2d(n, 2 * k, 1)
        self.box_scales = nn.ModuleList([Scale() for _ in STRIDES])
        self._init_bias()

    def _init_bias(self) -> None:
        # Start with a low face prior (p=0.01) so the focal loss is not swamped by easy negatives.
        assert self.cls.bias is not None and self.box.bias is not None and self.kps.bias is not None
        nn.init.constant_(self.cls.bias, -4.6)
        nn.init.constant_(self.box.bias, 1.0)
        nn.init.normal_(self.kps.weight, std=0.01)
        nn.init.zeros_(self.kps.bias)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        c3, c4, c5 = feats[1:]
        p5 = self.lateral[2](c5)
        p4 = self.lateral[1](c4) + F.interpolate(p5, size=c4.shape[-2:], mode="nearest")
        p3 = self.lateral[0](c3) + F.interpolate(p4, size=c3.shape[-2:], mode="nearest")
        return [self.smooth[0](p3), self.smooth[1](p4), self.smooth[2](p5)]

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        outs = []
        for i, p in enumerate(self.forward_features(x)):
            h = self.head(p)
            b = p.shape[0]
            cls = self.cls(h).flatten(2).transpose(1, 2)
            box = F.softplus(self.box_scales[i](self.box(h))).flatten(2).transpose(1, 2)
            kps = self.kps(h).flatten(2).transpose(1, 2)
            outs.append((cls.reshape(b, -1, 1), box.reshape(b, -1, 4), kps.reshape(b, -1, 2 * self.args.points)))
        return outs


class DetectorExport(nn.Module):
    """Deploy wrapper: scores as probabilities; outputs flattened per level as score_S, box_S, kps_S."""

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        flat: list[torch.Tensor] = []
        for cls, box, kps in self.model(x):
            flat += [torch.sigmoid(cls), box, kps]
        return tuple(flat)
