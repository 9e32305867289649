#!/usr/bin/env bash
# One-shot GPU checks for a session that is lent a CUDA machine: the CUDA tests, then the stage,
# memory and end-to-end benchmarks on the GPU. Meant to finish in 3-4 minutes on one H100
# (each step has its own time limit; the limits add up to 375 s).
#
#   bash bench/run_gpu_checks.sh            # from the repository root
#
# Writes to $OUT when set (the device tool's output folder), else ./out/gpu_checks:
#   gpu_checks.log (everything printed), stages.json, memory.json, end_to_end.json  (4 files)
# Python: $PYTHON, else ./.venv/bin/python when it has torch, else python3 (the GPU image's).
# Packages missing there (e.g. plyfile) can travel as wheels in ./.whl (see the device tool notes).
# The exit status is 1 when any step failed or timed out; every step runs regardless.

set -u -o pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-out/gpu_checks}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_checks.log"
: >"$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; else PY=python3; fi
fi
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi

failed=0
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: rc=$rc after $((SECONDS - start))s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || failed=1
}

step environment 30 "$PY" -c "
import sys, torch, numpy
print('python', sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__)
print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')
from partslip_core.superpoints import cut_pursuit_available
from partslip_core.render import pytorch3d_available
print('cut pursuit', cut_pursuit_available(), '| pytorch3d', pytorch3d_available())
assert torch.cuda.is_available(), 'no CUDA device: these checks need one'
"

# CUDA tests (render CPU-vs-GPU, reference equivalence on GPU, HF detectors in fp16) plus the stage tests.
step cuda_tests 90 "$PY" -m pytest -q -rs -p no:cacheprovider \
  test/core/test_render.py test/core/test_vote.py test/core/test_instances.py \
  test/core/test_reference_equivalence.py test/core/detect/test_hf.py

# Stage timings on the GPU, with the loop reference (CPU) and the equality check, 20k and 100k points.
step bench_stages 100 "$PY" bench/bench_stages.py --device cuda --points 20000 100000 --repeat 7 --ref-repeat 1 \
  --json "$OUT_DIR/stages.json"

# Memory: 80 consecutive segment() runs on CUDA, growth measured from run 20.
step bench_memory 75 "$PY" bench/bench_memory.py --device cuda --runs 80 --baseline-run 20 --points 20000 \
  --print-every 20 --json "$OUT_DIR/memory.json"

# End to end with a real-size Grounding DINO (tiny arch, random weights, fp16 autocast), 10 views at 800 px.
step bench_end_to_end 80 "$PY" bench/bench_end_to_end.py --device cuda --runs 5 --model-dir /tmp/gd_tiny_random \
  --json "$OUT_DIR/end_to_end.json"

echo "=== done: $([ $failed -eq 0 ] && echo all steps passed || echo SOME STEPS FAILED); outputs in $OUT_DIR" | tee -a "$LOG"
exit $failed
