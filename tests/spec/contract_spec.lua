-- The bad-input contract, exhaustively: every tensor method and every `as`
-- function is called with many wrong argument lists.  Each call must either
-- work or raise a Lua error whose message is a string saying what was wrong;
-- none may crash the process (a crash ends this spec with no result).
local as = require "attnswap"

local function bad_values()
  local empty = as.zeros(0, 3)
  return {
    { "nil", nil }, { "string", "x" }, { "table", {} }, { "nested table", { { 1 }, { 2, 3 } } },
    { "function", print }, { "huge", 1e300 }, { "negative", -7 }, { "zero", 0 }, { "NaN", 0 / 0 },
    { "inf", math.huge }, { "maxinteger", math.maxinteger }, { "boolean", true },
    { "empty tensor", empty }, { "int tensor", as.tensor { 1, 2, 3 } }, { "bool tensor", as.tensor { true } },
    { "0-d tensor", as.tensor(2.5) }, { "4-d tensor", as.randn(1, 2, 3, 4) },
    { "bf16 tensor", as.randn(3, 3):bfloat16() }, { "transposed", as.randn(3, 4):t() },
    { "inf tensor", as.full({ 2, 2 }, math.huge) }, { "module", as.nn.ReLU() },
  }
end

-- functions that write files or change process-wide state are called with
-- safe arguments elsewhere (errors_spec, tensor_spec)
-- (checkpoint calls its first argument: print, given here, would only print;
-- its bad arguments are in the autograd case below)
local SKIP = { save = true, set_num_threads = true, manual_seed = true, help = true, checkpoint = true,
  save_checkpoint = true, set_rng_state = true } -- checkpoint_spec, optim_spec

local function check_call(name, f, args, n)
  local ok, err = pcall(f, table.unpack(args, 1, n))
  if not ok then
    assert(type(err) == "string", name .. ": error is a " .. type(err) .. ", not a message")
    assert(#err > 0, name .. ": empty error message")
  end
  return ok
end

describe("no call with bad arguments crashes", function()
  local values = bad_values()

  it("tensor methods", function()
    local calls, errors = 0, 0
    local receivers = { as.randn(3, 4), as.zeros(0), as.tensor { 1, 2 }, as.tensor(1.0) }
    for name, method in pairs(as.Tensor) do
      for _, self in ipairs(receivers) do
        for _, a in ipairs(values) do
          for _, b in ipairs { values[1], values[2], values[8], values[14] } do
            calls = calls + 1
            if not check_call(name, method, { self, a[2], b[2] }, 3) then errors = errors + 1 end
          end
        end
      end
    end
    print(string.format("\n  tensor methods: %d calls, %d raised clear errors", calls, errors))
    assert.is_true(calls > 1000)
  end)

  it("module functions", function()
    local calls, errors = 0, 0
    for name, f in pairs(as) do
      if type(f) == "function" and not SKIP[name] then
        for _, a in ipairs(values) do
          for _, b in ipairs(values) do
            calls = calls + 1
            if not check_call(name, f, { a[2], b[2] }, 2) then errors = errors + 1 end
          end
        end
      end
    end
    print(string.format("  module functions: %d calls, %d raised clear errors", calls, errors))
    assert.is_true(calls > 1000)
  end)

  it("every built-in layer constructor with wrong arguments", function()
    local calls = 0
    for name, cls in pairs(as.nn) do
      if type(cls) == "table" and rawget(cls, "__builtin") then
        for _, a in ipairs(values) do
          for _, b in ipairs { values[1], values[3], values[7], { "options", { bogus = 1 } } } do
            calls = calls + 1
            check_call("nn." .. name, cls, { a[2], b[2] }, 2)
            check_call("nn." .. name, cls, { 4, a[2], b[2] }, 3)
          end
        end
      end
    end
    assert.is_true(calls > 500)
  end)

  it("every registered attention with wrong inputs", function()
    local calls = 0
    local q = as.randn(1, 2, 5, 4)
    for _, name in ipairs(as.attention.names()) do
      local okc, core = pcall(as.attention.new, name, {})
      if okc then
        for _, a in ipairs(values) do
          calls = calls + 3
          check_call(name, core, { q, a[2], q }, 3)
          check_call(name, core, { a[2], q, q }, 3)
          check_call(name, core, { q, q, q, a[2] }, 4)
        end
      end
    end
    assert.is_true(calls > 100)
  end)

  it("NaN and Inf inputs give no silent garbage from exact attention", function()
    local q = as.randn(1, 1, 4, 8)
    local k = q:clone()
    k[1][1][2] = math.huge -- one key is +inf everywhere
    local out = as.attention.new("scaled_dot_product")(q, k, q)
    -- rows see inf - inf = NaN in softmax: the result is NaN, visibly, not a wrong finite number
    local v = out:tolist()[1][1][1][1]
    assert.is_true(v ~= v or math.abs(v) < math.huge)
  end)

  it("autograd: every as.autograd function with bad arguments, and backward's own errors", function()
    local calls = 0
    for name, f in pairs(as.autograd) do
      if type(f) == "function" then
        for _, a in ipairs(values) do
          if type(a[2]) ~= "function" then -- checkpoint(print, ...) would just print
            calls = calls + 1
            check_call(name, f, { a[2], values[13][2] }, 2)
          end
        end
      end
    end
    -- the calls above leave process-wide modes as they happen to end (as.no_grad(nil) turns
    -- gradients off until closed, in whatever order pairs visits as): set them
    as.autograd.detect_anomaly(false)
    as.core.set_grad_enabled(true)
    assert.is_true(calls > 40)
    local function msg(f, ...)
      local ok, err = pcall(f, ...)
      assert.is_false(ok)
      return err
    end
    local x = as.randn(3):requires_grad_()
    -- a non-scalar output without a gradient
    local e = msg(function() (x * 2):backward() end)
    assert.truthy(e:find("grad can be implicitly created only for scalar", 1, true), e)
    -- a gradient of the wrong shape
    assert.truthy(msg(function() (x * 2):backward(as.ones(4)) end):find("gradient of shape (4) does not match", 1, true))
    -- a second backward through a freed graph, also through a custom function and a checkpoint
    local F = as.autograd.Function { forward = function(ctx, t) ctx:save_for_backward(t) return t * 1 end,
      backward = function(ctx, g) return g * ctx.saved_tensors[1]:sign_like_one() end }
    for _, make in ipairs {
      function() return (x * x):sum() end,
      function() return as.checkpoint(function(t) return t * t end, x):sum() end,
    } do
      local y = make()
      y:backward()
      assert.truthy(msg(y.backward, y):find("backward through the graph a second time", 1, true))
    end
    -- a backward that calls a method that does not exist: the Lua error, named
    local y = F:apply(x):sum()
    assert.truthy(msg(y.backward, y):find("backward: Function:", 1, true))
    -- backward of something that needs no gradient
    assert.truthy(msg(function() as.randn(1):backward() end):find("does not require grad", 1, true))
  end)
end)
