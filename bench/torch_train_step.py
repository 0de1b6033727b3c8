#!/usr/bin/env python3
"""PyTorch eager's GPT-2 training step, the twin of bench/train_step.lua:
forward, next-token cross entropy, backward, clip_grad_norm_, AdamW, on
random weights of GPT-2 small's shapes (transformers' GPT2LMHeadModel, eval
mode: no dropout; its default attention, SDPA).  Median step time after two
warm-up steps, tokens/s, peak memory (resident high-water mark on the CPU,
torch.cuda.max_memory_allocated on CUDA).

    python3 bench/torch_train_step.py [--device cpu|cuda] [--dtype float32|bfloat16]
        [--batch 1] [--seq 256] [--layers 12] [--repeats 5] [--threads 2] [--out r.json]
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

p = argparse.ArgumentParser()
p.add_argument("--device", default="cpu")
p.add_argument("--dtype", default="float32")
p.add_argument("--batch", type=int, default=1)
p.add_argument("--seq", type=int, default=256)
p.add_argument("--layers", type=int, default=12)
p.add_argument("--repeats", type=int, default=5)
p.add_argument("--threads", type=int)
p.add_argument("--out")
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
cuda = a.device == "cuda"

torch.manual_seed(0)
cfg = GPT2Config(n_layer=a.layers, n_positions=max(1024, a.seq))
model = GPT2LMHeadModel(cfg).to(a.device, getattr(torch, a.dtype)).eval()
ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), device=a.device)
inputs, targets = ids[:, :-1], ids[:, 1:].reshape(-1)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)


def sync():
    if cuda:
        torch.cuda.synchronize()


def step():
    opt.zero_grad()
    logits = model(inputs).logits
    loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size).float(), targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


for _ in range(2):
    step()
sync()
if cuda:
    torch.cuda.reset_peak_memory_stats()
times = []
for _ in range(a.repeats):
    t0 = time.perf_counter()
    loss = step()
    sync()
    times.append((time.perf_counter() - t0) * 1e3)
ms = statistics.median(times)
peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
tokens = a.batch * (a.seq - 1)
print(f"torch {torch.__version__} GPT-2 ({a.layers} layers) train step, {a.device} {a.dtype}, batch {a.batch} x {a.seq}: "
      f"median {ms:.1f} ms ({a.repeats} runs, min {min(times):.1f}, max {max(times):.1f}), {tokens / ms * 1e3:.0f} tokens/s, "
      f"peak {peak:.0f} MiB, loss {loss.item():.4f}")
if a.out:
    with open(a.out, "w") as f:
        json.dump({"impl": "torch", "device": a.device, "dtype": a.dtype, "batch": a.batch, "seq": a.seq,
                   "layers": a.layers, "ms": ms, "min_ms": min(times), "max_ms": max(times), "peak_mib": peak}, f)
