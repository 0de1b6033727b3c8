#!/usr/bin/env python3
"""PyTorch eager latency for the architectures of examples/models_cuda.lua,
on the same shapes: ViT-B/16 (32 images 224x224, timm's layout: pre-norm
blocks, qkv with bias, as attnswap's vit defaults) and GPT-2 small
(8 x 1024 tokens), written with torch.nn and
F.scaled_dot_product_attention (timm and transformers are not on the GPU
host; these are the same layer graphs).  Float32 and bfloat16, median of
--repeats CUDA-event-timed forwards under torch.inference_mode(); --graph adds
the bf16 forward replayed from a CUDA graph.

    python3 bench/torch_models.py --out torch_models.json"""
import argparse
import json
import statistics

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, heads, causal):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, L, E = x.shape
        q, k, v = self.qkv(x).reshape(B, L, 3, self.heads, E // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(o.transpose(1, 2).reshape(B, L, E))


class Block(nn.Module):
    def __init__(self, dim, heads, causal, eps, gelu):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, causal)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate=gelu), nn.Linear(4 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    def __init__(self, img=224, patch=16, dim=768, depth=12, heads=12, classes=1000):
        super().__init__()
        n = (img // patch) ** 2
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, False, 1e-6, "none") for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


class GPT2(nn.Module):
    def __init__(self, layers=12, dim=768, heads=12, vocab=50257, positions=1024):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(positions, dim)
        self.h = nn.Sequential(*[Block(dim, heads, True, 1e-5, "tanh") for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        return self.ln_f(self.h(x)) @ self.wte.weight.t()


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


def graphed(m, x):
    """m(x) captured in a CUDA graph (torch.cuda.graphs, after warm-up on a side stream): the
    replay, for comparison with as.cuda.graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.inference_mode():
        for _ in range(3):
            m(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(g):
        m(x)
    return g


def profile(m, x):
    """Where eager's time goes on the card: self CUDA time per op over one forward."""
    from torch.profiler import ProfilerActivity
    with torch.inference_mode():
        m(x)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            m(x)
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None)
        if t is None:
            t = getattr(e, "self_cuda_time_total", 0)
        if t > 0 and not e.key.startswith("aten::") and not e.key.startswith("cuda"):
            rows.append((t, e.count, e.key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"  kernels on the card: {total / 1e3:.2f} ms in all; the largest:", flush=True)
    for t, n, k in rows[:10]:
        print(f"  {t / 1e3:7.3f} ms  x{n:<4d} {k[:90]}", flush=True)


def trace(m, x, iters):
    """The capture range for bench/cuda_trace.c (or nsys): iters bf16 forwards after a warm-up."""
    with torch.inference_mode():
        m(x); m(x)
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        for _ in range(iters):
            m(x)
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default="torch_models.json")
    p.add_argument("--profile", action="store_true",
                   help="after the timings, PyTorch's profiler on one bf16 forward: CUDA time per op")
    p.add_argument("--trace", choices=["vit", "gpt2"],
                   help="only this model, bf16, then 10 forwards inside cudaProfilerStart/Stop "
                        "(run under bench/cuda_trace.c: bench/gpu_host.sh trace)")
    p.add_argument("--graph", action="store_true",
                   help="also the bf16 forward captured in a CUDA graph and replayed (torch.cuda.graphs)")
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # as attnswap: float32 GEMMs without TF32
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    cases = [("vit_base_patch16_224", ViT, lambda: torch.randn(32, 3, 224, 224, device="cuda")),
             ("gpt2 (small)", GPT2, lambda: torch.randint(0, 50257, (8, 1024), device="cuda"))]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    if a.trace:
        name, cls, make = cases[0 if a.trace == "vit" else 1]
        x = make()
        trace(cls().cuda().eval().to(torch.bfloat16), x.to(torch.bfloat16) if x.is_floating_point() else x, 10)
        return
    for name, cls, make in cases:
        model = cls().cuda().eval()
        x = make()
        for dtype in (torch.float32, torch.bfloat16):
            m = model.to(dtype)
            xi = x.to(dtype) if x.is_floating_point() else x
            with torch.inference_mode():
                ms = median_ms(lambda: m(xi), a.repeats)
            rows.append({"model": name, "dtype": str(dtype).replace("torch.", ""), "ms": ms})
            print(f"{name:22s} {rows[-1]['dtype']:9s} eager {ms:8.2f} ms", flush=True)
            if a.graph and dtype == torch.bfloat16:
                g = graphed(m, xi)
                ms = median_ms(g.replay, a.repeats)
                rows.append({"model": name, "dtype": "bfloat16", "graph": True, "ms": ms})
                print(f"{name:22s} bfloat16  graph {ms:8.2f} ms", flush=True)
                del g
            if a.profile and dtype == torch.bfloat16:
                profile(m, xi)
        del model
        torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
