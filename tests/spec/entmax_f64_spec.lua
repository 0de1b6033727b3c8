-- as.entmax in float64 on the CPU (issue 17, the entmax item): computed in
-- double and returned as float64, against a naive reference written here in
-- plain Lua numbers (bisection on the threshold to the last bit), on random
-- odd shapes, dims that are not the last, non-contiguous inputs, masked
-- (-inf) entries, rows with nothing visible and empty tensors.
local as = require "attnswap"
local U = require "spec_util"

local NEG_INF = -math.huge

-- entmax_a of one row (a Lua list): p_i = [(a - 1)(z_i - max) - tau]_+^(1/(a-1)),
-- tau bisected in [-1, 0] (the row's largest X is 0, so p_max <= 1 puts tau
-- in it) for 200 halvings, far past double's resolution; a = 1 is softmax.
local function ref_row(z, alpha)
  local n, mx = #z, NEG_INF
  for i = 1, n do mx = math.max(mx, z[i]) end
  local p = {}
  if mx == NEG_INF then
    for i = 1, n do p[i] = 0 end
    return p
  end
  if alpha == 1 then
    for i = 1, n do p[i] = math.exp(z[i] - mx) end
  else
    local am1 = alpha - 1
    local function weights(tau)
      local s = 0
      for i = 1, n do
        local d = am1 * (z[i] - mx) - tau
        p[i] = d > 0 and d ^ (1 / am1) or 0
        s = s + p[i]
      end
      return s
    end
    local lo, hi = -1, 0
    for _ = 1, 200 do
      local mid = (lo + hi) / 2
      if weights(mid) >= 1 then lo = mid else hi = mid end
    end
    weights(lo)
  end
  local s = 0
  for i = 1, n do s = s + p[i] end
  for i = 1, n do p[i] = p[i] / s end
  return p
end

-- entmax of x along dim by ref_row, as a (rows, n) list of lists in the
-- order of x:transpose(dim, -1):contiguous()
local function ref(x, dim, alpha)
  local t = x:transpose(dim, x:dim()):contiguous()
  local n = t:size(t:dim())
  local rows = n > 0 and t:numel() // n or 0
  local out = {}
  if rows == 0 then return out end
  for r, row in ipairs(t:reshape(rows, n):tolist()) do out[r] = ref_row(row, alpha) end
  return out
end

-- max |got - ref| over every element (got: x's layout; ref: ref()'s)
local function err(got, want, dim)
  local t = got:transpose(dim, got:dim()):contiguous()
  local n = t:size(t:dim())
  if #want == 0 then return 0 end
  local e = 0
  for r, row in ipairs(t:reshape(#want, n):tolist()) do
    for i = 1, n do e = math.max(e, math.abs(row[i] - want[r][i])) end
  end
  return e
end

-- random scores, about a fifth of them masked (-inf), one row fully masked
local function scores(shape, seed)
  as.manual_seed(seed)
  local x = as.randn(table.unpack(shape)):double() * 3
  return as.where(as.rand(table.unpack(shape)):lt(0.2), NEG_INF, x)
end

local ALPHAS = { 1, 1.05, 1.25, 1.5, 1.75, 2 }

describe("as.entmax in float64 (CPU)", function()
  it("matches a naive bisection to 1e-12 on random odd shapes, every alpha, every dim", function()
    local shapes = { { 1 }, { 7 }, { 3, 33 }, { 5, 9, 13 }, { 2, 3, 5, 101 } }
    for si, shape in ipairs(shapes) do
      local x = scores(shape, si)
      for dim = 1, #shape do
        for _, alpha in ipairs(ALPHAS) do
          local got = as.entmax(x, alpha, dim)
          assert.are.equal("float64", got:dtype())
          assert.are.same(x:shape(), got:shape())
          local e = err(got, ref(x, dim, alpha), dim)
          assert.is_true(e < 1e-12, string.format("shape %d, dim %d, alpha %g: %.3g", si, dim, alpha, e))
        end
      end
    end
  end)

  it("is float64 all the way: float32's answer differs by more than double rounding", function()
    local x = scores({ 4, 257 }, 7)
    for _, alpha in ipairs { 1.25, 1.5, 1.75 } do
      local want = ref(x, 2, alpha)
      assert.is_true(err(as.entmax(x, alpha), want, 2) < 1e-12)
      assert.is_true(err(as.entmax(x:float(), alpha):double(), want, 2) > 1e-10, "alpha " .. alpha)
    end
  end)

  it("takes non-contiguous input (a transposed and a strided view) and a negative dim", function()
    local base = scores({ 9, 2, 15 }, 11)
    local views = { base:transpose(1, 3), base:narrow(3, 2, 11), base:transpose(2, 3):narrow(1, 3, 5) }
    for vi, x in ipairs(views) do
      assert.is_false(x:is_contiguous())
      for _, alpha in ipairs { 1.25, 1.5, 2 } do
        for _, dim in ipairs { 1, -1 } do
          local d = dim < 0 and x:dim() + 1 + dim or dim
          local got = as.entmax(x, alpha, dim)
          local e = err(got, ref(x, d, alpha), d)
          assert.is_true(e < 1e-12, string.format("view %d, dim %d, alpha %g: %.3g", vi, dim, alpha, e))
          assert.are.equal(0, (got - as.entmax(x:contiguous(), alpha, dim)):abs():max():item())
        end
      end
    end
  end)

  it("gives zeros for rows with nothing visible, and empty results for empty tensors", function()
    local x = as.full({ 3, 6 }, NEG_INF, "float64")
    x[2][4] = 0.5
    for _, alpha in ipairs(ALPHAS) do
      local got = as.entmax(x, alpha):tolist()
      assert.are.same({ 0, 0, 0, 0, 0, 0 }, got[1])
      assert.are.same({ 0, 0, 0, 1, 0, 0 }, got[2])
      assert.are.same(as.zeros(4, 0):shape(), as.entmax(as.zeros(4, 0):double(), alpha):shape())
      assert.are.same(as.zeros(0, 5):shape(), as.entmax(as.zeros(0, 5):double(), alpha, 2):shape())
      assert.are.equal("float64", as.entmax(as.zeros(0, 5):double(), alpha):dtype())
    end
  end)

  it("sums to one and has exact zeros (sparsity) below the threshold", function()
    local x = scores({ 6, 50 }, 13)
    for _, alpha in ipairs { 1.25, 1.5, 2 } do
      local p = as.entmax(x, alpha)
      assert.is_true((p:sum(-1) - 1):abs():max():item() < 1e-14)
      assert.is_true(p:eq(0):sum():item() > x:eq(NEG_INF):sum():item(), "no zeros beyond the masked ones")
    end
  end)

  it("rejects bad input with errors naming entmax", function()
    assert.are.equal("entmax: expected a float tensor (float32, float64, bfloat16, float16), got int64",
      U.errmsg(as.entmax, as.tensor({ 1, 2 }):long(), 1.5))
    assert.are.equal("entmax: alpha must be a number in [1, 2], got 2.5", U.errmsg(as.entmax, as.randn(2, 3):double(), 2.5))
    assert.are.equal("entmax: alpha must be a number in [1, 2], got 0.99", U.errmsg(as.entmax, as.randn(3):double(), 0.99))
    assert.is_truthy(U.errmsg(as.entmax, as.randn(3):double(), 0 / 0):match("^entmax: alpha must be a number in %[1, 2%], got %-?nan$"))
    assert.are.equal("entmax: expected at least 1 dimension, got a 0-d tensor",
      U.errmsg(as.entmax, as.tensor(1.0, "float64"), 1.5))
    assert.is_truthy(U.errmsg(as.entmax, as.randn(2, 3):double(), 1.5, 3):match("^entmax: "))
  end)
end)
