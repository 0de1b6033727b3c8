-- as.autograd.Function: custom differentiable functions (torch.autograd.Function).
local as = require "attnswap"
local numgrad = require "numgrad"
local U = require "spec_util"

local function r(...) return as.randn(...) * 0.5 end

-- y = x^3 (k a ctx field), its backward written by hand
local Cube = as.autograd.Function {
  name = "Cube",
  forward = function(ctx, x, k)
    ctx:save_for_backward(x)
    ctx.k = k
    return x ^ 3 * k
  end,
  backward = function(ctx, g)
    local x = table.unpack(ctx.saved_tensors)
    return g * x * x * (3 * ctx.k)
  end,
}

describe("autograd.Function", function()
  before_each(function() as.manual_seed(11) end)

  it("apply records a node whose backward is the Lua one, checked against numgrad", function()
    local w = r(3, 5)
    numgrad.check(function(a) return (Cube:apply(a, 2) * w):sum() end, { r(3, 5) })
    -- non-contiguous and broadcast inputs, composed with built-in ops
    numgrad.check(function(a, b) return (Cube:apply(a:t() + b, 0.5) * w):sum() end, { r(5, 3), r(1, 5) })
    local x = r(4):requires_grad_()
    local y = Cube:apply(x, 1)
    assert.are.equal("Cube", y.grad_fn)
    assert.is_true(U.maxdiff(y, x:detach() ^ 3) < 1e-6)
  end)

  it("backward gets its gradient contiguous, whatever layout the op after it made", function()
    -- y = 2 x, its backward through g:view (which needs a contiguous g)
    local Double = as.autograd.Function {
      forward = function(ctx, x) return x * 2 end,
      backward = function(ctx, g)
        assert.is_true(g:is_contiguous())
        return g:view(table.unpack(g:shape())) * 2
      end,
    }
    local x = r(3, 4):requires_grad_()
    local w = r(4, 3)
    -- the transpose after it hands back a transposed gradient
    local loss = (Double:apply(x):t() * w):sum()
    loss:backward()
    assert.is_true(U.maxdiff(x.grad, w:t() * 2) < 1e-6)
  end)

  it("forward runs with grad mode off; ctx carries needs_input_grad and any field", function()
    local seen
    local F = as.autograd.Function {
      forward = function(ctx, a, b, scale)
        seen = { grad = as.is_grad_enabled(), needs = ctx.needs_input_grad }
        ctx.scale = scale
        ctx:save_for_backward(a, nil, b)
        return a * b * scale
      end,
      backward = function(ctx, g)
        local a, none, b = table.unpack(ctx.saved_tensors, 1, 3)
        assert(none == nil)
        return g * b * ctx.scale, ctx.needs_input_grad[2] and g * a * ctx.scale or nil
      end,
    }
    local a, b = r(2, 3):requires_grad_(), r(2, 3)
    F:apply(a, b, 4):sum():backward()
    assert.are.same({ grad = false, needs = { true, false } }, seen)
    assert.is_true(U.maxdiff(a.grad, b * 4) < 1e-6)
    assert.is_nil(b.grad)
    -- nothing requires grad: nothing recorded
    local y = F:apply(r(2), r(2), 1)
    assert.is_false(y.requires_grad)
    -- under no_grad: nothing recorded either
    y = as.no_grad(function() return F:apply(a, b, 1) end)
    assert.is_false(y.requires_grad)
  end)

  it("several outputs: each gradient reaches backward, the unused ones as zeros", function()
    local calls = 0
    local Two = as.autograd.Function {
      forward = function(ctx, x)
        ctx:save_for_backward(x)
        return x * 2, x * x, "not a tensor"
      end,
      backward = function(ctx, ga, gb)
        calls = calls + 1
        local x = ctx.saved_tensors[1]
        assert.are.same(x:shape(), ga:shape())
        assert.are.same(x:shape(), gb:shape())
        return ga * 2 + gb * 2 * x
      end,
    }
    local x = r(3, 2):requires_grad_()
    local a, b, s = Two:apply(x)
    assert.are.equal("not a tensor", s)
    local loss = a:sum() * 3 + (b * b):sum()
    loss:backward()
    -- d/dx (3 sum 2x + sum x^4) = 6 + 4 x^3
    assert.is_true(U.maxdiff(x.grad, x:detach() ^ 3 * 4 + 6) < 1e-5)
    assert.is_true(calls >= 1)
    -- only one output used: the other's gradient arrives as zeros
    x.grad = nil
    local a2 = Two:apply(x)
    a2:sum():backward()
    assert.is_true(U.maxdiff(x.grad, as.full({ 3, 2 }, 2.0)) < 1e-6)
  end)

  it("an input returned as it is keeps its own history; nil gradients are none", function()
    local Id = as.autograd.Function {
      forward = function(ctx, x, y) return x end,
      backward = function(ctx, g) return g * 5, nil end,
    }
    local x, y = r(3):requires_grad_(), r(3):requires_grad_()
    local out = Id:apply(x, y)
    assert.is_true(x.is_leaf)
    assert.is_false(out.is_leaf)
    out:sum():backward()
    assert.are.same({ 5, 5, 5 }, x.grad:tolist())
    assert.is_nil(y.grad)
  end)

  it("errors: a Lua error in backward, wrong gradients, bad definitions", function()
    local Boom = as.autograd.Function {
      name = "Boom",
      forward = function(ctx, x) return x * 1 end,
      backward = function(ctx, g) error("no gradient today") end,
    }
    local x = r(2):requires_grad_()
    local y = Boom:apply(x):sum()
    local err = U.errmsg(y.backward, y)
    assert.truthy(err:find("backward: Boom: .*no gradient today"), err)
    local WrongShape = as.autograd.Function {
      forward = function(ctx, x) return x * 1 end,
      backward = function(ctx, g) return as.zeros(5) end,
    }
    y = WrongShape:apply(x):sum()
    err = U.errmsg(y.backward, y)
    assert.truthy(err:find("returned gradient 1 of shape (5), expected the input's shape (2)", 1, true), err)
    local NotTensor = as.autograd.Function {
      forward = function(ctx, x) return x * 1 end,
      backward = function(ctx, g) return "grad" end,
    }
    y = NotTensor:apply(x):sum()
    err = U.errmsg(y.backward, y)
    assert.truthy(err:find("returned a string as gradient 1, expected a Tensor or nil", 1, true), err)
    local TooMany = as.autograd.Function {
      forward = function(ctx, x) return x * 1 end,
      backward = function(ctx, g) return g, g end,
    }
    y = TooMany:apply(x):sum()
    err = U.errmsg(y.backward, y)
    assert.truthy(err:find("returned 2 gradients, but apply got 1 tensor input", 1, true), err)
    err = U.errmsg(as.autograd.Function, { forward = print })
    assert.truthy(err:find("expected {forward = function(ctx, ...), backward", 1, true), err)
    err = U.errmsg(function() Cube:apply(x, nil):sum() end)
    assert.truthy(#err > 0)
    err = U.errmsg(function()
      as.autograd.Function { forward = function(ctx, x) ctx:save_for_backward(7) end, backward = print }:apply(x)
    end)
    assert.truthy(err:find("save_for_backward: argument #1 must be a Tensor or nil, got number", 1, true), err)
  end)

  it("the graph frees the Lua state it held (no leak through the registry)", function()
    collectgarbage()
    local before = collectgarbage("count")
    for _ = 1, 1000 do
      local x = r(8):requires_grad_()
      local y = Cube:apply(x, 1)
      y:sum():backward()
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(collectgarbage("count") - before < 100, "Lua memory grew by " .. (collectgarbage("count") - before) .. " KiB")
  end)
end)
