-- Soak: 10,000 forward passes of a small model while swapping its attention
-- back and forth between implementations and forcing garbage collection.
-- Resident memory must stop growing: under 5% growth over the second half.
--   attnswap-run tests/soak/soak.lua [passes]
local as = require "attnswap"
local nn = as.nn

local passes = tonumber(arg and arg[1]) or 10000

local function rss_kib()
  for line in io.lines("/proc/self/status") do
    local v = line:match("^VmRSS:%s+(%d+)")
    if v then return tonumber(v) end
  end
end

as.manual_seed(0)
local x = as.randn(2, 16, 32)
local model = nn.Sequential(
  nn.TransformerBlock { dim = 32, num_heads = 4, mlp_ratio = 2 },
  nn.TransformerBlock { dim = 32, num_heads = 4, mlp_ratio = 2 }):eval()

-- Every CPU implementation that can stand in for softmax attention in this
-- model; some need the head count (those with per-head parameters).
local names, opts = {}, {}
for _, n in ipairs(as.attention.names()) do
  if as.attention.info(n).devices:match("cpu") then
    local o = { num_heads = 4 }
    if not pcall(as.attention.new, n, o) then o = {} end
    -- (and that the swap takes for this bidirectional model: sink_attention,
    -- causal only, is refused)
    if pcall(function()
      as.attention.new(n, o)(x:view(2, 16, 4, 8):transpose(2, 3), x:view(2, 16, 4, 8):transpose(2, 3), x:view(2, 16, 4, 8):transpose(2, 3))
      local s <close> = as.swapped(model, as.attention.is_core, n, o, { quiet = true })
    end) then
      names[#names + 1], opts[n] = n, o
    end
  end
end

local mid_rss
local t0 = as.core.clock()
for i = 1, passes do
  local name = names[(i // 100) % #names + 1]
  if i % 100 == 1 then
    -- swap everything to `name` (scoped half the time, plain the other half)
    if i % 200 == 1 then
      local s <close> = as.swapped(model, as.attention.is_core, name, opts[name], { quiet = true })
      model(x)
    else
      as.swap_attention(model, as.attention.is_core, name, opts[name], { quiet = true })
    end
    collectgarbage()
  end
  local y = model(x)
  assert(y:size(3) == 32)
  if i == passes // 2 then
    collectgarbage()
    collectgarbage()
    mid_rss = rss_kib()
  end
end
collectgarbage()
collectgarbage()
local end_rss = rss_kib()
local growth = (end_rss - mid_rss) / mid_rss * 100
print(string.format("soak: %d passes over %d implementations in %.1f s; RSS at half %d KiB, at end %d KiB (%+.2f%%)",
  passes, #names, as.core.clock() - t0, mid_rss, end_rss, growth))
if growth >= 5 then
  io.stderr:write("soak: resident memory grew by more than 5% over the second half\n")
  os.exit(1)
end
