-- as.entmax on CUDA (kernels/cuda/entmax.cu) against the CPU's float64
-- (double all the way, tests/spec/entmax_f64_spec.lua checks it), and
-- entmax_attention on CUDA, forward and backward, against the CPU in float64
-- (its threshold from the CUDA kernel there).  Run by attnswap-run (ctest
-- label cuda); exit 77 where no GPU is visible.  ATTNSWAP_TEST_DEVICE=cpu
-- runs the same checks on the CPU's float32 and half paths.
--
-- Tolerances: |got - want| <= rel |want| + abs per element, rel a few units
-- of the output dtype's rounding (float32: float32 arithmetic over 5000
-- columns; bfloat16 2^-9, float16 2^-11).  A threshold off by 1e-3 moves the
-- largest weight of a row by about (1/(alpha-1)) 1e-3 / |tau|, far past
-- float32's and float16's.  ATTNSWAP_ENTMAX_BREAK=e scales the reference's
-- scores by 1 + e (its threshold moves): 1e-3 must fail float32 and float16,
-- 1e-2 bfloat16 too.
local as = require "attnswap"

local device = os.getenv("ATTNSWAP_TEST_DEVICE") or "cuda"
if device == "cuda" and not as.cuda.is_available() then
  print("entmax_cuda: no CUDA device, skipped")
  os.exit(77)
end
local BREAK = tonumber(os.getenv("ATTNSWAP_ENTMAX_BREAK") or "")

local NEG_INF = -math.huge
local TOL = {
  float32 = { rel = 1e-4, abs = 1e-6 },
  bfloat16 = { rel = 8e-3, abs = 1e-5 },
  float16 = { rel = 2e-3, abs = 1e-6 },
}

local failures, checks = 0, 0
local function fail(what, msg)
  failures = failures + 1
  io.stderr:write(string.format("FAILED: %s: %s\n", what, msg))
end

-- got (any device / dtype) against want (CPU float64): the worst element's
-- error over its allowance
local function check(what, got, want, tol)
  checks = checks + 1
  if got == nil then return fail(what, "no result") end
  got = got:cpu():double()
  if got:dim() ~= want:dim() or tostring(got:shape()) ~= tostring(want:shape()) then
    return fail(what, "shape " .. tostring(got:shape()) .. ", expected " .. tostring(want:shape()))
  end
  if want:numel() == 0 then return end
  local allow = want:abs() * tol.rel + tol.abs
  local ratio = ((got - want):abs() / allow):max():item()
  if not (ratio <= 1) then
    local err = (got - want):abs():max():item()
    fail(what, string.format("max error %.3g, %.3g times the tolerance (rel %g, abs %g)", err, ratio, tol.rel, tol.abs))
  end
end

-- scores on the device in dtype: randn * 3 with a fifth masked (-inf) and the
-- first row fully masked; want: entmax of the same (rounded) values in float64
local function scores(shape, dtype, seed)
  as.manual_seed(seed)
  local x = as.randn(table.unpack(shape)) * 3
  x = as.where(as.rand(table.unpack(shape)):lt(0.2), NEG_INF, x)
  if #shape >= 2 and shape[1] > 0 then x:select(1, 1):fill_(NEG_INF) end
  return x:to(dtype):to(device)
end

local ALPHAS = { 1, 1.05, 1.25, 1.5, 1.75, 2 }
local DTYPES = { "float32", "bfloat16", "float16" }

-- 1. as.entmax: rows of 1, 7, 33, 1000, 5000 columns (a warp per row up to
-- 512, a block beyond, the registers' overflow past 4096), dim last and not
-- (strided rows), non-contiguous input
local CASES = {
  { shape = { 5, 1 }, dim = 2 }, { shape = { 9, 7 }, dim = 2 }, { shape = { 3, 4, 33 }, dim = 3 },
  { shape = { 6, 1000 }, dim = 2 }, { shape = { 3, 5000 }, dim = 2 }, { shape = { 2, 33, 5 }, dim = 2 },
  { shape = { 3, 1000, 2 }, dim = 2 }, { shape = { 7, 129 }, dim = 2, view = "t" }, { shape = { 4, 300 }, dim = 1 },
  { shape = { 0, 7 }, dim = 2 }, { shape = { 4, 0 }, dim = 2 },
}
for ci, c in ipairs(CASES) do
  for _, dtype in ipairs(DTYPES) do
    local x = scores(c.shape, dtype, ci)
    local dim = c.dim
    if c.view == "t" then x, dim = x:transpose(1, 2), 1 end -- non-contiguous; rows along dim 1
    local want_in = x:cpu():double()
    for _, alpha in ipairs(ALPHAS) do
      local what = string.format("entmax %s dim %d%s %s alpha %g", tostring(x:shape()), dim,
        c.view and " (transposed)" or "", dtype, alpha)
      local ok, got = pcall(as.entmax, x, alpha, dim)
      if not ok then
        checks = checks + 1
        fail(what, tostring(got))
      else
        local want = as.entmax(BREAK and want_in * (1 + BREAK) or want_in, alpha, dim)
        if got:dtype() ~= dtype then fail(what, "dtype " .. got:dtype()) end
        if got:device() ~= x:device() then fail(what, "device " .. got:device()) end
        check(what, got, want, TOL[dtype])
      end
    end
  end
end

-- 2. bad input: clear errors naming entmax
local function errors(what, pattern, ...)
  checks = checks + 1
  local ok, err = pcall(as.entmax, ...)
  if ok or not tostring(err):match(pattern) then fail(what, "got " .. tostring(ok and "no error" or err)) end
end
errors("int input", "^entmax: expected a float tensor", as.tensor({ 1, 2 }):long():to(device), 1.5)
errors("alpha 2.5", "^entmax: alpha must be a number in %[1, 2%], got 2.5", as.randn(2, 3):to(device), 2.5)
errors("0-d", "^entmax: expected at least 1 dimension, got a 0%-d tensor", as.tensor(1.0):to(device), 1.5)

-- 3. entmax_attention on the device, forward + backward (q, k, v and a learned
-- alpha's pre_alpha), against the CPU in float64: causal, a key mask, GQA
local ATT = {
  { alpha = 1.5, causal = true }, { alpha = 2 }, { alpha = 1.25 }, { alpha = 1.75, causal = true },
  { alpha = 1.4, learn_alpha = true, num_heads = 4 },
}
for ai, o in ipairs(ATT) do
  local function run(dev, dtype)
    as.manual_seed(100 + ai)
    local m = as.attention.new("entmax_attention", o)
    if o.learn_alpha then
      as.no_grad(function() m.pre_alpha:copy_(as.tensor { -1.5, -0.2, 0.4, 1.3 }) end)
    end
    local q, k, v = as.randn(2, 4, 37, 16), as.randn(2, 2, 45, 16), as.randn(2, 2, 45, 8)
    local w = as.randn(2, 4, 37, 8)
    local mask = as.rand(2, 1, 1, 45):lt(0.9)
    m:to(dtype)
    m:to(dev)
    q, k, v = q:to(dtype):to(dev):requires_grad_(), k:to(dtype):to(dev):requires_grad_(), v:to(dtype):to(dev):requires_grad_()
    local out = m(q, k, v, mask:to(dev))
    ;(out * w:to(dtype):to(dev)):sum():backward()
    local r = { out = out, dq = q.grad, dk = k.grad, dv = v.grad }
    if o.learn_alpha then r.dpre_alpha = m.pre_alpha.grad end
    return r
  end
  local got, want = run(device, "float32"), run("cpu", "float64")
  for _, key in ipairs { "out", "dq", "dk", "dv", "dpre_alpha" } do
    if want[key] ~= nil then
      local scale = math.max(want[key]:abs():max():item(), 1e-12)
      local what = string.format("entmax_attention alpha %g%s %s float32 %s", o.alpha,
        o.learn_alpha and " learned" or "", device, key)
      -- relative to the largest entry: the composite's float32 graph
      check(what, got[key], want[key], { rel = 0, abs = 1e-4 * scale })
    end
  end
end

print(string.format("entmax_cuda (%s%s): %d checks, %d failures", device, BREAK and ", broken on purpose" or "",
  checks, failures))
os.exit(failures == 0 and 0 or 1)
