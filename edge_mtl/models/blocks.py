"""Building blocks: conv-BN-act, depthwise-separable blocks, and RepVGG blocks with deploy-time fusion."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNAct(nn.Sequential):
    """Conv2d without bias, BatchNorm, ReLU (ReLU quantizes and fuses well on TensorRT and ORT)."""

    def __init__(
        self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DWSep(nn.Module):
    """Depthwise 3x3 + pointwise 1x1, residual when shapes allow. Used by the detector for its cheap high-res layers."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.dw = ConvBNAct(cin, cin, 3, stride, groups=cin, act=False)
        self.pw = ConvBNAct(cin, cout, 1, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return x + y if self.residual else y


def _fuse_conv_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    assert bn.running_var is not None and bn.running_mean is not None
    std = (bn.running_var + bn.eps).sqrt()
    t = (bn.weight / std).reshape(-1, 1, 1, 1)
    return kernel * t, bn.bias - bn.running_mean * bn.weight / std


class RepVGGBlock(nn.Module):
    """3x3 conv + 1x1 conv + identity branches in training; one plain 3x3 conv after `fuse()` (Ding et al. 2021).

    The fused form is a single dense 3x3 convolution with ReLU: the layer TensorRT and ONNX Runtime run fastest
    and quantize best to INT8.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.conv3 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn_id = nn.BatchNorm2d(cout) if cin == cout and stride == 1 else None
        self.fused: nn.Conv2d | None = None
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        y = self.bn3(self.conv3(x)) + self.bn1(self.conv1(x))
        if self.bn_id is not None:
            y = y + self.bn_id(x)
        return self.act(y)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the three branches and their BatchNorms into one 3x3 convolution with bias (deploy form)."""
        if self.fused is not None:
            return
        k3, b3 = _fuse_conv_bn(self.conv3.weight, self.bn3)
        k1, b1 = _fuse_conv_bn(F.pad(self.conv1.weight, [1, 1, 1, 1]), self.bn1)
        k, b = k3 + k1, b3 + b1
        if self.bn_id is not None:
            ident = torch.zeros(self.cout, self.cin, 3, 3, device=k.device, dtype=k.dtype)
            ident[torch.arange(self.cout), torch.arange(self.cin), 1, 1] = 1.0
            kid, bid = _fuse_conv_bn(ident, self.bn_id)
            k, b = k + kid, b + bid
        conv = nn.Conv2d(self.cin, self.cout, 3, self.stride, 1, bias=True).to(k.device)
        conv.weight.copy_(k)
        assert conv.bias is not None
        conv.bias.copy_(b)
        self.fused = conv
        del self.conv3, self.bn3, self.conv1, self.bn1
        self.bn_id = None


def fuse_repvgg(module: nn.Module) -> nn.Module:
    """Fuse every RepVGG block of `module` in place (call on an eval-mode copy before export)."""
    for m in module.modules():
        if isinstance(m, RepVGGBlock):
            m.fuse()
    return module


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass for conv and linear layers (hooks; batch of 1)."""
    total = 0

    def conv_hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Conv2d)
        kh, kw = m.kernel_size
        total += int(out.numel() // out.shape[0]) * (m.in_channels // m.groups) * kh * kw

    def lin_hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Linear)
        total += int(out.numel() // out.shape[0]) * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros((1, *input_shape)))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total
