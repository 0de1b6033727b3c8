-- Exact attention on the GPU, the shapes FlashAttention's papers use: total
-- 16384 tokens (B = 16384 / L), hidden 2048 (H = 2048 / D), bfloat16.
--   attnswap-run examples/bench_attention_cuda.lua [--L 512,1024,...] [--D 64,128]
--       [--repeats 20] [--dtype bfloat16|float16|float32] [--torch torch.json] [--out results.json]
-- (also reached as examples/bench_attention.lua --device cuda ...)
-- TFLOP/s = 4 B H L^2 D / time, halved when causal; median of --repeats
-- timed calls after two warm-ups, each bracketed by as.cuda.synchronize().
-- With --torch (bench/torch_sdpa.py's JSON, measured on the same card in the
-- same job) the table shows PyTorch's default and flash backends beside ours.
local as = require "attnswap"
local bench = require "attnswap.bench"

if not as.cuda.is_available() then
  io.stderr:write("bench_attention_cuda: no CUDA device is available\n")
  os.exit(1)
end

local function list(s)
  local out = {}
  for item in s:gmatch("[^,]+") do out[#out + 1] = assert(math.tointeger(tonumber(item)), "not an integer: " .. item) end
  return out
end

local o = { L = { 512, 1024, 2048, 4096, 8192, 16384 }, D = { 64, 128 }, repeats = 20, dtype = "bfloat16" }
local i = 1
while i <= #arg do
  local a, v = arg[i], arg[i + 1]
  if a == "--L" then o.L = list(v); i = i + 1
  elseif a == "--D" then o.D = list(v); i = i + 1
  elseif a == "--repeats" then o.repeats = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--dtype" then o.dtype = v; i = i + 1
  elseif a == "--torch" then o.torch = v; i = i + 1
  elseif a == "--out" then o.out = v; i = i + 1
  elseif a == "--device" then i = i + 1 -- from bench_attention.lua
  else error("bench_attention_cuda: unknown option " .. tostring(a)) end
  i = i + 1
end

local peer = {}
if o.torch then
  local f = assert(io.open(o.torch))
  for _, r in ipairs(as.json_decode(f:read("a"))) do
    peer[string.format("%d/%d/%s", r.D, r.L, tostring(r.causal))] = r
  end
  f:close()
end

local function median_seconds(fn)
  fn(); fn()
  as.cuda.synchronize()
  local t = {}
  for r = 1, o.repeats do
    local t0 = as.core.clock()
    fn()
    as.cuda.synchronize()
    t[r] = as.core.clock() - t0
  end
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- one buffer of q, k and v for every shape: B H L D = 16384 * 2048 always
local N = 16384 * 2048
as.manual_seed(0)
local qkv = as.randn(3, N):to(o.dtype):cuda()

local rows = {}
print(string.format("%-4s %-6s %-6s %-16s %10s %12s %12s %10s %10s", "D", "L", "causal", "path", "ms", "TFLOP/s",
  "torch dflt", "torch fa2", "vs fa2"))
for _, D in ipairs(o.D) do
  for _, L in ipairs(o.L) do
    for _, causal in ipairs { false, true } do
      local B, H = 16384 // L, 2048 // D
      local q, k, v = qkv:select(1, 1):view(B, H, L, D), qkv:select(1, 2):view(B, H, L, D), qkv:select(1, 3):view(B, H, L, D)
      local opts = { causal = causal }
      local s = median_seconds(function() return as.flash_attention(q, k, v, nil, opts) end)
      local flops = 4 * B * H * L * L * D / (causal and 2 or 1)
      local row = { D = D, L = L, B = B, H = H, causal = causal, seconds = s, tflops = flops / s / 1e12,
        path = as.sdpa_backend() }
      local p = peer[string.format("%d/%d/%s", D, L, tostring(causal))]
      if p then row.torch_default, row.torch_flash = p.default_tflops, p.flash_tflops end
      rows[#rows + 1] = row
      print(string.format("%-4d %-6d %-6s %-16s %10.3f %12.1f %12s %10s %10s", D, L, tostring(causal), row.path,
        s * 1e3, row.tflops, row.torch_default and string.format("%.1f", row.torch_default) or "-",
        row.torch_flash and string.format("%.1f", row.torch_flash) or "-",
        row.torch_flash and string.format("%.2fx", row.tflops / row.torch_flash) or "-"))
      io.stdout:flush()
    end
  end
end
if o.out then
  local f = assert(io.open(o.out, "w"))
  f:write(bench.json(rows, { "D", "L", "B", "H", "causal", "seconds", "tflops", "path", "torch_default", "torch_flash" }))
  f:close()
end
