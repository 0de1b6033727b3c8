-- How much the Lua API costs on top of the kernels.
--   attnswap-run examples/bench_ops.lua [--threads N] [--quick]
-- (a) matmul GFLOP/s through the API against raw cblas_sgemm timed in C in the
--     same process, at 1024^3 and 2048^3 (target: within 3%);
-- (b) the cost of one tiny op called from Lua (1-element add), in ns per call.
local as = require "attnswap"
local core = as.core

local threads, quick = nil, false
for i = 1, #arg do
  if arg[i] == "--threads" then threads = tonumber(arg[i + 1])
  elseif arg[i] == "--quick" then quick = true end
end
if threads then as.set_num_threads(threads) end

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

print(string.format("threads: %d", as.get_num_threads()))
print()
print(string.format("%-8s %14s %14s %8s", "size", "API GFLOP/s", "sgemm GFLOP/s", "API/raw"))
for _, n in ipairs(quick and { 256 } or { 1024, 2048 }) do
  local reps = n >= 2048 and 5 or 9
  local a, b = as.randn(n, n), as.randn(n, n)
  local flops = 2 * n * n * n
  -- interleave the two measurements so drift in clock speed hits both alike
  local api, raw = {}, {}
  a:matmul(b)
  for _ = 1, reps do
    -- raw_sgemm_seconds times a call right after a warm-up call; do the same here
    local c = a:matmul(b)
    c = nil
    local t0 = core.clock()
    c = a:matmul(b)
    api[#api + 1] = core.clock() - t0
    c = nil
    raw[#raw + 1] = core.raw_sgemm_seconds(n, n, n, 1)
  end
  local ta, tr = median(api), median(raw)
  print(string.format("%-8s %14.1f %14.1f %7.1f%%", n .. "^3", flops / ta / 1e9, flops / tr / 1e9, 100 * tr / ta))
end

print()
local x, y = as.tensor { 1.0 }, as.tensor { 2.0 }
local n = quick and 20000 or 200000
local samples = {}
for _ = 1, 5 do
  collectgarbage()
  local t0 = core.clock()
  for _ = 1, n do local _ = x + y end
  samples[#samples + 1] = (core.clock() - t0) / n
end
print(string.format("tiny op (1-element add from Lua): %.0f ns per call (median of 5 x %d)", median(samples) * 1e9, n))
