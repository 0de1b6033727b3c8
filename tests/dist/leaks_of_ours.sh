#!/usr/bin/env bash
# leaks_of_ours.sh command...: runs an mpirun job under LeakSanitizer and
# fails on a leak whose stack passes through attnswap (as_*, l_*, the Lua
# bindings) or on a failing job.  Open MPI unloads its plugins at
# MPI_Finalize, so its own leaks show "<unknown module>" frames that no
# suppression can name; they are reported, counted, and let through.
set -u
out=$("$@" 2>&1)
rc=$?
echo "$out" | grep -v '^    #' | tail -n 20
ours=$(awk '/^(Direct|Indirect) leak/ {blk=1; next} blk && /^$/ {blk=0} blk && / in (as_|l_|luaopen_)/ {print}' <<<"$out")
echo "leak reports: $(grep -cE '^(Direct|Indirect) leak' <<<"$out") (Open MPI's unless listed below)"
if [[ -n $ours ]]; then echo "FAIL: leaks through attnswap:"; echo "$ours"; exit 1; fi
exit $rc
