#!/bin/bash
# Sourced by bench/cpu_host.sh and bench/cpu_split.sh on the GPU host: the
# carried Debian packages unpacked (../shared/GPU.md), a clean OpenBLAS
# environment, build-cpu configured without CUDA.  Sets OUT, S; exits on a
# failed configure.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/sys
[ -e /tmp/sys/.unpacked ] || { for f in .debs/*.deb; do dpkg -x "$f" /tmp/sys; done; touch /tmp/sys/.unpacked; }
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
