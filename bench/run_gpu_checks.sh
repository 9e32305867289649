#!/usr/bin/env bash
# One-shot GPU checks for a session that is lent a CUDA machine: the CUDA tests, then the superpoint,
# stage, render-backend, memory, end-to-end and SAM benchmarks on the GPU. Each step has its own time
# limit; the limits add up to 455 s (< 8 min), so one device call with timeout_s=540 is enough.
#
#   bash bench/run_gpu_checks.sh OUT_DIR        # from the repository root; OUT_DIR default: $OUT, else out/gpu_checks
#
# Writes to OUT_DIR: gpu_checks.log (everything printed), superpoints.txt, stages.json,
# render_torch.json (when pytorch3d imports: the torch splatter for comparison), memory.json, end_to_end.json, sam.json.
# Python: $PYTHON, else ./.venv/bin/python when it has torch, else python3 (the GPU image's).
# Packages missing there (e.g. plyfile) can travel as wheels in ./.whl (see the device tool notes).
# The exit status is 1 when any step failed or timed out; every step runs regardless.

set -u -o pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-out/gpu_checks}}"
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

step environment 20 "$PY" -c "
import sys, torch, numpy
print('python', sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__)
print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')
from partslip_core.superpoints import cut_pursuit_available
from partslip_core.render import pytorch3d_available
print('cut pursuit', cut_pursuit_available(), '| pytorch3d', pytorch3d_available())
assert torch.cuda.is_available(), 'no CUDA device: these checks need one'
"

# CUDA tests (render and superpoints CPU-vs-GPU, reference equivalence on GPU, HF detectors in fp16) + stage tests.
step cuda_tests 90 "$PY" -m pytest -q -rs -p no:cacheprovider \
  test/core/test_render.py test/core/test_superpoints.py test/core/test_vote.py test/core/test_instances.py \
  test/core/test_reference_equivalence.py test/core/detect/test_hf.py

# Superpoints on the GPU (torch backend): purity and count per category, to set against the CPU table.
step superpoints 35 bash -c "set -o pipefail; '$PY' bench/compare_superpoints.py --device cuda --backends torch --points 20000 \
  --seeds 1 --normal-max-nn 16 | tee '$OUT_DIR/superpoints.txt'"

# Stage timings on the GPU (render auto = pytorch3d when importable, superpoints torch), the loop reference
# (CPU) and the equality check, 20k and 100k points.
step bench_stages 90 "$PY" bench/bench_stages.py --device cuda --superpoints torch --points 20000 100000 \
  --repeat 7 --ref-repeat 1 --json "$OUT_DIR/stages.json"

# Which rasterizer on CUDA: the torch splatter vs pytorch3d (render.backend auto picks pytorch3d when it imports).
if "$PY" -c "from partslip_core.render import pytorch3d_available as a; raise SystemExit(0 if a() else 1)"; then
  step render_torch_vs_pytorch3d 35 "$PY" bench/bench_stages.py --device cuda --superpoints torch --points 20000 \
    --repeat 7 --no-reference --render-backend torch --json "$OUT_DIR/render_torch.json"
else
  echo "=== render_torch_vs_pytorch3d: skipped (pytorch3d not importable; auto = torch splatter)" | tee -a "$LOG"
fi

# Memory: 50 consecutive segment() runs on CUDA, growth measured from run 15.
step bench_memory 35 "$PY" bench/bench_memory.py --device cuda --runs 50 --baseline-run 15 --points 20000 \
  --print-every 10 --json "$OUT_DIR/memory.json"

# End to end with a real-size Grounding DINO-B (Swin-B, BERT-base; random weights built from its config,
# fp16 autocast = detector.half_precision), 10 views at 800 px, superpoints on the GPU.
step bench_end_to_end 110 "$PY" bench/bench_end_to_end.py --device cuda --arch base --views 10 --runs 5 \
  --superpoints torch --model-dir /tmp/gd_base_random --json "$OUT_DIR/end_to_end.json"

# SAM masks (masks.backend: sam): the CUDA fp16 vs CPU test, then SAM ViT-B (random weights, fp16), 10 views at 800 px.
step sam_masks 40 bash -c "'$PY' -m pytest -q -p no:cacheprovider test/core/detect/test_sam.py -k cuda && '$PY' bench/bench_sam.py --arch base --device cuda --runs 5 --json '$OUT_DIR/sam.json'"

echo "=== done: $([ $failed -eq 0 ] && echo all steps passed || echo SOME STEPS FAILED); outputs in $OUT_DIR" | tee -a "$LOG"
exit $failed
