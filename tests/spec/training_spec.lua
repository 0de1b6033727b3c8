-- Training in Lua (the training issue, part B): as.F's losses against values
-- worked out by hand in Lua and their gradients against central differences;
-- SGD, Adam and AdamW against their update rules written out in Lua; parameter
-- groups, state_dict round trips, lr schedules, clip_grad_norm_, the module
-- helpers, a small network that learns, and the errors.
local as = require "attnswap"
local F, nn = as.F, as.nn

-- ---- helpers ----

local numgrad = require "numgrad" -- tests/spec/numgrad.lua
local numeric, check = numgrad.numeric, numgrad.check

local function near(want, got, tol, what)
  tol = tol or 1e-5
  local err = math.abs(want - got)
  assert.is_true(err <= tol * math.max(1, math.abs(want)),
    string.format("%s: want %.9g, got %.9g (error %.3g)", what or "value", want, got, err))
end

local function near_list(want, got, tol, what)
  assert.are.equal(#want, #got, what)
  for i = 1, #want do near(want[i], got[i], tol, (what or "element") .. " " .. i) end
end

local function errors(fn, text)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error containing: " .. text)
  assert.truthy(tostring(err):find(text, 1, true), "got: " .. tostring(err))
end

-- Cross entropy by hand: rows of logits, 0-based targets.
local function log_softmax_row(row)
  local m = -math.huge
  for _, v in ipairs(row) do m = math.max(m, v) end
  local s = 0
  for _, v in ipairs(row) do s = s + math.exp(v - m) end
  local lse = m + math.log(s)
  local out = {}
  for c, v in ipairs(row) do out[c] = v - lse end
  return out
end

-- {losses per row, sum of kept weights} as torch's cross_entropy defines them.
local function ce_by_hand(logits, target, o)
  o = o or {}
  local ignore = o.ignore_index or -100
  local eps = o.label_smoothing or 0
  local w = o.weight
  local losses, denom = {}, 0
  for i, row in ipairs(logits) do
    local lp = log_softmax_row(row)
    local C = #row
    local t = target[i]
    if t == ignore then
      losses[i] = 0
    else
      local wt = w and w[t + 1] or 1
      local nll = -wt * lp[t + 1]
      local smooth = 0
      for c = 1, C do smooth = smooth - (w and w[c] or 1) * lp[c] end
      losses[i] = (1 - eps) * nll + eps / C * smooth
      denom = denom + wt
    end
  end
  return losses, denom
end

local function sum(list)
  local s = 0
  for _, v in ipairs(list) do s = s + v end
  return s
end

local function r(...) return as.randn(...) * 0.5 end

describe("as.F losses", function()
  before_each(function() as.manual_seed(5) end)

  it("cross_entropy matches log-sum-exp by hand, in every reduction", function()
    local x = as.randn(5, 4) * 2
    local rows = x:tolist()
    local target = { 3, 0, 1, 1, 2 }
    local t = as.tensor(target)
    local losses = ce_by_hand(rows, target)
    near(sum(losses) / 5, F.cross_entropy(x, t):item(), 1e-5, "mean")
    near(sum(losses), F.cross_entropy(x, t, { reduction = "sum" }):item(), 1e-5, "sum")
    near_list(losses, F.cross_entropy(x, t, { reduction = "none" }):tolist(), 1e-5, "none")
    near(sum(losses), nn.CrossEntropyLoss { reduction = "sum" }(x, t):item(), 1e-5, "the module")
    -- nll_loss of log_softmax is the same thing
    near(sum(losses) / 5, F.nll_loss(F.log_softmax(x, 2), t):item(), 1e-5, "nll_loss")
    -- unbatched: (C) logits and a 0-d target
    near(losses[2], F.cross_entropy(x[2], as.tensor(0)):item(), 1e-5, "unbatched")
  end)

  it("cross_entropy with ignore_index, label_smoothing and class weights, as torch defines them", function()
    local x = as.randn(6, 5)
    local rows = x:tolist()
    local target = { 4, -100, 0, 2, -100, 1 }
    local t = as.tensor(target)
    local losses, denom = ce_by_hand(rows, target)
    assert.are.equal(4, denom)
    near(sum(losses) / 4, F.cross_entropy(x, t):item(), 1e-5, "mean over the kept targets")
    near_list(losses, F.cross_entropy(x, t, { reduction = "none" }):tolist(), 1e-5, "none: 0 where ignored")
    -- label smoothing: (1 - eps) nll + eps / C * sum_c -log p_c, masked, over the kept count
    local o = { label_smoothing = 0.2 }
    losses, denom = ce_by_hand(rows, target, o)
    near(sum(losses) / denom, F.cross_entropy(x, t, o):item(), 1e-5, "label_smoothing mean")
    near(sum(losses), F.cross_entropy(x, t, { label_smoothing = 0.2, reduction = "sum" }):item(), 1e-5, "smoothing sum")
    near_list(losses, F.cross_entropy(x, t, { label_smoothing = 0.2, reduction = "none" }):tolist(), 1e-5, "smoothing none")
    -- an ignore_index that is a class id (padding id 0)
    local target0 = { 4, 0, 0, 2, 3, 1 }
    losses, denom = ce_by_hand(rows, target0, { ignore_index = 0 })
    assert.are.equal(4, denom)
    near(sum(losses) / 4, F.cross_entropy(x, as.tensor(target0), { ignore_index = 0 }):item(), 1e-5, "ignore_index = 0")
    -- class weights: "mean" divides by the kept targets' summed weight
    local w = { 0.5, 2.0, 1.0, 0.25, 3.0 }
    o = { weight = as.tensor(w), label_smoothing = 0.1 }
    losses, denom = ce_by_hand(rows, target, { weight = w, label_smoothing = 0.1 })
    near(3.0 + 0.5 + 1.0 + 2.0, denom)
    near(sum(losses) / denom, F.cross_entropy(x, t, o):item(), 1e-5, "weighted mean")
    -- every target ignored: 0 / 0, as torch
    local all = F.cross_entropy(x, as.full({ 6 }, -100, "int64")):item()
    assert.is_true(all ~= all, "NaN expected, got " .. tostring(all))
  end)

  it("cross_entropy with class probabilities and with extra dims", function()
    local x = as.randn(3, 4)
    local p = as.rand(3, 4)
    p = p / p:sum(2, true)
    local rows, probs = x:tolist(), p:tolist()
    local want = 0
    for i = 1, 3 do
      local lp = log_softmax_row(rows[i])
      for c = 1, 4 do want = want - probs[i][c] * lp[c] end
    end
    near(want / 3, F.cross_entropy(x, p):item(), 1e-5, "probabilities")
    -- (N, C, L) logits with (N, L) targets: the class dim is 2
    local x3 = as.randn(2, 4, 3)
    local t3 = as.tensor { { 0, 3, 1 }, { 2, -100, 0 } }
    local flat_rows, flat_t = {}, {}
    for n = 1, 2 do
      for l = 1, 3 do
        flat_rows[#flat_rows + 1] = x3:select(1, n):select(2, l):tolist()
        flat_t[#flat_t + 1] = t3:tolist()[n][l]
      end
    end
    local losses, denom = ce_by_hand(flat_rows, flat_t)
    near(sum(losses) / denom, F.cross_entropy(x3, t3):item(), 1e-5, "(N, C, L)")
  end)

  it("cross_entropy's fused rows (class ids) equal log_softmax + nll_loss, values and gradients", function()
    local util = require "spec_util"
    local function both(x0, t, o)
      local xa, xb = x0:detach():clone():requires_grad_(), x0:detach():clone():requires_grad_()
      local fused = F.cross_entropy(xa, t, o)
      local cdim = x0:dim() >= 2 and 2 or 1
      local ref = F.nll_loss(xb:log_softmax(cdim), t, o)
      local g = as.randn(table.unpack(fused:shape())):to(fused:dtype())
      ;(fused * g):sum():backward()
      ;(ref * g):sum():backward()
      return fused, ref, xa.grad, xb.grad
    end
    for _, case in ipairs {
      { { 7, 2053 }, 7, {} }, -- odd class count, past one chunk
      { { 5, 3 }, 5, { reduction = "sum" } },
      { { 6, 11 }, 6, { reduction = "none", ignore_index = 2 } },
      { { 2, 9, 4 }, { 2, 4 }, {} }, -- (N, C, d1): classes moved last
      { { 1, 1 }, 1, {} },
    } do
      local x = as.randn(table.unpack(case[1])) * 3
      local tshape = type(case[2]) == "table" and case[2] or { case[2] }
      local C = case[1][2] or case[1][1]
      local ids, n = {}, 1
      for _, d in ipairs(tshape) do n = n * d end
      for i = 1, n do ids[i] = math.random(0, C - 1) end
      local t = as.tensor(ids):long():reshape(table.unpack(tshape))
      for _, dt in ipairs { "float32", "bfloat16" } do
        local xd = x:to(dt)
        local fused, ref, gf, gr = both(xd, t, case[3])
        local tol = dt == "float32" and 1e-5 or 2e-2
        assert.are.equal(ref:dtype(), fused:dtype())
        assert.are.same(ref:shape(), fused:shape())
        local dv = util.maxdiff(fused:float(), ref:float())
        assert.is_true(dv <= tol * math.max(1, ref:float():abs():max():item()), dt .. " value diff " .. dv)
        local dg = util.maxdiff(gf:float(), gr:float())
        assert.is_true(dg <= tol, dt .. " gradient diff " .. dg)
        assert.are.equal(dt, gf:dtype())
      end
    end
    -- a row whose target is ignored gets no gradient; every row ignored: mean is NaN, as torch's
    local x = as.randn(3, 5):requires_grad_()
    F.cross_entropy(x, as.tensor({ 1, -100, 4 }):long()):backward()
    assert.are.equal(0, x.grad[2]:abs():sum():item())
    local all = F.cross_entropy(as.randn(2, 3), as.full({ 2 }, -100, "int64")):item()
    assert.is_true(all ~= all)
    -- the op on its own: a clear error for a bad target and for bad shapes
    assert.has_error(function() as.core.cross_entropy_rows(as.randn(2, 3), as.tensor({ 0, 3 }):long()) end,
      "cross_entropy: a target is out of bounds (classes are 0 to 2, ignore_index is -100)")
    assert.has_error(function() as.core.cross_entropy_rows(as.randn(2, 3), as.tensor({ 0 }):long()) end,
      "cross_entropy_rows: expected (2) int64 class ids, one per row of the logits, got 1d int64 with 1 elements")
  end)

  it("mse_loss, l1_loss, kl_div and binary_cross_entropy_with_logits by hand", function()
    local a, b = as.randn(3, 4), as.randn(3, 4)
    local al, bl = a:reshape(12):tolist(), b:reshape(12):tolist()
    local sq, ab = 0, 0
    for i = 1, 12 do
      sq = sq + (al[i] - bl[i]) ^ 2
      ab = ab + math.abs(al[i] - bl[i])
    end
    near(sq / 12, F.mse_loss(a, b):item(), 1e-5, "mse mean")
    near(sq, nn.MSELoss { reduction = "sum" }(a, b):item(), 1e-5, "mse sum")
    near(ab / 12, F.l1_loss(a, b):item(), 1e-5, "l1")
    assert.are.same({ 3, 4 }, F.mse_loss(a, b, { reduction = "none" }):shape())
    -- kl_div(log q, p) = sum p (log p - log q); a zero in p contributes 0
    local logq = F.log_softmax(as.randn(2, 3), 2)
    local p = as.tensor { { 0.2, 0.8, 0.0 }, { 0.5, 0.25, 0.25 } }
    local ql, pl = logq:tolist(), p:tolist()
    local kl = 0
    for i = 1, 2 do
      for c = 1, 3 do
        if pl[i][c] > 0 then kl = kl + pl[i][c] * (math.log(pl[i][c]) - ql[i][c]) end
      end
    end
    near(kl / 2, F.kl_div(logq, p, { reduction = "batchmean" }):item(), 1e-5, "batchmean")
    near(kl / 6, F.kl_div(logq, p):item(), 1e-5, "mean")
    near(kl, F.kl_div(logq, p, { reduction = "sum" }):item(), 1e-5, "sum")
    local logp = as.tensor { { -1.0, -0.5, -3.0 } }
    local lp = logp:tolist()[1]
    local want = 0
    for c = 1, 3 do want = want + math.exp(lp[c]) * (lp[c] - ql[1][c]) end
    near(want, F.kl_div(logq:narrow(1, 1, 1), logp, { reduction = "sum", log_target = true }):item(), 1e-5, "log_target")
    -- binary cross entropy with logits
    local z = as.tensor { -30.0, -1.0, 0.0, 2.0, 40.0 }
    local y = as.tensor { 0.0, 1.0, 0.5, 1.0, 0.0 }
    local zl, yl = z:tolist(), y:tolist()
    local bce = 0
    for i = 1, 5 do
      local s = 1 / (1 + math.exp(-zl[i]))
      local l = -(yl[i] * math.log(math.max(s, 1e-300)) + (1 - yl[i]) * (zl[i] > 30 and -zl[i] or math.log(1 - s)))
      bce = bce + l
    end
    near(bce / 5, F.binary_cross_entropy_with_logits(z, y):item(), 1e-5, "bce")
  end)

  it("gradients against central differences", function()
    local t = as.tensor { 2, 0, -100, 1 }
    local w = as.tensor { 0.5, 2.0, 1.5 }
    check(function(x) return F.cross_entropy(x, t) end, { r(4, 3) })
    check(function(x) return F.cross_entropy(x, t, { label_smoothing = 0.3, weight = w }) end, { r(4, 3) })
    check(function(x) return (F.cross_entropy(x, t, { reduction = "none" }) * as.tensor { 1.0, 2.0, 3.0, -1.0 }):sum() end,
      { r(4, 3) })
    local t3 = as.tensor { { 0, 2 }, { 1, 1 } }
    check(function(x) return F.cross_entropy(x, t3, { reduction = "sum" }) end, { r(2, 3, 2) })
    -- a soft target gets a gradient too
    check(function(x, p) return F.cross_entropy(x, p) end, { r(3, 4), as.rand(3, 4) })
    check(function(x) return F.nll_loss(x:log_softmax(2), as.tensor { 2, 0, 1, 1 }, { ignore_index = 1 }) end, { r(4, 3) })
    check(function(a, b) return F.mse_loss(a, b) end, { r(3, 4), r(3, 4) })
    check(function(a, b) return F.kl_div(a:log_softmax(2), b:softmax(2), { reduction = "batchmean" }) end,
      { r(3, 4), r(3, 4) })
    check(function(a, b) return F.kl_div(a, b, { log_target = true, reduction = "sum" }) end, { r(3, 4), r(3, 4) })
    check(function(z) return F.binary_cross_entropy_with_logits(z, as.tensor { 0.0, 1.0, 0.3 }) end,
      { as.tensor { -1.5, 0.7, 2.0 } })
  end)

  it("says what is wrong with the arguments", function()
    local x, t = r(2, 3), as.tensor { 0, 2 }
    errors(function() F.cross_entropy(x, as.tensor { 0, 3 }) end, "cross_entropy: target 3 is out of bounds (at position 2; classes are 0 to 2")
    errors(function() F.cross_entropy(x, as.tensor { -1, 0 }) end, "target -1 is out of bounds")
    errors(function() F.nll_loss(x, as.tensor { 0, 7 }) end, "nll_loss: target 7 is out of bounds")
    errors(function() F.cross_entropy(x, as.tensor { 0, 1, 2 }) end, "target of shape (3) does not match input of shape (2, 3)")
    errors(function() F.cross_entropy(x, as.tensor { 0.0, 1.0 }) end, "must be shaped as the input (2, 3)")
    errors(function() F.cross_entropy(x, as.tensor { true, false }) end, "target must be int64 class ids")
    errors(function() F.cross_entropy(as.tensor { { 1, 2 } }, as.tensor { 0 }) end, "input must be a floating-point tensor, got int64")
    errors(function() F.cross_entropy(x, t, { reduction = "avg" }) end, 'reduction must be "mean", "sum" or "none", got "avg"')
    errors(function() F.cross_entropy(x, t, { label_smothing = 0.1 }) end, "did you mean 'label_smoothing'")
    errors(function() F.cross_entropy(x, t, { label_smoothing = 2 }) end, "label_smoothing must be a number in [0, 1]")
    errors(function() F.cross_entropy(x, t, { weight = as.ones(4) }) end, "weight of shape (4), expected (3)")
    errors(function() F.cross_entropy(x, "a") end, "bad argument #2 to 'cross_entropy' (Tensor target expected, got string)")
    errors(function() F.mse_loss(r(3, 1), r(3)) end, "input of shape (3, 1) and target of shape (3) differ")
    errors(function() F.kl_div(x, x, { reduction = "batch" }) end, '"batchmean", "mean", "sum" or "none"')
    errors(function() nn.CrossEntropyLoss { reduce = "sum" } end, "CrossEntropyLoss: unknown option 'reduce'")
  end)
end)

-- ---- optimizers ----

-- A tiny quadratic: f(p) = sum(a * p^2) + sum(b * p), grad = 2 a p + b.
local A = { 0.5, 2.0, 1.0, 3.0 }
local B = { 0.3, -1.0, 0.7, 0.0 }
local P0 = { 1.0, -0.5, 2.0, 0.25 }

local function quad_loss(p)
  return (p * p * as.tensor(A) + p * as.tensor(B)):sum()
end

local function quad_grad(p)
  local g = {}
  for i = 1, #p do g[i] = 2 * A[i] * p[i] + B[i] end
  return g
end

-- Runs n optimizer steps on the quadratic with autograd; returns the parameter's values.
local function run_opt(make, n)
  local p = as.tensor(P0):requires_grad_()
  local opt = make({ p })
  for _ = 1, n do
    opt:zero_grad()
    quad_loss(p):backward()
    opt:step()
  end
  return p:tolist(), opt, p
end

local function sgd_by_hand(n, o)
  local p = table.move(P0, 1, #P0, 1, {})
  local buf
  for _ = 1, n do
    local g = quad_grad(p)
    local d = {}
    for i = 1, #p do d[i] = g[i] + (o.weight_decay or 0) * p[i] end
    if (o.momentum or 0) ~= 0 then
      if not buf then
        buf = table.move(d, 1, #d, 1, {})
      else
        for i = 1, #p do buf[i] = o.momentum * buf[i] + (1 - (o.dampening or 0)) * d[i] end
      end
      for i = 1, #p do d[i] = o.nesterov and d[i] + o.momentum * buf[i] or buf[i] end
    end
    for i = 1, #p do p[i] = p[i] - o.lr * d[i] end
  end
  return p
end

local function adam_by_hand(n, o, decoupled)
  local p = table.move(P0, 1, #P0, 1, {})
  local b1, b2 = o.betas[1], o.betas[2]
  local m, v, vmax = {}, {}, {}
  for i = 1, #p do m[i], v[i], vmax[i] = 0, 0, 0 end
  for t = 1, n do
    local g = quad_grad(p)
    for i = 1, #p do
      if decoupled then
        p[i] = p[i] * (1 - o.lr * o.weight_decay)
      else
        g[i] = g[i] + o.weight_decay * p[i]
      end
      m[i] = b1 * m[i] + (1 - b1) * g[i]
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
      local vv = v[i]
      if o.amsgrad then
        vmax[i] = math.max(vmax[i], v[i])
        vv = vmax[i]
      end
      local denom = math.sqrt(vv) / math.sqrt(1 - b2 ^ t) + o.eps
      p[i] = p[i] - o.lr / (1 - b1 ^ t) * m[i] / denom
    end
  end
  return p
end

describe("as.optim", function()
  it("SGD follows torch.optim.SGD's rule (momentum, dampening, nesterov, weight decay)", function()
    for _, o in ipairs {
      { lr = 0.1 },
      { lr = 0.05, momentum = 0.9 },
      { lr = 0.05, momentum = 0.9, weight_decay = 0.1 },
      { lr = 0.05, momentum = 0.8, dampening = 0.3 },
      { lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 0.01 },
    } do
      local got = run_opt(function(ps) return as.optim.SGD(ps, o) end, 6)
      near_list(sgd_by_hand(6, o), got, 1e-6, "SGD " .. tostring(o.momentum) .. "/" .. tostring(o.nesterov))
    end
  end)

  it("AdamW and Adam follow torch.optim's rules (decoupled decay, bias corrections, amsgrad)", function()
    local o = { lr = 0.05, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 0.1 }
    near_list(adam_by_hand(8, o, true), run_opt(function(ps) return as.optim.AdamW(ps, o) end, 8), 1e-6, "AdamW")
    local o2 = { lr = 0.02, betas = { 0.8, 0.95 }, eps = 1e-6, weight_decay = 0.05 }
    near_list(adam_by_hand(8, o2, false), run_opt(function(ps) return as.optim.Adam(ps, o2) end, 8), 1e-6, "Adam")
    local o3 = { lr = 0.05, betas = { 0.9, 0.99 }, eps = 1e-8, weight_decay = 0.01, amsgrad = true }
    near_list(adam_by_hand(8, o3, true), run_opt(function(ps) return as.optim.AdamW(ps, o3) end, 8), 1e-6, "amsgrad")
    -- the defaults are torch's: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2
    local d = { lr = 1e-3, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 1e-2 }
    near_list(adam_by_hand(3, d, true), run_opt(function(ps) return as.optim.AdamW(ps) end, 3), 1e-6, "defaults")
    -- the first step moves every coordinate by about lr (the sign of the gradient)
    local _, opt = run_opt(function(ps) return as.optim.AdamW(ps, { lr = 0.1, weight_decay = 0 }) end, 1)
    assert.are.equal(1, opt.state[1][1].step)
  end)

  it("parameter groups, a parameter without a gradient, zero_grad, step(closure)", function()
    local a = as.tensor { 1.0, 2.0 }:requires_grad_()
    local b = as.tensor { 3.0 }:requires_grad_()
    local c = as.tensor { 5.0 }:requires_grad_()
    local opt = as.optim.SGD({ { params = { a } }, { params = { b, c }, lr = 0.5 } }, { lr = 0.1 })
    assert.are.equal(0.1, opt.param_groups[1].lr)
    assert.are.equal(0.5, opt.param_groups[2].lr)
    local loss = opt:step(function()
      opt:zero_grad()
      local l = (a * a):sum() + (b * b):sum()   -- c gets no gradient
      l:backward()
      return l
    end)
    near(14, loss:item())
    near_list({ 1 - 0.1 * 2, 2 - 0.1 * 4 }, a:tolist(), 1e-6, "group 1")
    near_list({ 3 - 0.5 * 6 }, b:tolist(), 1e-6, "group 2")
    assert.are.same({ 5.0 }, c:tolist())
    assert.is_not_nil(a.grad)
    opt:zero_grad()
    assert.is_nil(a.grad)
    assert.is_nil(b.grad)
    -- frozen parameters are skipped, as torch's (they have no .grad)
    local f = as.tensor { 1.0 }
    local opt2 = as.optim.AdamW({ f, c })
    assert.are.equal(2, #opt2.param_groups[1].params)
    opt2:add_param_group { params = { a }, lr = 0.3 }
    assert.are.equal(0.3, opt2.param_groups[2].lr)
    assert.are.equal(0.01, opt2.param_groups[2].weight_decay)
  end)

  it("state_dict and load_state_dict resume the same trajectory", function()
    local o = { lr = 0.05, weight_decay = 0.1 }
    local p = as.tensor(P0):requires_grad_()
    local opt = as.optim.AdamW({ p }, o)
    local function steps(pp, oo, n)
      for _ = 1, n do
        oo:zero_grad()
        quad_loss(pp):backward()
        oo:step()
      end
    end
    steps(p, opt, 3)
    local sd = opt:state_dict()
    local saved = p:detach():clone()
    assert.are.equal(3, sd.state[1].step)
    assert.are.same({ 1 }, sd.param_groups[1].params)
    assert.are.equal(0.05, sd.param_groups[1].lr)
    steps(p, opt, 4)
    local want = p:tolist()
    -- the state is a copy: the steps after state_dict() did not change it
    assert.are.equal(3, sd.state[1].step)
    local q = saved:clone():requires_grad_()
    local opt2 = as.optim.AdamW({ q }, { lr = 1.0 })
    opt2:load_state_dict(sd)
    assert.are.equal(0.05, opt2.param_groups[1].lr)
    steps(q, opt2, 4)
    near_list(want, q:tolist(), 1e-7, "resumed")
    -- SGD's momentum buffer round trip
    local s = as.tensor(P0):requires_grad_()
    local sgd = as.optim.SGD({ s }, { lr = 0.1, momentum = 0.9 })
    steps(s, sgd, 2)
    local sd2 = sgd:state_dict()
    assert.are.equal(true, as.is_tensor(sd2.state[1].momentum_buffer))
    errors(function() as.optim.AdamW({ q, s }):load_state_dict(sd) end, "saved parameter group 1 has 1 parameters, this optimizer's 2")
    local bad = as.tensor { 1.0, 2.0 }:requires_grad_()
    errors(function() as.optim.AdamW({ bad }):load_state_dict(sd) end, "exp_avg of parameter 1 in group 1 has shape (4), the parameter (2)")
  end)

  it("lr schedules set each group's lr", function()
    local p = as.tensor { 1.0 }:requires_grad_()
    local opt = as.optim.SGD({ { params = { p } }, { params = { as.tensor { 1.0 }:requires_grad_() }, lr = 1.0 } }, { lr = 0.1 })
    local sched = as.optim.lr_scheduler.LinearWarmupCosine(opt, { warmup_steps = 4, total_steps = 12 })
    local seen = {}
    for step = 0, 14 do
      seen[step] = opt.param_groups[1].lr
      near(opt.param_groups[1].lr * 10, opt.param_groups[2].lr, 1e-12, "group 2 at step " .. step)
      opt:step()
      sched:step()
    end
    near(0, seen[0]); near(0.025, seen[1]); near(0.1, seen[4])
    near(0.1 * 0.5 * (1 + math.cos(math.pi * 3 / 8)), seen[7], 1e-12, "cosine")
    near(0, seen[12], 1e-12); near(0, seen[14], 1e-12)
    assert.are.same({ seen[14], seen[14] * 10 }, sched:get_last_lr())
    -- resume a schedule from its state
    local sd = sched:state_dict()
    local sched2 = as.optim.lr_scheduler.LinearWarmupCosine(opt, { warmup_steps = 4, total_steps = 12, min_lr_ratio = 0.1 })
    near(0, opt.param_groups[1].lr, 1e-12, "step 0 of the warmup")
    sd.last_epoch = 6
    sched2:load_state_dict(sd)
    near(0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 2 / 8))), opt.param_groups[1].lr, 1e-12, "loaded")
    sched2:load_state_dict { last_epoch = 20, base_lrs = { 0.1, 1.0 } }
    near(0.1 * 0.1, opt.param_groups[1].lr, 1e-12, "min_lr_ratio floor, from initial_lr")
    near(1.0 * 0.1, opt.param_groups[2].lr, 1e-12, "min_lr_ratio floor, group 2")
    -- linear warmup then linear decay, and torch's LinearLR / CosineAnnealingLR / LambdaLR
    local function lrs(make, n)
      local q = as.tensor { 1.0 }:requires_grad_()
      local o = as.optim.SGD({ q }, { lr = 1.0 })
      local s = make(o)
      local out = {}
      for i = 1, n do
        out[i] = o.param_groups[1].lr
        s:step()
      end
      return out
    end
    near_list({ 0, 0.5, 1, 0.75, 0.5, 0.25, 0, 0 },
      lrs(function(o) return as.optim.lr_scheduler.LinearWarmupLinear(o, { warmup_steps = 2, total_steps = 6 }) end, 8), 1e-12, "linear")
    near_list({ 0.5, 0.625, 0.75, 0.875, 1.0, 1.0 },
      lrs(function(o) return as.optim.lr_scheduler.LinearLR(o, { start_factor = 0.5, total_iters = 4 }) end, 6), 1e-12, "LinearLR")
    near_list({ 1.0, 0.5 * (1 + math.cos(math.pi / 4)) * 0.9 + 0.1, 0.55 },
      lrs(function(o) return as.optim.lr_scheduler.CosineAnnealingLR(o, { T_max = 4, eta_min = 0.1 }) end, 3), 1e-12, "cosine annealing")
    near_list({ 1, 0.5, 0.25 },
      lrs(function(o) return as.optim.lr_scheduler.LambdaLR(o, function(s) return 0.5 ^ s end) end, 3), 1e-12, "LambdaLR")
    errors(function() as.optim.lr_scheduler.LinearWarmupCosine(opt, { warmup_steps = 4 }) end, "total_steps must be an integer >= 1, got nil")
    errors(function() as.optim.lr_scheduler.LinearWarmupCosine(opt, { warmup_step = 4, total_steps = 9 }) end, "did you mean 'warmup_steps'")
  end)

  it("clip_grad_norm_ returns the total norm and scales the gradients", function()
    local a = as.tensor { 3.0, 0.0 }:requires_grad_()
    local b = as.tensor { { 4.0, 12.0 } }:requires_grad_()
    local none = as.tensor { 1.0 }:requires_grad_()
    local function grads()
      a.grad, b.grad = nil, nil
      ((a * a):sum() * 0.5 + (b * b):sum() * 0.5):backward()   -- grads: a, b
    end
    grads()
    local n = nn.utils.clip_grad_norm_({ a, b, none }, 6.5)
    near(13, n, 1e-6, "total norm")
    local k = 6.5 / (13 + 1e-6)
    near_list({ 3 * k, 0 }, a.grad:tolist(), 1e-6, "a clipped")
    near_list({ 4 * k, 12 * k }, b.grad:tolist()[1], 1e-6, "b clipped")
    grads()
    near(13, as.optim.clip_grad_norm_({ a, b }, 100), 1e-6)
    near_list({ 3, 0 }, a.grad:tolist(), 0, "not clipped below max_norm")
    near(12, nn.utils.clip_grad_norm_({ a, b }, 100, math.huge), 1e-6, "inf norm")
    near(19, nn.utils.clip_grad_norm_({ a, b }, 100, 1), 1e-6, "1-norm")
    nn.utils.clip_grad_value_({ a, b }, 3.5)
    near_list({ 3.5, 3.5 }, b.grad:tolist()[1], 1e-6, "clip_grad_value_")
    assert.are.equal(0.0, nn.utils.clip_grad_norm_({ none }, 1.0))
    a.grad = as.tensor { math.huge, 0.0 }
    errors(function() nn.utils.clip_grad_norm_({ a }, 1.0, 2, true) end, "is non-finite")
  end)

  it("clip_grad_norm_'s multi-tensor sweeps equal the per-tensor sums, over many tensors and dtypes", function()
    local ts, want = {}, 0
    for i = 1, 70 do -- more than one launch's worth on CUDA (48 a launch)
      local t = as.randn(i % 7 == 0 and 5000 or (i * 13) % 97 + 1)
      if i % 3 == 0 then t = t:to("bfloat16") elseif i % 5 == 0 then t = t:to("float16") end
      ts[i] = t
      want = want + (t:float() * t:float()):sum():item()
    end
    ts[#ts + 1] = as.zeros(0) -- empty
    local got = as.core.sum_squares(ts)
    assert.are.equal(0, got:dim())
    near(want, got:item(), 1e-5 * want, "sum of squares")
    local before = {}
    for i, t in ipairs(ts) do before[i] = t:float():clone() end
    as.core.scale_all_(ts, 0.25)
    for i, t in ipairs(ts) do
      if t:numel() == 0 then goto next end
      local tol = t:dtype() == "float32" and 0 or 4e-3
      assert.is_true((t:float() - before[i] * 0.25):abs():max():item() <= tol * math.max(1, before[i]:abs():max():item()))
      ::next::
    end
    near(0, as.core.sum_squares({}):item(), 0, "no tensors")
    -- clip_grad_norm_ takes the sweeps for contiguous gradients and the per-tensor path for the rest
    local a = as.tensor { { 3.0, 1.0 }, { 4.0, 2.0 } }:requires_grad_()
    local b = as.tensor { 12.0 }:requires_grad_()
    a.grad = as.tensor { { 3.0, 1.0 }, { 4.0, 2.0 } }:t() -- not contiguous
    b.grad = as.tensor { 12.0 }
    near(math.sqrt(9 + 1 + 16 + 4 + 144), nn.utils.clip_grad_norm_({ a, b }, 1.0), 1e-5, "mixed norm")
    near(1.0, math.sqrt((a.grad * a.grad):sum():item() + (b.grad * b.grad):sum():item()), 1e-5, "clipped to 1")
    -- bad lists: a clear error
    errors(function() as.core.sum_squares({ as.randn(2), 3 }) end, "sum_squares: element 2 of the list is a number, expected a Tensor")
    errors(function() as.core.sum_squares({ as.randn(2), as.tensor({ 1, 2 }):long() }) end,
      "sum_squares: tensor 2 is int64; expected a float dtype")
    errors(function() as.core.scale_all_({ as.randn(2, 3):t() }, 2) end, "scale_all_: tensor 1 is not contiguous")
  end)

  it("says what is wrong with an optimizer's arguments", function()
    local p = as.randn(3):requires_grad_()
    errors(function() as.optim.SGD({}) end, "SGD: got an empty parameter list")
    errors(function() as.optim.AdamW(nn.Linear(2, 2)) end, "AdamW: got a Module; pass model:parameters()")
    errors(function() as.optim.AdamW({ p * 2 }) end, "can't optimize a non-leaf tensor (parameter 1, made by mul)")
    -- torch accepts parameters that do not require grad; a step over none that does is the mistake
    local frozen = as.optim.AdamW({ as.randn(3) })
    errors(function() frozen:step() end, "AdamW: none of the 1 parameters requires grad")
    errors(function() as.optim.AdamW(nn.Linear(2, 2):parameters()):step() end, "none of the 2 parameters requires grad")
    errors(function() as.optim.AdamW({ p, 3 }) end, "parameter 2 is a number, expected a Tensor")
    errors(function() as.optim.AdamW({ { params = { p } }, { params = { as.tensor { 1 } } } }) end,
      "parameter 1 of parameter group 2 is int64")
    errors(function() as.optim.SGD({ p }, { lr = -1 }) end, "SGD: invalid lr: -1")
    errors(function() as.optim.SGD({ p }, { lr = 0.1, nesterov = true }) end, "nesterov momentum requires a momentum > 0")
    errors(function() as.optim.AdamW({ p }, { betas = { 0.9, 1.5 } }) end, "invalid beta parameter at index 2: 1.5")
    errors(function() as.optim.AdamW({ p }, { beta1 = 0.9 }) end, "AdamW: unknown option 'beta1'")
    errors(function() as.optim.AdamW({ p }, { lr = 0.1, momentum = 0.9 }) end, "unknown option 'momentum'")
    errors(function() as.optim.SGD({ { params = { p }, lr = 0.1, betas = 1 } }) end, "SGD (parameter group): unknown option 'betas'")
  end)
end)

describe("module helpers and a network that learns", function()
  it("Module:requires_grad_ and Module:zero_grad", function()
    local m = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))
    for _, p in ipairs(m:parameters()) do assert.is_false(p.requires_grad) end
    assert.are.equal(m, m:requires_grad_())
    for _, p in ipairs(m:parameters()) do assert.is_true(p.requires_grad) end
    m(as.randn(5, 3)):sum():backward()
    for path, p in m:named_parameters() do assert.is_not_nil(p.grad, path) end
    m:zero_grad(false)
    assert.are.equal(0.0, m[1].weight.grad:abs():sum():item())
    m:zero_grad()
    for path, p in m:named_parameters() do assert.is_nil(p.grad, path) end
    -- freeze the first layer: it gets no gradient, the optimizer leaves it alone
    m[1]:requires_grad_(false)
    assert.is_false(m[1].weight.requires_grad)
    assert.is_true(m[3].weight.requires_grad)
    local before = m[1].weight:clone()
    local opt = as.optim.AdamW(m:parameters(), { lr = 0.1 })
    m(as.randn(5, 3)):sum():backward()
    opt:step()
    assert.is_nil(m[1].weight.grad)
    assert.are.equal(0.0, (m[1].weight - before):abs():max():item())
    errors(function() m:requires_grad_("yes") end, "bad argument #1 to 'requires_grad_' (boolean expected, got string)")
  end)

  it("a Linear-GELU-Linear regression trained with AdamW and a schedule: the loss falls well", function()
    as.manual_seed(1)
    local x = as.randn(128, 4)
    local y = (x:narrow(2, 1, 1) * 1.5 - x:narrow(2, 2, 1) * x:narrow(2, 3, 1)):tanh() + x:narrow(2, 4, 1) * 0.3
    local model = nn.Sequential(nn.Linear(4, 32), nn.GELU(), nn.Linear(32, 1)):requires_grad_()
    local opt = as.optim.AdamW(model:parameters(), { lr = 2e-2, weight_decay = 1e-4 })
    local sched = as.optim.lr_scheduler.LinearWarmupCosine(opt, { warmup_steps = 10, total_steps = 300 })
    local crit = nn.MSELoss()
    local first, last
    for _ = 1, 300 do
      opt:zero_grad()
      local loss = crit(model(x), y)
      loss:backward()
      nn.utils.clip_grad_norm_(model:parameters(), 1.0)
      opt:step()
      sched:step()
      first = first or loss:item()
      last = loss:item()
    end
    assert.is_true(last < first / 20, string.format("loss %.4f -> %.4f", first, last))
  end)

  it("a classifier trained with cross_entropy: the loss falls and the accuracy rises", function()
    as.manual_seed(2)
    local n, C = 96, 3
    local x = as.randn(n, 2)
    -- three classes by angle sector
    local labels = {}
    for i, row in ipairs(x:tolist()) do
      local a = math.atan(row[2], row[1]) + math.pi
      labels[i] = math.min(C - 1, math.floor(a / (2 * math.pi / C)))
    end
    local t = as.tensor(labels)
    local model = nn.Sequential(nn.Linear(2, 32), nn.GELU(), nn.Linear(32, C)):requires_grad_()
    local opt = as.optim.AdamW(model:parameters(), { lr = 3e-2 })
    local crit = nn.CrossEntropyLoss { label_smoothing = 0.05 }
    local first, last
    for _ = 1, 200 do
      opt:zero_grad()
      local loss = crit(model(x), t)
      loss:backward()
      opt:step()
      first = first or loss:item()
      last = loss:item()
    end
    assert.is_true(last < first / 3, string.format("loss %.4f -> %.4f", first, last))
    local pred = as.no_grad(function() return model(x):argmax(2) end)
    -- argmax gives 1-based class positions
    local correct = (pred - 1):eq(t):sum():item()
    assert.is_true(correct >= 0.9 * n, string.format("accuracy %d/%d", correct, n))
  end)
end)
