"""Landmark refiner: a small dense CNN that corrects the detector's four landmarks on an aligned face crop.

The detector regresses landmarks from one anchor's features, coarse for small faces. The refiner sees the face
already aligned (by the detector's own landmarks) at 64x64 and predicts where each point really is, as an offset
from its template position; one or two passes bring the error well below the detector's (cascaded regression, as
in MTCNN's O-Net or the LBF/ERT shape regressors, here as one CNN).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from edge_mtl.models.blocks import ConvBNAct


@dataclass(frozen=True)
class LandmarkArgs:
    size: int = 64
    widths: tuple[int, ...] = (24, 48, 64, 96)
    points: int = 4

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, object]) -> LandmarkArgs:
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return LandmarkArgs(**kw)  # type: ignore[arg-type]


class LandmarkRefiner(nn.Module):
    """64x64 crop -> 2K offsets (in units of the crop side) from the template positions."""

    def __init__(self, args: LandmarkArgs | None = None) -> None:
        super().__init__()
        self.args = args or LandmarkArgs()
        w = self.args.widths
        layers: list[nn.Module] = [ConvBNAct(3, w[0], 3, 2)]  # 32
        cin = w[0]
        for cout in w[1:]:  # 16, 8, 4
            layers += [ConvBNAct(cin, cout, 3, 2), ConvBNAct(cout, cout, 3, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        spatial = self.args.size // (2 ** len(w))
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * spatial * spatial, 128), nn.ReLU(inplace=True),
            nn.Linear(128, 2 * self.args.points),
        )
        last = self.head[-1]
        assert isinstance(last, nn.Linear) and last.bias is not None
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LandmarkExport(nn.Module):
    """Deploy wrapper: one output, `offsets` (B x 2K)."""

    def __init__(self, model: LandmarkRefiner) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model(x),)
