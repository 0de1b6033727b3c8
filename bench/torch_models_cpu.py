#!/usr/bin/env python3
"""PyTorch CPU eager for bench/models_cpu.lua: the architectures of
bench/torch_models.py (ViT-B/16, GPT-2 small, random weights) in float32 on
the CPU, torch.set_num_threads(--threads), median of --repeats forwards under
torch.inference_mode().  --profile: torch.profiler's top CPU ops.

    python3 bench/torch_models_cpu.py --threads 2 --vit-batch 2 --gpt2-tokens 256"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import GPT2, ViT  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vit-batch", type=int, default=2)
    p.add_argument("--gpt2-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--out")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} threads, "
          f"{torch.backends.cpu.get_cpu_capability()}", flush=True)
    print("load: " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    torch.manual_seed(0)
    cases = [("vit_base_patch16_224", f"{a.vit_batch} images 224x224", ViT,
              lambda: torch.randn(a.vit_batch, 3, 224, 224)),
             ("gpt2 (small)", f"1 x {a.gpt2_tokens} tokens", GPT2,
              lambda: torch.randint(0, 50257, (1, a.gpt2_tokens)))]
    rows = []
    for name, batch, cls, make in cases:
        model, x = cls().eval(), make()
        with torch.inference_mode():
            model(x)
            t = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                model(x)
                t.append((time.perf_counter() - t0) * 1e3)
            if a.profile:
                from torch.profiler import profile, ProfilerActivity
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    model(x)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
        ms = statistics.median(t)
        rows.append({"model": name, "batch": batch, "ms": ms, "min_ms": min(t), "max_ms": max(t),
                     "threads": a.threads})
        print(f"{name:22s} {batch:20s} {ms:9.1f} ms (min {min(t):.1f}, max {max(t):.1f})", flush=True)
        del model
    print("load: " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
