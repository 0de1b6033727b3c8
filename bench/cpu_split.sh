#!/bin/bash
# Issue 21 (1) on the GPU host's Xeon, CPU only, on 2 of its cores: how
# matmul splits a product across threads (kernels/cpu/gemm.c,
# ATTNSWAP_GEMM_SPLIT = auto, rows, cols, blas), bench/matmul_cpu.lua under
# each, then the models beside PyTorch CPU eager under auto and blas.  Built
# as bench/cpu_host.sh builds.  Logs go to $OUT.
#   bash bench/cpu_split.sh [cores, default 2,3]
set -u
cores=${1:-2,3}
source bench/cpu_build.sh
cmake --build build-cpu -j16 --target attnswap-run > "$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -60; exit 1; }
R=build-cpu/attnswap-run
export OMP_NUM_THREADS=2
for m in auto rows cols blas; do
  echo "== ATTNSWAP_GEMM_SPLIT=$m"
  ATTNSWAP_GEMM_SPLIT=$m taskset -c "$cores" $R bench/matmul_cpu.lua --out "$OUT/matmul_$m.json" 2>&1 | grep -vE "^load"
done
taskset -c "$cores" python3 bench/torch_models_cpu.py --threads 2 --vit-batch 4 --gpt2-tokens 1024 --repeats 5 2>&1 \
  | grep -E "ms|torch"
for m in auto blas; do
  echo "== models, ATTNSWAP_GEMM_SPLIT=$m"
  ATTNSWAP_GEMM_SPLIT=$m taskset -c "$cores" $R bench/models_cpu.lua --threads 2 --vit-batch 4 --gpt2-tokens 1024 \
    --repeats 5 2>&1 | grep -E " ms"
done
