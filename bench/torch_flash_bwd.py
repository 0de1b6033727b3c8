"""PyTorch's attention backward on the same card, for bench/flash_bwd_cuda.lua:
forward + backward of F.scaled_dot_product_attention, bf16, batch x heads giving
--tokens tokens (hidden 2048), with the default backend (cuDNN on an H100) and
the FLASH_ATTENTION one (FA2); one JSON line per shape.  Backward = (forward +
backward) - forward, medians of CUDA-event timed calls; TFLOP/s as 2.5 x the
forward's 4 B H pairs D (pairs L^2, or L (L + 1) / 2 causal)."""
import argparse, json, statistics
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend

ap = argparse.ArgumentParser()
ap.add_argument("--L", default="1024,4096")
ap.add_argument("--D", default="64,128")
ap.add_argument("--tokens", type=int, default=16384)
ap.add_argument("--repeats", type=int, default=10)
ap.add_argument("--out", default=None)
a = ap.parse_args()


def timed(f, n):
    f(); f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); f(); e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1e3)
    return statistics.median(ts)


rows = []
for D in map(int, a.D.split(",")):
    for L in map(int, a.L.split(",")):
        for causal in (False, True):
            H, B = 2048 // D, max(1, a.tokens // L)
            q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
            w = torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16)
            pairs = L * (L + 1) / 2 if causal else L * L
            flops = 2.5 * 4 * B * H * pairs * D
            row = {"D": D, "L": L, "causal": causal}
            for name, be in (("default", None), ("flash", SDPBackend.FLASH_ATTENTION)):
                def fwd():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                def both():
                    q.grad = k.grad = v.grad = None
                    fwd().backward(w)
                if be is None:
                    tf, ta = timed(fwd, a.repeats), timed(both, a.repeats)
                else:
                    with sdpa_kernel(be):
                        tf, ta = timed(fwd, a.repeats), timed(both, a.repeats)
                row[name + "_bwd_ms"] = (ta - tf) * 1e3
                row[name + "_bwd_tflops"] = flops / (ta - tf) / 1e12
            rows.append(row)
            print(json.dumps(row), flush=True)
if a.out:
    with open(a.out, "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
