#!/usr/bin/env bash
# On a lent GPU, in under 8 minutes (timeouts 240 + 120 + 90 s): every GPU test of the triton and tilelang DSA backends against the torch
# reference (tests/gpu/, in its own pytest process so Triton is compiled, not interpreted), then the kernel benchmark
# (bench/kernels.py, providers reference / triton / tilelang, 8 and 64 heads; bench/sparse_mla_prefill.py). Results land in
# bench/results/gpu-check/<card>/ (and under $OUT too when it is set, as the device tool sets it), the benchmark's
# section in bench/RESULTS.md names the card. Exit status: non-zero if the tests or the benchmark failed.
#
# Usage from the repo root: bash bench/gpu_check.sh        (PYTHON=... to use another interpreter than .venv's)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
unset TRITON_INTERPRET

CARD=$("$PY" -c "import torch; assert torch.cuda.is_available(), 'no GPU'; print(torch.cuda.get_device_name(0))") || {
    echo "gpu_check: no CUDA/ROCm device visible to torch" >&2; exit 2; }
SLUG=$(echo "$CARD" | tr -c 'A-Za-z0-9.\n-' '_')
DEST=bench/results/gpu-check/$SLUG
mkdir -p "$DEST"
echo "gpu_check on $CARD -> $DEST"
{ echo "card: $CARD"; date -u; git rev-parse --short HEAD; nvidia-smi -L 2>/dev/null || rocm-smi --showproductname 2>/dev/null; } \
    > "$DEST/card.txt"

# 1. correctness: every (backend, op, shape) case against the reference; -rs lists any skip with its reason
timeout 240 "$PY" -m pytest -q -rs -p no:cacheprovider tests/gpu/test_dsa_kernels.py --durations=10 \
    --junitxml="$DEST/tests.xml" 2>&1 | tee "$DEST/tests.txt"
tests_rc=${PIPESTATUS[0]}

# 2. timing: one GLM-5 layer, batch 1 decode; each GPU provider is checked against the reference before it is timed
timeout 120 "$PY" bench/kernels.py --contexts 4096 16384 65536 --heads 8 64 \
    --providers reference triton tilelang --repeats 3 2>&1 | tee "$DEST/kernels.txt"
bench_rc=${PIPESTATUS[0]}
# 3. sparse MLA prefill TFLOPS (issue 5's Hopper goal: >= 500), 4096 tokens x top-k 2048, 64 and 16 heads
timeout 90 "$PY" bench/sparse_mla_prefill.py --tokens 4096 --heads 64 16 2>&1 | tee "$DEST/sparse_mla_prefill.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || bench_rc=1
cp -f bench/results/kernels-cuda.json bench/results/sparse-mla-prefill.json "$DEST/" 2>/dev/null

echo "tests rc=$tests_rc bench rc=$bench_rc" | tee "$DEST/status.txt"
[ -n "${OUT:-}" ] && mkdir -p "$OUT" && cp -r "$DEST" "$OUT/" && cp -f bench/RESULTS.md "$OUT/"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
