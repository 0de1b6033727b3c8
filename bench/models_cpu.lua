-- Issue 21 (1): ViT-B/16 and GPT-2 small forward on the CPU (float32, random
-- weights of the real shapes, no_grad), median of --repeats; the same
-- architectures in PyTorch eager: bench/torch_models_cpu.py, run beside it.
--   attnswap-run bench/models_cpu.lua [--threads 2] [--vit-batch 2] [--gpt2-tokens 256]
--       [--gpt2-batch 1] [--repeats 5] [--profile] [--out rows.json]
--       [--device cuda --dtype bfloat16]
-- --profile: each op of a layer timed alone at the model's shapes, to say
-- where the time goes.  --device cuda does the same on the card (issue 21
-- part 2; examples/models_cuda.lua is that part's benchmark), synchronised
-- around each timed op.
local as = require "attnswap"
local bench = require "attnswap.bench"

local o = { threads = 2, vit_batch = 2, gpt2_tokens = 256, gpt2_batch = 1, repeats = 5, device = "cpu",
  dtype = "float32" }
local i = 1
while i <= #arg do
  local a, v = arg[i], arg[i + 1]
  if a == "--threads" then o.threads = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--vit-batch" then o.vit_batch = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--gpt2-tokens" then o.gpt2_tokens = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--gpt2-batch" then o.gpt2_batch = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--device" or a == "--dtype" then o[a:sub(3)] = v; i = i + 1
  elseif a == "--repeats" then o.repeats = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--profile" then o.profile = true
  elseif a == "--out" then o.out = v; i = i + 1
  else error("models_cpu: unknown option " .. a) end
  i = i + 1
end
as.set_num_threads(o.threads)
local sync = o.device == "cuda" and as.cuda.synchronize or function() end
local function dev(t) return t:to(o.device):to(o.dtype) end
local function randn(...) return dev(as.randn(...)) end

-- Where the time goes: each op of one layer timed alone at the model's
-- shapes (best of 5: on a shared machine the least disturbed), times the depth, beside the measured forward; the
-- rest is copies (head split and merge), embeddings, Lua and allocation.
-- (Module hooks cannot do this: ViT's blocks run as one C module.)
local function budget(c)
  local clock, parts, order = as.core.clock, {}, {}
  local function time(name, f, times)
    f()
    local t = {}
    for r = 1, 5 do
      sync()
      local t0 = clock()
      f()
      sync()
      t[r] = clock() - t0
    end
    table.sort(t)
    if not parts[name] then order[#order + 1] = name end
    parts[name] = (parts[name] or 0) + t[1] * times
  end
  local T, E, H, D = c.B * c.L, c.E, c.heads, c.depth
  local x, x4 = randn(T, E), randn(T, 4 * E)
  local lw, lb = dev(as.ones(E)), dev(as.zeros(E))
  for _, s in ipairs { { E, 3 * E, x }, { E, E, x }, { E, 4 * E, x }, { 4 * E, E, x4 } } do
    local i, o, input = s[1], s[2], s[3]
    if c.conv1d then -- GPT-2's Conv1D: x @ W[in, out] + b
      local w, b = randn(i, o), randn(o)
      time("linear", function() return as.linear(input, w:t(), b) end, D)
    else
      local w, b = randn(o, i), randn(o)
      time("linear", function() return as.linear(input, w, b) end, D)
    end
  end
  local core = as.attention.new("scaled_dot_product", { causal = c.causal })
  local q, k, v = randn(c.B, H, c.L, E // H), randn(c.B, H, c.L, E // H), randn(c.B, H, c.L, E // H)
  time("attention", function() return core(q, k, v) end, D)
  local qkv = randn(c.B, c.L, 3 * E)
  time("head split/merge copies", function()
    local a = qkv:split(E, 3)
    a = a:reshape(c.B, c.L, H, E // H):permute(1, 3, 2, 4):contiguous()
    return a:permute(1, 3, 2, 4):reshape(c.B, c.L, E)
  end, 3 * D)
  time("layernorm", function() return as.layer_norm(x, lw, lb, 1e-5) end, 2 * D + 1)
  time("gelu", function() return as.gelu(x4, c.gelu) end, D)
  time("residual adds", function() return x + x end, 2 * D)
  if c.head then
    local w = randn(c.head, E)
    local rows = c.head_rows or x
    time("head", function() return rows:matmul(w:t()) end, 1)
  end
  local sum, out = 0, {}
  for _, n in ipairs(order) do sum = sum + parts[n] end
  for _, n in ipairs(order) do out[#out + 1] = string.format("%s %.2f ms", n, parts[n] * 1e3) end
  return sum * 1e3, table.concat(out, ", ")
end

local models = {
  { name = "vit_base_patch16_224", batch = o.vit_batch .. " images 224x224",
    build = function() return as.models.vit { img_size = 224, patch_size = 16, embed_dim = 768, depth = 12,
      num_heads = 12, num_classes = 1000 } end,
    input = function() return as.randn(o.vit_batch, 3, 224, 224) end,
    shape = { B = o.vit_batch, L = 197, E = 768, heads = 12, depth = 12, causal = false, gelu = "none",
      head = 1000, head_rows = randn(o.vit_batch, 768) } },
  { name = "gpt2 (small)", batch = o.gpt2_batch .. " x " .. o.gpt2_tokens .. " tokens",
    build = function() return as.models.gpt2.new { n_layer = 12, n_embd = 768, n_head = 12, vocab_size = 50257,
      n_positions = 1024 } end,
    input = function() return (as.rand(o.gpt2_batch, o.gpt2_tokens) * 50257):long() end,
    shape = { B = o.gpt2_batch, L = o.gpt2_tokens, E = 768, heads = 12, depth = 12, causal = true, gelu = "tanh", conv1d = true,
      head = 50257 } },
}

local c = as.config()
print(string.format("attnswap %s, blas core %s (by %s), attention isa %s, %d threads, %s; %s %s", c.version,
  c.blas_core, c.blas_core_by, c.attention_isa, as.get_num_threads(), c.cpu, o.device, o.dtype))
print(os.date("!%H:%M:%S UTC") .. ", load " .. bench.load())
local rows = {}
for _, m in ipairs(models) do
  as.manual_seed(0)
  local model, x = m.build():eval(), m.input()
  if o.device ~= "cpu" then
    model:to(o.device):to(o.dtype)
    x = x:to(o.device)
    if x:dtype() == "float32" then x = x:to(o.dtype) end
  end
  local function fwd() return as.no_grad(function() return model(x) end) end
  fwd()
  local t = {}
  for r = 1, o.repeats do
    sync()
    local t0 = as.core.clock()
    fwd()
    sync()
    t[r] = (as.core.clock() - t0) * 1e3
  end
  table.sort(t)
  local ms = t[(#t + 1) // 2]
  rows[#rows + 1] = { model = m.name, batch = m.batch, ms = ms, min_ms = t[1], max_ms = t[#t], threads = o.threads }
  print(string.format("%-22s %-20s %9.1f ms (min %.1f, max %.1f)", m.name, m.batch, ms, t[1], t[#t]))
  if o.profile then
    local sum, parts = budget(m.shape)
    print(string.format("  ops alone (best of 5): %s; sum %.0f ms, forward's best %.0f ms", parts, sum, t[1]))
  end
  io.stdout:flush()
  model, x = nil, nil
  collectgarbage()
end
print(os.date("!%H:%M:%S UTC") .. ", load " .. bench.load())
if o.out then bench.write(o.out, bench.json(rows, { "model", "batch", "ms", "min_ms", "max_ms", "threads" })) end
