#!/usr/bin/env bash
# The main-job demo: partslip_node segments the bundled synthetic scan sequence; no RViz needed.
# Writes out/demo/ (labeled_cloud.ply, result.json, segmentation.json, markers.json) and prints a summary.
# Both processes use the Fast DDS shared-memory profile config/fastdds_shm.xml (--dds-profile '' = DDS defaults).
# Usage: bash scripts/demo.sh [--category kettle] [--frames 4] [--image-size 400] [--out DIR] ...
#        (python -m partslip_ros.demo --help lists every option)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || { echo "demo: no $PY; run: bash scripts/setup_env.sh" >&2; exit 1; }
"$PY" -c 'import partslip_ros.msg' 2>/dev/null || bash scripts/build_msgs.sh "$(dirname "$(dirname "$PY")")"
exec "$PY" -m partslip_ros.demo "$@"
