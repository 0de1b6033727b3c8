-- as.distill's speed at GPT-2 small's shapes (issue 18): random weights,
-- hedgehog_attention (or --impl) swapped into a clone, each stage run for
-- --steps steps on random token ids; prints tokens/s per stage over the steps
-- after the first two (the optimizer's state and the allocator warm up
-- there).  bench/torch_distill.py times the same attention transfer written
-- as LoLCATs writes it, in PyTorch eager.
--
--   attnswap-run bench/distill_gpu.lua [--device cuda] [--dtype bfloat16] [--batch 8]
--       [--seq 1024] [--steps 12] [--impl hedgehog_attention] [--stages attention,logits] [--out r.json]
local as = require "attnswap"

local o = { device = "cuda", dtype = "bfloat16", batch = 8, seq = 1024, steps = 12, impl = "hedgehog_attention",
  stages = "attention,logits" }
local i = 1
while i <= #arg do
  local k, v = arg[i]:match("^%-%-(%w+)$"), arg[i + 1]
  if not k or v == nil or o[k] == nil and k ~= "out" then
    error("distill_gpu: unknown or incomplete option " .. tostring(arg[i]), 0)
  end
  o[k] = math.tointeger(tonumber(v)) or v
  i = i + 2
end
if o.steps < 3 then error("distill_gpu: --steps must be at least 3", 0) end
local stages = {}
for s in o.stages:gmatch("[^,]+") do stages[#stages + 1] = s end

as.manual_seed(0)
local teacher = as.models.gpt2.new({ n_positions = math.max(1024, o.seq) }):eval()
teacher:to(o.device)
if o.dtype ~= "float32" then teacher:to(o.dtype) end
local student = teacher:clone()
as.swap_attention(student, "scaled_dot_product", o.impl)
student:to(o.device)
if o.dtype ~= "float32" then student:to(o.dtype) end

math.randomseed(0)
local V = teacher.config.vocab_size
local batches = {}
for b = 1, 2 do
  local rows = {}
  for r = 1, o.batch do
    rows[r] = {}
    for t = 1, o.seq do rows[r][t] = math.random(0, V - 1) end
  end
  batches[b] = as.tensor(rows, "int64"):to(o.device)
end
local n = 0
local function data()
  n = n + 1
  return batches[n % 2 + 1]
end

local hist = as.distill(student, teacher, data, { stages = stages, steps = o.steps, log = false })
local tokens = o.batch * o.seq
local results = {}
for _, stage in ipairs(stages) do
  -- rate is cumulative (tokens so far / time so far): the steady rate is
  -- the tokens of steps 3..N over their time
  local at = {}
  for _, h in ipairs(hist) do
    if h.stage == stage then at[h.step] = h end
  end
  local N = o.steps
  local t2, tN = 2 * tokens / at[2].rate, N * tokens / at[N].rate
  local rate = (N - 2) * tokens / (tN - t2)
  results[#results + 1] = { stage = stage, rate = rate, ms = (tN - t2) / (N - 2) * 1e3, loss0 = at[1].loss, loss = at[N].loss }
  print(string.format("attnswap distill %s, %s, stage %s, %s %s, batch %d x %d: %.1f ms/step, %.0f tokens/s, loss %.4g -> %.4g",
    o.impl, "GPT-2 small shapes", stage, o.device, o.dtype, o.batch, o.seq, results[#results].ms, rate,
    at[1].loss, at[N].loss))
end
if o.out then
  local f = assert(io.open(o.out, "w"))
  for _, r in ipairs(results) do
    f:write(string.format('{"impl": "attnswap", "stage": "%s", "device": "%s", "dtype": "%s", "batch": %d, "seq": %d, "ms": %.3f, "tokens_per_s": %.1f}\n',
      r.stage, o.device, o.dtype, o.batch, o.seq, r.ms, r.rate))
  end
  f:close()
end
