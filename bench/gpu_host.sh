#!/bin/bash
# One job on the GPU host (../shared/GPU.md): unpack the Debian packages
# carried in .debs, build with CUDA for the card, run the CUDA tests, then the
# attention benchmark beside PyTorch's on the same card.  Logs go to $OUT.
#   bash bench/gpu_host.sh [test|bench|bwdbench|models|profile|trace|graph|all|llama|llama-cpu|train|test+train|distill|parts|flashbwd|test+flashbwd|wgbwd|fwd|wgbwd+fwd|ncubwd|f32|f32gemm|none]   (default all)
# graph: as.cuda.graph's test (tests/cuda/cuda_graph.lua), every other CUDA test, the cudaMallocs of a
# loop of forwards with no collection (bench/cuda_enqueue.lua), then the models beside eager and
# eager's own CUDA graph (bench/torch_models.py --graph; examples/models_cuda.lua times both ways).
# f32gemm: every CUDA test, float32 products (bench/matmul_cuda.lua, SGEMM against 3xTF32, beside
# bench/torch_matmul_cuda.py), then the models and the float32 training step beside PyTorch.
# f32: cuda.flash_kernel, float32 attention on flash/tf32x3 beside flash/simt-f32, then the models.
# fwd: cuda.flash_kernel_variants, then the forward's automatic choice beside its variants (FWD_VARIANTS,
# name:VAR=value,...): the causal tile order over all heads (ATTNSWAP_FLASH_L2=0) and in 16 MiB sections,
# the persistent grid, beside PyTorch's SDPA (cuDNN);
# wgbwd+fwd: both in one job.
# ncubwd: Nsight Compute's sections on one flash-bwd/wgmma launch at D 64 and 128 (L ${BWD_L:-1024}).
# wgbwd: every CUDA test (ctest -L cuda; BWD_CTEST=0 skips them), then bench/flash_bwd_cuda.lua on flash-bwd/mma
# (ATTNSWAP_FLASH_BWD=mma), on the automatic path (flash-bwd/wgmma on Hopper), on wgmma-reg and
# wgmma-persist, on dQ by TMA (-tma) and the softmax under the products (-overlap), and deterministic
# (ATTNSWAP_DETERMINISTIC=1) on auto and mma, beside PyTorch (BWD_MODES, BWD_TESTS: fewer of them; BWD_TESTS= none).
# trace: the models' timings, then each kernel's time inside ten bf16 forwards of ViT and GPT-2
# (TRACE_MODELS: fewer), ours and eager's, through bench/cuda_trace.c (CUPTI, preloaded); each
# table ends with the card's idle time by the kernels around it (TRACE_GAPS rows) and, with
# CUDA_TRACE_API=1, the host's CUDA runtime calls. bench/cuda_enqueue.lua: host against card time.
# profile: issue 21 part 2's where-the-time-goes: PyTorch's profiler on its bf16 forwards
# (bench/torch_models.py --profile) and each op of a layer timed alone on the card
# (bench/models_cpu.lua --device cuda --profile), after the models' timings (not part of all).
# flashbwd: the CUDA flash backward's test (tests/cuda/flash_bwd_cuda.lua), then its timing
# (bench/flash_bwd_cuda.lua) beside PyTorch's backward (bench/torch_flash_bwd.py).
# bwdbench: exact attention forward + backward (issue 17), bench/torch_sdpa.py --backward
# beside examples/bench_attention.lua --device cuda --backward (not part of all).
# distill: as.distill's stages at GPT-2 small's shapes (bench/distill_gpu.lua) beside
# LoLCATs-style attention transfer in PyTorch eager (bench/torch_distill.py), after
# bench/hedgehog_cuda_check.lua; parts: a training step's pieces (bench/train_parts.lua)
# and the step's phases.
# train: one GPT-2-small training step (bench/train_step.lua beside
# bench/torch_train_step.py), bf16 and float32 (TRAIN_DTYPES: fewer), 8 x 1024 tokens.
# llama: issue 19's Llama-3.2-1B-shaped benchmark (bench/torch_llama.py beside
# bench/llama_bench.lua, bf16 on the card); llama-cpu: the SmolLM-135M-shaped
# decode on this host's CPU, 2 and 16 threads (not part of all).
# .debs (ignored by git) holds, from `apt-get download` here: liblua5.4-0
# liblua5.4-dev lua5.4 libopenblas0-pthread libopenblas-dev
# libopenblas-pthread-dev libgfortran5 libcjson1 libcjson-dev libpcre2-8-0
# libpcre2-dev libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libutf8proc2 libutf8proc-dev
# libedit-dev libedit2 libbsd0 libmd0
set -u
what=${1:-all}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/sys
# once a machine (a second script in the same job must not rewrite headers a build reads)
[ -e /tmp/sys/.unpacked ] || { for f in .debs/*.deb; do dpkg -x "$f" /tmp/sys; done; touch /tmp/sys/.unpacked; }
S=/tmp/sys/usr
export LD_LIBRARY_PATH=$S/lib/x86_64-linux-gnu:$S/lib/x86_64-linux-gnu/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OPENBLAS_CORETYPE=SkylakeX
# the tokenizers' PCRE2 and utf8proc (.pc files under /tmp/sys, paths remapped there)
export PKG_CONFIG_SYSROOT_DIR=/tmp/sys
export PKG_CONFIG_PATH=$S/lib/x86_64-linux-gnu/pkgconfig:$S/share/pkgconfig
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH=$S \
  "-DLUA_INCLUDE_DIR=$S/include/lua5.4;$S/include/x86_64-linux-gnu" -DLUA_LIBRARY=$S/lib/x86_64-linux-gnu/liblua5.4.so \
  -DBLAS_INCLUDE_DIR=$S/include/x86_64-linux-gnu/openblas-pthread \
  -DBLAS_LIBRARIES=$S/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so \
  -DCJSON_INCLUDE_DIR=$S/include -DCJSON_LIBRARY=$S/lib/x86_64-linux-gnu/libcjson.so \
  -DATTNSWAP_BUSTED_TESTS=OFF > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
target=""; case "$what" in llama*) target="--target attnswap-run";; esac
cmake --build build-gpu -j16 $target > "$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -60; exit 1; }
rc=0
if [ "$what" = test ] || [ "$what" = all ] || [ "$what" = test+train ]; then
  ctest --test-dir build-gpu -L cuda --output-on-failure > "$OUT/ctest-cuda.log" 2>&1 || rc=1
  tail -40 "$OUT/ctest-cuda.log"
  ctest --test-dir build-gpu -L c -j8 > "$OUT/ctest-c.log" 2>&1 || rc=1
  tail -3 "$OUT/ctest-c.log"
  build-gpu/attnswap-run bench/llama_cuda_check.lua 2>&1 | tee "$OUT/llama_cuda.txt" || rc=1
fi
if [ "$what" = graph ]; then
  timeout 120 build-gpu/attnswap-run tests/cuda/cuda_graph.lua 2>&1 | tee "$OUT/cuda_graph.txt" | tail -6
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  timeout 300 ctest --test-dir build-gpu -L cuda -E "^cuda.graph$" -j2 > "$OUT/ctest-cuda.log" 2>&1 || rc=1
  grep -E "tests passed|FAILED|Failed" "$OUT/ctest-cuda.log" | head -20
  for m in vit gpt2; do timeout 100 build-gpu/attnswap-run bench/cuda_enqueue.lua $m 2>&1 | tail -2; done
  timeout 120 python3 bench/torch_models.py --graph --out "$OUT/torch_models.json" 2>&1 | grep -E "eager|graph"
  timeout 200 build-gpu/attnswap-run examples/models_cuda.lua --out "$OUT/models.json" 2>&1 | tee "$OUT/models.txt"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  build-gpu/tests/flash_kernel_test --bench > "$OUT/flash_kernel_bench.txt" 2>&1; tail -30 "$OUT/flash_kernel_bench.txt"
  build-gpu/tests/flash_kernel_test --bench mma > "$OUT/flash_kernel_bench_mma.txt" 2>&1; tail -30 "$OUT/flash_kernel_bench_mma.txt"
  python3 bench/torch_sdpa.py --out "$OUT/torch.json" > "$OUT/torch.log" 2>&1 || tail "$OUT/torch.log"
  build-gpu/attnswap-run examples/bench_attention.lua --device cuda --torch "$OUT/torch.json" \
    --out "$OUT/attnswap.json" 2>&1 | tee "$OUT/bench.txt"
fi
if [ "$what" = bwdbench ]; then
  python3 bench/torch_sdpa.py --backward --out "$OUT/torch_bwd.json" > "$OUT/torch_bwd.log" 2>&1 || rc=1
  tail -30 "$OUT/torch_bwd.log"
  build-gpu/attnswap-run examples/bench_attention.lua --device cuda --backward --torch "$OUT/torch_bwd.json" \
    --out "$OUT/attnswap_bwd.json" 2>&1 | tee "$OUT/bench_bwd.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
fi
if [ "$what" = models ] || [ "$what" = all ] || [ "$what" = profile ] || [ "$what" = trace ]; then
  p=""; [ "$what" = profile ] && p=--profile
  python3 bench/torch_models.py $p --out "$OUT/torch_models.json" > "$OUT/torch_models.txt" 2>&1
  grep -E "eager" "$OUT/torch_models.txt"
  build-gpu/attnswap-run examples/models_cuda.lua --out "$OUT/models.json" 2>&1 | tee "$OUT/models.txt"
fi
if [ "$what" = trace ]; then # each kernel's time inside one bf16 forward, ours and eager's, by CUPTI
  C=$(dirname "$(dirname "$(command -v nvcc)")")
  I=$(dirname "$(find "$C/" -name cupti.h | head -1)"); Lb=$(dirname "$(find "$C/" -name 'libcupti.so' | head -1)")
  gcc -std=c11 -D_GNU_SOURCE -O2 -fPIC -shared -I"$I" -I"$C/include" bench/cuda_trace.c -L"$Lb" -lcupti -lpthread \
    -Wl,-rpath,"$Lb" -o build-gpu/libcuda_trace.so || { rc=1; echo "trace: bench/cuda_trace.c did not build"; }
  [ -e build-gpu/libcuda_trace.so ] && for m in ${TRACE_MODELS:-vit gpt2}; do
    LD_PRELOAD=$PWD/build-gpu/libcuda_trace.so CUDA_TRACE_OUT="$OUT/trace_${m}_ours.txt" CUDA_TRACE_ITERS=10 \
      build-gpu/attnswap-run examples/models_cuda.lua --trace $m 2>&1 | tail -2
    LD_PRELOAD=$PWD/build-gpu/libcuda_trace.so CUDA_TRACE_OUT="$OUT/trace_${m}_torch.txt" CUDA_TRACE_ITERS=10 \
      python3 bench/torch_models.py --trace $m 2>&1 | tail -2
    for s in ours torch; do echo "== $m, $s"; cut -c1-150 "$OUT/trace_${m}_$s.txt" | head -${TRACE_LINES:-18}; \
      tail -1 "$OUT/trace_${m}_$s.txt"; done
  done
fi
if [ "$what" = profile ]; then
  build-gpu/attnswap-run bench/models_cpu.lua --device cuda --dtype bfloat16 --vit-batch 32 --gpt2-batch 8 \
    --gpt2-tokens 1024 --repeats 10 --profile 2>&1 | tee "$OUT/models_parts.txt"
fi
if [ "$what" = train ] || [ "$what" = test+train ]; then
  for dt in ${TRAIN_DTYPES:-bfloat16 float32}; do
    timeout 240 python3 bench/torch_train_step.py --device cuda --dtype $dt --batch 8 --seq 1024 --repeats 10 \
      --out "$OUT/train_torch_$dt.json" 2>&1 | grep -v Warning | tail -2 | tee -a "$OUT/train.txt" || rc=1
    timeout 240 build-gpu/attnswap-run bench/train_step.lua --device cuda --dtype $dt --batch 8 --seq 1024 --repeats 10 \
      --out "$OUT/train_attnswap_$dt.json" 2>&1 | tail -3 | tee -a "$OUT/train.txt" || rc=1
  done
fi
if [ "$what" = distill ]; then
  build-gpu/attnswap-run bench/hedgehog_cuda_check.lua 2>&1 | tee "$OUT/hedgehog_cuda.txt" | tail -4 || rc=1
  timeout 200 python3 bench/torch_distill.py --device cuda --dtype bfloat16 --batch 8 --seq 1024 --steps 12 \
    --out "$OUT/distill_torch.json" 2>&1 | grep -v Warning | tail -2 | tee -a "$OUT/distill.txt" || rc=1
  timeout 300 build-gpu/attnswap-run bench/distill_gpu.lua --device cuda --dtype bfloat16 --batch 8 --seq 1024 --steps 12 \
    --out "$OUT/distill_attnswap.json" 2>&1 | tail -3 | tee -a "$OUT/distill.txt" || rc=1
fi
if [ "$what" = flashbwd ] || [ "$what" = test+flashbwd ]; then
  ctest --test-dir build-gpu -R cuda.flash_bwd --output-on-failure > "$OUT/ctest-flash-bwd.log" 2>&1 || rc=1
  grep -E "FAILED|checks|skipped" "$OUT/ctest-flash-bwd.log" | head -30
  timeout 200 python3 bench/torch_flash_bwd.py --out "$OUT/torch_flash_bwd.json" > "$OUT/torch_flash_bwd.log" 2>&1 \
    || tail -5 "$OUT/torch_flash_bwd.log"
  timeout 200 build-gpu/attnswap-run bench/flash_bwd_cuda.lua --torch "$OUT/torch_flash_bwd.json" 2>&1 \
    | tee "$OUT/flash_bwd_cuda.txt" || rc=1
fi
if { [ "$what" = wgbwd ] || [ "$what" = wgbwd+fwd ]; } && [ "${BWD_CTEST:-1}" = 1 ]; then # every CUDA test first (BWD_CTEST=0: none)
  timeout 300 ctest --test-dir build-gpu -L cuda -V > "$OUT/ctest-cuda.log" 2>&1 || rc=1
  grep -E "tests passed|FAILED|Failed|checks|Timeout|two runs" "$OUT/ctest-cuda.log" | head -40
fi
if [ "$what" = fwd ] || [ "$what" = wgbwd+fwd ]; then # the forward's variants: the causal L2 sections, the grid
  if [ "$what" = fwd ]; then
    timeout 200 ctest --test-dir build-gpu -R "^cuda.flash_kernel_variants$" --output-on-failure > "$OUT/ctest-fwd-variants.log" 2>&1 || rc=1
    grep -E "tests passed|FAILED|Failed|Timeout" "$OUT/ctest-fwd-variants.log" | head -20
  fi
  timeout 200 python3 bench/torch_sdpa.py --out "$OUT/torch_fwd.json" > "$OUT/torch_fwd.log" 2>&1 || tail -5 "$OUT/torch_fwd.log"
  grep -E "^D=" "$OUT/torch_fwd.log" | cut -c1-110
  # name:env pairs; the first is today's automatic choice
  variants=${FWD_VARIANTS:-auto:X=0 l2off:ATTNSWAP_FLASH_L2=0 l2-16:ATTNSWAP_FLASH_L2=16 persist:ATTNSWAP_FLASH_FWD=persist}
  for v in $variants; do
    n=${v%%:*}; e=${v#*:}
    env ${e//,/ } timeout 60 build-gpu/tests/flash_kernel_test --bench > "$OUT/fwd_$n.txt" 2>&1 || rc=1
  done
  # one table: TFLOP/s of each variant (rows: D L causal), cuDNN's (PyTorch's default) beside
  { printf "%-14s %7s" "D/L/causal" cudnn; for v in $variants; do printf " %13s" "${v%%:*}"; done; echo
    for v in $variants; do n=${v%%:*}
      awk -v n="$n" '$1 ~ /^[0-9]+$/ && NF >= 8 { print $2 "/" $1 "/" $5, n, $7 }' "$OUT/fwd_$n.txt"; done |
      awk -v t="$OUT/torch_fwd.log" 'BEGIN { while ((getline l < t) > 0) if (l ~ /^D=/) { split(l, a, /[=: ,]+/);
             k = a[2] "/" a[4] "/" (a[6] == "True" ? "yes" : "no"); cu[k] = a[8] } }
           { if (!($1 in seen)) { order[++m] = $1; seen[$1] = 1 } v[$1, $2] = $3; if (!($2 in vs)) { vl[++nv] = $2; vs[$2] = 1 } }
           END { for (i = 1; i <= m; i++) { k = order[i]; printf "%-14s %7s", k, cu[k]
                 for (j = 1; j <= nv; j++) printf " %13s", v[k, vl[j]]; printf "\n" } }'
  } | tee "$OUT/fwd_table.txt"
fi
if [ "$what" = wgbwd ] || [ "$what" = wgbwd+fwd ]; then # the Hopper backward: both tensor-core paths beside PyTorch
  timeout 200 python3 bench/torch_flash_bwd.py --L ${BWD_L:-1024,4096} --out "$OUT/torch_flash_bwd.json" \
    > "$OUT/torch_flash_bwd.log" 2>&1 || tail -5 "$OUT/torch_flash_bwd.log"
  for m in ${BWD_TESTS-wgmma-reg wgmma-persist-nmajor wgmma-tma-overlap wgmma-persist-tma-overlap}; do
    echo "== cuda.flash_bwd under ATTNSWAP_FLASH_BWD=$m"
    ATTNSWAP_FLASH_BWD=$m timeout 120 ctest --test-dir build-gpu -R cuda.flash_bwd$ --output-on-failure 2>&1 |
      grep -E "tests passed|FAILED|Timeout" | head
  done
  modes=${BWD_MODES:-mma auto wgmma-tma wgmma-overlap wgmma-tma-overlap wgmma-persist-tma-overlap auto+det mma+det}
  for m in $modes; do
    ATTNSWAP_FLASH_BWD=${m%+det} ATTNSWAP_DETERMINISTIC=$([ "${m#*+}" = det ] && echo 1 || echo 0) timeout 90 \
      build-gpu/attnswap-run bench/flash_bwd_cuda.lua --L ${BWD_L:-1024,4096} \
      --torch "$OUT/torch_flash_bwd.json" > "$OUT/bwd_$m.txt" 2>&1 || { rc=1; tail -3 "$OUT/bwd_$m.txt"; }
  done
  # one table: backward TFLOP/s of every mode beside FA2's and cuDNN's (rows: D L causal)
  { i=0; for m in $modes; do i=$((i + 1)); printf "m%d=%s " $i "$m"; done; echo
    printf "%-16s %7s %7s" "D/L/causal" fa2 cudnn; i=0; for m in $modes; do i=$((i + 1)); printf " %6s" "m$i"; done; echo
    for m in $modes; do awk -v m="$m" '$1 ~ /^[0-9]+$/ { print $1 "/" $2 "/" $3, $7, $8, m, $6 }' "$OUT/bwd_$m.txt"; done |
      awk '{ k = $1; if (!(k in fa)) { order[++n] = k; fa[k] = $2; cu[k] = $3 } v[k, $4] = $5 }
           END { split(modes, ms, " "); for (i = 1; i <= n; i++) { k = order[i]; printf "%-16s %7s %7s", k, fa[k], cu[k]
                 for (j = 1; j in ms; j++) printf " %6s", v[k, ms[j]]; printf "\n" } }' modes="$modes"
  } | tee "$OUT/bwd_table.txt"
fi
if [ "$what" = f32 ]; then # float32 attention: flash/tf32x3 against flash/simt-f32, then the models
  timeout 240 build-gpu/tests/flash_kernel_test > "$OUT/ctest-flash-kernel.log" 2>&1 || rc=1
  grep -E "FAIL|passed" "$OUT/ctest-flash-kernel.log" | head -20
  awk '{ for (i = 1; i <= NF; i++) if ($i == "err") { p = $(i - 1); e = $(i + 1) + 0; n[p]++; if (e > m[p]) m[p] = e } }
       END { for (p in m) printf "%-16s %4d cases, largest error %.2e\n", p, n[p], m[p] }' "$OUT/ctest-flash-kernel.log"
  for k in f32 simt; do
    timeout 90 build-gpu/tests/flash_kernel_test --bench $k > "$OUT/flash_bench_$k.txt" 2>&1 || rc=1
  done
  paste "$OUT/flash_bench_f32.txt" "$OUT/flash_bench_simt.txt" | awk 'NR > 2 { printf "%6s %4s %6s  tf32x3 %7s  simt %7s  %5.2fx\n", $1, $2, $5, $7, $15, $7 / $15 }'
  timeout 200 python3 bench/torch_models.py --out "$OUT/torch_models.json" > "$OUT/torch_models.txt" 2>&1
  grep -E "eager" "$OUT/torch_models.txt"
  for k in tf32x3 simt; do
    echo "== models, ATTNSWAP_FLASH_F32=$k"
    ATTNSWAP_FLASH_F32=$k timeout 150 build-gpu/attnswap-run examples/models_cuda.lua --out "$OUT/models_$k.json" 2>&1 |
      tee "$OUT/models_$k.txt"
  done
fi
if [ "$what" = f32gemm ]; then # float32 products: SGEMM against 3xTF32, the peer's, then the float32 models and step
  timeout 200 ctest --test-dir build-gpu -L cuda -V > "$OUT/ctest-cuda.log" 2>&1 || rc=1
  grep -E "tests passed|FAILED|Failed|float32 [0-9]" "$OUT/ctest-cuda.log" | head -30
  timeout 120 python3 bench/torch_matmul_cuda.py 2>&1 | grep -v Warn | tee "$OUT/torch_matmul.txt"
  timeout 120 build-gpu/attnswap-run bench/matmul_cuda.lua --out "$OUT/matmul.json" 2>&1 | tee "$OUT/matmul.txt" || rc=1
  ATTNSWAP_F32_GEMM=tf32x3 timeout 120 build-gpu/attnswap-run bench/matmul_cuda.lua 2>&1 | tee "$OUT/matmul_forced.txt" || rc=1
  timeout 200 python3 bench/torch_models.py --out "$OUT/torch_models.json" > "$OUT/torch_models.txt" 2>&1
  grep -E "eager" "$OUT/torch_models.txt"
  for p in high highest; do
    echo "== models, ATTNSWAP_F32_MATMUL=$p"
    ATTNSWAP_F32_MATMUL=$p timeout 150 build-gpu/attnswap-run examples/models_cuda.lua --out "$OUT/models_$p.json" 2>&1 |
      tee "$OUT/models_$p.txt" || rc=1
  done
  timeout 150 python3 bench/torch_train_step.py --device cuda --dtype float32 --batch 8 --seq 1024 --repeats 6 \
    --out "$OUT/train_torch_f32.json" 2>&1 | grep -v Warning | tail -2 | tee -a "$OUT/train.txt" || rc=1
  timeout 150 build-gpu/attnswap-run bench/train_step.lua --device cuda --dtype float32 --batch 8 --seq 1024 --repeats 6 \
    --out "$OUT/train_attnswap_f32.json" 2>&1 | tail -3 | tee -a "$OUT/train.txt" || rc=1
fi
if [ "$what" = ncubwd ]; then # where the Hopper backward's time goes: Nsight Compute on one launch, if the host has it
  N=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
  if [ -z "$N" ]; then echo "ncubwd: no ncu on this host"; else
    for D in 64 128; do
      timeout 240 $N -k regex:flash_bwd_wgmma --launch-skip 3 --launch-count 1 --section SpeedOfLight \
        --section WarpStateStats --section SchedulerStats --section Occupancy --section MemoryWorkloadAnalysis \
        build-gpu/attnswap-run bench/flash_bwd_cuda.lua --L ${BWD_L:-1024} --D $D --repeats 2 > "$OUT/ncu_bwd_D$D.txt" 2>&1
      grep -E "Duration|Throughput|Stall|Issued|Eligible|Active Warps|No Eligible|L2 Hit|Mem Busy|Registers|==ERR|==WARN|Theoretical" \
        "$OUT/ncu_bwd_D$D.txt" | head -60
    done
  fi
fi
if [ "$what" = test+flashbwd ]; then
  ctest --test-dir build-gpu -L cuda --output-on-failure > "$OUT/ctest-cuda.log" 2>&1 || rc=1
  tail -12 "$OUT/ctest-cuda.log"
fi
if [ "$what" = parts ]; then
  build-gpu/attnswap-run bench/train_parts.lua --device cuda --dtype bfloat16 --batch 8 --seq 1024 --repeats 5 \
    2>&1 | tee "$OUT/parts.txt" || rc=1
  build-gpu/attnswap-run bench/train_step.lua --device cuda --dtype bfloat16 --batch 8 --seq 1024 --repeats 5 \
    --phases 1 2>&1 | tee -a "$OUT/parts.txt" || rc=1
fi
if [ "$what" = llama ]; then
  D=/tmp/llama1b
  python3 bench/torch_llama.py make --size 1b --dir $D --device cuda 2>&1 | tee "$OUT/llama_make.txt"
  timeout 300 python3 bench/torch_llama.py bench --dir $D --device cuda --dtype bfloat16 --attn eager,sdpa \
    --contexts 512,2048,8192 --ctx-new 32 --out "$OUT/llama_torch.json" > "$OUT/llama_torch.txt" 2>&1 || rc=1
  tail -40 "$OUT/llama_torch.txt"
  timeout 300 build-gpu/attnswap-run bench/llama_bench.lua --model $D --device cuda --dtype bfloat16 \
    --check $D/io.safetensors --contexts 512,2048,8192 --ctx-new 32 --out "$OUT/llama_attnswap.json" \
    2>&1 | tee "$OUT/llama_attnswap.txt" || rc=1
  python3 bench/torch_llama.py table --gpu "$OUT/llama_torch.json" "$OUT/llama_attnswap.json" | tee "$OUT/llama_table.md"
fi
if [ "$what" = llama-cpu ]; then
  C=/tmp/smol135m
  lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|Flags" | cut -c1-300 | tee "$OUT/cpu.txt"
  echo "OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE" | tee -a "$OUT/cpu.txt"
  python3 bench/torch_llama.py make --size 135m --dir $C --device cpu 2>&1 | tee "$OUT/smol_make.txt"
  for n in 2 16; do
    timeout 150 python3 bench/torch_llama.py bench --dir $C --device cpu --dtype float32 --attn eager,sdpa --threads $n \
      --batches 1 --prompt 128 --new 64 --repeats 5 --gen-repeats 0 --out "$OUT/cpu${n}_torch.json" \
      > "$OUT/cpu${n}_torch.txt" 2>&1 || rc=1
    tail -8 "$OUT/cpu${n}_torch.txt"
    timeout 150 build-gpu/attnswap-run bench/llama_bench.lua --model $C --device cpu --dtype float32 --threads $n \
      --batches 1 --prompt 128 --new 64 --repeats 5 --gen-repeats 0 --check $C/io.safetensors \
      --out "$OUT/cpu${n}_attnswap.json" 2>&1 | tee "$OUT/cpu${n}_attnswap.txt" || rc=1
  done
  python3 bench/torch_llama.py table --cpu "$OUT/cpu2_torch.json" "$OUT/cpu2_attnswap.json" \
    "$OUT/cpu16_torch.json" "$OUT/cpu16_attnswap.json" | tee "$OUT/cpu_table.md"
fi
exit $rc
