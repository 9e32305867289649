#!/usr/bin/env bash
# Builds the partslip_msgs interfaces with cmake from the ROS 2 PyPI wheels and installs them into
# a virtual environment (which the wheels treat as the ROS prefix). Idempotent: a second run with
# unchanged .msg/.srv files only re-checks. In a ROS 2 install use colcon instead.
# Usage: bash scripts/build_msgs.sh [VENV]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VENV="$(cd "${1:-${VENV:-.venv}}" && pwd)"
PY="$VENV/bin/python"
BUILD="$ROOT/build/partslip_msgs"
LOG="$BUILD/build.log"
[ -x "$PY" ] || { echo "build_msgs: no python at $PY" >&2; exit 1; }
command -v cmake >/dev/null || { echo "build_msgs: cmake is required (apt-get install cmake g++)" >&2; exit 1; }

"$PY" -m pip install -q -r requirements-msgs.txt 2>&1 | grep -v "^WARNING: Location" || true

# The exported *__rosidl_generator_pyExport.cmake files hard-code the wheel build machine's Python and
# numpy include dirs; point them at this interpreter's.
PY_INC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NP_INC="$("$PY" -c 'import numpy; print(numpy.get_include())')"
find "$VENV/share" -name '*__rosidl_generator_pyExport.cmake' -print0 | while IFS= read -r -d '' f; do
  if grep -q '/opt/python/' "$f"; then
    sed -i -E "s#\"/opt/python/[^;\"]*/include/python3\.[0-9]+;/opt/python/[^;\"]*/numpy/(_core/|core/)?include\"#\"$PY_INC;$NP_INC\"#" "$f"
    if grep -q '/opt/python/' "$f"; then echo "build_msgs: could not rewrite include dirs in $f" >&2; exit 1; fi
  fi
done

STAMP="$BUILD/inputs.sha256"
HASH="$(cat partslip_msgs/CMakeLists.txt partslip_msgs/package.xml partslip_msgs/msg/*.msg partslip_msgs/srv/*.srv \
  | sha256sum | cut -d' ' -f1)-$VENV"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] \
   && "$PY" -c 'from partslip_msgs.msg import PartSegmentation; from partslip_msgs.srv import SegmentNow' 2>/dev/null; then
  echo "partslip_msgs: up to date in $VENV"
  exit 0
fi

mkdir -p "$BUILD"
fail() { echo "build_msgs: $1 failed; last lines of $LOG:" >&2; tail -n 40 "$LOG" >&2; exit 1; }
export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH"
{
  cmake -S partslip_msgs -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_BUILD_TYPE=Release \
    -DPython3_EXECUTABLE="$PY" -DPYTHON_EXECUTABLE="$PY" -DBUILD_TESTING=OFF
} >"$LOG" 2>&1 || fail "cmake configure"
cmake --build "$BUILD" -j "$(nproc)" >>"$LOG" 2>&1 || fail "cmake build"
cmake --install "$BUILD" >>"$LOG" 2>&1 || fail "cmake install"
"$PY" -c 'from partslip_msgs.msg import PartSegmentation; from partslip_msgs.srv import SegmentNow' >>"$LOG" 2>&1 \
  || fail "import check of the installed partslip_msgs"
echo "$HASH" >"$STAMP"
echo "partslip_msgs: built and installed into $VENV"
