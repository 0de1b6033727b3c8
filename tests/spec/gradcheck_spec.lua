-- as.gradcheck (issue 16, part B) on every op that has a backward, in
-- float64 with PyTorch's tolerances (eps 1e-6, atol 1e-5, rtol 1e-3): random
-- odd shapes, non-contiguous inputs, broadcasting, empty tensors; and
-- gradcheck itself must fail on a wrong gradient.
local as = require "attnswap"
local U = require "spec_util"

-- A float64 leaf that requires grad; non-contiguous (a transposed copy) when asked.
local function leaf(shape, noncontig, scale)
  local t
  if noncontig and #shape >= 2 then
    local s = { table.unpack(shape) }
    s[#s], s[#s - 1] = s[#s - 1], s[#s]
    t = as.randn(s, "float64"):transpose(-1, -2)
  else
    t = as.randn(shape, "float64")
  end
  if scale then t = t * scale end
  return t:detach():requires_grad_()
end

local function positive(shape, noncontig) return (leaf(shape, noncontig):detach():abs() + 0.5):requires_grad_() end

local gradcheck = as.gradcheck

describe("gradcheck", function()
  before_each(function() as.manual_seed(5) end)

  it("is exported as as.gradcheck and as.autograd.gradcheck", function()
    assert.are.equal("function", type(as.gradcheck))
    assert.are.equal(as.gradcheck, as.autograd.gradcheck)
  end)

  it("passes binary ops with broadcasting, non-contiguous and empty operands", function()
    local shapes = { { { 3, 5 }, { 3, 5 } }, { { 2, 1, 3 }, { 4, 1 } }, { { 5 }, { 2, 5 } }, { { 0, 3 }, { 3 } },
      { { 3, 2 }, {} } }
    for _, sh in ipairs(shapes) do
      for _, nc in ipairs { false, true } do
        local a, b = leaf(sh[1], nc), leaf(sh[2], nc)
        for _, op in ipairs { "add", "sub", "mul", "maximum", "minimum" } do
          assert.is_true(gradcheck(function(x, y) return x[op](x, y) end, { a, b }), op)
        end
        local pb = positive(sh[2], nc)
        assert.is_true(gradcheck(function(x, y) return x / y end, { a, pb }), "div")
        assert.is_true(gradcheck(function(x, y) return y:pow(x) end, { a, pb }), "pow")
      end
    end
    local x = leaf({ 3, 4 })
    assert.is_true(gradcheck(function(t) return (t * 3 - 2) / (t * t + 1) end, x), "scalars")
  end)

  it("passes each unary op, clamp and where", function()
    for _, shape in ipairs { { 3, 5 }, { 2, 3, 3 }, { 0, 2 } } do
      local x = leaf(shape, true)
      for _, op in ipairs { "neg", "abs", "exp", "tanh", "sigmoid", "relu", "silu", "sin", "cos", "gelu" } do
        assert.is_true(gradcheck(function(t) return t[op](t) end, x), op)
      end
      assert.is_true(gradcheck(function(t) return t:gelu("tanh") end, x), "gelu tanh")
      local p = positive(shape, true)
      for _, op in ipairs { "log", "sqrt", "rsqrt" } do
        assert.is_true(gradcheck(function(t) return t[op](t) end, p), op)
      end
      assert.is_true(gradcheck(function(t) return t:clamp(-0.5, 0.5) end, x), "clamp")
      assert.is_true(gradcheck(function(t) return t:clamp(nil, 0.2) * t end, x), "clamp max")
      local y = leaf(shape)
      local cond = as.rand(shape):lt(0.5)
      assert.is_true(gradcheck(function(a, b) return as.where(cond, a, b) * a end, { x, y }), "where")
      if shape[1] > 0 then
        assert.is_true(gradcheck(function(a) return as.where(cond:select(1, 1), a, 0) end, leaf({ shape[#shape] })),
          "where, broadcast")
      end
    end
  end)

  it("passes matmul: 2-d, batched, broadcast, 1-d, transposed, empty", function()
    for _, c in ipairs {
      { { 3, 5 }, { 5, 2 } }, { { 2, 3, 4 }, { 2, 4, 3 } }, { { 2, 1, 3, 4 }, { 3, 4, 2 } }, { { 2, 3, 4 }, { 4, 3 } },
      { { 4 }, { 4, 3 } }, { { 2, 3, 4 }, { 4 } }, { { 5 }, { 5 } }, { { 3, 0 }, { 0, 2 } }, { { 0, 3 }, { 3, 2 } },
    } do
      for _, nc in ipairs { false, true } do
        local a, b = leaf(c[1], nc), leaf(c[2], nc)
        assert.is_true(gradcheck(function(x, y) return x:matmul(y) end, { a, b }), table.concat(c[1], "x"))
      end
    end
    local x, w, b = leaf({ 2, 3, 5 }), leaf({ 4, 5 }), leaf({ 4 })
    assert.is_true(gradcheck(as.linear, { x, w, b }), "linear")
    -- the residual of the output's shape, and one broadcast along it (both through autograd's add)
    assert.is_true(gradcheck(as.linear_add, { x, w, b, leaf({ 2, 3, 4 }) }), "linear_add")
    assert.is_true(gradcheck(as.linear_add, { x, w, b, leaf({ 4 }) }), "linear_add, broadcast residual")
    assert.is_true(gradcheck(function(p, q) return p:matmul(q:t()) end, { leaf({ 3, 4 }), leaf({ 5, 4 }) }), "b^T")
  end)

  it("passes reductions, softmax, log_softmax and the norms with weights", function()
    local x = leaf({ 3, 4, 5 }, true)
    for dim = 1, 3 do
      assert.is_true(gradcheck(function(t) return t:sum(dim) end, x), "sum " .. dim)
      assert.is_true(gradcheck(function(t) return t:mean(dim, true) * t end, x), "mean keepdim " .. dim)
      assert.is_true(gradcheck(function(t) return t:softmax(dim) end, x), "softmax " .. dim)
      assert.is_true(gradcheck(function(t) return t:log_softmax(dim) end, x), "log_softmax " .. dim)
    end
    assert.is_true(gradcheck(function(t) return t:sum() end, x), "sum all")
    assert.is_true(gradcheck(function(t) return t:mean() end, x), "mean all")
    assert.is_true(gradcheck(function(t) return t:sum(2) end, leaf({ 3, 0 })), "sum of empty rows")
    local h, g, b = leaf({ 2, 3, 7 }, true), (leaf({ 7 }):detach() + 1):requires_grad_(), leaf({ 7 })
    assert.is_true(gradcheck(function(t, w, c) return as.layer_norm(t, w, c) end, { h, g, b }), "layer_norm")
    assert.is_true(gradcheck(function(t) return as.layer_norm(t) end, h), "layer_norm, no weights")
    assert.is_true(gradcheck(function(t, w) return as.rms_norm(t, w) end, { h, g }), "rms_norm")
    assert.is_true(gradcheck(function(t) return as.rms_norm(t) end, h), "rms_norm, no weight")
  end)

  it("passes cat, index_select, embedding, the views and to(dtype)", function()
    local a, b = leaf({ 2, 3 }), leaf({ 2, 4 }, true)
    assert.is_true(gradcheck(function(p, q) return as.cat({ p, q, p }, 2) end, { a, b }), "cat")
    assert.is_true(gradcheck(function(p) return as.cat({ p, as.zeros({ 0, 3 }, "float64") }, 1) end, a), "cat empty")
    local x = leaf({ 4, 5 }, true)
    local idx = as.tensor({ 3, 1, 3, 5 }, "int64") -- 1-based, a column twice
    assert.is_true(gradcheck(function(t) return t:index_select(2, idx) end, x), "index_select")
    local ids = as.tensor({ { 0, 3 }, { 3, 1 } }, "int64") -- 0-based, as torch
    assert.is_true(gradcheck(function(t) return as.embedding(t, ids) end, x), "embedding")
    local views = {
      reshape = function(t) return t:reshape(5, 4) end,
      permute = function(t) return t:unsqueeze(1):permute(3, 1, 2) end,
      transpose = function(t) return t:transpose(1, 2) end,
      narrow = function(t) return t:narrow(2, 2, 3) end,
      select = function(t) return t:select(1, 2) * t:select(1, 3) end,
      expand = function(t) return t:unsqueeze(1):expand(3, 4, 5) end,
      contiguous = function(t) return t:t():contiguous() end,
      flatten = function(t) return t:flatten() end,
    }
    for name, f in pairs(views) do assert.is_true(gradcheck(f, x), name) end
    -- to(dtype): the gradient goes back converted; a float32 input needs a
    -- larger step (eps 1e-6 is below its resolution)
    local w = as.randn({ 3, 4 }, "float64")
    local x32 = as.randn({ 3, 4 }):requires_grad_()
    assert.is_true(gradcheck(function(t) return t:to("float64") * w end, x32, { eps = 1e-2, atol = 1e-4, rtol = 1e-3 }))
    assert.is_true(gradcheck(function(t) return t:double():to("float64") * t end, x), "to float64")
  end)

  it("passes the backwards of the training issue: max/min, var/std, prod, tril/triu, masked_fill, many-way cat", function()
    -- distinct values (no ties: a tie's gradient is a choice, not a derivative)
    local x = (as.arange(1, 21):to("float64"):reshape(4, 5) * 0.37 + leaf({ 4, 5 }):detach() * 0.01):t()
    x = x:contiguous():t():detach():requires_grad_() -- non-contiguous
    for dim = 1, 2 do
      assert.is_true(gradcheck(function(t) return (t:max(dim)) end, x), "max " .. dim)
      assert.is_true(gradcheck(function(t) return (t:min(dim)) end, x), "min " .. dim)
      assert.is_true(gradcheck(function(t) return t:var(dim) end, x), "var " .. dim)
      assert.is_true(gradcheck(function(t) return t:prod(dim) end, x), "prod " .. dim)
    end
    assert.is_true(gradcheck(function(t) return t:max() end, x), "max all")
    assert.is_true(gradcheck(function(t) return t:min() end, x), "min all")
    assert.is_true(gradcheck(function(t) return t:std() end, x), "std")
    assert.is_true(gradcheck(function(t) return t:prod() end, x), "prod all")
    assert.is_true(gradcheck(function(t) return t:tril(-1) end, x), "tril")
    assert.is_true(gradcheck(function(t) return t:triu(1) end, x), "triu")
    local mask = as.tensor({ { true, false, true, false, true } }, "bool")
    assert.is_true(gradcheck(function(t) return t:masked_fill(mask, 2.5) end, x), "masked_fill, broadcast mask")
    local parts = {}
    assert.is_true(gradcheck(function(t)
      for i = 1, 6 do parts[i] = t * i end -- past a node's former 4 inputs
      return as.cat(parts, 1)
    end, x), "cat of 6")
  end)

  it("passes the layers and the materialising attention in float64", function()
    local lin = as.nn.Linear(5, 3):to("float64")
    assert.is_true(gradcheck(function(t, w) return as.linear(t, w, lin.bias) end, { leaf({ 2, 5 }), lin.weight }))
    local q, k, v = leaf({ 1, 2, 3, 4 }, true), leaf({ 1, 2, 5, 4 }), leaf({ 1, 2, 5, 3 })
    local sdp = as.attention.new("scaled_dot_product", { causal = true })
    assert.is_true(gradcheck(function(a, b, c) return sdp(a, b, c) end, { q, k, v }))
  end)

  it("fails on a wrong gradient, naming input, output, element and both values", function()
    local x = leaf({ 2, 3 })
    -- analytical: x (the detached factor gets none); numerical: 2x
    local msg = U.errmsg(gradcheck, function(t) return t * t:detach() end, x)
    assert.truthy(msg:find("gradcheck: Jacobian mismatch for output 1 with respect to input 1", 1, true), msg)
    local k, j, num, ana = msg:match("input element (%d+), output element (%d+).-numerical (%S+), analytical (%S+) ")
    assert.truthy(k, msg)
    assert.are.equal(k, j) -- the Jacobian is diagonal
    local xv = x:detach():reshape(6):tolist()[tonumber(k)]
    assert.is_true(math.abs(tonumber(num) - 2 * xv) < 1e-6, msg)
    assert.is_true(math.abs(tonumber(ana) - xv) < 1e-6, msg)
    assert.is_false(gradcheck(function(t) return t * t:detach() end, x, { raise = false }))
    -- the second input and the second output
    local y = leaf({ 3 })
    msg = U.errmsg(gradcheck, function(a, b) return a * b:detach() end, { x, y })
    assert.truthy(msg:find("with respect to input 2", 1, true), msg)
    msg = U.errmsg(gradcheck, function(a) return { a * 2, a:exp() * a:detach() } end, x)
    assert.truthy(msg:find("for output 2 with respect to input 1", 1, true), msg)
    -- non-tensor inputs pass through; inputs without requires_grad are not checked
    assert.is_true(gradcheck(function(a, s, c) return a * s + c end, { x, 2.5, as.randn({ 3 }, "float64") }))
    -- a float32 input: float32 rounding alone fails the float64 tolerances, and the message says so
    local x32 = as.randn({ 2, 3 }):requires_grad_()
    msg = U.errmsg(gradcheck, function(t) return t:exp() end, x32)
    assert.truthy(msg:find("input 1 is float32", 1, true), msg)
    -- restores the inputs' .grad
    x.grad = as.ones({ 2, 3 }, "float64")
    gradcheck(function(t) return t * 2 end, x)
    assert.are.same(as.ones({ 2, 3 }, "float64"):tolist(), x.grad:tolist())
  end)

  it("refuses bad arguments", function()
    local x = leaf({ 2 })
    assert.truthy(U.errmsg(gradcheck, 1, x):find("function expected", 1, true))
    assert.truthy(U.errmsg(gradcheck, function(t) return t end, 3):find("Tensor or list expected", 1, true))
    local plain = as.randn({ 2 }, "float64")
    assert.truthy(U.errmsg(gradcheck, function(t) return t end, plain):find("no input requires grad"))
    assert.truthy(U.errmsg(gradcheck, function(t) return t end, x, { epsilon = 1 }):find("unknown option 'epsilon'"))
    assert.truthy(U.errmsg(gradcheck, function() return 1 end, x):find("fn must return a Tensor", 1, true))
  end)
end)
