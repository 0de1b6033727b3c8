#!/bin/bash
# One GPU-host job for the training step's pieces (issue 16): build (bench/gpu_host.sh none),
# the CUDA tests, the bf16 step beside PyTorch's, with and without the padded odd-vocabulary
# products (ATTNSWAP_GEMM_PAD), and the pieces.  Logs under $OUT.
set -u
OUT=${OUT:-/tmp/out}
bash bench/gpu_host.sh none > /dev/null 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -30; exit 1; }
S=/tmp/sys/usr
export LD_LIBRARY_PATH=$S/lib/x86_64-linux-gnu:$S/lib/x86_64-linux-gnu/openblas-pthread OPENBLAS_CORETYPE=SkylakeX
ctest --test-dir build-gpu -L cuda --output-on-failure > "$OUT/ctest-cuda.log" 2>&1; tail -3 "$OUT/ctest-cuda.log"
grep -E "FAILED" "$OUT/ctest-cuda.log" | head -20
timeout 120 python3 bench/torch_train_step.py --device cuda --dtype bfloat16 --batch 8 --seq 1024 --repeats 10 2>&1 \
  | grep -v Warning | tail -1
for p in 0 1; do
  ATTNSWAP_GEMM_PAD=$p timeout 150 build-gpu/attnswap-run bench/train_step.lua --device cuda --dtype bfloat16 --batch 8 \
    --seq 1024 --repeats 10 2>&1 | tail -1 | sed "s/^/pad=$p: /"
done
timeout 200 build-gpu/attnswap-run bench/train_parts.lua --device cuda --dtype bfloat16 --batch 8 --seq 1024 \
  --repeats 5 2>&1 | tail -14
for l in model rows; do
  timeout 150 build-gpu/attnswap-run bench/train_step.lua --device cuda --dtype bfloat16 --batch 8 --seq 1024 \
    --repeats 10 --loss $l 2>&1 | tail -1 | sed "s/^/loss=$l: /"
done
build-gpu/attnswap-run tests/cuda/cuda_lua.lua 2>&1 | grep -E "FAILED|checks" | head
timeout 150 build-gpu/attnswap-run bench/train_step.lua --device cuda --dtype bfloat16 --batch 8 --seq 1024 \
  --repeats 5 --phases 1 2>&1 | tail -2
# the attention benchmark's --backward (bench/gpu_host.sh bwdbench, without its build)
if [ "${BWDBENCH:-1}" = 1 ]; then
  timeout 240 python3 bench/torch_sdpa.py --backward --out "$OUT/torch_bwd.json" > "$OUT/torch_bwd.log" 2>&1 || tail -3 "$OUT/torch_bwd.log"
  timeout 240 build-gpu/attnswap-run examples/bench_attention.lua --device cuda --backward --torch "$OUT/torch_bwd.json" \
    --out "$OUT/attnswap_bwd.json" > "$OUT/bench_bwd.txt" 2>&1; tail -25 "$OUT/bench_bwd.txt"
fi
