"""`edge-mtl quantize` and `edge-mtl build-engine`: the command line turned into the export tools' options."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_mtl.export_tools.quantize import QuantizeOptions


def quantize_options(args: argparse.Namespace) -> QuantizeOptions:
    return QuantizeOptions(
        model=Path(args.model), output=Path(args.output), precision=args.precision, calib=args.calib, data=args.data,
        no_gate=bool(args.no_gate), detector=args.detector, method=args.method, layout=args.layout,
        exclude=tuple(args.exclude or ()), auto_exclude=args.auto_exclude, save_calib=args.save_calib,
    )


def build_engine_command(args: argparse.Namespace) -> dict[str, Any]:
    """`edge-mtl build-engine MODEL [--cache DIR] [--max-batch N] [--workspace-mb MB] [--max-side PX]`: the engine
    and what its cache entry says about it."""
    from edge_mtl.runtime.engine_cache import read_entry
    from edge_mtl.runtime.tensorrt_build import build_engine

    plan = build_engine(
        args.model,
        args.cache,
        max_batch=int(args.max_batch) if getattr(args, "max_batch", None) else None,
        workspace_mb=int(args.workspace_mb),
        max_side=getattr(args, "max_side", None),
        force=bool(getattr(args, "force", False)),
    )
    entry = read_entry(plan.with_suffix(".json"))
    return {
        "engine": str(plan),
        "bytes": plan.stat().st_size,
        "key": entry.key,
        "kind": entry.kind,
        "precision": entry.precision,
        "gpu": entry.target.arch,
        "gpu_name": entry.gpu_name,
        "tensorrt": entry.tensorrt,
        "profile": entry.profile.to_dict(),
        "build_seconds": entry.build_seconds,
        "layers": entry.layers,
    }
