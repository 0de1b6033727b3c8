-- The fused attention backward on the CPU: forward + backward of
-- scaled_dot_product (the flash path, kernels/cpu/attention_flash_bwd.c) at
-- batch x heads giving --tokens tokens, beside sgemm measured in the same
-- process.  Not a test: figures for docs/performance.md.
--   attnswap-run bench/flash_bwd.lua [--L 1024,4096] [--D 64,128] [--causal both|on|off]
--       [--tokens 16384] [--repeats 3] [--threads 2]
-- Per shape: forward time (recording the node), backward time (forward +
-- backward minus forward, medians), backward GFLOP/s counted as 2.5 x the
-- forward's 4 B H pairs D (FlashAttention's convention; pairs: L^2, or
-- L (L + 1) / 2 when causal), that as % of sgemm 1024^3 timed right after
-- the shape, the backward's peak extra memory (tensor storage, exact:
-- gradients, scratch) and the load average; one JSON line per shape.
local as = require "attnswap"
local bench = require "attnswap.bench"

local o = bench.options(arg, { L = { 1024, 4096 }, D = { 64, 128 }, causal = "both", tokens = 16384, repeats = 3,
  threads = 2 }, "flash_bwd")
o.causal = o.causal == "on" and { true } or o.causal == "off" and { false } or { false, true }
as.set_num_threads(o.threads)

local n = 1024
local sgemm = 2 * n ^ 3 / as.core.raw_sgemm_seconds(n, n, n, 5) / 1e9
io.stderr:write(string.format("sgemm %d^3: %.1f GFLOP/s, %d threads, load %s\n", n, sgemm, as.get_num_threads(), bench.load()))

for _, D in ipairs(o.D) do
  for _, L in ipairs(o.L) do
    for _, causal in ipairs(o.causal) do
      as.manual_seed(0)
      local BH = math.max(1, o.tokens // L)
      local q, k, v = as.randn(1, BH, L, D), as.randn(1, BH, L, D), as.randn(1, BH, L, D)
      for _, x in ipairs { q, k, v } do x:requires_grad_() end
      local w = as.randn(1, BH, L, D)
      local core = as.attention.new("scaled_dot_product", { causal = causal })
      local t_fwd = bench.time(function() core(q, k, v) end, o.repeats, 1)
      local path = as.sdpa_backend()
      collectgarbage()
      local out = core(q, k, v)
      as.core.reset_peak_memory()
      local base = as.core.memory_stats().allocated
      out:backward(w)
      local mem = as.core.memory_stats().peak - base
      out = nil
      local t_all = bench.time(function()
        for _, x in ipairs { q, k, v } do x.grad = nil end
        core(q, k, v):backward(w)
      end, o.repeats, 0)
      -- sgemm again beside each shape: under a shared machine's load the rate moves
      local sg = 2 * n ^ 3 / as.core.raw_sgemm_seconds(n, n, n, 5) / 1e9
      local pairs_ = causal and L * (L + 1) / 2 or L * L
      local fwd_flops = 4 * BH * pairs_ * D
      local t_bwd = t_all - t_fwd
      local row = {
        L = L, D = D, BH = BH, causal = causal, path = path, fwd_ms = t_fwd * 1e3, bwd_ms = t_bwd * 1e3,
        total_ms = t_all * 1e3, bwd_gflops = 2.5 * fwd_flops / t_bwd / 1e9,
        bwd_mem_mib = mem / 2 ^ 20, load = bench.load(),
      }
      row.sgemm_gflops = sg
      row.bwd_pct_sgemm = 100 * row.bwd_gflops / sg
      print(bench.json({ row }, { "L", "D", "BH", "causal", "path", "fwd_ms", "bwd_ms", "total_ms", "bwd_gflops",
        "sgemm_gflops", "bwd_pct_sgemm", "bwd_mem_mib", "load" }))
      io.stdout:flush()
    end
  end
end
