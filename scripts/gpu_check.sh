#!/usr/bin/env bash
# The GPU check: parity, throughput and streams per GPU of the shipped models, in one command, for a short GPU loan.
#
# What it measures and how: edge_mtl/eval/gpu_check.py (entry: scripts/gpu_check.py); what has run on a GPU so far
# and the table its report fills: docs/acceleration.md, section "GPU".
#
# Usage
#   bash scripts/gpu_check.sh prepare          # HERE, once: wheels into .whl/ and the real-input bundle .gpucheck/
#   bash scripts/gpu_check.sh wheels           #   only the wheels
#   bash scripts/gpu_check.sh bundle [--quick] #   only the bundle (needs ../shared/data or EDGE_MTL_DATA)
#   bash scripts/gpu_check.sh [check options]  # THERE: install the carried wheels, run the check
#        check options: --device cuda|cpu, --quick, --out DIR (default gpu-check-out), --budget S (default 420),
#                       --bundle DIR (default .gpucheck when present, else synthetic inputs: throughput only),
#                       --batches 1,2,4, --max-streams N, --models DIR
#   bash scripts/gpu_check.sh --device cpu --quick   # the same code on the CPU (tests/test_gpu_check.py runs it)
#
# The lent machine (docs: the device tool's README) has Python 3.12 with PyTorch (CUDA), numpy, scipy, onnx,
# onnxruntime (CPU) and OpenCV, no network, and gets only the working tree plus at most 64 MiB of carried ignored
# folders. edge-mtl runs from the tree (PYTHONPATH, no install); what it lacks travels as cp312 manylinux x86_64
# wheels in .whl/ (pydantic and its four dependencies, about 2.8 MiB). The bundle .gpucheck/ holds the gate's real
# held-out inputs and a 1080p clip (about 10 MiB), made from ../shared/data; both folders are git-ignored (derived
# images are never committed) and are rebuilt by `prepare`.
#
# With the device tool, in one call. The check keeps itself near its 420 s budget, plus about 20 s to start and a
# few seconds of overrun by the last step. The tool sends the checkout the session was started in (not a helper's
# worktree) plus the carried folders, so run `prepare` in that checkout first; tracked files (~13 MB) + .whl +
# .gpucheck come to about 27 MB of the 64 MiB:
#   run(command="bash scripts/gpu_check.sh --out $OUT 2>&1 | tee $OUT/gpu_check.log",
#       carry=[".whl", ".gpucheck"], timeout_s=500)
# Files back: $OUT/gpu_check.json (every figure; rewritten after each phase, so a run cut short still returns
# what it measured), $OUT/gpu_check.txt (summary), $OUT/gpu_check.md (docs/acceleration.md's tables, filled in),
# $OUT/gpu_check.log. Then give_back() unless rerunning at once:
# 15 device minutes leave room for one more warm run with --budget 200 (steps past the budget are skipped and
# listed with the reason).
set -euo pipefail
cd "$(dirname "$0")/.."
# the project's venv here (when there is one), the image's python3 on a lent machine (.venv does not travel)
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# what edge-mtl needs beyond the GPU image's packages; versions as pinned here (pydantic-core must match pydantic)
WHEELS=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0)

wheels() {
  rm -rf .whl && mkdir -p .whl
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
  du -sh .whl
}

case "${1:-}" in
  wheels) wheels; exit 0 ;;
  bundle) shift; exec "$PY" scripts/gpu_check.py --make-bundle "$@" ;;
  prepare) shift; wheels; exec "$PY" scripts/gpu_check.py --make-bundle "$@" ;;
esac

if ! "$PY" -c "import pydantic" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu_check: pydantic is missing and no wheels were carried: run 'bash scripts/gpu_check.sh wheels' here" \
      "and carry .whl" >&2
    exit 2
  fi
  SITE=${TMPDIR:-/tmp}/edge-mtl-gpucheck-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH="$PWD:$SITE${PYTHONPATH#"$PWD"}"
fi
exec "$PY" scripts/gpu_check.py "$@"
