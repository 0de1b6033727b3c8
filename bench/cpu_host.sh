#!/bin/bash
# Issue 21 (1) on the GPU host's Xeon, CPU only, on 2 of its cores: build
# without CUDA from the carried Debian packages (../shared/GPU.md), say which
# OpenBLAS core runs with no setting, run the BLAS-core and op tests, then
# bench/matmul_cpu.lua (API vs sgemm), the same at OpenBLAS's own core for
# the record, and the models beside PyTorch CPU eager.  Logs go to $OUT.
#   bash bench/cpu_host.sh [cores, default 2,3]
set -u
cores=${1:-2,3}
source bench/cpu_build.sh
cmake --build build-cpu -j16 > "$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -60; exit 1; }
R=build-cpu/attnswap-run
{ lscpu | grep -E "Model name|^CPU\(s\)|Model:"; uptime; build-cpu/attnswap-run --version; } | tee "$OUT/cpu.txt"
build-cpu/tests/test_blas_core | tee -a "$OUT/cpu.txt"
build-cpu/tests/test_ops | tail -1 | tee -a "$OUT/cpu.txt"
export OMP_NUM_THREADS=2
taskset -c "$cores" $R bench/matmul_cpu.lua --out "$OUT/matmul.json" 2>&1 | tee "$OUT/matmul.txt"
own=$(grep -o "OpenBLAS alone: [A-Za-z]*" "$OUT/matmul.txt" | head -1 | cut -d' ' -f3)
if [ -n "$own" ]; then
  echo "== OpenBLAS's own core ($own), for the record" | tee -a "$OUT/matmul.txt"
  OPENBLAS_CORETYPE=$own taskset -c "$cores" $R bench/matmul_cpu.lua --only 2048 2>&1 | tee -a "$OUT/matmul.txt"
fi
for i in 1 2; do # PyTorch and attnswap alternately, twice
  taskset -c "$cores" python3 bench/torch_models_cpu.py --threads 2 --vit-batch 4 --gpt2-tokens 1024 \
    --repeats 5 $([ $i = 2 ] && echo --profile) --out "$OUT/torch_models_cpu$i.json" 2>&1 | tee -a "$OUT/models.txt"
  taskset -c "$cores" $R bench/models_cpu.lua --threads 2 --vit-batch 4 --gpt2-tokens 1024 --repeats 5 \
    $([ $i = 2 ] && echo --profile) --out "$OUT/models_cpu$i.json" 2>&1 | tee -a "$OUT/models.txt"
done
