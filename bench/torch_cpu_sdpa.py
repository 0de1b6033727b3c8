#!/usr/bin/env python3
"""PyTorch's CPU scaled_dot_product_attention on the shapes of
examples/bench_attention.lua: B = 1, H = 8, float32, q/k/v of shape
(B, H, L, D) drawn from N(0, 1), forward only, no grad; median of --repeats
wall-clock-timed calls after --warmup calls, on --threads intra-op threads.
Also reports which SDPA backend PyTorch picked for the inputs (on the CPU:
FLASH_ATTENTION, i.e. aten::_scaled_dot_product_flash_attention_for_cpu, or
MATH) and checks the output against the math reference at small L.

    python3 bench/torch_cpu_sdpa.py --L 1024,4096,16384 --D 64,128 --threads 2 \\
        [--causal] [--repeats 3] [--out torch_cpu.json]

Needs only torch; never run by `make test`.  docs/perf_cpu_peers.md has the
figures and how they were taken."""
import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend


def machine():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def backend_name(q, k, v, causal):
    """The backend SDPA dispatches to for these inputs (private API; None if absent)."""
    choice = getattr(torch, "_fused_sdp_choice", None)
    if choice is None:
        return None
    try:
        return SDPBackend(choice(q, k, v, None, 0.0, causal)).name
    except Exception:  # the private signature changed
        return None


def median_s(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--L", default="1024,4096,16384")
    p.add_argument("--D", default="64,128")
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--H", type=int, default=8)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", default="torch_cpu_sdpa.json")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    info = {"torch": torch.__version__, "machine": machine(), "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "B": a.B, "H": a.H,
            "causal": a.causal, "dtype": "float32"}
    print(f"machine: {info['machine']}, torch {info['torch']} ({info['cpu_capability']}), "
          f"{info['threads']} threads; B={a.B} H={a.H} {'causal' if a.causal else 'non-causal'} float32")
    rows = []
    with torch.inference_mode():
        for D in map(int, a.D.split(",")):
            for L in map(int, a.L.split(",")):
                q, k, v = (torch.randn(a.B, a.H, L, D, dtype=torch.float32) for _ in range(3))
                backend = backend_name(q, k, v, a.causal)

                def call():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=a.causal)

                out = call()
                err = None
                if L <= 1024:  # the math reference materialises B*H*L*L scores
                    s = (q @ k.transpose(-1, -2)) / D ** 0.5
                    if a.causal:
                        s = s.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
                    err = (out - s.softmax(-1) @ v).abs().max().item()
                t, ts = median_s(call, a.repeats, a.warmup)
                pairs = L * (L + 1) / 2 if a.causal else L * L
                gflops = 4 * a.B * a.H * pairs * D / t / 1e9
                row = {"L": L, "D": D, "causal": a.causal, "time_ms": t * 1e3,
                       "times_ms": [x * 1e3 for x in ts], "gflops": gflops, "backend": backend,
                       "max_err_vs_math": err}
                rows.append(row)
                print(f"L={L:6d} D={D:4d}: {t * 1e3:10.2f} ms  {gflops:7.1f} GFLOP/s  backend={backend}"
                      + (f"  max err vs math {err:.1e}" if err is not None else ""), flush=True)
                del q, k, v, out
    with open(a.out, "w") as f:
        json.dump({"info": info, "rows": rows}, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
