-- as.checkpoint: activation checkpointing (torch.utils.checkpoint, the
-- reentrant form): forward keeps only the inputs, backward recomputes with the
-- random generator where forward found it, so dropout replays.
local as = require "attnswap"
local U = require "spec_util"

local function grads(block, x)
  local g = { x = x.grad }
  for name, p in block:named_parameters() do g[name] = p.grad end
  return g
end

local function zero(block, x)
  x.grad = nil
  for _, p in block:named_parameters() do p.grad = nil end
end

describe("checkpoint", function()
  it("a transformer block with dropout in training mode: the same gradients, recomputed once", function()
    as.manual_seed(7)
    local block = as.nn.TransformerBlock { dim = 16, num_heads = 4, dropout = 0.3 }
    block:requires_grad_(true)
    block:train()
    local x = as.randn(2, 5, 16):requires_grad_()
    local w = as.randn(2, 5, 16)

    as.manual_seed(100)
    local y1 = block(x)
    ;(y1 * w):sum():backward()
    local plain = grads(block, x)

    zero(block, x)
    local calls = 0
    local function run(a)
      calls = calls + 1
      return block(a)
    end
    as.manual_seed(100)
    local y2 = as.checkpoint(run, x)
    assert.are.equal(1, calls)
    assert.are.equal("checkpoint", y2.grad_fn)
    -- (forward ran under no_grad: attention may take its fused path, equal to rounding)
    assert.is_true(U.maxdiff(y1, y2) < 1e-5)
    local after_forward = { as.get_rng_state() }
    ;(y2 * w):sum():backward()
    assert.are.equal(2, calls) -- the recomputation really ran
    -- the generator is back where the forward left it
    assert.are.same(after_forward, { as.get_rng_state() })
    local ckpt = grads(block, x)
    local n = 0
    for name, g in pairs(plain) do
      assert.is_not_nil(ckpt[name], name)
      assert.are.equal(0, U.maxdiff(g, ckpt[name]), name)
      n = n + 1
    end
    assert.is_true(n > 5)
    -- dropout really dropped: a different seed gives a different output
    as.manual_seed(101)
    assert.is_true(U.maxdiff(block(x), y1) > 1e-3)
  end)

  it("inputs that need no gradient, non-tensor arguments, several outputs", function()
    as.manual_seed(1)
    local lin = as.nn.Linear(3, 4)
    lin:requires_grad_(true)
    local x = as.randn(2, 3) -- requires no grad: the parameters still get theirs
    local a, b, tag = as.checkpoint(function(t, scale) return lin(t) * scale, lin(t):sum(), "tag" end, x, 2)
    assert.are.equal("tag", tag)
    ;(a:sum() + b * 3):backward()
    local gw = lin.weight.grad
    lin.weight.grad, lin.bias.grad = nil, nil
    local a2, b2 = lin(x) * 2, lin(x):sum()
    ;(a2:sum() + b2 * 3):backward()
    assert.is_true(U.maxdiff(gw, lin.weight.grad) < 1e-6)
    assert.is_nil(x.grad)
    -- under no_grad it is just a call
    local y = as.no_grad(function() return as.checkpoint(function(t) return lin(t) end, x) end)
    assert.is_false(y.requires_grad)
  end)

  it("errors inside the recomputation surface from backward", function()
    local x = as.randn(3):requires_grad_()
    local first = true
    local y = as.checkpoint(function(t)
      if not first then error("recompute failed") end
      first = false
      return t * 2
    end, x):sum()
    local err = U.errmsg(y.backward, y)
    assert.truthy(err:find("recompute failed", 1, true), err)
    err = U.errmsg(as.checkpoint, 42, x)
    assert.truthy(err:find("checkpoint: argument #1 must be a function or module, got number", 1, true), err)
  end)
end)
