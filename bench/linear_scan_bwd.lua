-- Causal linear attention, forward + backward on the CPU: the C scan with its
-- own backward (core.linear_attention_causal, kernels/cpu/zoo_linear.c)
-- against the chunked tensor-op composite that autograd differentiates
-- (linear_common's causal_ops, taken with C.composite = true).  Not a test:
-- figures for docs/performance.md.
--   attnswap-run bench/linear_scan_bwd.lua [--L 1024,4096,16384] [--D 64] [--H 4]
--       [--impl linear_attention,performer_attention,op] [--repeats 5] [--threads 2]
-- impl "op": the scan alone on given features (phi_q, phi_k uniform in
-- [0, 1), F = D), without the feature maps the modules add on both paths.
-- Per shape and path: forward (recording the node), forward + backward
-- (medians), the peak tensor storage over the inputs during one forward +
-- backward (exact: features, saved tensors, gradients; not the scan's
-- per-thread scratch, about 2 F Dv floats and 2 L doubles a thread,
-- malloc'd), and the max difference of the gradients against the other
-- path; one JSON line each.
local as = require "attnswap"
local bench = require "attnswap.bench"
local C = require "attnswap.attention.linear_common"

local o = bench.options(arg, { L = { 1024, 4096, 16384 }, D = { 64 }, H = 4, impl = { "linear_attention" },
  repeats = 5, threads = 2 }, "linear_scan_bwd")
as.set_num_threads(o.threads)

for _, name in ipairs(o.impl) do
  for _, D in ipairs(o.D) do
    for _, L in ipairs(o.L) do
      as.manual_seed(0)
      local q, k, v = as.randn(1, o.H, L, D), as.randn(1, o.H, L, D), as.randn(1, o.H, L, D)
      if name == "op" then q, k = as.rand(1, o.H, L, D), as.rand(1, o.H, L, D) end
      for _, x in ipairs { q, k, v } do x:requires_grad_() end
      local w = as.randn(1, o.H, L, D)
      local core = name == "op" and function(a, b, c) return C.attend(a, b, c, true) end
        or as.attention.new(name, { causal = true })
      local grads = {}
      for _, path in ipairs { "scan", "composite" } do
        C.composite = path == "composite"
        local t_fwd = bench.time(function() core(q, k, v) end, o.repeats, 1)
        local step = bench.step(function(a, b, c) return core(a, b, c) end, { q, k, v }, w)
        collectgarbage()
        as.core.reset_peak_memory()
        local base = as.core.memory_stats().allocated
        step()
        local mem = as.core.memory_stats().peak - base
        grads[path] = { q.grad, k.grad, v.grad }
        local t_all = bench.time(step, o.repeats, 0)
        local row = {
          impl = name, path = path, L = L, D = D, H = o.H, threads = as.get_num_threads(),
          fwd_ms = t_fwd * 1e3, total_ms = t_all * 1e3, bwd_ms = (t_all - t_fwd) * 1e3,
          peak_mib = mem / 2 ^ 20, load = bench.load(),
        }
        if path == "composite" then row.grad_maxdiff = bench.max_abs_diff(grads.scan, grads.composite) end
        print(bench.json({ row }, { "impl", "path", "L", "D", "H", "threads", "fwd_ms", "bwd_ms", "total_ms",
          "peak_mib", "grad_maxdiff", "load" }))
        io.stdout:flush()
      end
      C.composite = false
    end
  end
end
