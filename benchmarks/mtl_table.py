"""Multi-task evidence table: single-task vs multi-task runs of configs/experiments/mtl/, with the delta-m metric.

Reads each run's last validation record from runs/mtl/<name>/metrics.jsonl and prints a markdown table.
Delta-m (Maninis et al. 2019; Vandenhende et al. 2021) is the mean over tasks of the relative change of a multi-task
model's metric against the single-task model of the same backbone and budget, sign-flipped for metrics where lower
is better: dm = 1/T * sum_t (-1)^{l_t} (M_mtl,t - M_st,t) / M_st,t. Positive is better than single-task.

Usage: python benchmarks/mtl_table.py [--runs runs/mtl] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# task -> (validation key, single-task run, lower is better)
TASKS = {
    "identity (LFW View 1 acc.)": ("val_lfw_dev_accuracy", "st_identity", False),
    "age (UTKFace val MAE)": ("val_utk_age_mae", "st_age", True),
    "gender (UTKFace val acc.)": ("val_utk_gender_accuracy", "st_gender", False),
}
MTL_RUNS = ["mtl_static", "mtl_uncertainty", "mtl_dwa", "mtl_gradnorm", "mtl_soft"]


def last_val(run: Path) -> dict[str, float] | None:
    f = run / "metrics.jsonl"
    if not f.exists():
        return None
    recs = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    recs = [r for r in recs if any(k.startswith("val_") for k in r)]
    return recs[-1] if recs else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/mtl"))
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    st = {}
    for _task, (key, run, _low) in TASKS.items():
        rec = last_val(a.runs / run)
        st[key] = rec.get(key) if rec else None
    rows = []
    for run in MTL_RUNS:
        rec = last_val(a.runs / run)
        if rec is None:
            continue
        row: dict[str, object] = {"run": run}
        deltas = []
        for _task, (key, _st_run, low) in TASKS.items():
            v, base = rec.get(key), st.get(key)
            row[key] = v
            if v is not None and base:
                d = (float(v) - float(base)) / float(base)
                deltas.append(-d if low else d)
        row["delta_m_pct"] = round(100 * sum(deltas) / len(deltas), 2) if len(deltas) == len(TASKS) else None
        rows.append(row)
    if a.json:
        sys.stdout.write(json.dumps({"single_task": st, "multi_task": rows}) + "\n")
        return 0
    keys = [k for k, _, _ in TASKS.values()]
    head = "| run | " + " | ".join(TASKS) + " | delta-m |\n|---|" + "---|" * (len(TASKS) + 1) + "\n"
    body = "| single-task (one run per task) | " + " | ".join(str(st[k]) for k in keys) + " | 0 (reference) |\n"
    for r in rows:
        body += f"| {r['run']} | " + " | ".join(str(r[k]) for k in keys) + f" | {r['delta_m_pct']}% |\n"
    sys.stdout.write(head + body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
