#!/usr/bin/env bash
# The one GPU check (issue 29), for a machine with a CUDA GPU and a CUDA torch, no network:
#   1. installs the carried wheels (.whl/: meshio, trimesh, pydicom, scikit-fem) where they are missing;
#   2. builds pinngs._C with the CUDA kernels in place (TORCH_CUDA_ARCH_LIST, default 9.0 = Hopper);
#   3. runs the CUDA tests (pytest -m cuda tests/test_cuda.py) on the carried tube cine study;
#   4. unpacks the carried studies (.gpu/pack, made here by `python -m benchmarks.gpu.pack pack`) and
#      runs the GPU benchmark rows (benchmarks/gpu/bench.py) -> $RESULTS/gpu.json, gpu.md.
# Usage (repository root): bash benchmarks/gpu/run.sh [RESULTS]   (default benchmarks/results)
# Budget: <= 8 minutes on one H200. Logs go to $RESULTS/gpu_run.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${1:-benchmarks/results}
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_run.log"
exec > >(tee "$LOG") 2>&1
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }

PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  step "carried wheels"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
$PY - <<'EOF'
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
EOF

step "build pinngs._C with CUDA"
rm -f pinngs/_C*.so
TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} $PY setup.py -q build_ext --inplace > "$RESULTS/gpu_build.log" 2>&1 \
  || { tail -40 "$RESULTS/gpu_build.log"; echo "BUILD FAILED"; exit 1; }
$PY -c "import pinngs._C as C; print('has_cuda', C.has_cuda())"

step "CUDA tests"
[ -f .gpu/pack/tube_cine.npz ] && export PINNGS_TUBE_CINE=.gpu/pack/tube_cine.npz
$PY -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py -rA 2>&1 | tail -25

step "unpack the carried studies"
$PY -m benchmarks.gpu.pack unpack

step "benchmark rows"
timeout 330 $PY -m benchmarks.gpu.bench --cache .gpu/cache --out "$RESULTS" || echo "bench exited $?"
step "done"
