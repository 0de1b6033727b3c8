#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on the shapes of
examples/bench_attention_cuda.lua, for a side-by-side in the same job:
total 16384 tokens (B = 16384 / L), hidden 2048 (H = 2048 / D), bf16,
forward only.  Times the default backend (cuDNN on Hopper) and the
FlashAttention-2 backend; median of --repeats CUDA-event-timed calls.

    python3 bench/torch_sdpa.py --out torch.json [--L 512,1024] [--D 64,128]

Needs only torch (present on the GPU host); never run by `make test`."""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, repeats):
    fn(); fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--L", default="512,1024,2048,4096,8192,16384")
    p.add_argument("--D", default="64,128")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default="torch.json")
    a = p.parse_args()
    rows = []
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for D in map(int, a.D.split(",")):
        for L in map(int, a.L.split(",")):
            for causal in (False, True):
                B, H = 16384 // L, 2048 // D
                q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
                flops = 4 * B * H * L * L * D / (2 if causal else 1)
                row = {"D": D, "L": L, "causal": causal}
                for name, backends in (("default", None), ("flash", [SDPBackend.FLASH_ATTENTION])):
                    def call():
                        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    if backends:
                        with sdpa_kernel(backends):
                            ms = median_ms(call, a.repeats)
                    else:
                        ms = median_ms(call, a.repeats)
                    row[f"{name}_tflops"] = flops / (ms * 1e-3) / 1e12
                print(f"D={D} L={L} causal={causal}: default {row['default_tflops']:.1f}, "
                      f"flash {row['flash_tflops']:.1f} TFLOP/s", flush=True)
                rows.append(row)
                del q, k, v
    with open(a.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
