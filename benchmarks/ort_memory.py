"""Does ONNX Runtime's memory grow with the input shapes a daemon feeds it? (the soak's RSS growth, docs/operations.md)

Each variant runs in a fresh process: the shipped detector and recognizer in ONNX Runtime sessions configured as
the runtime configures them (`edge_mtl/runtime/onnxruntime.py`), optionally with the CPU memory arena and/or the
memory-pattern planner off, fed what the daemon feeds them: detector inputs of three padded frame shapes
(landscape 4:3 and 16:9 and portrait, at the default 640) and recognizer batches of random size 1-16. The resident
set size is sampled every `--every` iterations.

Usage: python benchmarks/ort_memory.py [--iterations 1500] [--variants default,no_mem_pattern,no_arena,neither]
       [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("ort_memory")
DET_SHAPES = ((1, 3, 480, 640), (1, 3, 384, 640), (1, 3, 640, 480))
VARIANTS = {
    "default": {"arena": True, "mem_pattern": True},
    "no_mem_pattern": {"arena": True, "mem_pattern": False},
    "no_arena": {"arena": False, "mem_pattern": True},
    "neither": {"arena": False, "mem_pattern": False},
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_variant(name: str, iterations: int, every: int, seed: int, out: Any) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.enable_cpu_mem_arena = VARIANTS[name]["arena"]
    opts.enable_mem_pattern = VARIANTS[name]["mem_pattern"]
    det = ort.InferenceSession(str(REPO / "export/detector.onnx"), opts, providers=["CPUExecutionProvider"])
    rec = ort.InferenceSession(str(REPO / "export/recognizer.onnx"), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    dname, rname = det.get_inputs()[0].name, rec.get_inputs()[0].name
    samples = [(0, round(rss_mb(), 1))]
    for i in range(1, iterations + 1):
        shape = DET_SHAPES[int(rng.integers(len(DET_SHAPES)))]
        det.run(None, {dname: rng.standard_normal(shape, dtype=np.float32)})
        b = int(rng.integers(1, 17))
        rec.run(None, {rname: rng.standard_normal((b, 3, 112, 112), dtype=np.float32)})
        if i % every == 0:
            samples.append((i, round(rss_mb(), 1)))
    out.put({"variant": name, **VARIANTS[name], "samples": samples})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = mp.get_context("spawn")
    results = []
    for name in args.variants.split(","):
        q: Any = ctx.Queue()
        proc = ctx.Process(target=run_variant, args=(name, args.iterations, args.every, args.seed, q))
        proc.start()
        res = q.get()
        proc.join()
        s = res["samples"]
        warm = next(v for i, v in s if i >= min(200, args.iterations))
        res["summary"] = {"start_mb": s[0][1], "after_200_mb": warm, "end_mb": s[-1][1],
                          "growth_after_200_mb": round(s[-1][1] - warm, 1), "max_mb": max(v for _, v in s)}
        log.info("%s: %s", name, res["summary"])
        results.append(res)
    if args.out:
        args.out.write_text(json.dumps({"iterations": args.iterations, "results": results}, indent=1) + "\n")
    for r in results:
        sys.stdout.write(f"{r['variant']}: {json.dumps(r['summary'])}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
