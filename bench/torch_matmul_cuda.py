"""PyTorch's float32 products on CUDA at bench/matmul_cuda.lua's shapes, the
peer in the same job: precision "highest" (cuBLAS SGEMM, PyTorch's default)
and "high" (one TF32 product: 10 bits of mantissa, not float32's accuracy),
and bfloat16.  Medians of CUDA-event timings over bursts of calls.
    python3 bench/torch_matmul_cuda.py [--repeats N]"""
import argparse

import torch
import torch.nn.functional as F

CASES = [
    ("128^3", 128, 128, 128, False), ("256^3", 256, 256, 256, False), ("384^3", 384, 384, 384, False),
    ("512^3", 512, 512, 512, False), ("768^3", 768, 768, 768, False), ("1024^3", 1024, 1024, 1024, False),
    ("2048^3", 2048, 2048, 2048, False), ("4096^3", 4096, 4096, 4096, False),
    ("64 x 768 x 768", 64, 768, 768, True), ("256 x 768 x 768", 256, 768, 768, True),
    ("1024 x 768 x 3072", 1024, 768, 3072, True),
    ("gpt2 qkv", 8192, 768, 2304, True), ("gpt2 proj", 8192, 768, 768, True),
    ("gpt2 fc", 8192, 768, 3072, True), ("gpt2 fc2", 8192, 3072, 768, True),
    ("gpt2 lm head", 8192, 768, 50257, False),
    ("vit qkv", 6304, 768, 2304, True), ("vit proj", 6304, 768, 768, True),
    ("vit fc", 6304, 768, 3072, True), ("vit fc2", 6304, 3072, 768, True),
]


def time_it(fn, burst, repeats):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(burst):
            fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1e3 / burst)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    o = ap.parse_args()
    print(f"{torch.cuda.get_device_name(0)}, PyTorch {torch.__version__}")
    print(f"{'shape':20s} {'highest TF/s':>14s} {'high(tf32) TF/s':>16s} {'bf16 TF/s':>10s}")
    for label, m, k, n, linear in CASES:
        flops = 2 * m * k * n
        burst = max(1, min(50, int(2e10 // flops)))
        a = torch.randn(m, k, device="cuda")
        w = torch.randn(n, k, device="cuda") if linear else torch.randn(k, n, device="cuda")
        b = torch.randn(n, device="cuda") if linear else None
        res = []
        for prec in ("highest", "high"):
            torch.set_float32_matmul_precision(prec)
            res.append(flops / time_it((lambda: F.linear(a, w, b)) if linear else (lambda: a @ w), burst, o.repeats))
        torch.set_float32_matmul_precision("highest")
        ab, wb = a.bfloat16(), w.bfloat16()
        bb = b.bfloat16() if linear else None
        res.append(flops / time_it((lambda: F.linear(ab, wb, bb)) if linear else (lambda: ab @ wb), burst, o.repeats))
        print(f"{label:20s} {res[0] / 1e12:14.1f} {res[1] / 1e12:16.1f} {res[2] / 1e12:10.1f}", flush=True)
        del a, w, b, ab, wb, bb
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
