-- Post-accumulate-grad hooks (t:register_post_accumulate_grad_hook, the
-- engine's callback DDP overlaps its all-reduce with): once per leaf per
-- backward, when the leaf's .grad is final (after its last use, so in
-- reverse order of use), with the whole gradient in .grad; none for a leaf
-- no gradient reached; errors fail the backward; removal.
local as = require "attnswap"

describe("post-accumulate-grad hooks", function()
  it("fire once per leaf per backward, in reverse order of use, with .grad final", function()
    as.manual_seed(3)
    local n = 5
    local ws, log = {}, {}
    for i = 1, n do ws[i] = as.randn(4, 4):requires_grad_() end
    local x = as.randn(3, 4)
    for i = 1, n do
      ws[i]:register_post_accumulate_grad_hook(function(t)
        -- t is ws[i]: its gradient is whole when the hook runs
        log[#log + 1] = { i = i, grad = t.grad:clone() }
      end)
    end
    for round = 1, 2 do
      log = {}
      for i = 1, n do ws[i].grad = nil end
      -- ws[1] is used twice (first and last): it must fire once, at the end
      local h = x
      for i = 1, n do h = (h:matmul(ws[i])):tanh() end
      h = h:matmul(ws[1])
      h:sum():backward()
      local order = {}
      for _, e in ipairs(log) do order[#order + 1] = e.i end
      assert.are.same({ 5, 4, 3, 2, 1 }, order, "round " .. round)
      for _, e in ipairs(log) do
        assert.is_true((e.grad - ws[e.i].grad):abs():max():item() == 0, "grad final at the hook")
      end
    end
  end)

  it("does not fire for a leaf no gradient reached, and fires for a leaf root", function()
    local a, b = as.randn(3):requires_grad_(), as.randn(3):requires_grad_()
    local fired = {}
    a:register_post_accumulate_grad_hook(function() fired.a = (fired.a or 0) + 1 end)
    b:register_post_accumulate_grad_hook(function() fired.b = (fired.b or 0) + 1 end)
    ;(a * 2):sum():backward()
    assert.are.equal(1, fired.a)
    assert.is_nil(fired.b)
    b:backward(as.ones(3))
    assert.are.equal(1, fired.b)
  end)

  it("propagates a hook's error and can be removed", function()
    local a = as.randn(2):requires_grad_()
    local id = a:register_post_accumulate_grad_hook(function() error("boom") end)
    local ok, err = pcall(function() (a * a):sum():backward() end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("post%-accumulate%-grad hook: .*boom"))
    a:remove_post_accumulate_grad_hook(id)
    local n = 0
    local id2
    id2 = a:register_post_accumulate_grad_hook(function(t) n = n + 1 t:remove_post_accumulate_grad_hook(id2) end)
    ;(a * a):sum():backward()
    ;(a * a):sum():backward()
    assert.are.equal(1, n)
    ok, err = pcall(function() a:remove_post_accumulate_grad_hook(id) end)
    assert.truthy(not ok and tostring(err):find("no hook"))
    ok, err = pcall(function() (a * 2):register_post_accumulate_grad_hook(function() end) end)
    assert.truthy(not ok and tostring(err):find("not a leaf"))
    ok, err = pcall(function() as.randn(2):register_post_accumulate_grad_hook(function() end) end)
    assert.truthy(not ok and tostring(err):find("does not require grad"))
  end)
end)
