"""Entry of scripts/gpu_check.sh: the GPU check (`edge_mtl.eval.gpu_check`) or the making of its input bundle.

    python scripts/gpu_check.py [--device cuda|cpu] [--quick] [--bundle DIR | --synthetic] [--out DIR] [--budget S]
                                [--models DIR] [--batches 1,2,4] [--max-streams N]
    python scripts/gpu_check.py --make-bundle [--bundle DIR] [--data DIR] [--quick]

Bad input (a missing bundle or model, a bad option) ends in one line on stderr and exit code 2; the report is
written to OUT/gpu_check.json and OUT/gpu_check.txt, and the summary printed on stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge_mtl.errors import EdgeMtlError, InputError
from edge_mtl.eval.gpu_bundle import DEFAULT_BUNDLE, make_bundle
from edge_mtl.eval.gpu_check import CheckOptions, run_check, summary_text

log = logging.getLogger("gpu_check")


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--make-bundle", action="store_true", help="write the real-input bundle from ../shared/data")
    p.add_argument("--data", type=Path, default=None, help="shared data root (default: EDGE_MTL_DATA, ../shared/data)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--quick", action="store_true", help="few inputs, batches 1 and 4, short stream trials")
    p.add_argument("--bundle", type=Path, default=None, help=f"input bundle (default: {DEFAULT_BUNDLE} if present)")
    p.add_argument("--synthetic", action="store_true", help="synthetic inputs even when a bundle is present")
    p.add_argument("--out", type=Path, default=Path("gpu-check-out"))
    p.add_argument("--budget", type=float, default=420.0, help="seconds for the whole check (default 420)")
    p.add_argument("--models", type=Path, default=None, help="folder of detector/landmarks/recognizer.onnx")
    p.add_argument("--batches", type=_batches, default=None, help="batch sizes (default 1,2,4,...,256)")
    p.add_argument("--max-streams", type=int, default=256)
    p.add_argument("--e2e-reserve", type=float, default=None, help="seconds kept for the end to end run")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        if args.make_bundle:
            m = make_bundle(args.bundle or DEFAULT_BUNDLE, data=args.data, models=args.models, quick=args.quick)
            log.info("bundle written: %s (%.1f MiB)", args.bundle or DEFAULT_BUNDLE, m["bytes"] / 2**20)
            return 0
        if args.bundle is not None and not args.bundle.is_dir():
            raise InputError(f"--bundle {args.bundle}: no such folder (make it with: scripts/gpu_check.sh bundle)")
        if args.budget <= 0 or args.max_streams < 1:
            raise InputError("--budget must be > 0 and --max-streams >= 1")
        reserve = args.e2e_reserve if args.e2e_reserve is not None else (10.0 if args.quick else 120.0)
        opts = CheckOptions(device=args.device, quick=args.quick, bundle=args.bundle, synthetic=args.synthetic,
                            out=args.out, budget_s=args.budget, models=args.models, batches=args.batches,
                            max_streams=args.max_streams, e2e_reserve_s=reserve, argv=["gpu_check.py", *argv])
        rep = run_check(opts)
        sys.stdout.write(summary_text(rep))
        return 0
    except InputError as e:
        sys.stderr.write(f"gpu_check: error: {e}\n")
        return 2
    except EdgeMtlError as e:
        sys.stderr.write(f"gpu_check: error: {e}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
