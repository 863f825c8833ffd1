"""CPU of every thread of a running process over an interval, from /proc (native threads included: FFmpeg's decoder
threads, ONNX Runtime's pool), grouped by thread name.

    python benchmarks/thread_cpu.py PID 20

py-spy sees only the Python threads; this sees all of them. FFmpeg names its frame threads `av:h264:df<n>`;
threads OpenCV or ONNX Runtime start without a name keep the process's name.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict


def snapshot(pid: int) -> dict[int, tuple[str, int]]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (name, int(fields[11]) + int(fields[12]))  # utime + stime, clock ticks
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pid", type=int)
    ap.add_argument("seconds", type=float)
    args = ap.parse_args(argv)
    if not os.path.isdir(f"/proc/{args.pid}"):
        sys.stderr.write(f"thread_cpu: no process {args.pid}\n")
        return 2
    hz = os.sysconf("SC_CLK_TCK")
    a, t0 = snapshot(args.pid), time.monotonic()
    time.sleep(args.seconds)
    b, wall = snapshot(args.pid), time.monotonic() - t0
    groups: dict[str, list[float]] = defaultdict(list)
    for tid, (name, ticks) in b.items():
        groups[name].append((ticks - a.get(tid, (name, 0))[1]) / hz / wall)
    total = sum(sum(v) for v in groups.values())
    for name, shares in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
        sys.stdout.write(f"{name:20s} {len(shares):3d} thread(s) {100 * sum(shares):6.1f}% of a core\n")
    sys.stdout.write(f"all {len(b)} threads: {100 * total:.1f}% of a core over {wall:.1f} s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
