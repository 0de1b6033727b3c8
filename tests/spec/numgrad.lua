-- Shared by the autograd and training specs: a gradient checked against
-- central differences of the same function (float32, so a step of 1e-2 and
-- a relative tolerance of 2e-2 by default).  Used from busted specs.
local as = require "attnswap"
local assert = require "luassert" -- busted gives specs its assert; a required module asks for it

local M = {}

--- The numeric gradient of f (a scalar function of the listed tensors) at xs[i].
--- xs[i] must be contiguous: its elements are nudged in place.
function M.numeric(f, xs, i, eps)
  local x = xs[i]
  local flat = x:reshape(x:numel())
  local g = {}
  for j = 1, x:numel() do
    local v = flat[j]
    flat[j] = v + eps
    local up = as.no_grad(f, table.unpack(xs)):item()
    flat[j] = v - eps
    local down = as.no_grad(f, table.unpack(xs)):item()
    flat[j] = v
    g[j] = (up - down) / (2 * eps)
  end
  return as.tensor(g):reshape(table.unpack(x:shape()))
end

--- Checks f's gradient with respect to every input against central differences.
function M.check(f, xs, tol)
  tol = tol or 2e-2
  for _, x in ipairs(xs) do
    x.grad = nil
    x:requires_grad_()
  end
  local y = f(table.unpack(xs))
  y:backward()
  for i, x in ipairs(xs) do
    local want = M.numeric(f, xs, i, 1e-2)
    assert.is_not_nil(x.grad, "no gradient for input " .. i)
    assert.are.same(want:shape(), x.grad:shape())
    local err = (x.grad - want):abs():max():item()
    local scale = math.max(want:abs():max():item(), 1)
    assert.is_true(err <= tol * scale, string.format("input %d: max error %.3g (scale %.3g)", i, err, scale))
  end
end

return M
