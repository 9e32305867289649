#!/usr/bin/env bash
# Builds partslip_ros's messages and services (msg/, srv/) with cmake from the ROS 2 PyPI wheels for a
# pip/venv environment (the wheels treat the venv as the ROS prefix). In a ROS 2 install use
# `colcon build` instead: the root CMakeLists.txt builds the messages and installs the node in one go.
# Idempotent: with unchanged inputs a second run only re-checks (~2 s).
# Usage: bash scripts/build_msgs.sh [VENV]   (default .venv)
#
# Where the results go (why: msg/README.md):
#   - the generated Python modules (partslip_ros/msg/, partslip_ros/srv/) and the typesupport extension
#     modules (partslip_ros/partslip_ros_s__rosidl_typesupport_*.so) are copied INTO THE SOURCE TREE's
#     partslip_ros/ package (gitignored), next to the node's modules: the venv imports partslip_ros from
#     the source tree (editable install, or the repository root on sys.path), so the messages are found
#     whatever the entry point or working directory;
#   - the C libraries they load (libpartslip_ros__*.so) go to $VENV/lib (on the library path the ROS
#     wheels set up), the interface definitions and ament index entries to $VENV/share.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VENV="$(cd "${1:-${VENV:-.venv}}" && pwd)"
PY="$VENV/bin/python"
BUILD="$ROOT/build/partslip_ros_msgs"
STAGE="$BUILD/stage"
LOG="$BUILD/build.log"
GENERATED="$ROOT/partslip_ros"
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

# Up to 0.1.0 the interfaces were a separate package, partslip_msgs: remove what it left in the venv, so
# nothing can keep importing the old names by accident.
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -rf "$SITE"/partslip_msgs "$SITE"/partslip_msgs-*.egg-info "$VENV"/lib/libpartslip_msgs__*.so \
  "$VENV/share/partslip_msgs" "$VENV/include/partslip_msgs" "$ROOT/build/partslip_msgs"
find "$VENV/share/ament_index/resource_index" -mindepth 2 -maxdepth 2 -name partslip_msgs -delete 2>/dev/null || true

IMPORT_CHECK='import partslip_ros, pathlib, sys
from partslip_ros.msg import PartInstance, PartSegmentation
from partslip_ros.srv import SegmentNow
from rclpy.serialization import serialize_message
serialize_message(PartSegmentation(instances=[PartInstance()]))  # loads the typesupport libraries
where = pathlib.Path(sys.modules["partslip_ros.msg"].__file__).resolve()
assert where.is_relative_to(pathlib.Path(sys.argv[1])), f"partslip_ros.msg imported from {where}"'
STAMP="$BUILD/inputs.sha256"
HASH="$(cat CMakeLists.txt package.xml msg/*.msg srv/*.srv scripts/build_msgs.sh | sha256sum | cut -d' ' -f1)-$VENV"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && "$PY" -c "$IMPORT_CHECK" "$GENERATED" 2>/dev/null; then
  echo "partslip_ros messages: up to date ($GENERATED/msg, $VENV)"
  exit 0
fi

mkdir -p "$BUILD" && touch "$BUILD/COLCON_IGNORE"  # its symlinked package.xml is not a second package
fail() { echo "build_msgs: $1 failed; last lines of $LOG:" >&2; tail -n 40 "$LOG" >&2; exit 1; }
export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH"
# cmake runs on a mirror of the package's interface files (symlinks): the venv lives inside the
# repository, and CMake refuses to export include dirs (numpy's, from the venv) that lie inside the
# source directory.
SRC="$BUILD/src"
rm -rf "$SRC" && mkdir -p "$SRC"
for item in CMakeLists.txt package.xml msg srv; do ln -s "$ROOT/$item" "$SRC/$item"; done
{
  cmake -S "$SRC" -B "$BUILD/cmake" -DCMAKE_INSTALL_PREFIX="$STAGE" -DCMAKE_BUILD_TYPE=Release \
    -DPARTSLIP_ROS_INTERFACES_ONLY=ON -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF
} >"$LOG" 2>&1 || fail "cmake configure"
cmake --build "$BUILD/cmake" -j "$(nproc)" >>"$LOG" 2>&1 || fail "cmake build"
rm -rf "$STAGE"
cmake --install "$BUILD/cmake" >>"$LOG" 2>&1 || fail "cmake install"

# Copy the staged install where the venv finds it (see the top of this file). Files are replaced by
# rename, never rewritten in place, so processes that have the old libraries loaded keep running.
STAGED_PY="$(dirname "$(dirname "$(find "$STAGE" -path '*/partslip_ros/msg/_part_segmentation.py' | head -n 1)")")"
[ -f "$STAGED_PY/msg/_part_segmentation.py" ] || fail "locating the generated Python modules under $STAGE"
replace() {  # replace FILE_OR_DIR DEST: copy next to DEST, then rename over it
  rm -rf "$2.new" && cp -r "$1" "$2.new" && rm -rf "$2" && mv "$2.new" "$2"
}
for sub in msg srv; do
  find "$STAGED_PY/$sub" -name '*.c' -delete
  replace "$STAGED_PY/$sub" "$GENERATED/$sub"
done
for lib in "$STAGED_PY"/partslip_ros_s__rosidl_typesupport_*.so; do replace "$lib" "$GENERATED/$(basename "$lib")"; done
for lib in "$STAGE"/lib/libpartslip_ros__*.so; do replace "$lib" "$VENV/lib/$(basename "$lib")"; done
cp -r "$STAGE/share/." "$VENV/share/"

"$PY" -c "$IMPORT_CHECK" "$GENERATED" >>"$LOG" 2>&1 || fail "import check of the generated partslip_ros.msg"
echo "$HASH" >"$STAMP"
echo "partslip_ros messages: built into $GENERATED/msg, $GENERATED/srv (+ libraries in $VENV/lib)"
