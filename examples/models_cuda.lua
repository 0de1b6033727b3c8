-- ViT-B/16 and GPT-2 small on the GPU: the same random weights run on the
-- CPU (float32) and on CUDA (float32 and bfloat16), outputs compared, and
-- end-to-end forward latency on CUDA with scaled_dot_product and after the
-- swap to flash_attention, and that forward captured in a CUDA graph.
--   attnswap-run examples/models_cuda.lua [--out results.json] [--repeats 10] [--small]
--   attnswap-run examples/models_cuda.lua --trace vit|gpt2
--     only that model, bf16 with flash_attention: 10 forwards inside
--     as.cuda.profiler_start/stop, for bench/cuda_trace.c (bench/gpu_host.sh trace) or nsys;
--     with --graph, the forward captured by as.cuda.graph and replayed.
-- bench/torch_models.py times the same architectures in PyTorch eager.
local as = require "attnswap"
local bench = require "attnswap.bench"

if not as.cuda.is_available() then
  io.stderr:write("models_cuda: no CUDA device is available\n")
  os.exit(1)
end
local o = { repeats = 10 }
local i = 1
while i <= #arg do
  if arg[i] == "--out" then o.out = arg[i + 1]; i = i + 1
  elseif arg[i] == "--repeats" then o.repeats = assert(math.tointeger(tonumber(arg[i + 1]))); i = i + 1
  elseif arg[i] == "--small" then o.small = true
  elseif arg[i] == "--trace" then o.trace = arg[i + 1]; i = i + 1
  elseif arg[i] == "--graph" then o.graph = true
  else error("models_cuda: unknown option " .. arg[i]) end
  i = i + 1
end

local function median_ms(f) return bench.time(f, o.repeats, 2, as.cuda.synchronize) * 1e3 end

local function diff(a, b)
  a, b = a:cpu():float(), b:cpu():float()
  return (a - b):abs():max():item() / math.max(b:abs():max():item(), 1e-30)
end

local models = {
  {
    name = "vit_base_patch16_224", batch = "32 images 224x224",
    build = function()
      return as.models.vit { img_size = 224, patch_size = 16, embed_dim = 768, depth = o.small and 2 or 12,
        num_heads = 12, num_classes = 1000 }
    end,
    input = function() return as.randn(32, 3, 224, 224) end,
    cores = "blocks",
  },
  {
    name = "gpt2 (small)", batch = "8 x 1024 tokens",
    build = function()
      return as.models.gpt2.new { n_layer = o.small and 2 or 12, n_embd = 768, n_head = 12, vocab_size = 50257,
        n_positions = 1024 }
    end,
    input = function() return (as.rand(8, 1024) * 50257):long() end,
  },
}

if o.trace then
  local m = o.trace == "vit" and models[1] or o.trace == "gpt2" and models[2]
    or error("models_cuda: --trace takes vit or gpt2, not " .. tostring(o.trace))
  as.manual_seed(0)
  local model = m.build():eval():to("cuda")
  as.swap_attention(model, "scaled_dot_product", "flash_attention", {}, { quiet = true })
  model:to("bfloat16")
  local x = m.input():cuda()
  if x:dtype() == "float32" then x = x:to("bfloat16") end
  local run = model
  if o.graph then
    local g = as.cuda.graph(function(t) return model(t) end, x)
    run = function() return g(x) end
  end
  run(x); run(x)
  as.cuda.synchronize()
  as.cuda.profiler_start()
  for _ = 1, 10 do run(x) end
  as.cuda.synchronize()
  as.cuda.profiler_stop()
  print(string.format("models_cuda: traced 10 bf16 forwards of %s%s", m.name, o.graph and " (graph)" or ""))
  os.exit(0)
end

local rows = {}
print(string.format("%-22s %-18s %-34s %10s %12s", "model", "batch", "run", "ms", "rel. diff"))
for _, m in ipairs(models) do
  as.manual_seed(0)
  local model = m.build():eval()
  local x = m.input()
  local t0 = as.core.clock()
  local want = model(x)
  local cpu_ms = (as.core.clock() - t0) * 1e3
  local function row(run, ms, d)
    rows[#rows + 1] = { model = m.name, batch = m.batch, run = run, ms = ms, rel_diff = d }
    print(string.format("%-22s %-18s %-34s %10.2f %12s", m.name, m.batch, run, ms, d and string.format("%.2e", d) or "-"))
    io.stdout:flush()
  end
  row(string.format("cpu float32 (%d threads, 1 run)", as.get_num_threads()), cpu_ms)
  model:to("cuda")
  local xg = x:cuda()
  local got = model(xg)
  row("cuda float32, scaled_dot_product", median_ms(function() return model(xg) end), diff(got, want))
  as.swap_attention(model, "scaled_dot_product", "flash_attention", {}, { quiet = true })
  got = model(xg)
  row("cuda float32, flash_attention", median_ms(function() return model(xg) end), diff(got, want))
  -- the same forward captured once and replayed (as.cuda.graph): no launch gaps
  local function graphed(dtype, input)
    local g = as.cuda.graph(function(t) return model(t) end, input)
    row(string.format("cuda %s, flash_attention, graph", dtype), median_ms(function() return g(input) end),
      diff(g(input), want))
    g:free()
  end
  graphed("float32", xg)
  model:to("bfloat16")
  local xb = xg:dtype() == "float32" and xg:to("bfloat16") or xg
  got = model(xb)
  row("cuda bfloat16, flash_attention", median_ms(function() return model(xb) end), diff(got, want))
  graphed("bfloat16", xb)
  as.swap_attention(model, "flash_attention", "scaled_dot_product", {}, { quiet = true })
  got = model(xb)
  row("cuda bfloat16, scaled_dot_product", median_ms(function() return model(xb) end), diff(got, want))
  model, x, xg, xb, got, want = nil, nil, nil, nil, nil, nil
  collectgarbage()
  as.cuda.empty_cache()
end
local mem = as.cuda.memory_stats()
print(string.format("cuda peak allocated %.0f MiB", mem.peak_allocated / 2^20))
if o.out then bench.write(o.out, bench.json(rows, { "model", "batch", "run", "ms", "rel_diff" })) end
