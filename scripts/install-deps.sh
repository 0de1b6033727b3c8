#!/usr/bin/env bash
# Checks the Debian packages attnswap needs to build and test; installs the
# missing ones when run as root, else prints the command to run.
set -euo pipefail

packages=(build-essential cmake pkg-config lua5.4 liblua5.4-dev libopenblas-dev
          libcjson-dev lua-busted luarocks libedit-dev libpcre2-dev libutf8proc-dev
          libopenmpi-dev openmpi-bin) # MPI: as.distributed (docs/distributed.md)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "dependencies: not a Debian system; install the equivalents of: ${packages[*]}" >&2
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "dependencies: all present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "dependencies: missing ${missing[*]}; install them with:" >&2
  echo "  sudo sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}'" >&2
  exit 1
fi

echo "dependencies: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
