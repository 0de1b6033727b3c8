#!/bin/bash
# One GPU-host job for the training step (issue 16): build (bench/gpu_host.sh none), the
# CUDA tests, the bf16 step beside PyTorch's, its loss variants and phases; with PARTS=1 the
# pieces and the step without the padded odd-vocabulary products (ATTNSWAP_GEMM_PAD=0); with
# BWDBENCH=1 the attention benchmark's --backward.  Logs under $OUT.
set -u
OUT=${OUT:-/tmp/out}
bash bench/gpu_host.sh none > /dev/null 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -30; exit 1; }
S=/tmp/sys/usr
export LD_LIBRARY_PATH=$S/lib/x86_64-linux-gnu:$S/lib/x86_64-linux-gnu/openblas-pthread OPENBLAS_CORETYPE=SkylakeX
ctest --test-dir build-gpu -L cuda --output-on-failure > "$OUT/ctest-cuda.log" 2>&1; grep -E "tests passed|FAILED|Failed" "$OUT/ctest-cuda.log" | head
grep -E "^FAILED|attempt to|error" "$OUT/ctest-cuda.log" | head -10
step() { timeout 150 build-gpu/attnswap-run bench/train_step.lua --device cuda --dtype bfloat16 --batch 8 --seq 1024 "$@" 2>&1; }
timeout 120 python3 bench/torch_train_step.py --device cuda --dtype bfloat16 --batch 8 --seq 1024 --repeats 10 2>&1 \
  | grep -v Warning | tail -1
step --repeats 10 | tail -1
for l in model rows; do step --repeats 10 --loss $l | tail -1 | sed "s/^/loss=$l: /"; done
step --repeats 5 --phases 1 | tail -2
if [ "${PARTS:-0}" = 1 ]; then
  ATTNSWAP_GEMM_PAD=0 step --repeats 10 | tail -1 | sed "s/^/pad=0: /"
  timeout 200 build-gpu/attnswap-run bench/train_parts.lua --device cuda --dtype bfloat16 --batch 8 --seq 1024 \
    --repeats 5 2>&1 | tail -14
fi
if [ "${BWDBENCH:-0}" = 1 ]; then
  timeout 240 python3 bench/torch_sdpa.py --backward --out "$OUT/torch_bwd.json" > "$OUT/torch_bwd.log" 2>&1 || tail -3 "$OUT/torch_bwd.log"
  timeout 240 build-gpu/attnswap-run examples/bench_attention.lua --device cuda --backward --torch "$OUT/torch_bwd.json" \
    --out "$OUT/attnswap_bwd.json" > "$OUT/bench_bwd.txt" 2>&1; tail -25 "$OUT/bench_bwd.txt"
fi
