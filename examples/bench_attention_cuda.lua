-- Exact attention on the GPU, the shapes FlashAttention's papers use: total
-- 16384 tokens (B = 16384 / L), hidden 2048 (H = 2048 / D), bfloat16.
--   attnswap-run examples/bench_attention_cuda.lua [--L 512,1024,...] [--D 64,128]
--       [--repeats 20] [--dtype bfloat16|float16|float32] [--torch torch.json] [--out results.json]
--       [--backward] [--tokens 16384] [--hidden 2048] [--device cuda|cpu]
-- (also reached as examples/bench_attention.lua --device cuda ...)
-- TFLOP/s = 4 B H L^2 D / time, halved when causal; median of --repeats
-- timed calls after two warm-ups, each bracketed by as.cuda.synchronize().
-- With --torch (bench/torch_sdpa.py's JSON, measured on the same card in the
-- same job) the table shows PyTorch's default, FlashAttention-2 and cuDNN
-- backends beside ours, and ours / theirs.
-- --backward: a training step, q, k, v requiring grad, forward and
-- out:backward(g) with a fixed random g, FLOPs x 3.5 (backward = 2.5
-- forwards, FlashAttention's convention), for the fused flash kernel and
-- the materialising sdp math path (up to 2^31 scores); the peer is
-- torch_sdpa.py --backward.  A path that fails is a row with its error.
-- --device cpu runs the same code small on the CPU (float32): a check of
-- this script, not a benchmark.
local as = require "attnswap"
local bench = require "attnswap.bench"

local function list(s)
  local out = {}
  for item in s:gmatch("[^,]+") do out[#out + 1] = assert(math.tointeger(tonumber(item)), "not an integer: " .. item) end
  return out
end

local o = { L = { 512, 1024, 2048, 4096, 8192, 16384 }, D = { 64, 128 }, repeats = 20, tokens = 16384,
  hidden = 2048, device = "cuda" }
local i = 1
while i <= #arg do
  local a, v = arg[i], arg[i + 1]
  if a == "--L" then o.L = list(v); i = i + 1
  elseif a == "--D" then o.D = list(v); i = i + 1
  elseif a == "--repeats" then o.repeats = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--dtype" then o.dtype = v; i = i + 1
  elseif a == "--torch" then o.torch = v; i = i + 1
  elseif a == "--out" then o.out = v; i = i + 1
  elseif a == "--backward" then o.backward = true
  elseif a == "--tokens" then o.tokens = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--hidden" then o.hidden = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--device" then o.device = v:match("^cuda") and "cuda" or v; i = i + 1
  else error("bench_attention_cuda: unknown option " .. tostring(a)) end
  i = i + 1
end
if o.device ~= "cuda" and o.device ~= "cpu" then error("bench_attention_cuda: --device must be cuda or cpu") end
o.dtype = o.dtype or (o.device == "cuda" and "bfloat16" or "float32")
if o.device == "cuda" and not as.cuda.is_available() then
  io.stderr:write("bench_attention_cuda: no CUDA device is available\n")
  os.exit(1)
end

-- PyTorch's rows by D/L/causal; a forward file does not stand beside a backward run
local peer = {}
if o.torch then
  for _, r in ipairs(bench.read_rows(o.torch, as.json_decode)) do
    if (r.backward or false) == (o.backward or false) then peer[bench.key(r, "D", "L", "causal")] = r end
  end
  if next(peer) == nil then
    io.stderr:write(string.format("bench_attention_cuda: %s has no %s rows (torch_sdpa.py%s)\n", o.torch,
      o.backward and "backward" or "forward", o.backward and " --backward" or ""))
  end
end

local function sync() if o.device == "cuda" then as.cuda.synchronize() end end

local function median_seconds(fn)
  fn(); fn()
  sync()
  local t = {}
  for r = 1, o.repeats do
    local t0 = as.core.clock()
    fn()
    sync()
    t[r] = as.core.clock() - t0
  end
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- one buffer of q, k and v (and g) for every shape: B H L D = tokens * hidden always
local N = o.tokens * o.hidden
as.manual_seed(0)
local qkv = as.randn(o.backward and 4 or 3, N):to(o.dtype):to(o.device)
local MATH_SCORES = 1 << 31 -- the most B H L^2 scores the math path may materialise

-- the paths timed per shape: the fused kernel; with --backward also the math path
local paths = { { name = "flash", call = function(q, k, v, opts) return as.flash_attention(q, k, v, nil, opts) end } }
if o.backward then
  paths[2] = { name = "math", math = true, core = {} }
end

local rows = {}
print(string.format("%s on %s, %s, %d tokens, hidden %d, %s", o.backward and "forward + backward (FLOPs x 3.5)" or
  "forward", o.device, o.dtype, o.tokens, o.hidden, o.torch and ("beside " .. o.torch) or "no peer"))
print(string.format("%-4s %-6s %-6s %-16s %10s %10s %10s %10s %10s %8s %8s", "D", "L", "causal", "path", "ms",
  "TFLOP/s", "torch dflt", "torch fa2", "cudnn", "vs fa2", "vs cudnn"))
for _, D in ipairs(o.D) do
  for _, L in ipairs(o.L) do
    for _, causal in ipairs { false, true } do
      local B, H = o.tokens // L, o.hidden // D
      local function part(j) return qkv:select(1, j):view(B, H, L, D) end
      local q, k, v = part(1), part(2), part(3)
      local g = o.backward and part(4) or nil
      if o.backward then
        -- leaves of their own (views of one buffer would share a gradient's base)
        q, k, v = q:clone():requires_grad_(), k:clone():requires_grad_(), v:clone():requires_grad_()
      end
      local opts = { causal = causal }
      local flops = 4 * B * H * L * L * D / (causal and 2 or 1) * (o.backward and bench.FWD_BWD_FLOPS or 1)
      local p = peer[bench.key({ D = D, L = L, causal = causal }, "D", "L", "causal")]
      for _, path in ipairs(paths) do
        local row = { D = D, L = L, B = B, H = H, causal = causal, backward = o.backward or nil, path = path.name }
        local fn = path.call
        if path.math then
          local c = as.attention.new("scaled_dot_product", { causal = causal, backend = "math" })
          fn = function(q_, k_, v_) return c(q_, k_, v_) end
        end
        if path.math and B * H * L * L > MATH_SCORES then
          row.error = "memory"
        else
          local call = function() return fn(q, k, v, opts) end
          if o.backward then call = bench.step(function(q_, k_, v_) return fn(q_, k_, v_, opts) end, { q, k, v }, g) end
          local ok, err = pcall(function()
            row.seconds = median_seconds(call)
            row.path = path.math and "math" or as.sdpa_backend()
          end)
          if not ok then row.error = tostring(err):match("[^\n]*") end
          q.grad, k.grad, v.grad = nil, nil, nil
        end
        if row.seconds then
          row.tflops = flops / row.seconds / 1e12
          if p then row.torch_default, row.torch_flash, row.torch_cudnn = p.default_tflops, p.flash_tflops, p.cudnn_tflops end
          row.vs_fa2, row.vs_cudnn = row.torch_flash and row.tflops / row.torch_flash, row.torch_cudnn and row.tflops / row.torch_cudnn
        end
        rows[#rows + 1] = row
        local function f1(x) return x and string.format("%.1f", x) or "-" end
        if row.error then
          print(string.format("%-4d %-6d %-6s %-16s   failed (%s)", D, L, tostring(causal), path.name, row.error))
        else
          print(string.format("%-4d %-6d %-6s %-16s %10.3f %10.1f %10s %10s %10s %8s %8s", D, L, tostring(causal),
            row.path, row.seconds * 1e3, row.tflops, f1(row.torch_default), f1(row.torch_flash), f1(row.torch_cudnn),
            bench.ratio(row.tflops, row.torch_flash), bench.ratio(row.tflops, row.torch_cudnn)))
        end
        io.stdout:flush()
      end
    end
  end
end
if o.out then
  bench.write(o.out, bench.json(rows, { "D", "L", "B", "H", "causal", "backward", "path", "seconds", "tflops",
    "torch_default", "torch_flash", "torch_cudnn", "vs_fa2", "vs_cudnn", "error" }))
end
