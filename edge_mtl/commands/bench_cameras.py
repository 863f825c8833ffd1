"""`edge-mtl bench --cameras N`: its options, turned into CamerasBenchOptions for edge_mtl.eval.cameras_bench.

Kept apart from commands/bench so that building the parser imports nothing heavy (eval.cameras_bench imports
OpenCV and the daemon only inside its functions)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from edge_mtl.eval.cameras_bench import CamerasBenchOptions, Variant, parse_variant


def cameras_bench_options(args: argparse.Namespace) -> CamerasBenchOptions:
    return CamerasBenchOptions(cameras=args.cameras, video=args.video, seconds=args.seconds, warmup=args.warmup,
                               yardstick_seconds=args.yardstick_seconds, repeat=args.repeat,
                               variants=tuple(args.variant or ()))


def variant_arg(text: str) -> Variant:
    """argparse type for --variant."""
    try:
        return parse_variant(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def seconds_arg(text: str) -> float:
    """argparse type: a number of seconds, at least 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected at least 0 seconds, got {text!r}")
    return v


def add_cameras_arguments(p: argparse.ArgumentParser, positive_int: Callable[[str], int]) -> None:
    """The options of `edge-mtl bench --cameras N` on the bench parser (`positive_int`: the CLI's argparse type)."""
    p.add_argument("--cameras", type=positive_int, help="serve this many live cameras (the clip, looped in real "
                   "time) with the real daemon and measure it against a decode-only yardstick")
    p.add_argument("--seconds", type=seconds_arg, default=30.0, help="--cameras: seconds measured per run (30)")
    p.add_argument("--warmup", type=seconds_arg, default=5.0, help="--cameras: seconds before measuring (5)")
    p.add_argument("--yardstick-seconds", type=seconds_arg, default=8.0,
                   help="--cameras: seconds of the decode-only yardstick, before and after the runs (8)")
    p.add_argument("--repeat", type=positive_int, default=1,
                   help="--cameras: run every variant this many times, in turn (1)")
    p.add_argument("--variant", type=variant_arg, action="append", help="--cameras: LABEL or LABEL:key=value,... "
                   "(config overrides; camera.KEY for every camera), e.g. 'detect5:camera.detect_fps=5'; "
                   "repeatable, run side by side")
