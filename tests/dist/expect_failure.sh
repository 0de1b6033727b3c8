#!/usr/bin/env bash
# expect_failure.sh MAX_SECONDS PATTERN command...: the command must fail
# (not hang: it is killed at 3 x MAX_SECONDS), within MAX_SECONDS, printing
# PATTERN (an extended regex).
set -u
max=$1 pattern=$2
shift 2
start=$(date +%s)
out=$(timeout $((3 * max)) "$@" 2>&1)
rc=$?
took=$(( $(date +%s) - start ))
echo "$out" | tail -n 30
echo "exit $rc after ${took}s"
if [[ $rc -eq 0 ]]; then echo "FAIL: the job succeeded"; exit 1; fi
if [[ $rc -eq 124 ]]; then echo "FAIL: the job hung"; exit 1; fi
if (( took > max )); then echo "FAIL: took ${took}s, more than ${max}s"; exit 1; fi
if ! grep -Eq "$pattern" <<<"$out"; then echo "FAIL: no '$pattern' in the output"; exit 1; fi
echo "ok: failed within ${took}s naming the rank"
