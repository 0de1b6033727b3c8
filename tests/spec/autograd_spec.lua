-- Autograd, the first ops (the training issue, part B): every gradient
-- against central differences of the same function, in float32 (so with
-- a step of 1e-2 and a relative tolerance of 2e-2), plus the errors.
local as = require "attnswap"

local numgrad = require "numgrad" -- tests/spec/numgrad.lua
local check = numgrad.check

local function r(...) return as.randn(...) * 0.5 end

describe("autograd", function()
  before_each(function() as.manual_seed(3) end)

  it("binary ops with broadcasting", function()
    check(function(a, b) return (a + b):sum() end, { r(3, 4), r(4) })
    check(function(a, b) return ((a - b) * (a - b)):sum() end, { r(3, 4), r(3, 1) })
    check(function(a, b) return (a * b):sum() end, { r(2, 3, 4), r(1, 3, 1) })
    check(function(a, b) return (a / b):sum() end, { r(3, 4), as.rand(3, 4) + 1 })
    check(function(a, b) return (a ^ b):sum() end, { as.rand(3, 4) + 0.5, r(3, 4) })
    check(function(a, b) return a:maximum(b):sum() + a:minimum(b):mean() end, { r(5, 3), r(5, 3) })
    check(function(a) return (a * 3 - 2 / (a * a + 1)):sum() end, { r(4, 5) })
  end)

  it("unary ops", function()
    local x = r(4, 6)
    for _, op in ipairs { "exp", "tanh", "sigmoid", "relu", "silu", "sin", "cos", "abs", "neg" } do
      check(function(t) return t[op](t):sum() end, { x:clone() })
    end
    check(function(t) return t:gelu():sum() end, { x:clone() })
    check(function(t) return t:gelu("tanh"):sum() end, { x:clone() })
    -- (clamp's bounds kept away from the points: the step would cross a kink)
    check(function(t) return (t:clamp(-0.5, 0.5) * t):sum() end, { as.tensor { { -1.0, -0.2, 0.1, 0.9, 0.3 } } })
    local keep = as.rand(4, 6):lt(0.5)
    check(function(a, b) return (as.where(keep, a, b) * a):sum() end, { x:clone(), r(4, 6) })
    local p = as.rand(4, 6) + 0.5
    for _, op in ipairs { "log", "sqrt", "rsqrt" } do
      check(function(t) return t[op](t):sum() end, { p:clone() })
    end
  end)

  it("matmul in every shape torch.matmul takes", function()
    check(function(a, b) return a:matmul(b):sum() end, { r(3, 4), r(4, 5) })
    check(function(a, b) return (a:matmul(b) ^ 2):sum() end, { r(2, 3, 4), r(4, 5) })
    check(function(a, b) return a:matmul(b):sum() end, { r(2, 1, 3, 4), r(5, 4, 2) })
    check(function(a, b) return a:matmul(b):sum() end, { r(4), r(4, 3) })
    check(function(a, b) return a:matmul(b):sum() end, { r(2, 3, 4), r(4) })
    check(function(a, b) return a:matmul(b) end, { r(4), r(4) })
    check(function(a, b) return a:matmul(b:t()):sum() end, { r(3, 4), r(5, 4) })
    -- b the transpose of a row-major matrix (a Linear's W^T): its gradient is made in that layout
    check(function(a, b) return (a:matmul(b:t()) ^ 2):sum() end, { r(3, 4), r(5, 4) })
    check(function(a, b) return (a:matmul(b:t()) ^ 2):sum() end, { r(2, 3, 4), r(5, 4) })
    check(function(a, b) return (a:matmul(b:t()) ^ 2):sum() end, { r(4), r(5, 4) })
    check(function(a, b) return (a:t():matmul(b:t()) ^ 2):sum() end, { r(4, 3), r(5, 4) })
  end)

  it("a weight used transposed gets a contiguous gradient, and a tied one the sum of both uses", function()
    local x, w = r(2, 3, 4):requires_grad_(), r(5, 4):requires_grad_()
    local g = r(2, 3, 5)
    as.linear(x, w):backward(g)
    assert.is_true(w.grad:is_contiguous())
    local want = g:reshape(6, 5):t():matmul(x:detach():reshape(6, 4))
    assert.is_true((w.grad - want):abs():max():item() < 1e-5)
    -- GPT-2's tied head: an embedding looked up, then its transpose as the output layer
    local E = r(7, 4):requires_grad_()
    local ids = as.tensor({ 2, 7, 4 }):long()
    local h = E:index_select(1, ids)
    local gy = r(3, 7)
    h:matmul(E:t()):backward(gy)
    assert.is_true(E.grad:is_contiguous())
    local Ed = E:detach()
    local dh = gy:matmul(Ed) -- the lookup's rows
    local head = gy:t():matmul(Ed:index_select(1, ids))
    local lookup = as.zeros(7, 4)
    for i, id in ipairs { 2, 7, 4 } do lookup[id] = lookup[id] + dh[i] end
    assert.is_true((E.grad - (head + lookup)):abs():max():item() < 1e-5)
  end)

  it("reductions, softmax, norms", function()
    check(function(a) return (a:sum(2) ^ 2):sum() end, { r(3, 4) })
    check(function(a) return (a:mean(1, true) * a):sum() end, { r(3, 4) })
    check(function(a) return a:mean() end, { r(2, 3, 4) })
    local w = r(7)
    check(function(a) return (a:softmax(-1) * w):sum() end, { r(3, 7) })
    check(function(a) return (a:log_softmax(2) * w):sum() end, { r(3, 7) })
    check(function(x, g, b) return (as.layer_norm(x, g, b) * w):sum() end, { r(4, 7), r(7) + 1, r(7) })
    check(function(x, g) return (as.rms_norm(x, g) * w):sum() end, { r(4, 7), r(7) + 1 })
  end)

  it("views pass gradients to the right elements", function()
    local w = r(4, 3)
    check(function(a) return (a:transpose(1, 2) * w):sum() end, { r(3, 4) })
    check(function(a) return (a:reshape(4, 3) * w):sum() end, { r(2, 6) })
    check(function(a) return (a:permute(3, 1, 2):reshape(4, 3) * w):sum() end, { r(3, 1, 4) })
    check(function(a) return (a:narrow(2, 2, 3) ^ 2):sum() end, { r(4, 6) })
    check(function(a) return (a:select(1, 2) * a:select(1, 3)):sum() end, { r(4, 5) })
    local z = r(4, 3, 5)
    check(function(a) return (a:unsqueeze(1):expand(4, 3, 5) * z):sum() end, { r(3, 5) })
    check(function(a) return (a:t():flatten() ^ 2):sum() + (a:t():contiguous() * w):sum() end, { r(3, 4) })
  end)

  it("slices of a non-leaf add their gradients in place into its pending gradient", function()
    -- the engine's narrow/select path (runtime/autograd/autograd.c, run_slice_node): overlapping
    -- narrows, a select, a whole-tensor use arriving first or last, and a second backward
    local w1, w2, w3 = r(4, 3), r(4, 4), r(5)
    local function f(a)
      local x = a * 1.5 -- a node, so its gradient is pending in the engine
      local loss = (x:narrow(2, 1, 3) * w1):sum() + (x:narrow(2, 2, 4) * w2):sum() + (x:select(1, 2) * w3):sum()
      return loss
    end
    check(f, { r(4, 5) })
    check(function(a) local x = a:exp(); return (x * x):sum() + (x:narrow(1, 2, 2) ^ 2):sum() end, { r(3, 4) })
    check(function(a) local x = a:exp(); return (x:narrow(1, 2, 2) ^ 2):sum() + (x * x):sum() end, { r(3, 4) })
    -- a fused projection split in three, as attention splits qkv
    local wq, wk, wv = r(2, 3, 2), r(2, 3, 2), r(2, 3, 2)
    check(function(a)
      local qkv = a * 0.5 + 1
      local q, k, v = qkv:split(2, 3)
      return (q * wq + k * wk):sum() + (v * wv):sum()
    end, { r(2, 3, 6) })
    -- slices of a leaf: summed apart, joined to .grad once (and added to what .grad held)
    check(function(a) return (a:narrow(2, 1, 3) * w1):sum() + (a:narrow(2, 2, 4) * w2):sum() + (a:select(1, 2) * w3):sum() end,
      { r(4, 5) })
    check(function(a) return (a * a):sum() + (a:narrow(1, 2, 2) ^ 2):sum() end, { r(3, 4) })
    local leaf = r(3, 4):requires_grad_()
    leaf.grad = as.ones(3, 4)
    ;(leaf:narrow(2, 1, 2):sum() + leaf:select(2, 4):sum() * 2):backward()
    assert.are.same({ { 2, 2, 1, 3 }, { 2, 2, 1, 3 }, { 2, 2, 1, 3 } }, leaf.grad:tolist())
    -- a post-accumulate hook sees the whole gradient, slices joined
    local hl = r(2, 3):requires_grad_()
    local seen
    hl:register_post_accumulate_grad_hook(function(t) seen = t.grad:clone() end)
    ;(hl:narrow(2, 1, 2):sum() + hl:select(2, 3):sum() * 3):backward()
    assert.are.same({ { 1, 1, 3 }, { 1, 1, 3 } }, seen:tolist())
    -- retain_graph: the second backward gives the same gradient again
    local a = r(3, 4):requires_grad_()
    local x = a * 2
    local loss = (x:narrow(2, 1, 2) ^ 2):sum() + x:select(2, 4):sum()
    loss:backward(nil, { retain_graph = true })
    local g1 = a.grad:clone()
    a.grad = nil
    loss:backward()
    assert.is_true((a.grad - g1):abs():max():item() == 0)
  end)

  it("attention and the built-in layers: the default core trains through the fused kernel on the cpu", function()
    local w = r(2, 3, 5, 4)
    check(function(q, k, v) return (as.attention.new("scaled_dot_product", { causal = true })(q, k, v) * w):sum() end,
      { r(2, 3, 5, 4), r(2, 3, 7, 4), r(2, 3, 7, 4) })
    local qq = r(1, 1, 2, 4):requires_grad_()
    as.attention.new("scaled_dot_product")(qq, qq, qq)
    assert.are.equal("flash/", as.sdpa_backend():sub(1, 6))
    as.attention.new("scaled_dot_product")(qq:detach(), qq:detach(), qq:detach())
    assert.are.equal("flash/", as.sdpa_backend():sub(1, 6))
    -- index_select and embedding: a row picked twice gets both gradients
    local idx = as.tensor({ 3, 1, 3, 2 }, "int64") -- 1-based, as Torch7
    local sel_w = r(3, 4)
    check(function(a) return (a:index_select(2, idx) * sel_w):sum() end, { r(3, 5) })
    local ids = as.tensor({ { 1, 3, 1 }, { 0, 0, 2 } }, "int64")
    local emb_w = r(2, 3, 6)
    check(function(t) return (as.embedding(t, ids) * emb_w):sum() end, { r(4, 6) })
    local cat_w = r(2, 5)
    check(function(a, b) return (as.cat({ a, b }, 2) * cat_w):sum() end, { r(2, 2), r(2, 3) })
    local blk = as.nn.TransformerBlock { dim = 8, num_heads = 2 }
    local x = r(2, 5, 8)
    local gain = blk.norm1.weight
    check(function(g) return (blk(x) ^ 2):mean() end, { gain })
    local fw = r(1, 2, 3, 4)
    check(function(q) return (as.flash_attention(q, q, q) * fw):sum() end, { r(1, 2, 3, 4) })
  end)

  it("a two-layer network learns, updated under no_grad", function()
    as.manual_seed(0)
    local x, y = as.randn(64, 3), nil
    y = (x:narrow(2, 1, 1) * 2 - x:narrow(2, 2, 1)):tanh()
    local w1, w2 = (as.randn(3, 16) * 0.5):requires_grad_(), (as.randn(16, 1) * 0.5):requires_grad_()
    local first, last
    for step = 1, 300 do
      local loss = ((x:matmul(w1):tanh():matmul(w2) - y) ^ 2):mean()
      w1.grad, w2.grad = nil, nil
      loss:backward()
      as.no_grad(function()
        w1:copy_(w1 - w1.grad * 0.1)
        w2:copy_(w2 - w2.grad * 0.1)
      end)
      first = first or loss:item()
      last = loss:item()
    end
    assert.is_true(last < first / 10, string.format("loss %.4f -> %.4f", first, last))
  end)

  it("accumulates into .grad, frees the graph, and says what went wrong", function()
    local a = as.tensor { 1.0, 2.0, 3.0 }:requires_grad_()
    assert.is_true(a.requires_grad and a.is_leaf and a.grad == nil)
    local y = (a * a):sum()
    assert.are.equal("sum", y.grad_fn)
    assert.is_false(y.is_leaf)
    y:backward(nil, { retain_graph = true })
    y:backward()
    assert.are.same({ 4, 8, 12 }, a.grad:tolist())
    local ok, err = pcall(y.backward, y)
    assert.is_false(ok)
    assert.truthy(err:find("backward through the graph a second time", 1, true), err)
    ok, err = pcall(function() (a * 2):backward() end)
    assert.truthy(err:find("grad can be implicitly created only for scalar outputs", 1, true), err)
    ok, err = pcall(function() as.tensor { 1, 2 }:requires_grad_() end)
    assert.truthy(err:find("only floating-point tensors can require gradients, got int64", 1, true), err)
    -- an in-place change to a tensor saved for backward
    local b = as.tensor { 1.0, 2.0 }:requires_grad_()
    local c = b * 1
    local z = (c * c):sum()
    c:copy_(as.tensor { 5.0, 5.0 })
    ok, err = pcall(z.backward, z)
    assert.truthy(err:find("modified by an in-place operation", 1, true), err)
    -- in place on a leaf that requires grad
    ok, err = pcall(function() b:add_(1) end)
    if b.add_ then
      assert.is_false(ok)
      assert.truthy(err:find("a leaf tensor that requires grad is used in an in-place operation", 1, true), err)
    end
    -- (an op without a backward yet names itself: flash_attention above)
  end)

  it("copy_ carries the source's gradient, or refuses where it could not", function()
    -- into a fresh tensor: dst's history becomes src's, converted and broadcast
    local x = as.randn(3, 4):requires_grad_()
    local y = as.zeros(2, 3, 4, "float64")
    y:copy_(x * 2)
    assert.is_true(y.requires_grad)
    local s = (y * y):sum()
    s:backward()
    -- d/dx sum over 2 copies of (2x)^2 = 2 * 8x
    assert.is_true((x.grad - x:detach() * 16):abs():max():item() < 1e-5)
    -- dst's old values get no gradient: a copy of a constant ends the history
    local a = as.randn(3):requires_grad_()
    local h = a * 3
    h:copy_(as.ones(3))
    assert.is_false(h.requires_grad)
    -- t[i] = src with src needing a gradient: the view's base would miss it
    local buf = as.zeros(3, 4)
    local ok, err = pcall(function() buf[1] = x[1] * 1 end)
    assert.is_false(ok)
    assert.truthy(err:find("copy_: the destination shares its storage with another tensor", 1, true), err)
    ok, err = pcall(function() buf:narrow(1, 1, 2):copy_(x:narrow(1, 1, 2)) end)
    assert.is_false(ok)
    assert.truthy(err:find("copy_: the destination shares its storage", 1, true), err)
    -- a leaf that requires grad, written in place
    ok, err = pcall(function() x:copy_(buf) end)
    assert.truthy(err:find("copy_: a leaf tensor that requires grad is used in an in-place operation", 1, true), err)
    -- under no_grad every copy is a plain write
    as.no_grad(function() x:copy_(buf); buf[1] = x[1] end)
    assert.are.equal(0.0, x:abs():sum():item())
    -- a shape that does not broadcast is an error before anything is written
    ok, err = pcall(function() as.zeros(2, 2):copy_(x) end)
    assert.truthy(err:find("copy_: shapes (2, 2) and (3, 4) cannot be broadcast together", 1, true), err)
  end)

  it("records nothing under no_grad and for tensors that do not require grad", function()
    local a = as.randn(3):requires_grad_()
    local y = as.no_grad(function() return a * 2 end)
    assert.is_false(y.requires_grad)
    do
      local _ <close> = as.no_grad()
      assert.is_false(as.is_grad_enabled())
      assert.is_false((a + 1).requires_grad)
    end
    assert.is_true(as.is_grad_enabled())
    assert.is_false((as.randn(3) * 2).requires_grad)
    local d = (a * 2):detach()
    assert.is_false(d.requires_grad)
  end)
end)
