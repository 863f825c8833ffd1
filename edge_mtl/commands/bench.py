"""`edge-mtl bench`: the command line turned into BenchOptions for edge_mtl.eval.bench."""

from __future__ import annotations

import argparse

from edge_mtl.eval.bench import BenchOptions


def bench_options(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(video=args.video, frames=args.frames, batches=tuple(args.batches),
                        precisions=tuple(args.precisions))
