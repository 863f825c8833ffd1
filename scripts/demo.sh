#!/usr/bin/env bash
# Set up a virtual environment on a fresh machine (Python 3.11) and run the main job on the embedded default:
# CPU, ONNX Runtime, the shipped models in export/, on a sample clip synthesised from a public-domain photo.
# Prints the events as JSON lines and writes demo-out/annotated.mp4.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EDGE_MTL_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e ".[demo]"
exec "$VENV/bin/edge-mtl" demo --out "${1:-demo-out}"
