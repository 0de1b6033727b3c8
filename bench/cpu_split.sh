#!/bin/bash
# Issue 21 (1) on the GPU host's Xeon, CPU only, on 2 of its cores: how
# matmul splits a product across threads (kernels/cpu/gemm.c,
# ATTNSWAP_GEMM_SPLIT = auto, rows, cols, blas), bench/matmul_cpu.lua under
# each, then the models beside PyTorch CPU eager under auto and blas.  Built
# as bench/cpu_host.sh builds.  Logs go to $OUT.
#   bash bench/cpu_split.sh [cores, default 2,3]
set -u
cores=${1:-2,3}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/sys
for f in .debs/*.deb; do dpkg -x "$f" /tmp/sys; done
S=/tmp/sys/usr
export LD_LIBRARY_PATH=$S/lib/x86_64-linux-gnu:$S/lib/x86_64-linux-gnu/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PKG_CONFIG_SYSROOT_DIR=/tmp/sys
export PKG_CONFIG_PATH=$S/lib/x86_64-linux-gnu/pkgconfig:$S/share/pkgconfig
unset OPENBLAS_CORETYPE # a clean environment: the point of the exercise
cmake -S . -B build-cpu -DCMAKE_BUILD_TYPE=Release -DATTNSWAP_CUDA=OFF -DCMAKE_PREFIX_PATH=$S \
  "-DLUA_INCLUDE_DIR=$S/include/lua5.4;$S/include/x86_64-linux-gnu" -DLUA_LIBRARY=$S/lib/x86_64-linux-gnu/liblua5.4.so \
  -DBLAS_INCLUDE_DIR=$S/include/x86_64-linux-gnu/openblas-pthread \
  -DBLAS_LIBRARIES=$S/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so \
  -DCJSON_INCLUDE_DIR=$S/include -DCJSON_LIBRARY=$S/lib/x86_64-linux-gnu/libcjson.so \
  -DATTNSWAP_BUSTED_TESTS=OFF > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
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
