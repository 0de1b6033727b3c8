#!/usr/bin/env bash
# `cmake --install` into a temporary prefix, then: the installed attnswap-run
# finds its Lua files with no environment variable, and a stock lua5.4 finds
# attnswap through LUA_PATH/LUA_CPATH pointed at the prefix.
#   install_test.sh BUILD_DIR VERSION
set -euo pipefail
build=${1:?usage: install_test.sh BUILD_DIR VERSION}
version=${2:?usage: install_test.sh BUILD_DIR VERSION}
lua=${LUA:-lua5.4}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/attnswap-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
if ! cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log"
  exit 1
fi
prefix=$(realpath "$prefix")
cd "$tmp" # so that ./?.lua finds no source tree
clean=(env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT -u LUA_INIT_5_4)

fail=0
check() { # check NAME WANT GOT
  if [[ $2 == "$3" ]]; then
    echo "ok   $1"
  else
    printf 'FAIL %s\n  want: %q\n  got:  %q\n' "$1" "$2" "$3"
    fail=1
  fi
}

for f in bin/attnswap-run lib/lua/5.4/attnswap/core.so share/lua/5.4/attnswap/init.lua; do
  [[ -e $prefix/$f ]] && got=present || got=missing
  check "installed $f" present "$got"
done

# -v: the version line, then what the kernels run on (as.config's lines)
got=$("${clean[@]}" "$prefix/bin/attnswap-run" -v 2>&1) || true
first=${got%%$'\n'*}
re="^attnswap ${version//./\\.} \\(Lua 5\\.4\\.[0-9]+\\)\$"
[[ $first =~ $re && $got == *$'\nblas core:'* ]] && got=ok
check "attnswap-run -v says 'attnswap $version (Lua 5.4.x)', then the BLAS core" ok "$got"

got=$("${clean[@]}" "$prefix/bin/attnswap-run" \
  -e 'print(as.version)' -e 'print(package.searchpath("attnswap", package.path))' 2>&1) || true
check "installed attnswap-run loads the installed attnswap" \
  "$version"$'\n'"$prefix/share/lua/5.4/attnswap/init.lua" "$got"

got=$("${clean[@]}" LUA_PATH="$prefix/share/lua/5.4/?.lua;$prefix/share/lua/5.4/?/init.lua;;" \
  LUA_CPATH="$prefix/lib/lua/5.4/?.so;;" "$lua" -e '
    local as = require "attnswap"
    print(as.version)
    print(package.searchpath("attnswap", package.path))
    print(package.searchpath("attnswap.core", package.cpath))' 2>&1) || true
check "stock $lua requires the installed attnswap" \
  "$version"$'\n'"$prefix/share/lua/5.4/attnswap/init.lua"$'\n'"$prefix/lib/lua/5.4/attnswap/core.so" "$got"

exit $fail
