"""Plain-text rendering of an `edge-mtl eval` result (what `--json` prints as one object) for a person to read.

Scalars become `name: value` lines; a mapping of rows (per-band figures) and a list of rows (trade-off tables,
error by pair quality) become aligned tables; a mapping of scalars (the models) one `name: k=v, ...` line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:g}"
    if isinstance(v, list | tuple):
        return " / ".join(_cell(x) for x in v) or "-"
    return str(v)


def _is_row(v: Any) -> bool:
    return isinstance(v, Mapping) and all(not isinstance(x, Mapping) for x in v.values())


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of an aligned table: the first column left-aligned, the others right-aligned (numbers)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header).rstrip(), *(fmt.format(*r).rstrip() for r in rows)]


def _rows_table(first: str, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    cols: list[str] = []
    for _, r in rows:
        cols += [c for c in r if c not in cols]
    return text_table([first, *cols], [[name, *(_cell(r.get(c)) for c in cols)] for name, r in rows])


def format_report(result: Mapping[str, Any]) -> str:
    scalars, blocks = [], []
    for key, v in result.items():
        if isinstance(v, Mapping) and v and all(_is_row(x) for x in v.values()):
            blocks.append([f"{key}:", *("  " + ln for ln in _rows_table("", list(v.items())))])
        elif isinstance(v, Mapping):
            scalars.append(f"{key}: " + ", ".join(f"{k}={_cell(x)}" for k, x in v.items()))
        elif isinstance(v, list) and v and all(_is_row(x) for x in v):
            first = next(iter(v[0]))
            rows = [(_cell(r[first]), {k: x for k, x in r.items() if k != first}) for r in v]
            blocks.append([f"{key}:", *("  " + ln for ln in _rows_table(first, rows))])
        else:
            scalars.append(f"{key}: {_cell(v)}")
    return "\n".join([*scalars, *("\n".join(b) for b in blocks)]) + "\n"
