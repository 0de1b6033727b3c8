-- Issue 21 (1): ViT-B/16 and GPT-2 small forward on the CPU (float32, random
-- weights of the real shapes, no_grad), median of --repeats; the same
-- architectures in PyTorch eager: bench/torch_models_cpu.py, run beside it.
--   attnswap-run bench/models_cpu.lua [--threads 2] [--vit-batch 2] [--gpt2-tokens 256]
--       [--repeats 5] [--profile] [--out rows.json]
-- --profile: time per module kind (Linear, LayerNorm, attention, ...) in one
-- more forward, to say where the time goes.
local as = require "attnswap"
local bench = require "attnswap.bench"

local o = { threads = 2, vit_batch = 2, gpt2_tokens = 256, repeats = 5 }
local i = 1
while i <= #arg do
  local a, v = arg[i], arg[i + 1]
  if a == "--threads" then o.threads = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--vit-batch" then o.vit_batch = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--gpt2-tokens" then o.gpt2_tokens = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--repeats" then o.repeats = assert(math.tointeger(tonumber(v))); i = i + 1
  elseif a == "--profile" then o.profile = true
  elseif a == "--out" then o.out = v; i = i + 1
  else error("models_cpu: unknown option " .. a) end
  i = i + 1
end
as.set_num_threads(o.threads)

local function uptime()
  local p = io.popen("uptime")
  local s = p and p:read("l") or "?"
  if p then p:close() end
  return s
end

-- per module kind: wraps every leaf module's forward with a clock (one run)
local function profile(model, run)
  local total, wrapped = {}, {}
  local function wrap(m)
    local kids = 0
    for _, c in m:children() do kids = kids + 1; wrap(c) end
    if kids > 0 and not m:type():match("Attention$") then return end
    local f, kind = m.forward, m:type()
    wrapped[#wrapped + 1] = { m, f }
    m.forward = function(self, ...)
      local t0 = as.core.clock()
      local r = table.pack(f(self, ...))
      total[kind] = (total[kind] or 0) + as.core.clock() - t0
      return table.unpack(r, 1, r.n)
    end
  end
  wrap(model)
  local t0 = as.core.clock()
  run()
  local all = as.core.clock() - t0
  for _, w in ipairs(wrapped) do w[1].forward = w[2] end
  local kinds = {}
  for k, t in pairs(total) do kinds[#kinds + 1] = { k, t } end
  table.sort(kinds, function(a, b) return a[2] > b[2] end)
  local parts = {}
  for _, kt in ipairs(kinds) do parts[#parts + 1] = string.format("%s %.0f ms (%.0f%%)", kt[1], kt[2] * 1e3, 100 * kt[2] / all) end
  return string.format("%.0f ms: %s", all * 1e3, table.concat(parts, ", "))
end

local models = {
  { name = "vit_base_patch16_224", batch = o.vit_batch .. " images 224x224",
    build = function() return as.models.vit { img_size = 224, patch_size = 16, embed_dim = 768, depth = 12,
      num_heads = 12, num_classes = 1000 } end,
    input = function() return as.randn(o.vit_batch, 3, 224, 224) end },
  { name = "gpt2 (small)", batch = "1 x " .. o.gpt2_tokens .. " tokens",
    build = function() return as.models.gpt2.new { n_layer = 12, n_embd = 768, n_head = 12, vocab_size = 50257,
      n_positions = 1024 } end,
    input = function() return (as.rand(1, o.gpt2_tokens) * 50257):long() end },
}

local c = as.config()
print(string.format("attnswap %s, blas core %s (by %s), attention isa %s, %d threads, %s", c.version, c.blas_core,
  c.blas_core_by, c.attention_isa, as.get_num_threads(), c.cpu))
print("load: " .. uptime())
local rows = {}
for _, m in ipairs(models) do
  as.manual_seed(0)
  local model, x = m.build():eval(), m.input()
  local function fwd() return as.no_grad(function() return model(x) end) end
  fwd()
  local t = {}
  for r = 1, o.repeats do
    local t0 = as.core.clock()
    fwd()
    t[r] = (as.core.clock() - t0) * 1e3
  end
  table.sort(t)
  local ms = t[(#t + 1) // 2]
  rows[#rows + 1] = { model = m.name, batch = m.batch, ms = ms, min_ms = t[1], max_ms = t[#t], threads = o.threads }
  print(string.format("%-22s %-20s %9.1f ms (min %.1f, max %.1f)", m.name, m.batch, ms, t[1], t[#t]))
  if o.profile then print("  profile: " .. profile(model, fwd)) end
  io.stdout:flush()
  model, x = nil, nil
  collectgarbage()
end
print("load: " .. uptime())
if o.out then bench.write(o.out, bench.json(rows, { "model", "batch", "ms", "min_ms", "max_ms", "threads" })) end
