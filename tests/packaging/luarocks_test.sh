#!/usr/bin/env bash
# `luarocks make` of the rockspec from a copy of the checkout into a fresh
# tree; then a stock lua5.4 with `luarocks path` requires attnswap, and the
# deployed attnswap-run finds its Lua files with no environment variable.
#   luarocks_test.sh SOURCE_DIR VERSION        (exit 77 = skipped)
set -euo pipefail
src=$(realpath "${1:?usage: luarocks_test.sh SOURCE_DIR VERSION}")
version=${2:?usage: luarocks_test.sh SOURCE_DIR VERSION}
lua=${LUA:-lua5.4}
if ! command -v luarocks >/dev/null 2>&1; then
  echo "luarocks not found: skipped"
  exit 77
fi
luarocks=(luarocks --lua-version 5.4)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/attnswap-rock.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
copy=$tmp/src tree=$tmp/tree
mkdir -p "$copy" "$tmp/home"

# The files of the checkout (tracked or new, not ignored), so that luarocks's
# build.luarocks/ lands in the copy and no build dir of ours is carried.
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$src" ls-files -z --cached --others --exclude-standard |
    tar -C "$src" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$copy" -xf -
else
  tar -C "$src" --exclude=./.git --exclude=./build --exclude='./build-*' \
    --exclude=./build.luarocks -cf - . | tar -C "$copy" -xf -
fi
rockspecs=("$copy"/attnswap-*.rockspec)
if ((${#rockspecs[@]} != 1)); then
  echo "want one attnswap-*.rockspec in $src, found: ${rockspecs[*]}"
  exit 1
fi

cd "$copy"
if ! HOME=$tmp/home CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
    "${luarocks[@]}" make --tree "$tree" "${rockspecs[0]}" >"$tmp/make.log" 2>&1; then
  cat "$tmp/make.log"
  echo "FAIL luarocks make"
  exit 1
fi
echo "ok   luarocks make"
tree=$(realpath "$tree")
cd "$tmp"

fail=0
check() { # check NAME WANT GOT
  if [[ $2 == "$3" ]]; then
    echo "ok   $1"
  else
    printf 'FAIL %s\n  want: %q\n  got:  %q\n' "$1" "$2" "$3"
    fail=1
  fi
}

got=$(unset LUA_PATH LUA_CPATH LUA_PATH_5_4 LUA_CPATH_5_4 LUA_INIT LUA_INIT_5_4
      eval "$(HOME=$tmp/home "${luarocks[@]}" --tree "$tree" path)"
      "$lua" -e '
        local as = require "attnswap"
        print(as.version)
        print(package.searchpath("attnswap", package.path))
        print(package.searchpath("attnswap.core", package.cpath))' 2>&1) || true
check "$lua with 'luarocks path' requires the rock" \
  "$version"$'\n'"$tree/share/lua/5.4/attnswap/init.lua"$'\n'"$tree/lib/lua/5.4/attnswap/core.so" "$got"

got=$(env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT -u LUA_INIT_5_4 \
  "$tree/bin/attnswap-run" -e 'print(as.version)' -e 'print(package.searchpath("attnswap", package.path))' 2>&1) || true
check "the rock's attnswap-run loads the rock's attnswap" \
  "$version"$'\n'"$tree/share/lua/5.4/attnswap/init.lua" "$got"

exit $fail
