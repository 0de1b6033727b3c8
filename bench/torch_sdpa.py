#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on the shapes of
examples/bench_attention_cuda.lua, for a side-by-side in the same job:
total 16384 tokens (B = 16384 / L), hidden 2048 (H = 2048 / D), bf16.
Times the default backend (cuDNN on Hopper), the FlashAttention-2 backend
and the cuDNN backend; median of --repeats CUDA-event-timed calls.

--backward times a training step instead: q, k, v requiring grad, the
forward and out.backward(g) with a fixed random g, grads cleared before
each; TFLOP/s counts the forward's FLOPs x 3.5 (backward = 2.5 forwards,
FlashAttention's convention), as examples/bench_attention_cuda.lua
--backward does.  Rows carry "backward": true and the times in ms.

    python3 bench/torch_sdpa.py --out torch.json [--L 512,1024] [--D 64,128] [--backward]
        [--tokens 16384] [--hidden 2048]

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


BACKENDS = (("default", None), ("flash", [SDPBackend.FLASH_ATTENTION]), ("cudnn", [SDPBackend.CUDNN_ATTENTION]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--L", default="512,1024,2048,4096,8192,16384")
    p.add_argument("--D", default="64,128")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--backward", action="store_true", help="forward + backward (FLOPs x 3.5)")
    p.add_argument("--out", default="torch.json")
    p.add_argument("--tokens", type=int, default=16384, help="B x L (ViT-B/16 at 32 images: 6304 with --L 197)")
    p.add_argument("--hidden", type=int, default=2048, help="H x D")
    a = p.parse_args()
    rows = []
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, "
          f"{'forward + backward' if a.backward else 'forward'}")
    for D in map(int, a.D.split(",")):
        for L in map(int, a.L.split(",")):
            for causal in (False, True):
                B, H = max(1, a.tokens // L), max(1, a.hidden // D)
                q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=a.backward)
                           for _ in range(3))
                g = torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16) if a.backward else None
                flops = 4 * B * H * L * L * D / (2 if causal else 1) * (3.5 if a.backward else 1)
                row = {"D": D, "L": L, "causal": causal}
                if a.backward:
                    row["backward"] = True

                def call():
                    if not a.backward:
                        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    q.grad = k.grad = v.grad = None
                    F.scaled_dot_product_attention(q, k, v, is_causal=causal).backward(g)

                for name, backends in BACKENDS:
                    try:
                        if backends:
                            with sdpa_kernel(backends):
                                ms = median_ms(call, a.repeats)
                        else:
                            ms = median_ms(call, a.repeats)
                        row[f"{name}_ms"] = ms
                        row[f"{name}_tflops"] = flops / (ms * 1e-3) / 1e12
                    except RuntimeError as e:  # a backend that does not take this shape
                        row[f"{name}_tflops"] = None
                        row[f"{name}_error"] = str(e).splitlines()[0][:200]

                def f(x):
                    return "-" if x is None else f"{x:.1f}"
                print(f"D={D} L={L} causal={causal}: default {f(row['default_tflops'])}, "
                      f"flash {f(row['flash_tflops'])}, cudnn {f(row['cudnn_tflops'])} TFLOP/s", flush=True)
                rows.append(row)
                del q, k, v, g
    with open(a.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
