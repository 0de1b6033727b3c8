-- entmax_attention's threshold from the kernel (core.entmax) wherever it has
-- one, float64 included (issue 17, the entmax item): the composite's forward
-- and its gradients (q, k, v and a learned alpha's pre_alpha) equal those of
-- the bisection it replaces, beyond rounding only; and the kernel is called.
local as = require "attnswap"
local core = require "attnswap.core"
local P = require "attnswap.attention.ops_path"
local Entmax = require "attnswap.attention.entmax_attention"

-- out, q.grad, k.grad, v.grad (, pre_alpha.grad) of one forward + backward
-- through the composite, and the number of core.entmax calls it made
local function run(opts, dtype, seed)
  as.manual_seed(seed)
  local m = as.attention.new("entmax_attention", opts)
  if opts.learn_alpha then
    core.set_grad_enabled(false)
    m.pre_alpha:copy_(as.tensor { -1.2, 0.3, 1.1 })
    core.set_grad_enabled(true)
  end
  m:to(dtype)
  local q, k, v = as.randn(2, 3, 13, 8), as.randn(2, 3, 17, 8), as.randn(2, 3, 17, 5)
  local w = as.randn(2, 3, 13, 5)
  local mask = as.rand(2, 1, 13, 17):lt(0.85)
  q, k, v, w = q:to(dtype):requires_grad_(), k:to(dtype):requires_grad_(), v:to(dtype):requires_grad_(), w:to(dtype)
  local calls, real = 0, core.entmax
  core.entmax = function(...)
    calls = calls + 1
    return real(...)
  end
  local ok, out = pcall(m, q, k, v, mask)
  core.entmax = real
  assert(ok, out)
  ;(out * w):sum():backward()
  local r = { out, q.grad, k.grad, v.grad }
  if opts.learn_alpha then r[5] = m.pre_alpha.grad end
  return r, calls
end

local CASES = {
  { alpha = 1.25 }, { alpha = 1.5, causal = true }, { alpha = 2 }, { alpha = 1.75 },
  { alpha = 1.4, learn_alpha = true, num_heads = 3, causal = true },
}
local NAMES = { "out", "dq", "dk", "dv", "dpre_alpha" }

describe("entmax_attention's threshold from core.entmax", function()
  before_each(function() P.force = true end)
  after_each(function()
    P.force = false
    Entmax.bisect_only = nil
  end)

  for _, dtype in ipairs { "float64", "float32" } do
    -- float64: the values to 1e-11 (both thresholds to ~1e-15 after the
    -- Newton step); the gradients to 1e-6: the step's gradient is the implicit
    -- one only where f(tau0) = 0, and the bisection's tau0 is 2^-32 from the
    -- root (f ~ 1e-9 gives dq ~ 1e-7 off; the kernel's, to double, is the
    -- closer one).  float32: the float32 graph's rounding.
    local tol = dtype == "float64" and { 1e-11, 1e-6 } or { 2e-5, 2e-5 }
    for ci, opts in ipairs(CASES) do
      local what = string.format("%s alpha %g%s%s", dtype, opts.alpha, opts.learn_alpha and " learned" or "",
        opts.causal and " causal" or "")
      it(what .. ": values and gradients as the bisection's", function()
        local got, calls = run(opts, dtype, ci)
        assert.is_true(calls > 0, "core.entmax was not called")
        Entmax.bisect_only = true
        local want, bcalls = run(opts, dtype, ci)
        assert.are.equal(0, bcalls)
        assert.are.equal(#want, #got)
        for i = 1, #want do
          assert.are.equal(dtype, got[i]:dtype())
          local scale = math.max(1, want[i]:abs():max():item())
          local d = (got[i] - want[i]):abs():max():item()
          assert.is_true(d <= tol[i == 1 and 1 or 2] * scale, string.format("%s: %s differs by %.3g", what, NAMES[i], d))
        end
      end)
    end
  end

  it("the comparison can fail: a threshold slightly off is seen in float64", function()
    local real = core.entmax
    core.entmax = function(x, alpha, dim)
      return real(x * (1 + 1e-5), alpha, dim) -- another row: another threshold
    end
    local ok, got = pcall(run, { alpha = 1.25 }, "float64", 1)
    core.entmax = real
    assert(ok, got)
    Entmax.bisect_only = true
    local want = run({ alpha = 1.25 }, "float64", 1)
    assert.is_true((got[1] - want[1]):abs():max():item() > 1e-11)
  end)
end)
