"""`edge-mtl eval`: the command line turned into EvalOptions for edge_mtl.eval.suites."""

from __future__ import annotations

import argparse

from edge_mtl.eval.suites import EvalOptions


def eval_options(args: argparse.Namespace) -> EvalOptions:
    return EvalOptions(what=args.what, data=args.data, limit=args.limit, split=args.split,
                       utkface_full=args.utkface_full, pairs=args.pairs, video=args.video,
                       quality_bins=args.quality_bins, stamp=bool(args.stamp),
                       every_pair=bool(args.every_pair), fairface=args.fairface)
