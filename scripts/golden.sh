#!/usr/bin/env bash
# Record the outputs that a behaviour-preserving change must leave unchanged, into OUT (never into git: they hold
# embeddings computed from the data set's images). Compare two recordings with scripts/golden_compare.py.
# Usage: bash scripts/golden.sh OUT [DATA]   (DATA defaults to ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: golden.sh OUT [DATA]}
DATA=${2:-../shared/data}
PY=${EDGE_MTL_VENV:-.venv}/bin
mkdir -p "$OUT"
rm -f "$OUT"/*.jsonl "$OUT"/*.db "$OUT"/*.json "$OUT"/*.txt
# Events of `run` on the three clips (first 150 frames of each, CPU, one thread: deterministic).
for clip in pedestrians_1080p selfie_portrait cctv_overhead_no_faces; do
  "$PY/edge-mtl" run --source "$DATA/videos/$clip.mp4" --camera cam0 --max-frames 150 --threads 1 \
    --events "$OUT/$clip.db" --jsonl "$OUT/run_$clip.jsonl" >/dev/null
done
# `analyze --json` on 200 images: the first 100 UTKFace chips and the first 100 LFW images, by name.
python3 - "$DATA" > "$OUT/images.txt" <<'PYEOF'
import sys
from pathlib import Path
data = Path(sys.argv[1])
for p in sorted((data / "utkface").iterdir())[:100] + sorted((data / "lfw/images_deepfunneled").rglob("*.jpg"))[:100]:
    print(p)
PYEOF
xargs -a "$OUT/images.txt" "$PY/edge-mtl" analyze --json --threads 1 > "$OUT/analyze.jsonl"
# `eval` JSON on fixed subsets.
"$PY/edge-mtl" eval verification --data "$DATA" --limit 300 --json --threads 1 > "$OUT/eval_verification.json"
"$PY/edge-mtl" eval attributes --data "$DATA" --limit 300 --json --threads 1 > "$OUT/eval_attributes.json"
# `bench` keys (timings differ run to run; the comparison looks at the keys only).
"$PY/edge-mtl" bench --video "$DATA/videos/selfie_portrait.mp4" --frames 10 --batches 1 --json --threads 1 \
  > "$OUT/bench.json"
