#!/usr/bin/env python3
"""PyTorch's CPU scaled_dot_product_attention forward + backward on the
shapes of bench/flash_bwd.lua: q/k/v (1, BH, L, D) float32 from N(0, 1),
BH = tokens // L, requiring grad; forward time (with grad) and forward +
backward time, medians of --repeats after one warm-up; backward GFLOP/s
counted as 2.5 x the forward's 4 BH pairs D; sgemm 1024^3 in the same
process; the load average.  One JSON line per shape, on stdout and, with
--out FILE, in FILE.  --bh N fixes BH (examples/bench_attention.lua
--backward's B x H) instead of tokens // L; its --torch reads FILE.

    /work/torchenv/bin/python bench/torch_cpu_sdpa_bwd.py --L 1024,4096 --D 64,128 --threads 2
    /work/torchenv/bin/python bench/torch_cpu_sdpa_bwd.py --L 1024,4096 --D 64 --bh 8 --out torch_bwd.json

Needs only torch; never run by `make test`."""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def median_s(fn, repeats):
    fn()
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--L", default="1024,4096")
    ap.add_argument("--D", default="64,128")
    ap.add_argument("--causal", default="both", choices=["both", "on", "off"])
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--bh", type=int, default=0, help="batch x heads (default: tokens // L)")
    ap.add_argument("--out", default=None, help="also write the JSON lines here")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    n = 1024
    x, y = torch.randn(n, n), torch.randn(n, n)
    sgemm = 2 * n**3 / median_s(lambda: x @ y, 5) / 1e9
    out = open(a.out, "w") if a.out else None
    causals = {"both": [False, True], "on": [True], "off": [False]}[a.causal]
    for D in [int(d) for d in a.D.split(",")]:
        for L in [int(l) for l in a.L.split(",")]:
            for causal in causals:
                torch.manual_seed(0)
                BH = a.bh if a.bh > 0 else max(1, a.tokens // L)
                q, k, v = (torch.randn(1, BH, L, D, requires_grad=True) for _ in range(3))
                w = torch.randn(1, BH, L, D)

                def fwd():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                def both():
                    for t in (q, k, v):
                        t.grad = None
                    fwd().backward(w)

                t_fwd = median_s(fwd, a.repeats)
                t_all = median_s(both, a.repeats)
                pairs = L * (L + 1) / 2 if causal else L * L
                fwd_flops = 4 * BH * pairs * D
                t_bwd = t_all - t_fwd
                sgemm = 2 * n**3 / median_s(lambda: x @ y, 5) / 1e9  # beside each shape: the load moves
                row = {"impl": "torch", "L": L, "D": D, "BH": BH, "causal": causal, "fwd_ms": t_fwd * 1e3,
                       "bwd_ms": t_bwd * 1e3, "total_ms": t_all * 1e3,
                       "bwd_gflops": 2.5 * fwd_flops / t_bwd / 1e9, "sgemm_gflops": sgemm,
                       "bwd_pct_sgemm": 100 * 2.5 * fwd_flops / t_bwd / 1e9 / sgemm, "load": load(),
                       "torch": torch.__version__}
                print(json.dumps(row), flush=True)
                if out:
                    out.write(json.dumps(row) + "\n")
                    out.flush()
    if out:
        out.close()


if __name__ == "__main__":
    main()
