#!/usr/bin/env bash
# Creates .venv with everything the package, its tests and the demo need (idempotent, ~1-2 min): the pip/venv
# path, no ROS install needed (ROS 2 users build with `colcon build` instead; README "Installing").
# Usage: bash scripts/setup_env.sh   (VENV=path to use another location)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"

# open3d's wheel links libusb and libgomp; install them when we can (root on Debian/Ubuntu).
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  if ! ldconfig -p | grep -q libusb-1.0.so.0; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 libgomp1 >/dev/null 2>&1 \
      || echo "warning: could not install libusb-1.0-0; open3d will be unavailable (numpy fallbacks are used)"
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements.txt -r requirements-ros.txt -r requirements-dev.txt
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
# The package's messages (partslip_ros.msg / .srv), generated into the source package (msg/README.md).
bash scripts/build_msgs.sh "$VENV"
echo "environment ready: $VENV"
