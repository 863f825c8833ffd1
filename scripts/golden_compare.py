"""Compare two recordings of scripts/golden.sh.

Events, analyze and eval must be equal (ids, timestamps and timings aside); bench must have the same keys.

Usage: python scripts/golden_compare.py BEFORE AFTER   (exit 0 when they agree; one line per difference otherwise)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

IGNORED = {"id", "ts", "created", "date", "generated", "elapsed_s", "seconds"}
TOLERANCE = 1e-6


def _ignored(key: str) -> bool:
    return key in IGNORED or key.startswith("ms_") or key.endswith(("_ms", "fps"))


def _diff(a: Any, b: Any, where: str, out: list[str], keys_only: bool = False) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        ka = {k for k in a if not _ignored(k)}
        kb = {k for k in b if not _ignored(k)}
        if ka != kb:
            out.append(f"{where}: keys differ: only before {sorted(ka - kb)}, only after {sorted(kb - ka)}")
        for k in sorted(ka & kb):
            _diff(a[k], b[k], f"{where}.{k}", out, keys_only)
    elif keys_only:
        return
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _diff(x, y, f"{where}[{i}]", out, keys_only)
    elif isinstance(a, float) and isinstance(b, float):
        if abs(a - b) > TOLERANCE:
            out.append(f"{where}: {a} != {b}")
    elif a != b:
        out.append(f"{where}: {a!r} != {b!r}")


def _lines(p: Path) -> list[Any]:
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def main(before: Path, after: Path) -> int:
    out: list[str] = []
    for f in [*sorted(before.glob("run_*.jsonl")), before / "analyze.jsonl"]:
        _diff(_lines(f), _lines(after / f.name), f.name, out)
    for name in ("eval_verification.json", "eval_attributes.json"):
        _diff(json.loads((before / name).read_text()), json.loads((after / name).read_text()), name, out)
    _diff(json.loads((before / "bench.json").read_text()), json.loads((after / "bench.json").read_text()),
          "bench.json", out, keys_only=True)
    for line in out:
        sys.stdout.write(line + "\n")
    sys.stdout.write(f"{len(out)} difference(s)\n")
    return 1 if out else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.stderr.write("usage: golden_compare.py BEFORE AFTER\n")
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
