-- Issue 21 (1): float32 products through the API against OpenBLAS's sgemm
-- called directly (its own threads, the core this process runs: as.config()),
-- in the same process, one after the other per shape, medians with their spread.  Square sizes
-- and the linear layers of GPT-2 small (1024 tokens) and ViT-B/16 (32 images:
-- 6304 tokens): x[tokens, in] @ W[out, in]^T, as nn.Linear computes it.
--   attnswap-run bench/matmul_cpu.lua [--threads N] [--quick] [--only TEXT] [--out rows.json]
-- (--only: the shapes whose label holds TEXT)
local as = require "attnswap"
local bench = require "attnswap.bench"
local core = as.core

local o = { threads = 2 }
local i = 1
while i <= #arg do
  if arg[i] == "--threads" then o.threads = assert(math.tointeger(tonumber(arg[i + 1]))); i = i + 1
  elseif arg[i] == "--quick" then o.quick = true
  elseif arg[i] == "--only" then o.only = arg[i + 1]; i = i + 1
  elseif arg[i] == "--out" then o.out = arg[i + 1]; i = i + 1
  else error("matmul_cpu: unknown option " .. arg[i]) end
  i = i + 1
end
as.set_num_threads(o.threads)

-- {label, m, k, n, linear}: m x k times k x n; linear: the weight is n x k, transposed
local cases = {
  { "512^3", 512, 512, 512 }, { "1024^3", 1024, 1024, 1024 }, { "2048^3", 2048, 2048, 2048 },
  { "4096^3", 4096, 4096, 4096 },
  { "gpt2 qkv 768x2304", 1024, 768, 2304, true }, { "gpt2 proj 768x768", 1024, 768, 768, true },
  { "gpt2 fc 768x3072", 1024, 768, 3072, true }, { "gpt2 fc2 3072x768", 1024, 3072, 768, true },
  { "vit qkv 768x2304", 6304, 768, 2304, true }, { "vit proj 768x768", 6304, 768, 768, true },
  { "vit fc 768x3072", 6304, 768, 3072, true }, { "vit fc2 3072x768", 6304, 3072, 768, true },
}
if o.quick then cases = { cases[1], cases[5] } end
if o.only then
  local keep = {}
  for _, c in ipairs(cases) do if c[1]:find(o.only, 1, true) then keep[#keep + 1] = c end end
  cases = keep
end

local function spread(xs) -- median, and the half-range around it as a percentage
  table.sort(xs)
  local m = xs[(#xs + 1) // 2]
  return m, 50 * (xs[#xs] - xs[1]) / m
end

local c = as.config()
print(string.format("blas core %s (by %s; OpenBLAS alone: %s), %d threads, %s", c.blas_core, c.blas_core_by,
  c.blas_core_openblas, as.get_num_threads(), c.cpu))
print(os.date("!%H:%M:%S UTC") .. ", load " .. bench.load())
print(string.format("%-20s %9s %9s %7s %9s %7s %7s %7s %8s", "shape", "m", "API GF/s", "+-%", "sgemm", "+-%", "API/raw",
  "best", "cold"))
local rows = {}
for _, s in ipairs(cases) do
  local label, m, k, n, linear = s[1], s[2], s[3], s[4], s[5]
  local flops = 2 * m * k * n
  local reps = flops > 2e10 and 5 or flops > 2e9 and 9 or 21
  local a = as.randn(m, k)
  local w = linear and as.randn(n, k) or as.randn(k, n)
  local b = linear and w:t() or w
  local api, raw = {}, {}
  -- The raw sgemm runs on OpenBLAS's own threads, which spin for ~0.1 s after
  -- each call (its GOTO_THREAD_TIMEOUT) on the cores the API's threads then
  -- need: interleaved, a short product through the API shared two pinned cores
  -- with them (0.25-0.41 of sgemm at 512^3-1024^3 on the Xeon of
  -- docs/performance.md v0.9).  So the API's runs come first, after the last
  -- shape's spinners have stopped, then the raw ones.
  --
  -- Each output is a new tensor.  Lua frees the last one only when the
  -- collector runs (l_tensor.c: after 64 MiB of growth), so the first reps
  -- of a shape land in heap the process has never touched, and the kernel's
  -- page faults and zeroing of it (~10% of a 1024^3 product) are timed with
  -- the product.  In a loop that runs long enough the heap is reused and
  -- that cost is gone.  "API" collects before each timed call (outside the
  -- timing), so the output reuses the last one's block, as in that steady
  -- state; "cold" is the same calls without it, first in the shape.
  os.execute("sleep 0.3")
  local _ = a:matmul(b)
  local cold = {}
  for r = 1, reps do
    _ = nil
    local t0 = core.clock()
    _ = a:matmul(b)
    cold[r] = core.clock() - t0
  end
  for r = 1, reps do
    _ = nil
    collectgarbage()
    local t0 = core.clock()
    _ = a:matmul(b)
    api[r] = core.clock() - t0
  end
  for r = 1, reps do raw[r] = core.raw_sgemm_seconds(m, n, k, 1, linear) end
  local ta, sa = spread(api)
  local tc = spread(cold)
  local tr, sr = spread(raw)
  local best = raw[1] / api[1] -- spread sorted both: [1] is the least disturbed run
  rows[#rows + 1] = { shape = label, m = m, k = k, n = n, api_gflops = flops / ta / 1e9, api_spread_pct = sa,
    sgemm_gflops = flops / tr / 1e9, sgemm_spread_pct = sr, ratio = tr / ta, best_ratio = best, core = c.blas_core,
    threads = as.get_num_threads(), cold_gflops = flops / tc / 1e9 }
  print(string.format("%-20s %9d %9.1f %7.1f %9.1f %7.1f %7.2f %7.2f %8.1f", label, m, flops / ta / 1e9, sa,
    flops / tr / 1e9, sr, tr / ta, best, flops / tc / 1e9))
  io.stdout:flush()
  a, w, b = nil, nil, nil
  collectgarbage()
end
print(os.date("!%H:%M:%S UTC") .. ", load " .. bench.load())
if o.out then
  bench.write(o.out, bench.json(rows, { "shape", "m", "k", "n", "api_gflops", "api_spread_pct", "sgemm_gflops",
    "sgemm_spread_pct", "ratio", "best_ratio", "core", "threads", "cold_gflops" }))
end
