-- The pieces of a GPT-2-small training step, each timed forward and
-- backward on its own (synchronised, median of --repeats): where the step's
-- time goes, op by op, when no profiler is at hand.
--
--   attnswap-run bench/train_parts.lua [--device cuda] [--dtype bfloat16]
--       [--batch 8] [--seq 1024] [--repeats 10]
local as = require "attnswap"

local o = { device = "cpu", dtype = "float32", batch = 1, seq = 256, repeats = 5 }
local i = 1
while i <= #arg do
  local k, v = arg[i]:match("^%-%-(%w+)$"), arg[i + 1]
  if not k or v == nil then error("train_parts: unknown or incomplete option " .. tostring(arg[i])) end
  if k == "device" or k == "dtype" then o[k] = v
  elseif k == "batch" or k == "seq" or k == "repeats" then
    o[k] = assert(math.tointeger(tonumber(v)), "train_parts: --" .. k .. " takes an integer")
  else error("train_parts: unknown option --" .. k) end
  i = i + 2
end
local cuda = o.device == "cuda"
local function sync() if cuda then as.cuda.synchronize() end end
local B, T, C, H, V = o.batch, o.seq, 768, 12, 50257

local function rand(...)
  return (as.randn(...) * 0.5):to(o.device):to(o.dtype)
end
local function leaf(...) return rand(...):requires_grad_() end

local function randint(n, ...)
  local shape, rows = { ... }, {}
  local count = 1
  for _, d in ipairs(shape) do count = count * d end
  for j = 1, count do rows[j] = math.random(0, n - 1) end
  return as.tensor(rows, "int64"):reshape(table.unpack(shape)):to(o.device)
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- name, make() -> fn (runs the forward, returns the output to backward through)
local total_f, total_b = 0, 0
local function part(name, count, fn)
  local fw, bw = {}, {}
  for r = 1, o.repeats + 1 do
    sync()
    local t0 = as.clock()
    local y = fn()
    sync()
    local t1 = as.clock()
    local g = y:numel() == 1 and nil or as.ones(table.unpack(y:shape())):to(y:device()):to(y:dtype())
    sync()
    local t2 = as.clock()
    if g then y:backward(g) else y:backward() end
    sync()
    local t3 = as.clock()
    if r > 1 then fw[r - 1], bw[r - 1] = (t1 - t0) * 1e3, (t3 - t2) * 1e3 end
  end
  local f, b = median(fw), median(bw)
  total_f, total_b = total_f + f * count, total_b + b * count
  print(string.format("%-34s x%-3d forward %8.3f ms  backward %8.3f ms   (step: %7.1f + %7.1f)", name, count, f, b,
    f * count, b * count))
end

as.manual_seed(0)
print(string.format("GPT-2 small pieces, %s %s, batch %d x %d", o.device, o.dtype, B, T))
local x = leaf(B, T, C)
local ln = as.nn.LayerNorm(C):to(o.device):to(o.dtype):requires_grad_()
part("layer_norm (B, T, 768)", 25, function() return ln(x) end)
local w_qkv, b_qkv = leaf(C, 3 * C), leaf(3 * C)
part("x @ W + b  768 -> 2304", 12, function() return x:matmul(w_qkv) + b_qkv end)
local w_fc, b_fc = leaf(C, 4 * C), leaf(4 * C)
part("x @ W + b  768 -> 3072", 12, function() return x:matmul(w_fc) + b_fc end)
local x4 = leaf(B, T, 4 * C)
local w_pr, b_pr = leaf(4 * C, C), leaf(C)
part("x @ W + b  3072 -> 768", 12, function() return x4:matmul(w_pr) + b_pr end)
local w_o = leaf(C, C)
part("x @ W + b  768 -> 768", 12, function() return x:matmul(w_o) + b_pr end)
local gelu = as.nn.GELU("tanh")
part("gelu tanh (B, T, 3072)", 12, function() return gelu(x4) end)
local qkv = leaf(B, T, 3 * C)
part("split + heads + permute back", 12, function()
  local q, k, v = qkv:split(C, 3)
  local function heads(t) return t:reshape(B, T, H, C // H):permute(1, 3, 2, 4) end
  q, k, v = heads(q), heads(k), heads(v)
  return (q + k + v):permute(1, 3, 2, 4):reshape(B, T, C)
end)
local core = as.attention.new("scaled_dot_product", { causal = true })
local q, k, v = leaf(B, H, T, C // H), leaf(B, H, T, C // H), leaf(B, H, T, C // H)
part("attention core, causal", 12, function() return core(q, k, v) end)
local y = leaf(B, T, C)
part("residual add", 24, function() return x + y end)
local wte = as.nn.Embedding(V, C):to(o.device):to(o.dtype):requires_grad_()
local ids = randint(V, B, T)
part("embedding 50257 x 768", 1, function() return wte(ids) end)
local hidden = leaf(B, T - 1, C)
local wt = leaf(V, C)
part("lm head x @ wte^T", 1, function() return hidden:matmul(wt:t()) end)
local logits = leaf(B * (T - 1), V)
local targets = randint(V, B * (T - 1))
part("cross_entropy (float32 logits)", 1, function() return as.F.cross_entropy(logits:float(), targets) end)
print(string.format("sum of the pieces at GPT-2 small's counts: forward %.1f ms, backward %.1f ms", total_f, total_b))
