-- The fused attention backward on CUDA (kernels/cuda/attention_flash_bwd.cu):
-- forward + backward of scaled_dot_product at batch x heads giving --tokens
-- tokens (hidden 2048: H = 2048 / D), bf16, beside PyTorch's backward on the
-- same card when --torch names bench/torch_flash_bwd.py's JSON.  Not a test.
--   attnswap-run bench/flash_bwd_cuda.lua [--L 1024,4096] [--D 64,128] [--tokens 16384]
--       [--repeats 10] [--dtype bfloat16] [--torch torch.json]
-- Times are medians of calls bracketed by as.cuda.synchronize(); backward =
-- (forward + backward) - forward; TFLOP/s count the backward as 2.5 x the
-- forward's 4 B H pairs D (pairs: L^2, or L (L + 1) / 2 causal).
local as = require "attnswap"
local bench = require "attnswap.bench"

local o = bench.options(arg, { L = { 1024, 4096 }, D = { 64, 128 }, tokens = 16384, repeats = 10, dtype = "bfloat16",
  torch = false }, "flash_bwd_cuda")

local peer = {}
if o.torch then
  for _, r in ipairs(bench.read_rows(o.torch, as.json_decode)) do peer[bench.key(r, "D", "L", "causal")] = r end
end

local function time(f) return bench.time(f, o.repeats, 2, as.cuda.synchronize) end

-- ATTNSWAP_FLASH_BWD=mma keeps a Hopper card on flash-bwd/mma (its wgmma backward
-- otherwise); wgmma-reg, -persist, -nmajor, -bm64, -tma, -overlap: the wgmma kernel's tuning variants
-- (kernels/cuda/attention_flash_bwd.cu); ATTNSWAP_DETERMINISTIC=1: as.set_deterministic(true)
local env = os.getenv("ATTNSWAP_FLASH_BWD")
print("backward path: " .. ((env or "") ~= "" and "ATTNSWAP_FLASH_BWD=" .. env
  or "automatic (flash-bwd/wgmma on a compute capability 9.0 card)")
  .. (as.get_deterministic() and ", deterministic (dq added in key-block order)" or ""))
print(string.format("%4s %6s %6s %9s %9s %9s %8s %8s %8s %7s %7s", "D", "L", "causal", "fwd ms", "bwd ms",
  "bwd TF/s", "fa2 TF/s", "cudnn", "vs fa2", "vs cudnn", "GiB"))
for _, D in ipairs(o.D) do
  for _, L in ipairs(o.L) do
    for _, causal in ipairs { false, true } do
      as.manual_seed(0)
      local H = 2048 // D
      local Bt = math.max(1, o.tokens // L)
      local function leaf() return as.randn(Bt, H, L, D):to(o.dtype):cuda():requires_grad_() end
      local q, k, v = leaf(), leaf(), leaf()
      local w = as.randn(Bt, H, L, D):to(o.dtype):cuda()
      local core = as.attention.new("scaled_dot_product", { causal = causal })
      pcall(as.cuda.reset_peak_memory, 0) -- the GiB column: this shape's peak
      local t_fwd = time(function() core(q, k, v) end)
      local t_all = time(function()
        for _, x in ipairs { q, k, v } do x.grad = nil end
        core(q, k, v):backward(w)
      end)
      local pairs_ = causal and L * (L + 1) / 2 or L * L
      local bwd_tf = 2.5 * 4 * Bt * H * pairs_ * D / (t_all - t_fwd) / 1e12
      local p = peer[bench.key({ D = D, L = L, causal = causal }, "D", "L", "causal")] or {}
      local ok, st = pcall(as.cuda.memory_stats, 0)
      if not ok or type(st) ~= "table" then st = {} end
      print(string.format("%4d %6d %6s %9.3f %9.3f %9.1f %8s %8s %8s %7s %7.2f", D, L, tostring(causal), t_fwd * 1e3,
        (t_all - t_fwd) * 1e3, bwd_tf, p.flash_bwd_tflops and string.format("%.1f", p.flash_bwd_tflops) or "-",
        p.default_bwd_tflops and string.format("%.1f", p.default_bwd_tflops) or "-",
        bench.ratio(bwd_tf, p.flash_bwd_tflops), bench.ratio(bwd_tf, p.default_bwd_tflops),
        (st.peak_allocated or 0) / 2 ^ 30))
      io.stdout:flush()
      q, k, v, w = nil, nil, nil, nil
      collectgarbage()
    end
  end
end
