-- One GPT-2 training step (forward, next-token cross entropy, backward,
-- clip_grad_norm_, AdamW) timed on the CPU or the GPU: the benchmark that
-- bench/torch_train_step.py mirrors in PyTorch eager with the same shapes.
--
--   attnswap-run bench/train_step.lua [--device cpu|cuda] [--dtype float32|bfloat16]
--       [--batch 1] [--seq 256] [--layers 12] [--repeats 5] [--threads 2] [--out result.json]
--       [--phases 1]   (also the median of each phase: forward, backward, clip, AdamW)
--       [--loss float32|model|rows]   (float32, the default: cross_entropy on the logits cast to
--       float32, as the PyTorch twin does; model: on the logits in the model's dtype, the fused
--       kernel widening each element itself; rows: core.cross_entropy_rows without the
--       front-end's target check, which reads the targets back (a sync))
--
-- Random weights of GPT-2 small's shapes (768 wide, 12 heads, vocab 50257);
-- no dropout (eval mode: both sides compute the same thing).  Prints the
-- median step time over --repeats after two warm-up steps, tokens/s, and the
-- peak memory: the process's resident high-water mark on the CPU, the
-- allocator's peak on CUDA.
local as = require "attnswap"

local o = { device = "cpu", dtype = "float32", batch = 1, seq = 256, layers = 12, repeats = 5, loss = "float32" }
local i = 1
while i <= #arg do
  local k, v = arg[i]:match("^%-%-(%w+)$"), arg[i + 1]
  if not k or v == nil then error("train_step: unknown or incomplete option " .. tostring(arg[i])) end
  if k == "device" or k == "dtype" or k == "out" or k == "loss" then o[k] = v
  elseif k == "batch" or k == "seq" or k == "layers" or k == "repeats" or k == "threads" or k == "phases" then
    o[k] = assert(math.tointeger(tonumber(v)), "train_step: --" .. k .. " takes an integer")
  else error("train_step: unknown option --" .. k) end
  i = i + 2
end
if o.threads then as.set_num_threads(o.threads) end
local cuda = o.device == "cuda"

local function sync() if cuda then as.cuda.synchronize() end end

local function peak_rss_mib()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local kb = s:match("VmHWM:%s*(%d+)")
  return kb and tonumber(kb) / 1024
end

as.manual_seed(0)
local model = as.models.gpt2.new({ n_layer = o.layers, n_positions = math.max(1024, o.seq) }):eval()
model:to(o.device)
if o.dtype ~= "float32" then model:to(o.dtype) end
model:requires_grad_()
local V = model.config.vocab_size
math.randomseed(0)
local rows = {}
for b = 1, o.batch do
  rows[b] = {}
  for t = 1, o.seq do rows[b][t] = math.random(0, V - 1) end
end
local ids = as.tensor(rows, "int64"):to(o.device)
local inputs, targets = ids:narrow(2, 1, o.seq - 1), ids:narrow(2, 2, o.seq - 1):reshape(o.batch * (o.seq - 1))
local opt = as.optim.AdamW(model:parameters(), { lr = 1e-4, weight_decay = 0.01 })

-- phase times of the last step, ms (synchronised only with --phases)
local phase, phase_names = {}, { "forward", "backward", "clip", "adamw" }
local t_last
local function mark(i)
  if not o.phases then return end
  sync()
  local t = as.clock()
  if i > 0 then phase[i] = (t - t_last) * 1e3 end
  t_last = t
end

local function step()
  opt:zero_grad()
  mark(0)
  local logits = model(inputs)
  local flat = logits:reshape(o.batch * (o.seq - 1), V)
  local loss
  if o.loss == "rows" then loss = as.core.cross_entropy_rows(flat, targets):mean()
  else loss = as.F.cross_entropy(o.loss == "model" and flat or flat:float(), targets) end
  mark(1)
  loss:backward()
  mark(2)
  as.nn.utils.clip_grad_norm_(model:parameters(), 1.0)
  mark(3)
  opt:step()
  mark(4)
  return loss
end

local loss
for _ = 1, 2 do loss = step() end
sync()
if cuda then as.cuda.reset_peak_memory() end
local times, phase_times = {}, { {}, {}, {}, {} }
for r = 1, o.repeats do
  local t0 = as.clock()
  loss = step()
  sync()
  times[r] = (as.clock() - t0) * 1e3
  for i = 1, #phase do phase_times[i][r] = phase[i] end
end
if o.phases then
  local parts = {}
  for i, name in ipairs(phase_names) do
    table.sort(phase_times[i])
    parts[i] = string.format("%s %.1f", name, phase_times[i][(o.repeats + 1) // 2])
  end
  print("phases (median ms): " .. table.concat(parts, ", "))
end
table.sort(times)
local ms = times[(#times + 1) // 2]
local peak = cuda and as.cuda.memory_stats().peak_allocated / 2 ^ 20 or peak_rss_mib()
local tokens = o.batch * (o.seq - 1)
print(string.format("attnswap GPT-2 (%d layers) train step, %s %s, batch %d x %d: median %.1f ms (%d runs, min %.1f, max %.1f), %.0f tokens/s, peak %s MiB, loss %.4f",
  o.layers, o.device, o.dtype, o.batch, o.seq, ms, o.repeats, times[1], times[#times], tokens / ms * 1e3,
  peak and string.format("%.0f", peak) or "?", loss:item()))
if o.out then
  local f = assert(io.open(o.out, "w"))
  f:write(string.format('{"impl": "attnswap", "device": "%s", "dtype": "%s", "batch": %d, "seq": %d, "layers": %d, "ms": %.3f, "min_ms": %.3f, "max_ms": %.3f, "peak_mib": %.1f}\n',
    o.device, o.dtype, o.batch, o.seq, o.layers, ms, times[1], times[#times], peak or -1))
  f:close()
end
