-- The default core against its materialising path on a 4-block model at
-- L = 1024 (docs/attention.md, "Which kernel runs"):
--   attnswap-run bench/sdp_dispatch.lua
local as = require "attnswap"
local nn = as.nn
as.manual_seed(0)
local function model()
  local blocks = {}
  for i = 1, 4 do blocks[i] = nn.TransformerBlock { dim = 256, num_heads = 8 } end
  return nn.Sequential(table.unpack(blocks))
end
local m = model():eval()
local x = as.randn(1, 1024, 256)
local function run(tag)
  m(x); collectgarbage(); collectgarbage(); as.core.reset_peak_memory()
  local base = as.core.memory_stats().allocated
  local ts = {}
  for i = 1, 9 do local t0 = as.core.clock(); m(x); ts[i] = as.core.clock() - t0 end
  table.sort(ts)
  print(string.format("%-6s median %.1f ms (min %.1f, max %.1f)  peak +%.1f MiB  %s", tag, ts[5]*1e3, ts[1]*1e3, ts[9]*1e3,
    (as.core.memory_stats().peak - base) / 2^20, as.sdpa_backend()))
end
run("auto")
do local s <close> = as.swapped(m, "scaled_dot_product", "scaled_dot_product", { backend = "math" }); run("math") end
run("auto")
