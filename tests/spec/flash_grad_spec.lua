-- scaled_dot_product trains through the fused kernel on the cpu: its
-- gradients (the flash backward, kernels/cpu/attention_flash_bwd.c) equal
-- those of the math path's autograd (every op of the materialised scores
-- recording its own), and central differences on a tiny case.
local as = require "attnswap"
local numgrad = require "numgrad"
local util = require "spec_util"

local function grads(core, q, k, v, mask, w)
  local xs = { q, k, v, mask }
  for _, x in pairs(xs) do
    if x:dtype() ~= "bool" then
      x.grad = nil
      x:requires_grad_()
    end
  end
  local out = core(q, k, v, mask)
  local backend = as.sdpa_backend()
  ;(out * w):sum():backward()
  local g = {}
  for i, x in pairs(xs) do g[i] = x.grad end
  return g, backend, as.sdpa_backward_backend()
end

-- The same inputs through the fused and the math cores; every gradient compared.
local function compare(opts, shapes, mask)
  local q, k, v = as.randn(table.unpack(shapes.q)), as.randn(table.unpack(shapes.k)), as.randn(table.unpack(shapes.v))
  local w = as.randn(shapes.q[1], shapes.q[2], shapes.q[3], shapes.v[4])
  local fused = as.attention.new("scaled_dot_product", opts)
  local mopts = {}
  for key, val in pairs(opts) do mopts[key] = val end
  mopts.backend = "math"
  local math_core = as.attention.new("scaled_dot_product", mopts)
  local detach = function(x) return x and x:detach():clone() end
  local gf, bf, bwf = grads(fused, q, k, v, mask, w)
  assert.are.equal("flash/", bf:sub(1, 6))
  assert.are.equal("flash-bwd/" .. bf:sub(7), bwf) -- the fused backward on the forward's vector path
  local gm, bm = grads(math_core, detach(q), detach(k), detach(v), detach(mask), w)
  assert.are.equal("math", bm)
  local n = mask and mask:dtype() ~= "bool" and 4 or 3
  for i = 1, n do
    assert.is_not_nil(gf[i], "no fused gradient for input " .. i)
    assert.are.same(gm[i]:shape(), gf[i]:shape())
    local err, scale = util.maxdiff(gf[i], gm[i]), gm[i]:abs():max():item()
    assert.is_true(err <= 1e-4 * math.max(scale, 1), string.format("input %d: max diff %.3g (scale %.3g)", i, err, scale))
  end
end

describe("flash backward through scaled_dot_product", function()
  before_each(function() as.manual_seed(11) end)

  it("matches the math path: plain, causal, Lq ~= Lk, odd sizes", function()
    for _, causal in ipairs { false, true } do
      compare({ causal = causal }, { q = { 2, 3, 17, 24 }, k = { 2, 3, 29, 24 }, v = { 2, 3, 29, 20 } })
      compare({ causal = causal, scale = 0.3 }, { q = { 1, 2, 65, 3 }, k = { 1, 2, 65, 3 }, v = { 1, 2, 65, 5 } })
    end
  end)

  it("matches the math path: GQA, a keep-mask with a fully masked row, an additive bias", function()
    compare({ causal = true }, { q = { 2, 6, 19, 16 }, k = { 2, 2, 19, 16 }, v = { 2, 2, 19, 16 } })
    local keep = as.rand(2, 1, 19, 33):lt(0.7)
    compare({}, { q = { 2, 4, 19, 16 }, k = { 2, 2, 33, 16 }, v = { 2, 2, 33, 8 } }, keep)
    -- the bias gets a gradient, summed by the engine over its broadcast dims
    compare({ causal = true }, { q = { 2, 4, 19, 16 }, k = { 2, 4, 33, 16 }, v = { 2, 4, 33, 8 } }, as.randn(19, 33))
    compare({}, { q = { 1, 2, 9, 8 }, k = { 1, 2, 9, 8 }, v = { 1, 2, 9, 8 } }, as.randn(1, 2, 9, 9))
  end)

  it("a row with nothing to attend gets zero gradients, not NaN", function()
    local q, k, v = as.randn(1, 1, 3, 4), as.randn(1, 1, 5, 4), as.randn(1, 1, 5, 4)
    local keep = as.ones(1, 1, 3, 5):gt(0)
    keep[1][1][2]:fill_(0) -- query 2 sees no key
    local g = grads(as.attention.new("scaled_dot_product"), q, k, v, keep, as.ones(1, 1, 3, 4))
    assert.are.equal(0, g[1][1][1][2]:abs():max():item())
    for i = 1, 3 do
      local s = g[i]:abs():sum():item()
      assert.is_true(s == s, "NaN in gradient " .. i) -- NaN ~= NaN
    end
  end)

  it("agrees with central differences on a tiny case", function()
    local w = as.randn(1, 2, 3, 4)
    local core = as.attention.new("scaled_dot_product", { causal = true })
    numgrad.check(function(q, k, v, b) return (core(q, k, v, b) * w):sum() end,
      { as.randn(1, 2, 3, 4), as.randn(1, 2, 5, 4), as.randn(1, 2, 5, 4), as.randn(3, 5) })
    assert.are.equal("flash/", as.sdpa_backend():sub(1, 6))
  end)
end)
