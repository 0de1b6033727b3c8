-- The backwards of max/min, var/std, prod, tril/triu, cat of many tensors
-- and dropout (issue 16 part B): each against central differences of the
-- same function on odd, non-contiguous (a transposed view taken inside f),
-- broadcast (expanded inside f) and empty shapes, and the ties and zeros
-- against PyTorch's rules worked out by hand.
local as = require "attnswap"
local numgrad = require "numgrad"
local check = numgrad.check

-- Distinct values a step of 1e-2 cannot reorder: a random permutation of 0.1 k.
local function distinct(...)
  local shape = { ... }
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  local vals, used = {}, {}
  for i = 1, n do
    local k
    repeat k = math.random(1, 4 * n) until not used[k]
    used[k] = true
    vals[i] = (k - 2 * n) * 0.1
  end
  return as.tensor(vals):reshape(table.unpack(shape))
end

local function r(...) return as.randn(...) * 0.5 end

describe("autograd of the remaining ops", function()
  before_each(function()
    as.manual_seed(5)
    math.randomseed(5)
  end)

  it("max and min over a dim send the gradient to the index they pick", function()
    local w = r(3, 5)
    for _, op in ipairs { "max", "min" } do
      check(function(a) return (a[op](a, 2) * w:select(2, 1)):sum() end, { distinct(3, 7) })
      check(function(a) return (a[op](a, 1, true) * w:narrow(1, 1, 1)):sum() end, { distinct(5, 5) })
      -- non-contiguous: the max over dim 1 of a transposed view
      check(function(a) return (a:t()[op](a:t(), 1) * w:select(1, 1)):sum() end, { distinct(5, 3) })
      -- broadcast: an expanded input sums its copies' gradients back
      check(function(a) return (a:expand(4, 5)[op](a:expand(4, 5), 2) * w:select(2, 1):narrow(1, 1, 3):sum()):sum() end,
        { distinct(1, 5) })
    end
    -- ties: the whole gradient goes to the index returned
    local a = as.tensor { { 1.0, 3.0, 3.0 }, { 2.0, 2.0, 0.0 } }:requires_grad_()
    local v, i = a:max(2)
    v:sum():backward()
    local want = { { 0, 0, 0 }, { 0, 0, 0 } }
    for row = 1, 2 do want[row][math.tointeger(i[row])] = 1 end
    assert.are.same(want, a.grad:tolist())
    -- torch: x.max(1) gives indices [1, 0] (0-based) and grad [[0, 1, 0], [1, 0, 0]]
    assert.are.same({ 2, 1 }, i:tolist())
    assert.are.same({ { 0, 1, 0 }, { 1, 0, 0 } }, a.grad:tolist())
    -- the indices themselves get no gradient
    assert.is_false(i.requires_grad)
    assert.is_false(a:argmax(2).requires_grad)
  end)

  it("max and min over everything split the gradient evenly among ties (torch)", function()
    check(function(a) return a:max() * 3 end, { distinct(4, 5) })
    check(function(a) return a:t():min() * 2 end, { distinct(3, 6) })
    local a = as.tensor { { 1.0, 4.0 }, { 4.0, 4.0 } }:requires_grad_()
    a:max():backward()
    -- torch.tensor([[1., 4.], [4., 4.]], requires_grad=True).max().backward() gives 1/3 at each 4
    local g = a.grad:tolist()
    assert.are.equal(0, g[1][1])
    for _, v in ipairs { g[1][2], g[2][1], g[2][2] } do assert.is_true(math.abs(v - 1 / 3) < 1e-6) end
    local b = as.tensor { -2.0, 5.0, -2.0 }:requires_grad_()
    local bm = b:min() * 4
    bm:backward()
    assert.are.same({ 2, 0, 2 }, b.grad:tolist())
  end)

  it("var and std with their correction", function()
    local w = r(3, 1)
    check(function(a) return (a:var(2, true) * w):sum() end, { r(3, 7) })
    check(function(a) return a:var(1, false, { correction = 0 }):sum() end, { r(5, 3) })
    check(function(a) return a:var() end, { r(4, 5) })
    check(function(a) return a:t():var(2):sum() end, { r(5, 3) })
    check(function(a) return a:std(1):sum() end, { r(6, 4) })
    check(function(a) return a:std() end, { r(3, 3) })
    -- broadcast
    check(function(a) return a:expand(3, 4):var(1, false, { correction = 0 }):sum() + a:expand(3, 4):var() end,
      { r(1, 4) })
  end)

  it("prod, with no zero, one zero and several zeros as torch", function()
    check(function(a) return (a:prod(2) * as.tensor { 1.0, -2.0, 0.5 }):sum() end, { r(3, 5) + 1 })
    check(function(a) return a:prod() end, { as.rand(2, 3) + 0.5 })
    check(function(a) return a:t():prod(1):sum() end, { as.rand(3, 4) + 0.5 })
    -- one zero: only it gets the product of the others; two zeros: nothing
    local a = as.tensor { { 2.0, 0.0, 3.0 }, { 0.0, 5.0, 0.0 }, { 1.0, 2.0, 4.0 } }:requires_grad_()
    a:prod(2):sum():backward()
    assert.are.same({ { 0, 6, 0 }, { 0, 0, 0 }, { 8, 4, 2 } }, a.grad:tolist())
    local b = as.tensor { 2.0, 0.0, 3.0 }:requires_grad_()
    b:prod():backward()
    assert.are.same({ 0, 6, 0 }, b.grad:tolist())
    local c = as.tensor { 0.0, 4.0, 0.0 }:requires_grad_()
    c:prod():backward()
    assert.are.same({ 0, 0, 0 }, c.grad:tolist())
  end)

  it("tril and triu", function()
    local w = r(4, 5)
    for _, k in ipairs { 0, 1, -2 } do
      check(function(a) return (a:tril(k) * w):sum() end, { r(4, 5) })
      check(function(a) return (a:t():triu(k) * w):sum() end, { r(5, 4) })
    end
    check(function(a) return (a:expand(2, 4, 5):triu() ^ 2):sum() end, { r(1, 4, 5) })
    local a = as.ones(3, 3):requires_grad_()
    a:triu(1):sum():backward()
    assert.are.same({ { 0, 1, 1 }, { 0, 0, 1 }, { 0, 0, 0 } }, a.grad:tolist())
  end)

  it("cat of more tensors than a node has edges (chained)", function()
    local xs = {}
    for i = 1, 70 do
      xs[i] = as.full({ 2, 1 }, i * 1.0):requires_grad_()
    end
    local w = as.arange(1, 141):float():reshape(2, 70)
    local y = as.cat(xs, 2)
    assert.are.same({ 2, 70 }, y:shape())
    local s = (y * w):sum()
    s:backward()
    for i = 1, 70 do
      assert.are.same({ { i }, { 70 + i } }, xs[i].grad:tolist())
    end
    check(function(a, b, c, d, e) return (as.cat({ a, b, c, d, e, a }, 1) ^ 2):sum() end,
      { r(1, 3), r(2, 3), r(1, 3), r(3, 3), r(1, 3) })
  end)

  it("masked_fill: no gradient where filled; mask broadcast, non-contiguous input", function()
    local mask = as.rand(3, 5):lt(0.4)
    local w = r(3, 5)
    check(function(a) return (a:masked_fill(mask, -2.5) * w):sum() end, { r(3, 5) })
    local row = as.tensor { true, false, false, true, false }
    check(function(a) return (a:t():masked_fill(row, 0) * w):sum() end, { r(5, 3) })
    local a = as.ones(2, 5):requires_grad_()
    local y = a:masked_fill(row, 7)
    assert.are.same({ 7, 1, 1, 7, 1 }, y:tolist()[2])
    y:sum():backward()
    assert.are.same({ { 0, 1, 1, 0, 1 }, { 0, 1, 1, 0, 1 } }, a.grad:tolist())
    local err = select(2, pcall(a.masked_fill, a, as.ones(2, 5), 1))
    assert.truthy(err:find("masked_fill: mask must be bool, got float32", 1, true), err)
    err = select(2, pcall(a.masked_fill, a, as.tensor { true, false }, 1))
    assert.truthy(err:find("masked_fill: shapes (2, 5) and (2) cannot be broadcast together", 1, true), err)
    err = select(2, pcall(a.masked_fill, a, as.ones(3, 2, 5):bool(), 1))
    assert.truthy(err:find("masked_fill: mask of shape (3, 2, 5) does not broadcast to the tensor's shape (2, 5)", 1,
      true), err)
  end)

  it("dropout replays its mask in backward", function()
    local x = r(6, 7):requires_grad_()
    local d = as.nn.Dropout(0.4)
    d:train()
    local y = d(x)
    y:sum():backward()
    local kept = y:detach():ne(0):float()
    -- the gradient is 1/(1-p) where the element was kept, 0 where dropped
    assert.is_true((x.grad - kept / 0.6):abs():max():item() < 1e-6)
    assert.is_true(kept:sum():item() > 0 and kept:sum():item() < 42)
  end)

  it("softmax and log_softmax: the float32 row kernel's gradient matches float64's composite", function()
    for _, log in ipairs { false, true } do
      for dim = 1, 3 do
        local x = r(3, 5, 7)
        if log then x[2][3][4] = -math.huge end -- a masked entry: e^-inf = 0 in the kernel
        local w = r(3, 5, 7)
        local function grad(dt)
          local xx = x:to(dt):detach():requires_grad_()
          local y = log and xx:log_softmax(dim) or xx:softmax(dim)
          -- a masked log-probability is -inf: keep the loss finite
          local s = (as.where(y:gt(-1e30), y, 0) * w:to(dt)):sum()
          s:backward()
          return xx.grad:double()
        end
        local d = (grad("float32") - grad("float64")):abs():max():item()
        assert.is_true(d < 1e-5, string.format("log %s dim %d: %g", tostring(log), dim, d))
        -- bfloat16 goes through the same kernel in float32
        local b = (grad("bfloat16") - grad("float64")):abs():max():item()
        assert.is_true(b < 0.05, string.format("bf16 log %s dim %d: %g", tostring(log), dim, b))
      end
    end
  end)

  it("layer_norm and rms_norm: the float32 row kernel's gradients match float64's composite", function()
    for _, kind in ipairs { "layer", "rms" } do
      local x, w, b, gw = r(2, 3, 17), r(17) + 1, r(17), r(2, 3, 17)
      local function grads(dt)
        local xx = x:to(dt):detach():requires_grad_()
        local ww = w:to(dt):detach():requires_grad_()
        local bb = b:to(dt):detach():requires_grad_()
        local y = kind == "layer" and as.layer_norm(xx, ww, bb, 1e-5) or as.rms_norm(xx, ww, 1e-5)
        ;(y * gw:to(dt)):sum():backward()
        return { xx.grad:double(), ww.grad:double(), kind == "layer" and bb.grad:double() or nil }
      end
      local a, c = grads("float32"), grads("float64")
      for i = 1, #c do
        local d = (a[i] - c[i]):abs():max():item()
        assert.is_true(d < 1e-4, string.format("%s_norm gradient %d: %g", kind, i, d))
      end
    end
  end)

  it("empty tensors give empty gradients", function()
    local a = as.randn(0, 3):requires_grad_()
    a:prod(1):sum():backward()
    assert.are.same({ 0, 3 }, a.grad:shape())
    local b = as.randn(3, 0):requires_grad_()
    b:var(1):sum():backward()
    assert.are.same({ 3, 0 }, b.grad:shape())
    local c = as.randn(0, 4):requires_grad_()
    local cm = c:max(2) * 1
    cm:sum():backward()
    assert.are.same({ 0, 4 }, c.grad:shape())
    local e = as.randn(2, 0, 3):requires_grad_()
    e:tril():sum():backward()
    assert.are.same({ 2, 0, 3 }, e.grad:shape())
  end)
end)
