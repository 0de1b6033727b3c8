-- The fused optimizer steps (core.sgd_step / core.adamw_step) against the
-- same updates written with tensor ops in Lua (each class's
-- reference_update), on odd shapes and every option; float32 master weights
-- for bfloat16 / float16 parameters; parameter groups; state_dict round trips
-- that resume bit for bit; zero_grad; no allocation per step; the errors.
local as = require "attnswap"
local U = require "spec_util"
local core = require "attnswap.core"
local adam = require "attnswap.optim.adamw"

-- n steps of opt over params with gradients drawn from a fixed seed; the
-- parameters' values after each step, as flat lists.
local function run(params, opt, n, seed)
  as.manual_seed(seed or 7)
  for _ = 1, n do
    for _, p in ipairs(params) do p.grad = as.randn(p:shape()):to(p:dtype()) end
    opt:step()
  end
end

local function copies(params)
  local out = {}
  for i, p in ipairs(params) do out[i] = p:detach():clone():requires_grad_() end
  return out
end

-- The same optimizer, its update replaced by the tensor-op reference.
local function reference(opt, ref)
  opt.update = function(_, g, p, grad, st) return ref(g, p, grad, st) end
  return opt
end

local function shapes() return { { 7, 13 }, { 1 }, { 3, 1, 5 }, { 129 } } end

local function fresh()
  as.manual_seed(1)
  local ps = {}
  for i, s in ipairs(shapes()) do ps[i] = as.randn(s):requires_grad_() end
  return ps
end

local function rel(a, b) return U.maxdiff(a, b) / (1 + b:abs():max():item()) end

describe("fused optimizer steps", function()
  it("AdamW and Adam match the tensor-op formula (every option, odd shapes)", function()
    for _, case in ipairs {
      { "AdamW", { lr = 1e-2 } },
      { "AdamW", { lr = 1e-2, weight_decay = 0.1, amsgrad = true } },
      { "AdamW", { lr = 3e-3, betas = { 0.3, 0.5 }, eps = 1e-3, maximize = true } },
      { "Adam", { lr = 1e-2, weight_decay = 0.05 } },
      { "Adam", { lr = 1e-2, amsgrad = true } },
    } do
      local name, o = case[1], case[2]
      local a, b = fresh(), nil
      b = copies(a)
      local fused = as.optim[name](a, o)
      local decoupled = name == "AdamW"
      local ref = reference(as.optim[name](b, o), function(g, p, grad, st)
        return adam.reference_update(decoupled, g, p, grad, st)
      end)
      run(a, fused, 6)
      run(b, ref, 6)
      for i = 1, #a do
        local e = rel(a[i], b[i])
        assert.is_true(e < 1e-6, string.format("%s %d: rel err %g", name, i, e))
        local sf, sr = fused.state[1][i], ref.state[1][i]
        assert.are.equal(6, sf.step)
        assert.is_true(rel(sf.exp_avg, sr.exp_avg) < 1e-6)
        assert.is_true(rel(sf.exp_avg_sq, sr.exp_avg_sq) < 1e-6)
        if o.amsgrad then assert.is_true(rel(sf.max_exp_avg_sq, sr.max_exp_avg_sq) < 1e-6) end
      end
    end
  end)

  it("SGD matches the tensor-op formula (momentum, dampening, nesterov, weight decay, maximize)", function()
    for _, o in ipairs {
      { lr = 0.1 },
      { lr = 0.05, momentum = 0.9 },
      { lr = 0.05, momentum = 0.8, dampening = 0.3, weight_decay = 0.1 },
      { lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 0.01, maximize = true },
    } do
      local a = fresh()
      local b = copies(a)
      local fused = as.optim.SGD(a, o)
      local ref = reference(as.optim.SGD(b, o), as.optim.SGD.reference_update)
      run(a, fused, 5)
      run(b, ref, 5)
      for i = 1, #a do
        assert.is_true(rel(a[i], b[i]) < 1e-6, "SGD momentum " .. tostring(o.momentum) .. " param " .. i)
      end
    end
  end)

  it("bfloat16 and float16 parameters keep a float32 master copy", function()
    for _, dt in ipairs { "bfloat16", "float16" } do
      as.manual_seed(3)
      local p = as.randn(9, 11):to(dt):requires_grad_()
      local ref = p:detach():float():requires_grad_() -- the float32 run from the same values
      local o = { lr = 1e-4, weight_decay = 0 }
      local opt, opt32 = as.optim.AdamW({ p }, o), as.optim.AdamW({ ref }, o)
      for _ = 1, 5 do
        local g = as.randn(9, 11):to(dt)
        p.grad, ref.grad = g, g:float()
        opt:step()
        opt32:step()
      end
      local st = opt.state[1][1]
      assert.are.equal("float32", st.master_param:dtype())
      assert.are.equal("float32", st.exp_avg:dtype())
      assert.are.equal(0, U.maxdiff(st.master_param, ref), dt .. ": master follows the float32 run")
      assert.are.equal(0, U.maxdiff(st.master_param:to(dt), p), dt .. ": the parameter is its rounding")
      assert.are.equal(dt, p:dtype())
    end
    -- a parameter written between steps (a checkpoint loaded into the model) refreshes its master
    local q = as.randn(6):bfloat16():requires_grad_()
    local oq = as.optim.AdamW({ q }, { lr = 1e-3, weight_decay = 0 })
    q.grad = as.ones(6):bfloat16()
    oq:step()
    as.no_grad(function() q:fill_(4) end)
    oq:step()
    assert.are.equal(0, U.maxdiff(oq.state[1][1].master_param:bfloat16(), q))
    assert.is_true(U.maxdiff(q, as.full({ 6 }, 4)) < 0.05, "the step started from the written values")
    -- and a state_dict round trip keeps the master (bf16 resumes bit for bit)
    local a = as.randn(9):bfloat16():requires_grad_()
    local b = a:detach():clone():requires_grad_()
    local oa, ob = as.optim.AdamW({ a }, { lr = 1e-4 }), as.optim.AdamW({ b }, { lr = 1e-4 })
    run({ a }, oa, 3, 5)
    run({ b }, ob, 3, 5)
    local sd = oa:state_dict()
    run({ a }, oa, 3, 6)
    local ob2 = as.optim.AdamW({ b }, { lr = 1.0 })
    ob2:load_state_dict(sd)
    run({ b }, ob2, 3, 6)
    assert.are.equal(0, U.maxdiff(a, b))
    assert.are.equal(0, U.maxdiff(oa.state[1][1].master_param, ob2.state[1][1].master_param))
    -- SGD too
    local p = as.randn(5):bfloat16():requires_grad_()
    local opt = as.optim.SGD({ p }, { lr = 1e-3, momentum = 0.9 })
    p.grad = as.ones(5):bfloat16()
    opt:step()
    assert.are.equal("float32", opt.state[1][1].master_param:dtype())
    assert.are.equal(0, U.maxdiff(opt.state[1][1].master_param:bfloat16(), p))
  end)

  it("follows torch.optim's own trajectories (tests/fixtures/make_optim_fixtures.py)", function()
    local t, meta = as.load(U.fixtures .. "optim/optim.safetensors")
    local cases = as.json_decode(meta.cases)
    local n = 0
    for name, case in pairs(cases) do
      n = n + 1
      local p = t[name .. ".p0"]:clone():requires_grad_()
      local opt = as.optim[case.class]({ p }, case.options)
      local worst = 0
      for step = 1, 5 do
        p.grad = t[name .. ".g" .. step]
        opt:step()
        worst = math.max(worst, rel(p, t[name .. ".p" .. step]))
      end
      assert.is_true(worst < 5e-7, string.format("%s: parameter rel err %g against torch", name, worst))
      for _, key in ipairs { "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer" } do
        local want = t[name .. "." .. key]
        if want then
          local e = rel(opt.state[1][1][key], want)
          assert.is_true(e < 5e-7, string.format("%s: %s rel err %g against torch", name, key, e))
        end
      end
    end
    assert.are.equal(8, n)
  end)

  it("parameter groups take their own options", function()
    local a, c = fresh(), nil
    c = copies(a)
    local groups = { { params = { a[1], a[2] }, lr = 0.1 }, { params = { a[3], a[4] }, weight_decay = 0.5 } }
    local opt = as.optim.AdamW(groups, { lr = 0.01 })
    local ref = reference(as.optim.AdamW({ { params = { c[1], c[2] }, lr = 0.1 }, { params = { c[3], c[4] }, weight_decay = 0.5 } },
      { lr = 0.01 }), function(g, p, grad, st) return adam.reference_update(true, g, p, grad, st) end)
    run(a, opt, 3)
    run(c, ref, 3)
    for i = 1, 4 do assert.is_true(rel(a[i], c[i]) < 1e-6, "param " .. i) end
    assert.are.equal(0.1, opt.param_groups[1].lr)
    assert.are.equal(0.5, opt.param_groups[2].weight_decay)
    assert.are.equal(0.01, opt.param_groups[2].lr)
  end)

  it("state_dict has PyTorch's layout and a round trip resumes bit for bit", function()
    for _, make in ipairs {
      function(ps) return as.optim.AdamW({ { params = { ps[1], ps[2] } }, { params = { ps[3], ps[4] }, lr = 0.1 } },
        { lr = 0.01, amsgrad = true }) end,
      function(ps) return as.optim.SGD(ps, { lr = 0.05, momentum = 0.9, nesterov = true }) end,
    } do
      local a = fresh()
      local opt = make(a)
      run(a, opt, 3, 11)
      local sd = opt:state_dict()
      local saved = copies(a)
      run(a, opt, 4, 12)
      -- the layout: state by parameter index, groups with their options and indices
      assert.are.same({ 1, 2, 3, 4 }, #sd.param_groups == 2 and { sd.param_groups[1].params[1], sd.param_groups[1].params[2],
        sd.param_groups[2].params[1], sd.param_groups[2].params[2] } or sd.param_groups[1].params)
      assert.is_truthy(sd.state[4])
      local b = saved
      local opt2 = make(b)
      opt2:load_state_dict(sd)
      run(b, opt2, 4, 12)
      for i = 1, 4 do assert.are.equal(0, U.maxdiff(a[i], b[i]), "param " .. i .. " resumed") end
    end
  end)

  it("zero_grad sets grads to nil by default, or zeroes them", function()
    local p = as.randn(3):requires_grad_()
    local opt = as.optim.SGD({ p }, { lr = 0.1 })
    p.grad = as.ones(3)
    opt:zero_grad()
    assert.is_nil(p.grad)
    p.grad = as.ones(3)
    opt:zero_grad(false)
    assert.are.same({ 0, 0, 0 }, p.grad:tolist())
  end)

  it("a step allocates no tensor memory after the first", function()
    local ps = fresh()
    for _, p in ipairs(ps) do p.grad = as.randn(p:shape()) end
    local opt = as.optim.AdamW(ps, { amsgrad = true })
    local sgd = as.optim.SGD(copies(ps), { momentum = 0.9 })
    for _, p in ipairs(sgd.param_groups[1].params) do p.grad = as.randn(p:shape()) end
    opt:step()
    sgd:step()
    collectgarbage()
    local before = core.memory_stats().allocated
    core.reset_peak_memory()
    for _ = 1, 10 do
      opt:step()
      sgd:step()
    end
    assert.are.equal(before, core.memory_stats().peak)
  end)

  it("says what is wrong", function()
    local p = as.randn(3):requires_grad_()
    local function has(fn, text)
      local e = U.errmsg(fn)
      assert.is_truthy(e:find(text, 1, true), e)
    end
    has(function() as.optim.AdamW({}) end, "AdamW: got an empty parameter list")
    has(function() as.optim.SGD({ p * 2 }) end, "can't optimize a non-leaf tensor")
    has(function() as.optim.SGD({ as.tensor { 1, 2 } }) end, "only floating-point tensors can be optimized")
    -- a parameter that does not require grad is accepted (as torch), and skipped
    local q = as.randn(2)
    local opt = as.optim.AdamW({ p, q })
    p.grad = as.ones(3)
    opt:step()
    assert.is_nil(opt.state[1][2])
    -- a non-contiguous parameter is refused by the fused step, naming it
    local t = as.randn(3, 4):t():requires_grad_()
    local o2 = as.optim.AdamW({ t })
    t.grad = as.ones(4, 3)
    has(function() o2:step() end, "adamw_step: the parameter (4, 3) is not contiguous")
    -- load_state_dict of another shape, leaving the optimizer as it was
    local sd = opt:state_dict()
    local other = as.optim.AdamW({ as.randn(5):requires_grad_(), as.randn(2):requires_grad_() })
    has(function() other:load_state_dict(sd) end, "exp_avg of parameter 1 in group 1 has shape (3), the parameter (5)")
    assert.are.same({}, other.state[1])
    has(function() as.optim.AdamW({ p }):load_state_dict(sd) end, "saved parameter group 1 has 2 parameters, this optimizer's 1")
    has(function() as.optim.AdamW({ { params = { p } }, { params = { q } } }):load_state_dict(sd) end,
      "the saved state has 1 parameter groups, this optimizer 2")
    has(function() opt:load_state_dict({}) end, "load_state_dict expects a table from state_dict()")
    local sd2 = opt:state_dict()
    sd2.param_groups[1].betas = { 0.9, 1.5 }
    has(function() opt:load_state_dict(sd2) end, "load_state_dict: group 1: invalid beta parameter at index 2: 1.5")
    sd2.param_groups[1].betas = { 0.9, 0.999 }
    sd2.param_groups[1].lr = "fast"
    has(function() opt:load_state_dict(sd2) end, "option lr of group 1 is a string, expected a number")
    sd2.param_groups[1].lr = 1e-3
    sd2.state[1].step = 1.5
    has(function() opt:load_state_dict(sd2) end, "step of parameter 1 in group 1 is 1.5, expected an integer")
    assert.are.equal(1, opt.state[1][1].step) -- unchanged by the failed loads
  end)
end)
