-- The Lua face of tensors: construction, facts, views, metamethods, printing.
local as = require "attnswap"

local function close(a, b, tol)
  tol = tol or 1e-5
  local d = (a - b):abs():max():item()
  return d <= tol, d
end

describe("as.tensor", function()
  it("builds from nested tables with the natural dtype", function()
    local t = as.tensor { { 1, 2 }, { 3, 4 } }
    assert.are.equal("(2, 2)", tostring(t:shape()))
    assert.are.equal("int64", t:dtype())
    assert.are.equal("float32", as.tensor({ 1.5, 2 }):dtype())
    assert.are.equal("bool", as.tensor({ true, false }):dtype())
    assert.are.same({ { 1, 2 }, { 3, 4 } }, t:tolist())
  end)

  it("takes an optional dtype", function()
    local t = as.tensor({ 1, 2, 3 }, "bfloat16")
    assert.are.equal("bfloat16", t:dtype())
    assert.are.same({ 1, 2, 3 }, t:tolist())
    assert.are.equal("float32", as.tensor({ 1, 2 }, "float"):dtype())
  end)

  it("keeps int64 values above 2^24 exactly", function()
    assert.are.equal(16777217, as.tensor({ 16777217 }):item())
  end)

  it("out-of-range values saturate when stored as integers (found by fuzzing)", function()
    assert.are.same({ 2147483647, -2147483648, 0 }, as.tensor({ 1e19, -1e300, 0 / 0 }, "int32"):tolist())
    assert.are.same({ math.maxinteger, math.mininteger }, as.tensor({ 1e300, -1e300 }, "int64"):tolist())
    assert.are.same({ 2147483647 }, as.tensor({ 9.2e18 }):int():tolist())
  end)

  it("scalars are 0-d", function()
    local s = as.tensor(3.5)
    assert.are.equal(0, s:dim())
    assert.are.equal(3.5, s:item())
  end)

  it("facts", function()
    local t = as.zeros(2, 3, 4)
    assert.are.equal(3, t:dim())
    assert.are.equal(24, t:numel())
    assert.are.equal(3, t:size(2))
    assert.are.equal(4, t:size(-1))
    assert.are.equal(2, #t)
    assert.are.equal("cpu", t:device())
    assert.are.equal(t:shape(), as.empty { 2, 3, 4 }:shape())
  end)
end)

describe("factories", function()
  it("zeros, ones, full, arange", function()
    assert.are.same({ 0, 0 }, as.zeros(2):tolist())
    assert.are.same({ { 1, 1 } }, as.ones(1, 2):tolist())
    assert.are.same({ 7, 7, 7 }, as.full({ 3 }, 7):tolist())
    assert.are.same({ 7, 7 }, as.full(2, 7, "int32"):tolist())
    assert.are.same({ 0, 1, 2, 3 }, as.arange(4):tolist())
    assert.are.equal("int64", as.arange(4):dtype())
    assert.are.same({ 1, 3 }, as.arange(1, 5, 2):tolist())
    assert.are.equal("float32", as.arange(0, 1, 0.25):dtype())
    assert.are.equal(4, as.arange(0, 1, 0.25):numel())
  end)

  it("randn is reproducible under manual_seed", function()
    as.manual_seed(42)
    local a = as.randn(3, 5)
    as.manual_seed(42)
    local b = as.randn(3, 5)
    assert.are.same(a:tolist(), b:tolist())
    local c = as.randn(3, 5)
    assert.are_not.same(a:tolist(), c:tolist())
  end)
end)

describe("indexing and views", function()
  local t = as.arange(24):reshape(2, 3, 4)

  it("t[i] selects along the first dim, 1-based, negative from the end", function()
    assert.are.equal("(3, 4)", tostring(t[1]:shape()))
    assert.are.equal(12, t[2][1][1])
    assert.are.equal(23, t[-1][-1][-1])
    assert.are.equal(3, as.tensor({ 1, 2, 3 })[-1])
  end)

  it("assignment through t[i] writes into the storage", function()
    local z = as.zeros(2, 3)
    z[2] = 5
    assert.are.same({ { 0, 0, 0 }, { 5, 5, 5 } }, z:tolist())
    z[1] = as.tensor { 1, 2, 3 }
    assert.are.same({ 1, 2, 3 }, z[1]:tolist())
  end)

  it("views share storage", function()
    local z = as.zeros(4, 4)
    local n = z:narrow(1, 2, 2)
    n:fill_(1)
    assert.are.equal(8, z:sum():item())
    local tr = z:transpose(1, 2)
    assert.is_false(tr:is_contiguous())
    assert.is_true(tr:contiguous():is_contiguous())
    assert.are.equal(1, tr[1][2])
    assert.are.equal(0, tr[2][1])
  end)

  it("permute, squeeze, unsqueeze, expand, flatten, view", function()
    assert.are.equal("(4, 2, 3)", tostring(t:permute(3, 1, 2):shape()))
    assert.are.equal("(2, 1, 3, 4)", tostring(t:unsqueeze(2):shape()))
    assert.are.equal("(2, 3, 4)", tostring(t:unsqueeze(2):squeeze():shape()))
    assert.are.equal("(5, 3)", tostring(as.ones(1, 3):expand(5, 3):shape()))
    assert.are.equal("(6, 4)", tostring(t:flatten(1, 2):shape()))
    assert.are.equal("(4, 6)", tostring(t:view(4, -1):shape()))
    assert.are.same(t:select(2, 3):tolist(), t:narrow(2, 3, 1):squeeze(2):tolist())
  end)

  it("split and chunk", function()
    local a, b = t:split(1, 1)
    assert.are.equal("(1, 3, 4)", tostring(b:shape()))
    local p = { as.arange(10):split({ 3, 7 }) }
    assert.are.equal(2, #p)
    assert.are.equal(7, p[2]:numel())
    local c = { as.arange(10):chunk(3) }
    assert.are.same({ 4, 4, 2 }, { c[1]:numel(), c[2]:numel(), c[3]:numel() })
  end)

  it("to, float, long, bool conversions", function()
    local f = as.tensor({ 1.7, -2.2 })
    assert.are.same({ 1, -2 }, f:long():tolist())
    assert.are.equal("float16", f:to("float16"):dtype())
    assert.are.same({ true, false }, as.tensor({ 3, 0 }):bool():tolist())
  end)
end)

describe("arithmetic", function()
  it("metamethods with numbers on either side", function()
    local a = as.tensor { 1.0, 2.0, 4.0 }
    assert.are.same({ 2, 3, 5 }, (a + 1):tolist())
    assert.are.same({ 0, -1, -3 }, (1 - a):tolist())
    assert.are.same({ 2, 4, 8 }, (2 * a):tolist())
    assert.are.same({ 4, 2, 1 }, (4 / a):tolist())
    assert.are.same({ 1, 4, 16 }, (a ^ 2):tolist())
    assert.are.same({ -1, -2, -4 }, (-a):tolist())
  end)

  it("broadcasts like NumPy", function()
    local r = as.ones(3, 1) + as.arange(4):float()
    assert.are.equal("(3, 4)", tostring(r:shape()))
    assert.are.same({ 1, 2, 3, 4 }, r[3]:tolist())
  end)

  it("integer division is true division", function()
    assert.are.same({ 0.5, 1.5 }, (as.tensor { 1, 3 } / 2):tolist())
  end)

  it("comparisons give bool, where selects", function()
    local a = as.tensor { 1, 5, 3 }
    assert.are.same({ false, true, false }, a:gt(3):tolist())
    assert.are.same({ 0, 5, 0 }, as.where(a:gt(3), a, 0):tolist())
  end)

  it("reductions over a dim with keepdim, 1-based argmax", function()
    local m = as.tensor { { 1, 9, 3 }, { 7, 2, 8 } }
    assert.are.same({ 13, 17 }, m:sum(2):tolist())
    assert.are.same({ { 13 }, { 17 } }, m:sum(2, true):tolist())
    assert.are.equal(30, m:sum():item())
    assert.are.same({ 2, 3 }, m:argmax(2):tolist())
    local v, i = m:max(1)
    assert.are.same({ 7, 9, 8 }, v:tolist())
    assert.are.same({ 2, 1, 2 }, i:tolist())
    assert.are.equal(9, m:max():item())
    assert.is_true(math.abs(m:float():mean():item() - 5) < 1e-6)
  end)

  it("softmax rows sum to one; a row of -inf gives zeros", function()
    local x = as.randn(4, 7)
    local ok = close(x:softmax(-1):sum(-1), as.ones(4))
    assert.is_true(ok)
    local z = as.full({ 1, 3 }, -math.huge):softmax(-1)
    assert.are.same({ { 0, 0, 0 } }, z:tolist())
  end)

  it("matmul against a hand computation", function()
    local a = as.tensor { { 1.0, 2.0 }, { 3.0, 4.0 } }
    local b = as.tensor { { 5.0, 6.0 }, { 7.0, 8.0 } }
    assert.are.same({ { 19, 22 }, { 43, 50 } }, a:matmul(b):tolist())
    assert.are.same({ { 26, 30 }, { 38, 44 } }, a:t():matmul(b):tolist())
  end)

  it("in-place ops", function()
    local a = as.ones(3)
    a:add_(2):mul_(as.tensor { 1.0, 2.0, 3.0 })
    assert.are.same({ 3, 6, 9 }, a:tolist())
  end)
end)

describe("printing", function()
  it("prints like PyTorch", function()
    assert.are.equal("tensor([[1, 2],\n        [3, 4]])", tostring(as.tensor { { 1, 2 }, { 3, 4 } }))
    assert.are.equal("tensor([1.5000, 2.2500])", tostring(as.tensor { 1.5, 2.25 }))
    assert.are.equal("tensor([1., 2.])", tostring(as.tensor { 1.0, 2.0 }))
    assert.are.equal("tensor([ true, false])", tostring(as.tensor { true, false }))
    assert.are.equal("tensor([1., 2.], dtype=bfloat16)", tostring(as.tensor({ 1, 2 }, "bfloat16")))
    assert.are.equal("tensor([], size=(0, 3))", tostring(as.zeros(0, 3)))
  end)

  it("prints int64 exactly, even past 2^53 (found by fuzzing)", function()
    assert.are.equal("tensor([9223372036854775807,                  -5])", tostring(as.tensor { math.maxinteger, -5 }))
  end)

  it("summarises large tensors", function()
    local s = tostring(as.zeros(100, 100))
    assert.is_truthy(s:find("...", 1, true))
    assert.is_true(#s < 2000)
  end)
end)

describe("lifetime", function()
  it("__close releases early", function()
    do
      local t <close> = as.zeros(10)
      assert.are.equal(10, t:numel())
    end
  end)
end)
