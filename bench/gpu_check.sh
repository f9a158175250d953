#!/usr/bin/env bash
# On a lent GPU, in at most 7 minutes (step limits 30 + 110 + 60 + 60 + 45 + 35 + 60 + 40 s = 7 min, under the tool's 8):
# every GPU test of the triton and tilelang DSA backends against the torch reference (tests/gpu/, its own pytest
# process so Triton is compiled, not interpreted; parallel with pytest-xdist where installed, since TileLang compiles
# each kernel shape with nvcc), then the kernel benchmarks, one provider per step and TileLang first, so one
# provider's failure (even a crash) records its reason and the rest still run: bench/kernels.py (8 and 64 heads,
# batch 1 decode, each op timed by CUDA-graph replay), bench/sparse_mla_prefill.py (TFLOPS), bench/indexer_fp8.py
# (next to DeepGEMM where it runs), the flashmla kernels where they import, and bench/graph_decode.py (one layer's
# DSA decode captured and replayed per implementation, eager vs graph). Every benchmark checks each provider against
# the reference before timing it.
# Results: bench/results/gpu-check/<card>/ and, when the device tool sets $OUT, $OUT/<card>/ plus RESULTS.md (8 files:
# summary.txt, log.txt (pytest's output with skip reasons and durations), five JSONs; the tool returns at most 8),
# copied after every step so a run cut short keeps what it measured. Exit status non-zero if any step failed.
#
# The device image has python3 with torch, triton and nvcc but no tilelang and no sglang: run `bash bench/gpu_bundle.sh`
# here first and carry `.gpu-bundle`; it is unpacked to $GLM5_SITE (/tmp/glm5-site). Nothing here imports sglang.
# Usage from the repo root: bash bench/gpu_check.sh        (PYTHON=... another interpreter; default .venv's, else python3)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

SITE=${GLM5_SITE:-/tmp/glm5-site}
if [ -f .gpu-bundle/site.tar.xz ]; then
    mkdir -p "$SITE" && tar -C "$SITE" -xJf .gpu-bundle/site.tar.xz || { echo "gpu_check: cannot unpack .gpu-bundle" >&2; exit 2; }
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
    echo "gpu_check: unpacked .gpu-bundle to $SITE"
fi

CARD=$("$PY" -c "import torch; assert torch.cuda.is_available(), 'no GPU'; print(torch.cuda.get_device_name(0))") || {
    echo "gpu_check: no CUDA/ROCm device visible to torch" >&2; exit 2; }
SLUG=$(echo "$CARD" | tr -c 'A-Za-z0-9.\n-' '_')
DEST=bench/results/gpu-check/$SLUG
mkdir -p "$DEST"
LOG=$DEST/log.txt
: >"$LOG"
echo "gpu_check on $CARD -> $DEST"
rc_all=0
RESULT_JSONS=(kernels-cuda-tilelang.json kernels-cuda-triton.json sparse-mla-prefill.json indexer-fp8.json graph-decode.json)
save() {  # what the steps so far wrote, into $DEST and $OUT: a run cut short keeps it
    local f
    for f in "${RESULT_JSONS[@]}"; do [ -f "bench/results/$f" ] && cp -f "bench/results/$f" "$DEST/"; done
    if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp -r "$DEST" "$OUT/" && cp -f bench/RESULTS.md "$OUT/"; fi
}
step() {  # step NAME TIMEOUT_S CMD...: runs CMD under the timeout, output to the console and log.txt
    local name=$1 limit=$2 rc
    shift 2
    echo "=== $name ($(date -u +%T), limit ${limit}s): $*" | tee -a "$LOG"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 124 ] && rc_note=" (timed out after ${limit}s)" || rc_note=""
    echo "$name rc=$rc$rc_note" >>"$DEST/summary.txt"
    [ "$rc" -eq 0 ] || rc_all=1
    save
}

{ echo "card: $CARD"; date -u; git rev-parse --short HEAD 2>/dev/null || echo "commit: unknown (no .git)"
  nvidia-smi -L 2>/dev/null || rocm-smi --showproductname 2>/dev/null; nvcc --version 2>/dev/null | tail -1; } >"$DEST/summary.txt"
# 0. what runs: versions, and both backends import (a missing package fails here, in seconds)
step preflight 30 "$PY" -c "
import torch, triton, tilelang
import sglang_glm5.dsa.triton, sglang_glm5.dsa.tilelang
from sglang_glm5.dsa.tilelang.tuning import tuning
print('torch', torch.__version__, 'triton', triton.__version__, 'tilelang', tilelang.__version__)
print('tilelang knobs here:', {op: tuning(op, torch.device('cuda')) for op in ('indexer_logits_fp8', 'sparse_mla_decode')})"
[ "$rc_all" -eq 0 ] || { echo "gpu_check: preflight failed, nothing else run" | tee -a "$DEST/summary.txt"; }

if [ "$rc_all" -eq 0 ]; then
    XDIST=()
    "$PY" -c "import xdist" 2>/dev/null && XDIST=(-n 4)  # four processes compile TileLang kernels side by side
    # 1. correctness: every (backend, op, shape) case against the reference; -rs lists any skip with its reason
    step tests 110 "$PY" -m pytest -q -rs -p no:cacheprovider ${XDIST[@]+"${XDIST[@]}"} tests/gpu/test_dsa_kernels.py \
        --durations=10
    # 2. timing: one GLM-5 layer, batch 1 decode (issue 4's H200 goal: 8-head sparse MLA decode < 16.8 us; top-k at
    #    64k and 200k keys under the decode's own time; top-k checked equal to the reference's canonical output, index
    #    sets, ties and -1 padding, before it is timed; step 1 also runs each top-k's split-row and, for TileLang,
    #    shared-list overflow cases), each provider in its own process (TileLang first): a failure or a crash in one leaves the other's numbers
    for provider in tilelang triton; do
        step "kernels-$provider" 60 "$PY" -m bench.kernels --contexts 4096 65536 200000 --heads 8 64 \
            --providers "$provider" --tag "$provider" --repeats 3
    done
    # 3. sparse MLA prefill TFLOPS (issue 5's Hopper goal: >= 500), 4096 tokens x top-k 2048, 64 and 16 heads
    step sparse_mla_prefill 45 "$PY" -m bench.sparse_mla_prefill --tokens 4096 --heads 64 16
    # 4. FP8 indexer prefill vs DeepGEMM's fp8_mqa_logits (issue 5's goal: within 80%), if deep_gemm runs here
    step indexer_fp8 35 "$PY" -m bench.indexer_fp8 --context 4096 16384
    # 5. flashmla (FlashMLA + DeepGEMM, issue 20) vs the reference where sgl-flash-mla / sgl-deep-gemm import; -rs logs why not
    step flashmla 60 "$PY" -m pytest -q -rs -p no:cacheprovider tests/gpu/test_flashmla_kernels.py
    # 6. CUDA graphs: capture + replay of one layer's DSA decode per implementation, eager vs graph us (issue 26)
    step graph_decode 40 "$PY" -m bench.graph_decode --batch 1 8 32 --context 4096
fi

echo "gpu_check: rc=$rc_all" | tee -a "$DEST/summary.txt"
save
exit "$rc_all"
