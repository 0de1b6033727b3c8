"""Attention transfer as LoLCATs trains it, in PyTorch eager, at GPT-2 small's
shapes: the counterpart of bench/distill_gpu.lua's stage "attention".

transformers' GPT2LMHeadModel (random weights) runs under no_grad; hooks catch
each layer's q, k, v (the c_attn output).  Per layer, the teacher's output is
causal softmax attention (F.scaled_dot_product_attention), the student's the
Hedgehog feature map phi(x) = [softmax(x W), softmax(-x W)] (one W per head,
q and k apart, identity init) in LoLCATs' quadratic training form
(a = phi_q phi_k^T masked causal, out = a v / rowsum a), and the MSE between
them is backpropagated layer by layer, as LoLCATs' attention transfer does
(HazyResearch/lolcats, the "distill" stage).  AdamW lr 1e-2 on the maps.

  python3 bench/torch_distill.py [--device cuda] [--dtype bfloat16] [--batch 8] [--seq 1024]
      [--steps 12] [--feature-dim 64] [--out r.json]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

p = argparse.ArgumentParser()
p.add_argument("--device", default="cuda")
p.add_argument("--dtype", default="bfloat16")
p.add_argument("--batch", type=int, default=8)
p.add_argument("--seq", type=int, default=1024)
p.add_argument("--steps", type=int, default=12)
p.add_argument("--feature-dim", type=int, default=64)
p.add_argument("--threads", type=int)
p.add_argument("--out")
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
cuda = a.device == "cuda"
dt = getattr(torch, a.dtype)

torch.manual_seed(0)
cfg = GPT2Config(n_positions=max(1024, a.seq))
model = GPT2LMHeadModel(cfg).to(a.device, dt).eval().requires_grad_(False)
H, E = cfg.n_head, cfg.n_embd
D, Fd = E // H, a.feature_dim

caught = []


def catch(_module, _inputs, output):
    caught.append(output)


for blk in model.transformer.h:
    blk.attn.c_attn.register_forward_hook(catch)


def eye_map():
    w = torch.zeros(H, D, Fd, device=a.device, dtype=dt)
    n = min(D, Fd)
    w[:, torch.arange(n), torch.arange(n)] = 1
    return torch.nn.Parameter(w)


maps = [(eye_map(), eye_map()) for _ in range(cfg.n_layer)]
opt = torch.optim.AdamW([w for pair in maps for w in pair], lr=1e-2, weight_decay=0)


def phi(x, w):
    xw = torch.einsum("bhld,hdf->bhlf", x, w)
    return torch.cat([F.softmax(xw, dim=-1), F.softmax(-xw, dim=-1)], dim=-1).clamp(min=1e-12)


def heads(t):
    B, L, _ = t.shape
    return t.view(B, L, H, D).transpose(1, 2)


ids = [torch.randint(0, cfg.vocab_size, (a.batch, a.seq), device=a.device) for _ in range(2)]


def step(i):
    caught.clear()
    with torch.no_grad():
        model(ids[i % 2])
    opt.zero_grad()
    total = 0.0
    for qkv, (wq, wk) in zip(caught, maps):
        q, k, v = (heads(t) for t in qkv.split(E, dim=2))
        with torch.no_grad():
            want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        A = phi(q, wq) @ phi(k, wk).transpose(-1, -2)
        L = A.shape[-1]
        A = A.masked_fill(~torch.ones(L, L, dtype=torch.bool, device=A.device).tril(), 0)
        out = (A @ v) / A.sum(-1, keepdim=True)
        loss = F.mse_loss(out.float(), want.float())
        loss.backward()
        total += loss.item()
    opt.step()
    return total


def sync():
    if cuda:
        torch.cuda.synchronize()


losses = []
times = []
for i in range(a.steps):
    sync()
    t0 = time.perf_counter()
    losses.append(step(i))
    sync()
    times.append(time.perf_counter() - t0)
steady = times[2:]
ms = sum(steady) / len(steady) * 1e3
rate = a.batch * a.seq / (ms / 1e3)
print(f"torch {torch.__version__} LoLCATs-style attention transfer, GPT-2 small shapes, {a.device} {a.dtype}, "
      f"batch {a.batch} x {a.seq}: {ms:.1f} ms/step, {rate:.0f} tokens/s, loss {losses[0]:.4g} -> {losses[-1]:.4g}")
if a.out:
    with open(a.out, "w") as f:
        json.dump({"impl": "torch", "stage": "attention", "device": a.device, "dtype": a.dtype, "batch": a.batch,
                   "seq": a.seq, "ms": ms, "tokens_per_s": rate}, f)
