"""Recover a trainable recognizer from a shipped deploy ONNX (`export/recognizer.onnx`).

A deploy model is the training network with every BatchNorm folded into its convolution and the RepVGG branches
fused into one 3x3 kernel. That is a many-to-one map, but an exact inverse exists up to the BatchNorm statistics:

- each fused RepVGG kernel K (bias b) becomes the dense 3x3 branch; its BatchNorm gets the channel mean m and
  variance v of K*x over calibration faces as running statistics and gamma = sqrt(v + eps), beta = m + b, so
  BN(K*x) = K*x + b exactly in eval mode and, because m and v are what a training batch measures, to within batch
  noise in train mode;
- the 1x1 and identity branches start at zero (gamma = 0: they add nothing yet, and learn from the first step);
- the embedding head's folded 1x1 expansion and global depthwise convolution are unfolded the same way; the
  projection, the embedding BatchNorm and the attribute heads are stored unfolded and load as they are.

So a fine-tune can start from what was shipped when the training checkpoint is gone (it lives in an ignored
`runs/` folder, and training machines are not kept). Training-only state is not in a deploy model and starts
afresh: the caller re-creates the margin-loss class centres (`imprint_centres`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from edge_mtl.errors import ModelError
from edge_mtl.models.blocks import RepVGGBlock, fuse_repvgg
from edge_mtl.models.recognizer import EmbeddingHead, Recognizer, RecognizerArgs

log = logging.getLogger(__name__)

_EMBED_FOLDED = ("heads.embedding.expand", "heads.embedding.gdc")


def read_deploy(path: str | Path) -> tuple[RecognizerArgs, dict[str, npt.NDArray[np.float32]]]:
    """The model args and the deploy weights of an fp32 recognizer ONNX, keyed like the fused torch model
    (`backbone.stem.fused.weight`, ...; the embedding head's folded convolutions as `heads.embedding.expand.*`
    and `heads.embedding.gdc.*`, the projection as `heads.embedding.proj.weight`)."""
    import onnx
    from onnx import numpy_helper

    try:
        m = onnx.load(str(path))
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model") from None
    except Exception as e:  # protobuf raises DecodeError and friends for foreign files
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    meta = {p.key: p.value for p in m.metadata_props}
    if meta.get("edge_mtl.kind") != "recognizer" or "edge_mtl.args" not in meta:
        raise ModelError(f"{path}: not an edge-mtl recognizer (no edge_mtl.kind = recognizer metadata)")
    if meta.get("edge_mtl.precision", "fp32") != "fp32":
        raise ModelError(f"{path}: a {meta['edge_mtl.precision']} model; recover from the fp32 export")
    args = RecognizerArgs.from_dict(json.loads(meta["edge_mtl.args"]))
    inits = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in m.graph.initializer}
    out: dict[str, npt.NDArray[np.float32]] = {}
    for name, arr in inits.items():
        if name.startswith("model."):
            out[name[len("model."):]] = arr
    unnamed = iter(_EMBED_FOLDED)
    for node in m.graph.node:
        ws = [i for i in node.input[1:] if i in inits]
        if node.op_type == "Conv" and ws and not ws[0].startswith("model."):
            try:
                prefix = next(unnamed)
            except StopIteration:
                raise ModelError(f"{path}: more unnamed convolutions than the embedding head has") from None
            out[f"{prefix}.weight"] = inits[ws[0]]
            out[f"{prefix}.bias"] = inits[ws[1]] if len(ws) > 1 else np.zeros(len(inits[ws[0]]), np.float32)
        elif node.op_type == "MatMul" and ws and not ws[0].startswith("model."):
            out["heads.embedding.proj.weight"] = inits[ws[0]].T.copy()
    missing = [p for p in _EMBED_FOLDED if f"{p}.weight" not in out]
    if missing or "heads.embedding.proj.weight" not in out:
        raise ModelError(f"{path}: cannot find the embedding head's weights ({missing or 'projection'})")
    return args, out


def _embed_parts(model: Recognizer) -> dict[str, tuple[nn.Module, nn.Module]]:
    """The embedding head's (layer, norm) pairs: the two folded convolutions and the projection."""
    emb = model.heads["embedding"]
    assert isinstance(emb, EmbeddingHead)
    return {
        "heads.embedding.expand": (emb.expand[0], emb.expand[1]),
        "heads.embedding.gdc": (emb.gdc[0], emb.gdc[1]),
        "heads.embedding.proj": (emb.proj, emb.bn),
    }


def _conv_bn(model: Recognizer, prefix: str) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv, bn = _embed_parts(model)[prefix]
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
    return conv, bn


def _unit_bn(bn: nn.BatchNorm2d, bias: torch.Tensor) -> None:
    """A BatchNorm that adds `bias` and nothing else in eval mode."""
    assert bn.running_mean is not None and bn.running_var is not None
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)
    bn.weight.fill_(1.0)
    bn.bias.copy_(bias)


@torch.no_grad()
def deploy_reference(args: RecognizerArgs, w: dict[str, npt.NDArray[np.float32]]) -> Recognizer:
    """The deploy ONNX as a fused eval-mode torch model (the folded BatchNorms as identities plus bias)."""
    ref = Recognizer(args).eval()
    fuse_repvgg(ref)
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    state = ref.state_dict()
    for k in state:
        if k in t:
            state[k] = t[k]
    ref.load_state_dict(state)
    for prefix in _EMBED_FOLDED:
        conv, bn = _conv_bn(ref, prefix)
        conv.weight.copy_(t[f"{prefix}.weight"])
        _unit_bn(bn, t[f"{prefix}.bias"])
    proj = _embed_parts(ref)["heads.embedding.proj"][0]
    assert isinstance(proj, nn.Linear)
    proj.weight.copy_(t["heads.embedding.proj.weight"])
    return ref


def _folded_convs(ref: Recognizer) -> dict[str, nn.Conv2d]:
    """Every convolution whose output a BatchNorm of the training model normalises, keyed by that BN's owner."""
    convs: dict[str, nn.Conv2d] = {}
    for name, m in ref.named_modules():
        if isinstance(m, RepVGGBlock):
            assert m.fused is not None
            convs[name] = m.fused
    for prefix in _EMBED_FOLDED:
        convs[prefix] = _conv_bn(ref, prefix)[0]
    return convs


@torch.no_grad()
def conv_statistics(
    ref: Recognizer, batches: Iterable[torch.Tensor]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and variance of each folded convolution's output without its bias, over `batches`
    (normalised input tensors, N x 3 x S x S)."""
    convs = _folded_convs(ref)
    sums: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, conv in convs.items():
        def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor, name: str = name) -> None:
            y = out.double()
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                y = y - m.bias.double().view(1, -1, 1, 1)
            y = y.transpose(0, 1).reshape(y.shape[1], -1)
            acc = sums.setdefault(name, [torch.zeros(y.shape[0], dtype=torch.float64)] * 2 + [torch.zeros(1)])
            sums[name] = [acc[0] + y.sum(1), acc[1] + (y * y).sum(1), acc[2] + y.shape[1]]
        hooks.append(conv.register_forward_hook(hook))
    try:
        n = 0
        for x in batches:
            ref(x.float())
            n += len(x)
    finally:
        for h in hooks:
            h.remove()
    if n == 0:
        raise ModelError("recovering a recognizer needs calibration faces; got none")
    stats = {}
    for name, (s, s2, c) in sums.items():
        mean = s / c
        stats[name] = (mean.float(), (s2 / c - mean * mean).clamp_min(0).float())
    return stats


def _calibrated_bn(bn: nn.BatchNorm2d, bias: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    """running stats = the data's; gamma and beta undo them, so BN(y) = y + bias."""
    assert bn.running_mean is not None and bn.running_var is not None
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    bn.weight.copy_((var + bn.eps).sqrt())
    bn.bias.copy_(mean + bias)


def _silent_bn(bn: nn.BatchNorm2d) -> None:
    bn.weight.zero_()
    bn.bias.zero_()


@torch.no_grad()
def recover_recognizer(
    path: str | Path, batches: Iterable[torch.Tensor], check: torch.Tensor | None = None
) -> Recognizer:
    """A training-form `Recognizer` (RepVGG branches, BatchNorms) equal in eval mode to the deploy ONNX at `path`.

    `batches`: calibration faces, preprocessed like the model's input (the training data's own batches are
    best: the recovered BatchNorms then see in train mode what they were calibrated on). `check`, if given, is
    a batch on which the recovered model must reproduce the deploy model (ModelError otherwise)."""
    args, w = read_deploy(path)
    ref = deploy_reference(args, w)
    stats = conv_statistics(ref, batches)
    model = Recognizer(args)
    ref_blocks = dict(ref.named_modules())
    for name, m in model.named_modules():
        if not isinstance(m, RepVGGBlock):
            continue
        ref_block = ref_blocks[name]
        assert isinstance(ref_block, RepVGGBlock)
        fused = ref_block.fused
        assert isinstance(fused, nn.Conv2d) and fused.bias is not None
        m.conv3.weight.copy_(fused.weight)
        _calibrated_bn(m.bn3, fused.bias, *stats[name])
        _silent_bn(m.bn1)
        if m.bn_id is not None:
            _silent_bn(m.bn_id)
    for prefix in _EMBED_FOLDED:
        (conv, bn), (ref_conv, ref_bn) = _conv_bn(model, prefix), _conv_bn(ref, prefix)
        conv.weight.copy_(ref_conv.weight)
        _calibrated_bn(bn, ref_bn.bias, *stats[prefix])
    for mod, ref_mod in zip(
        _embed_parts(model)["heads.embedding.proj"], _embed_parts(ref)["heads.embedding.proj"], strict=True
    ):
        mod.load_state_dict(ref_mod.state_dict())
    for task in ("age", "gender", "quality"):
        model.heads[task].load_state_dict(ref.heads[task].state_dict())
    if check is not None:
        model.eval()
        a, b = model(check.float()), ref(check.float())
        model.train()
        worst = max(float((a[k] - b[k]).abs().max() / (b[k].abs().max() + 1e-6)) for k in a)
        if worst > 1e-3:
            raise ModelError(f"{path}: the recovered model differs from the deploy model (relative {worst:.2e})")
        log.info("recovered %s: matches the deploy model (worst relative difference %.1e)", path, worst)
    return model


@torch.no_grad()
def imprint_centres(embeddings: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Margin-loss class centres from the model's own embeddings: each class's mean unit embedding, normalised
    (weight imprinting, Qi et al. 2018). Classes without a sample get a random unit vector."""
    e = nn.functional.normalize(embeddings.float(), dim=1)
    sums = torch.zeros(classes, e.shape[1]).index_add_(0, labels, e)
    counts = torch.bincount(labels, minlength=classes)
    empty = counts == 0
    if empty.any():
        sums[empty] = torch.randn(int(empty.sum()), e.shape[1])
    return nn.functional.normalize(sums, dim=1)
