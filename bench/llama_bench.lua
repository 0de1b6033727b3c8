-- Prefill and decode throughput of a Llama-family checkpoint (issue 19's benchmark),
-- with the same method as bench/torch_llama.py, which times transformers on the
-- same folder:
--   prefill  model(ids (B, P), {last_only = true}) (the cache is built, only the last
--            position's logits: what generation's first step does); tokens/s = B * P / t
--   decode   after a prefill of P tokens, N steps of model(next (B, 1), {past}), each
--            next token the argmax on the device; tokens/s = B * N / t (the N steps only)
--   generate model:generate(ids, {max_new_tokens = N}) end to end (prefill included)
--   context  decode ms/token at batch 1 after prompts of each --contexts length, with the
--            default core and with linear_attention swapped in (--cores)
-- Wall clock around each timed region, the device synchronised before and after;
-- one warm-up run of each case, then the median and the range of --repeats.
--
--   attnswap-run bench/llama_bench.lua --model DIR [--device cuda] [--dtype bfloat16]
--     [--threads N] [--batches 1,16] [--prompt 512] [--new 128] [--repeats 5]
--     [--gen-repeats 3] [--contexts 512,2048,8192] [--ctx-new 64]
--     [--cores scaled_dot_product,linear_attention] [--check io.safetensors] [--out f.json]
--     [--diag]
-- --diag: for each batch and core, where a decode step's time goes: the host's time to
-- issue one step (the call returns before the card finishes), the step synchronised, and
-- the device allocator's cudaMalloc calls per step.
-- --check: io.safetensors of torch_llama.py make (input_ids, logits_fp32 [, logits_bf16]):
-- the model is loaded in float32 first, its logits compared, then converted to --dtype.
local as = require "attnswap"
local bench = require "attnswap.bench"

local o = { device = "cpu", dtype = "float32", batches = { 1, 16 }, prompt = 512, new = 128, repeats = 5,
  gen_repeats = 3, contexts = {}, ctx_new = 64, cores = { "scaled_dot_product", "linear_attention" },
  ctx_repeats = 3 }
local function list(s, num)
  local t = {}
  for x in s:gmatch("[^,]+") do t[#t + 1] = num and assert(math.tointeger(tonumber(x)), s) or x end
  return t
end
local i = 1
while i <= #arg do
  local a, v = arg[i], arg[i + 1]
  if a == "--model" then o.model = v
  elseif a == "--device" then o.device = v
  elseif a == "--dtype" then o.dtype = v
  elseif a == "--threads" then o.threads = assert(math.tointeger(tonumber(v)))
  elseif a == "--batches" then o.batches = list(v, true)
  elseif a == "--prompt" then o.prompt = assert(math.tointeger(tonumber(v)))
  elseif a == "--new" then o.new = assert(math.tointeger(tonumber(v)))
  elseif a == "--repeats" then o.repeats = assert(math.tointeger(tonumber(v)))
  elseif a == "--gen-repeats" then o.gen_repeats = assert(math.tointeger(tonumber(v)))
  elseif a == "--ctx-repeats" then o.ctx_repeats = assert(math.tointeger(tonumber(v)))
  elseif a == "--contexts" then o.contexts = v == "" and {} or list(v, true)
  elseif a == "--ctx-new" then o.ctx_new = assert(math.tointeger(tonumber(v)))
  elseif a == "--cores" then o.cores = list(v)
  elseif a == "--check" then o.check = v
  elseif a == "--out" then o.out = v
  elseif a == "--diag" then o.diag = true; i = i - 1
  else error("llama_bench: unknown option " .. a) end
  i = i + 2
end
assert(o.model, "llama_bench: --model DIR is required")
if o.threads then as.set_num_threads(o.threads) end
local cuda = o.device ~= "cpu"
local function sync() if cuda then as.cuda.synchronize() end end

local rows = {}
local function save()
  bench.write(o.out, bench.json(rows, { "side", "case", "core", "device", "dtype", "threads", "batch", "context",
    "new", "ms", "ms_min", "ms_max", "tok_s", "ms_token", "ms_token_min", "ms_token_max", "note" }))
end
local function stats(ts)
  table.sort(ts)
  return ts[(#ts + 1) // 2], ts[1], ts[#ts]
end
local function record(r)
  r.side = "attnswap"
  r.device, r.dtype, r.threads = o.device, o.dtype, as.get_num_threads()
  rows[#rows + 1] = r
  if o.out then save() end
  print(string.format("%-9s %-18s B=%-3d ctx=%-5d new=%-4d %10.3f ms (%.3f-%.3f)  %10.1f tok/s  %s", r.case,
    r.core or "", r.batch, r.context, r.new or 0, r.ms, r.ms_min, r.ms_max, r.tok_s or 0, r.note or ""))
  io.stdout:flush()
end

-- times f() once untimed, then `repeats` times; -> list of seconds (f returns its own
-- timed seconds when it times only a part of itself)
local function times(f, repeats)
  f()
  local ts = {}
  for r = 1, repeats do
    collectgarbage()
    sync()
    local t0 = as.clock()
    local inner = f()
    sync()
    ts[r] = inner or (as.clock() - t0)
  end
  return ts
end

local t_load = as.clock()
local model
local check = {}
if o.check then
  model = as.models.from_pretrained(o.model)
  model:to(o.device)
  local io_ = as.load(o.check)
  local ids = io_.input_ids:to(o.device)
  local ref = io_.logits_fp32:float()
  local scale = ref:abs():max():item()
  local got = model(ids, { use_cache = false }):float():cpu()
  check.fp32 = (got - ref):abs():max():item()
  print(string.format("logits float32 (%s) vs transformers float32: max|diff| %.3e (max|logit| %.3f)", o.device,
    check.fp32, scale))
  got = nil
  collectgarbage()
  if o.dtype ~= "float32" then
    model:to(o.dtype)
    local lo = model(ids, { use_cache = false }):float():cpu()
    check.low_vs_fp32 = (lo - ref):abs():max():item()
    print(string.format("logits %s vs transformers float32: max|diff| %.3e", o.dtype, check.low_vs_fp32))
    if io_.logits_bf16 and o.dtype == "bfloat16" then
      check.low_vs_low = (lo - io_.logits_bf16:float()):abs():max():item()
      check.hf_low_vs_fp32 = (io_.logits_bf16:float() - ref):abs():max():item()
      print(string.format("logits bfloat16 vs transformers bfloat16: max|diff| %.3e (transformers bf16 vs its " ..
        "float32: %.3e)", check.low_vs_low, check.hf_low_vs_fp32))
    end
  end
  io_ = nil
else
  model = as.models.from_pretrained(o.model, { dtype = o.dtype })
  model:to(o.device)
end
for _, k in ipairs { "fp32", "low_vs_fp32", "low_vs_low", "hf_low_vs_fp32" } do
  if check[k] then rows[#rows + 1] = { side = "attnswap", case = "check_" .. k, ms = check[k] } end
end
collectgarbage()
if cuda then as.cuda.empty_cache() end
print(string.format("loaded %s (%s, %s, %d threads) in %.1f s, %.1fM parameters", o.model, o.device, o.dtype,
  as.get_num_threads(), as.clock() - t_load, model:num_parameters() / 1e6))
local V = model.config.vocab_size

local function random_ids(B, L)
  return (as.rand(B, L) * (V - 1)):long():to(o.device)
end
-- (B, 1, V) -> (B, 1) int64 ids, the argmax on the device; on the host (and copied
-- back) if the device cannot (then said, since it costs a copy of the logits)
local function next_dev(logits) return logits:select(2, logits:size(2)):argmax(2, true) - 1 end
local function next_host(logits)
  return (logits:select(2, logits:size(2)):float():cpu():argmax(2, true) - 1):to(o.device)
end
local next_of = next_dev
do
  local probe = as.randn(3, 1, 50):to(o.device):to(o.dtype)
  local ok, got = pcall(next_dev, probe)
  if not ok or (got:cpu() - next_host(probe):cpu()):abs():max():item() ~= 0 then
    print("argmax on the device: " .. (ok and "wrong ids" or tostring(got)) .. "; picking on the host")
    next_of = next_host
  end
end

-- prefill, then n decode steps; -> seconds of the decode steps
local function decode(ids, n)
  local logits, cache = model(ids, { last_only = true })
  local nxt = next_of(logits)
  sync()
  local t0 = as.clock()
  for _ = 1, n do
    logits, cache = model(nxt, { past = cache, last_only = true })
    nxt = next_of(logits)
  end
  sync()
  return as.clock() - t0
end

-- host issue time, synchronised time (seconds) and cudaMalloc calls of one decode step,
-- medians over n steps after a prefill of ids
local function diagnose(ids, n, label)
  local logits, cache = model(ids, { last_only = true })
  local nxt = next_of(logits)
  local issue, total, mallocs = {}, {}, {}
  for s = 1, n do
    sync()
    local m0 = cuda and as.cuda.memory_stats().num_mallocs or 0
    local t0 = as.clock()
    logits, cache = model(nxt, { past = cache, last_only = true })
    nxt = next_of(logits)
    local t1 = as.clock()
    sync()
    issue[s], total[s] = t1 - t0, as.clock() - t0
    mallocs[s] = (cuda and as.cuda.memory_stats().num_mallocs or 0) - m0
  end
  local mi, mt, mm = stats(issue), stats(total), stats(mallocs)
  local sum = 0
  for _, m in ipairs(mallocs) do sum = sum + m end
  print(string.format("diag %-18s B=%-3d ctx=%-5d step: host issues it in %.3f ms, %.3f ms synchronised; " ..
    "cudaMalloc per step: median %d, %d over %d steps", label, ids:size(1), ids:size(2), mi * 1e3, mt * 1e3, mm, sum, n))
  io.stdout:flush()
end

local function guarded(what, f)
  local ok, err = pcall(f)
  if not ok then print(what .. " failed: " .. tostring(err)) end
  collectgarbage()
  if cuda then as.cuda.empty_cache() end
end

as.manual_seed(0)
for _, B in ipairs(o.batches) do guarded("batch " .. B, function()
  local ids = random_ids(B, o.prompt)
  local ms, lo, hi = stats(times(function() model(ids, { last_only = true }) end, o.repeats))
  record { case = "prefill", core = "default", batch = B, context = o.prompt, ms = ms * 1e3, ms_min = lo * 1e3,
    ms_max = hi * 1e3, tok_s = B * o.prompt / ms }
  ms, lo, hi = stats(times(function() return decode(ids, o.new) end, o.repeats))
  record { case = "decode", core = "default", batch = B, context = o.prompt, new = o.new, ms = ms * 1e3,
    ms_min = lo * 1e3, ms_max = hi * 1e3, tok_s = B * o.new / ms, ms_token = ms * 1e3 / o.new }
  if o.diag then diagnose(ids, 32, "default") end
  if o.gen_repeats > 0 then
    ms, lo, hi = stats(times(function() model:generate(ids, { max_new_tokens = o.new, eos_token_id = false }) end,
      o.gen_repeats))
    record { case = "generate", core = "default", batch = B, context = o.prompt, new = o.new, ms = ms * 1e3,
      ms_min = lo * 1e3, ms_max = hi * 1e3, tok_s = B * o.new / ms, note = "prefill included" }
  end
end) end

if #o.contexts > 0 then
  local current = "scaled_dot_product"
  for _, core in ipairs(o.cores) do
    if core ~= current then
      as.swap_attention(model, current, core, {}, { quiet = true })
      current = core
    end
    for _, n in ipairs(o.contexts) do guarded(core .. " at " .. n, function()
      local ids = random_ids(1, n)
      if o.diag then diagnose(ids, 16, core) end
      local ms, lo, hi = stats(times(function() return decode(ids, o.ctx_new) end, o.ctx_repeats))
      record { case = "context", core = core, batch = 1, context = n, new = o.ctx_new, ms = ms * 1e3,
        ms_min = lo * 1e3, ms_max = hi * 1e3, tok_s = o.ctx_new / ms, ms_token = ms * 1e3 / o.ctx_new,
        ms_token_min = lo * 1e3 / o.ctx_new, ms_token_max = hi * 1e3 / o.ctx_new }
    end) end
  end
end
if cuda then
  print(string.format("cuda peak allocated %.0f MiB", as.cuda.memory_stats().peak_allocated / 2 ^ 20))
end
if o.out then save() end
