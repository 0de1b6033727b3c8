-- Every way kernels/cpu/gemm.c can split a product across threads
-- (ATTNSWAP_GEMM_SPLIT: auto, rows, cols, blas, read once per process, so
-- each runs in its own attnswap-run) gives the product a plain triple loop gives.
local U = require "spec_util"
local run = assert(os.getenv("ATTNSWAP_RUN"), "ATTNSWAP_RUN is not set")

local SCRIPT = [[
local as = require "attnswap"
as.set_num_threads(2)
as.manual_seed(3)
local worst = 0
local function values(t) -- a Lua array of t's elements, row-major
  local flat, out = t:double():reshape(-1), {}
  for i = 1, flat:numel() do out[i] = flat[i] end
  return out
end
-- tall (split by rows) and wide (split by columns), float32 and float64, a transposed operand
for _, s in ipairs { { 90, 50, 70 }, { 70, 50, 90 } } do
  local M, K, N = s[1], s[2], s[3]
  for _, dt in ipairs { "float32", "float64" } do
    local a, bt = as.randn(M, K):to(dt), as.randn(N, K):to(dt)
    local c = a:matmul(bt:t())
    local A, B, C = values(a), values(bt), values(c)
    for i = 0, M - 1 do
      for j = 0, N - 1 do
        local want = 0
        for k = 1, K do want = want + A[i * K + k] * B[j * K + k] end
        worst = math.max(worst, math.abs(C[i * N + j + 1] - want) / (1 + math.abs(want)))
      end
    end
  end
end
print(string.format("worst %.3g", worst))
]]

describe("matmul's thread split (ATTNSWAP_GEMM_SPLIT)", function()
  local dir = U.tmpdir()
  U.write(dir .. "/split.lua", SCRIPT)
  for _, mode in ipairs { "auto", "rows", "cols", "blas", "unknown" } do
    it("gives the triple loop's product: " .. mode, function()
      local out, code = U.sh(string.format("ATTNSWAP_GEMM_SPLIT=%s OMP_NUM_THREADS=2 %s %s/split.lua", mode, run, dir))
      assert.are.equal(0, code, out)
      local worst = tonumber(out:match("worst (%S+)"))
      assert.is_truthy(worst, out)
      assert.is_true(worst < 1e-5, mode .. ": " .. out)
    end)
  end
end)
