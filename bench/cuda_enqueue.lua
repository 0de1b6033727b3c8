-- Is a bf16 forward on the GPU bound by the host?  One forward from an idle
-- card: the time until model(x) returns (the host's: Lua, dispatch,
-- allocation, launches) against the time until the card is done; then ten
-- back to back, the host's rate against the card's, and the cudaMalloc calls
-- among them (a user's loop, with no collection asked for: bench/cuda_trace.c
-- sees one stop a ViT forward there, v0.17-v0.18).  Issue 21 part 2: the
-- kernel traces leave ViT's card idle ~0.28 ms a forward between kernels.
--   attnswap-run bench/cuda_enqueue.lua [vit|gpt2] [--repeats 10]
local as = require "attnswap"
local clock = as.core.clock

local which, repeats = "vit", 10
local i = 1
while i <= #arg do
  if arg[i] == "--repeats" then repeats = assert(math.tointeger(tonumber(arg[i + 1]))); i = i + 1
  elseif arg[i] == "vit" or arg[i] == "gpt2" then which = arg[i]
  else error("cuda_enqueue: unknown option " .. arg[i]) end
  i = i + 1
end
assert(as.cuda.is_available(), "cuda_enqueue: no CUDA device is available")
as.manual_seed(0)
local model, x
if which == "vit" then
  model = as.models.vit { img_size = 224, patch_size = 16, embed_dim = 768, depth = 12, num_heads = 12,
    num_classes = 1000 }
  x = as.randn(32, 3, 224, 224)
else
  model = as.models.gpt2.new { n_layer = 12, n_embd = 768, n_head = 12, vocab_size = 50257, n_positions = 1024 }
  x = (as.rand(8, 1024) * 50257):long()
end
model = model:eval():to("cuda")
as.swap_attention(model, "scaled_dot_product", "flash_attention", {}, { quiet = true })
model:to("bfloat16")
x = x:cuda()
if x:dtype() == "float32" then x = x:to("bfloat16") end

local function median(t) table.sort(t); return t[(#t + 1) // 2] end
as.no_grad(function()
  for _ = 1, 3 do model(x) end
  as.cuda.synchronize()
  local host, total = {}, {}
  for r = 1, repeats do
    as.cuda.synchronize()
    local t0 = clock()
    local y = model(x)
    local t1 = clock()
    as.cuda.synchronize()
    host[r], total[r] = (t1 - t0) * 1e3, (clock() - t0) * 1e3
    y = nil
  end
  print(string.format("%s bf16, one forward from an idle card: host %.3f ms, done %.3f ms (medians of %d)",
    which, median(host), median(total), repeats))
  local back = {}
  for r = 1, repeats do
    as.cuda.synchronize()
    local m0 = as.cuda.memory_stats().num_mallocs
    local t0 = clock()
    for _ = 1, 10 do model(x) end
    local t1 = clock()
    as.cuda.synchronize()
    back[r] = string.format("%.3f/%.3f (%d)", (t1 - t0) * 100, (clock() - t0) * 100,
      as.cuda.memory_stats().num_mallocs - m0)
  end
  print("ten back to back, host/done ms a forward (cudaMallocs among the ten): " .. table.concat(back, " "))
end)
