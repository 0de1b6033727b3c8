#!/usr/bin/env python3
"""The transformers side of issue 19's Llama benchmark, and the table that puts both
sides together (bench/llama_bench.lua is attnswap's side; bench/gpu_host.sh llama runs
both on the GPU host).

    python3 bench/torch_llama.py make --size 1b --dir D [--device cuda]
        a LlamaForCausalLM of Llama-3.2-1B's shape (hidden 2048, 16 layers, 32 heads,
        8 kv heads, intermediate 8192, vocab 128256, rope_theta 500000 with llama3
        scaling, tied embeddings), random weights (transformers' init after
        torch.manual_seed(0)), saved with save_pretrained in bfloat16 (safetensors);
        --size 135m: SmolLM-135M's shape (hidden 576, 30 layers, 9 heads, 3 kv heads,
        intermediate 1536, vocab 49152, tied), saved in float32.  D/io.safetensors:
        input_ids (1, 64), logits_fp32 of the saved weights in float32 (TF32 off)
        [and logits_bf16, on cuda].
    python3 bench/torch_llama.py bench --dir D --device cuda --dtype bfloat16 \
        --attn eager,sdpa [--threads N] [--batches 1,16] [--prompt 512] [--new 128] \
        [--repeats 5] [--gen-repeats 3] [--contexts 512,2048,8192] [--ctx-new 64] --out f.json
        the same cases, the same way, as llama_bench.lua (its header says how).
    python3 bench/torch_llama.py table --gpu torch.json attnswap.json [--cpu torch.json attnswap.json ...]
        markdown tables: tokens/s, medians with their range, attnswap / transformers.
"""
import argparse
import json
import os
import statistics
import sys
import time

SIZES = {
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
               rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001,
               rope={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    "135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rms_norm_eps=1e-5,
                 tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
                 rope={"rope_type": "default", "rope_theta": 10000.0}),
}


def make_config(size):
    import transformers
    kw = dict(SIZES[size])
    rope = dict(kw.pop("rope"))
    if int(transformers.__version__.split(".")[0]) >= 5:
        kw["rope_parameters"] = rope
    else:
        kw["rope_theta"] = rope.pop("rope_theta")
        kw["rope_scaling"] = None if rope["rope_type"] == "default" else rope
    return transformers.LlamaConfig(**kw)


def load(d, dtype, attn, device):
    import torch
    from transformers import LlamaForCausalLM
    m = LlamaForCausalLM.from_pretrained(d, dtype=getattr(torch, dtype), attn_implementation=attn)
    return m.to(device).eval()


def cmd_make(a):
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    t0 = time.time()
    torch.manual_seed(0)
    with torch.device(a.device):
        m = LlamaForCausalLM(make_config(a.size))
    store = torch.bfloat16 if a.size == "1b" else torch.float32
    m = m.to(store).eval()
    os.makedirs(a.dir, exist_ok=True)
    m.save_pretrained(a.dir)
    n = sum(p.numel() for p in m.parameters())
    print(f"made {a.size}: {n / 1e6:.1f}M parameters, stored {store}, transformers {transformers.__version__}, "
          f"torch {torch.__version__}, {time.time() - t0:.1f} s", flush=True)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, m.config.vocab_size, (1, 64), generator=g)
    t = {"input_ids": ids}
    with torch.inference_mode():
        if store == torch.bfloat16:
            t["logits_bf16"] = m(ids.to(a.device)).logits.float().cpu()
        del m
        ref = load(a.dir, "float32", "sdpa", a.device)
        t["logits_fp32"] = ref(ids.to(a.device)).logits.float().cpu()
        del ref
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(a.dir, "io.safetensors"))
    if "logits_bf16" in t:
        d = (t["logits_bf16"] - t["logits_fp32"]).abs().max().item()
        print(f"transformers bf16 vs float32 logits: max|diff| {d:.3e}, max|logit| "
              f"{t['logits_fp32'].abs().max().item():.3f}")


def cmd_bench(a):
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if a.threads:
        torch.set_num_threads(a.threads)
    cuda = a.device != "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = []
    info = {"torch": torch.__version__, "device_name": torch.cuda.get_device_name() if cuda else "cpu",
            "threads": torch.get_num_threads()}
    import transformers
    info["transformers"] = transformers.__version__
    print(json.dumps(info), flush=True)

    def times(f, repeats):
        f()
        ts = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            inner = f()
            sync()
            ts.append(inner if isinstance(inner, float) else time.perf_counter() - t0)
        return ts

    def record(side, **r):
        ts = r.pop("ts")
        ms = statistics.median(ts) * 1e3
        r.update(side=side, device=a.device, dtype=a.dtype, threads=torch.get_num_threads(), ms=ms,
                 ms_min=min(ts) * 1e3, ms_max=max(ts) * 1e3)
        toks = r["batch"] * (r.get("new") or r["context"])
        r["tok_s"] = toks / (ms / 1e3)
        if r.get("new"):
            r["ms_token"] = ms / r["new"]
            r["ms_token_min"], r["ms_token_max"] = min(ts) * 1e3 / r["new"], max(ts) * 1e3 / r["new"]
        rows.append(r)
        with open(a.out, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)
        print(f"{side:9s} {r['case']:9s} B={r['batch']:<3d} ctx={r['context']:<5d} new={r.get('new') or 0:<4d} "
              f"{ms:10.3f} ms ({r['ms_min']:.3f}-{r['ms_max']:.3f}) {r['tok_s']:10.1f} tok/s", flush=True)

    for attn in a.attn.split(","):
        side = "hf_" + attn
        t0 = time.time()
        m = load(a.dir, a.dtype, attn, a.device)
        print(f"{side}: loaded in {time.time() - t0:.1f} s", flush=True)
        V = m.config.vocab_size
        g = torch.Generator().manual_seed(0)

        def decode(ids, n):
            out = m(ids, use_cache=True, logits_to_keep=1)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            sync()
            t = time.perf_counter()
            for _ in range(n):
                out = m(nxt, past_key_values=past, use_cache=True, logits_to_keep=1)
                past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            sync()
            return time.perf_counter() - t

        with torch.inference_mode():
            for B in [int(x) for x in a.batches.split(",")]:
              try:
                ids = torch.randint(0, V, (B, a.prompt), generator=g).to(a.device)
                record(side, case="prefill", core="default", batch=B, context=a.prompt,
                       ts=times(lambda: m(ids, use_cache=True, logits_to_keep=1), a.repeats))
                record(side, case="decode", core="default", batch=B, context=a.prompt, new=a.new,
                       ts=times(lambda: decode(ids, a.new), a.repeats))
                if a.gen_repeats > 0:
                    mask = torch.ones_like(ids)
                    record(side, case="generate", core="default", batch=B, context=a.prompt, new=a.new,
                           note="prefill included",
                           ts=times(lambda: m.generate(ids, attention_mask=mask, max_new_tokens=a.new,
                                                       min_new_tokens=a.new, do_sample=False, pad_token_id=0),
                                    a.gen_repeats))
              except Exception as e:  # noqa: BLE001 -- say it and go on to the next case
                print(f"{side} batch {B} failed: {e!r}", flush=True)
            for n in [int(x) for x in a.contexts.split(",") if x]:
              try:
                ids = torch.randint(0, V, (1, n), generator=g).to(a.device)
                record(side, case="context", core=attn, batch=1, context=n, new=a.ctx_new,
                       ts=times(lambda: decode(ids, a.ctx_new), a.ctx_repeats))
              except Exception as e:  # noqa: BLE001
                print(f"{side} context {n} failed: {e!r}", flush=True)
        del m
        if cuda:
            print(f"{side}: cuda peak allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB", flush=True)
            torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        json.dump({"info": info, "rows": rows}, f, indent=1)


def cmd_table(a):
    def rows_of(path):
        with open(path) as f:
            d = json.load(f)
        return d["rows"] if isinstance(d, dict) else d

    def fmt(r):
        if r is None:
            return "—"
        lo = r["tok_s"] * r["ms"] / r["ms_max"]
        hi = r["tok_s"] * r["ms"] / r["ms_min"]
        return f"{r['tok_s']:,.0f} ({lo:,.0f}–{hi:,.0f})"

    def find(rows, side, case, batch, context=None, core=None):
        for r in rows:
            if (r.get("side") == side and r.get("case") == case and r.get("batch") == batch
                    and (context is None or r.get("context") == context) and (core is None or r.get("core") == core)):
                return r
        return None

    def main_table(rows, title):
        print(f"\n{title}: tokens/s, median (range over repeats); ratio = attnswap / transformers\n")
        print("| case | batch | HF eager | HF sdpa | attnswap | ÷ eager | ÷ sdpa |")
        print("|---|---|---|---|---|---|---|")
        for case in ("prefill", "decode", "generate"):
            for B in sorted({r["batch"] for r in rows if r.get("case") == case}):
                e, s, o = (find(rows, side, case, B) for side in ("hf_eager", "hf_sdpa", "attnswap"))
                if o is None:
                    continue
                re = f"{o['tok_s'] / e['tok_s']:.2f}×" if e else "—"
                rs = f"{o['tok_s'] / s['tok_s']:.2f}×" if s else "—"
                ctx = f"{o['context']}" + (f" + {o['new']}" if o.get("new") else "")
                print(f"| {case} ({ctx}) | {B} | {fmt(e)} | {fmt(s)} | {fmt(o)} | {re} | {rs} |")

    if a.gpu:
        rows = rows_of(a.gpu[0]) + rows_of(a.gpu[1])
        main_table(rows, "GPU")
        ctxs = sorted({r["context"] for r in rows if r.get("case") == "context"})
        if ctxs:
            print("\nGPU decode at batch 1 by context: ms per token, median (range)\n")
            cols = [("attnswap", "scaled_dot_product"), ("attnswap", "linear_attention"), ("hf_sdpa", "sdpa"),
                    ("hf_eager", "eager")]
            print("| context | " + " | ".join(f"{s} {c}" for s, c in cols) + " |")
            print("|---|" + "---|" * len(cols))
            for n in ctxs:
                cells = []
                for s, c in cols:
                    r = find(rows, s, "context", 1, n, c)
                    cells.append("—" if r is None else
                                 f"{r['ms_token']:.2f} ({r['ms_token_min']:.2f}–{r['ms_token_max']:.2f})")
                print(f"| {n} | " + " | ".join(cells) + " |")
        for r in rows:
            if str(r.get("case", "")).startswith("check_"):
                print(f"{r['case']}: max|diff| {r['ms']:.3e}")
    for i in range(0, len(a.cpu or []), 2):
        rows = rows_of(a.cpu[i]) + rows_of(a.cpu[i + 1])
        th = next((r["threads"] for r in rows if r.get("side") == "attnswap" and r.get("threads")), "?")
        main_table(rows, f"CPU, {th} threads")
        for r in rows:
            if str(r.get("case", "")).startswith("check_"):
                print(f"{r['case']}: max|diff| {r['ms']:.3e}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--size", choices=sorted(SIZES), default="1b")
    m.add_argument("--dir", required=True)
    m.add_argument("--device", default="cuda")
    b = sub.add_parser("bench")
    b.add_argument("--dir", required=True)
    b.add_argument("--device", default="cuda")
    b.add_argument("--dtype", default="bfloat16")
    b.add_argument("--attn", default="eager,sdpa")
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--batches", default="1,16")
    b.add_argument("--prompt", type=int, default=512)
    b.add_argument("--new", type=int, default=128)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--gen-repeats", type=int, default=3)
    b.add_argument("--contexts", default="")
    b.add_argument("--ctx-new", type=int, default=64)
    b.add_argument("--ctx-repeats", type=int, default=3)
    b.add_argument("--out", required=True)
    t = sub.add_parser("table")
    t.add_argument("--gpu", nargs=2)
    t.add_argument("--cpu", nargs="+")
    a = p.parse_args()
    {"make": cmd_make, "bench": cmd_bench, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
