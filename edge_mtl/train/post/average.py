"""Checkpoint weight averaging: the element-wise mean of several checkpoints of one run.

Averaging the weights of a run's last epochs (Polyak averaging; "SWA" when the learning rate is held up) often
generalises a little better than the last epoch alone when the epochs lie in one basin, as consecutive epochs of
a fine-tune do. `edge-mtl average-checkpoints` writes an ordinary checkpoint that `edge-mtl export` and
`init = ...` in a training config accept; it carries no optimizer state, so it is a model, not a point to
resume a run from.

Floating-point tensors (weights, BatchNorm running statistics) are averaged in float64 and cast back; integer
tensors (BatchNorm's `num_batches_tracked`) are taken from the last checkpoint. The task state (margin-loss class
centres) is averaged the same way when every checkpoint has it with the same shapes, else the last one's is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from edge_mtl.errors import InputError, ModelError
from edge_mtl.models.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def average_state_dicts(states: Sequence[Mapping[str, Any]], source: str = "checkpoints") -> dict[str, Any]:
    """Element-wise mean of state dicts with the same keys and shapes (see the module doc for dtypes).

    Nested dicts are averaged key by key; other values (ints, strings, None) are taken from the last one.
    """
    if not states:
        raise InputError(f"{source}: nothing to average")
    keys = list(states[-1].keys())
    for i, s in enumerate(states):
        if set(s.keys()) != set(keys):
            extra = sorted(set(s.keys()) ^ set(keys))[:5]
            raise ModelError(f"{source}: entry {i + 1} has different parameters from the last ({extra})")
    out: dict[str, Any] = {}
    for k in keys:
        vals = [s[k] for s in states]
        last = vals[-1]
        if isinstance(last, torch.Tensor):
            for v in vals:
                if not isinstance(v, torch.Tensor) or v.shape != last.shape:
                    shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                    raise ModelError(f"{source}: {k} is {shape} in one entry and {tuple(last.shape)} in the last")
            if last.is_floating_point():
                acc = torch.zeros(last.shape, dtype=torch.float64)
                for v in vals:
                    acc += v.detach().to(torch.float64)
                out[k] = (acc / len(vals)).to(last.dtype)
            else:
                out[k] = last.clone()
        elif isinstance(last, Mapping):
            if all(isinstance(v, Mapping) for v in vals):
                out[k] = average_state_dicts(vals, f"{source} [{k}]")
            else:
                out[k] = last
        else:
            out[k] = last
    return out


def average_checkpoints(paths: Sequence[Path], output: Path) -> dict[str, Any]:
    """Average the model weights of `paths` (one run: same kind and model args) into the checkpoint `output`."""
    if len(paths) < 2:
        raise InputError("average-checkpoints: give at least two checkpoints")
    if any(Path(p).resolve() == Path(output).resolve() for p in paths):
        raise InputError(f"average-checkpoints: {output} is also an input; write the average elsewhere")
    states = [load_checkpoint(p) for p in paths]
    last = states[-1]
    for p, s in zip(paths, states, strict=True):
        if s.get("kind") != last.get("kind") or s.get("model_args") != last.get("model_args"):
            raise ModelError(
                f"{p}: a {s.get('kind')} checkpoint with model args {s.get('model_args')}, not like {paths[-1]}"
                f" ({last.get('kind')}, {last.get('model_args')}): only checkpoints of one model can be averaged"
            )
    model = average_state_dicts([s["model"] for s in states], "model weights")
    task_states = [s.get("task") or {} for s in states]
    try:
        task = average_state_dicts(task_states, "task state")
    except ModelError as e:
        log.warning("task state not averaged (%s): keeping the last checkpoint's", e)
        task = dict(task_states[-1])
    out = {
        k: v for k, v in last.items() if k not in ("model", "task", "optimizer", "torch_rng", "step_in_epoch")
    }
    out.update(
        {
            "model": model,
            "task": task,
            "averaged_from": [
                {"checkpoint": str(p), "epoch": s.get("epoch"), "global_step": s.get("global_step")}
                for p, s in zip(paths, states, strict=True)
            ],
        }
    )
    save_checkpoint(output, out)
    log.info("averaged %d checkpoints into %s", len(paths), output)
    return {
        "output": str(output),
        "kind": out.get("kind"),
        "averaged_from": out["averaged_from"],
        "tensors": len(model),
    }
