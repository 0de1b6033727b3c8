-- Every registered attention is differentiable (issue 17, "every other
-- implementation"): its tensor-op composite (attention/ops_path.lua) is the
-- definition whenever a gradient is needed, and the fused CPU kernel an
-- inference-only fast path.  Iterates over as.attention.names(), so a new
-- registration is checked with its defaults (num_heads / head_dim filled
-- in) unless CASES below gives it options.
--
-- The gradient of q, k, v and of the core's own parameters is checked
-- against central differences.  The numeric side runs under no_grad, that
-- is through the fused kernel; the analytic side through the composite, so
-- each check also ties the composite's backward to the fused forward.
local as = require "attnswap"
local core = require "attnswap.core"
local P = require "attnswap.attention.ops_path"
local numgrad = require "numgrad"
local U = require "spec_util"

-- float32 central differences (numgrad.numeric) with a step of 1e-3: the
-- zoo is piecewise smooth (entmax's support, top-k's selection, the span's
-- ramp), and numgrad.check's 1e-2 steps across its kinks.  Relative
-- tolerance 2e-2 of max(|numeric|, 1); a wrong gradient fails it (see "the
-- check can fail" below: 5% off fails).  float32 rounding costs ~1e-4 here.
local function central(fn, inputs)
  for _, x in ipairs(inputs) do
    x.grad = nil
    x:requires_grad_()
  end
  fn(table.unpack(inputs)):backward()
  for i, x in ipairs(inputs) do
    local want = numgrad.numeric(fn, inputs, i, 1e-3)
    assert(x.grad ~= nil, "no gradient for input " .. i)
    local err = (x.grad - want):abs():max():item()
    local scale = math.max(want:abs():max():item(), 1)
    assert(err <= 2e-2 * scale, string.format("input %d: max error %.3g (scale %.3g)", i, err, scale))
  end
end
-- Every implementation is checked in float64 with as.gradcheck (PyTorch's
-- tolerances: eps 1e-6, atol 1e-5, rtol 1e-3): float64 takes the composite
-- on both sides, every op in float64.  Two take only float32 and the halves,
-- and are checked with the float32 central differences above instead.
local FLOAT32_ONLY = {
  flash_attention = "the fused exact kernel takes float32 and the halves (the sdp math path takes float64)",
  flex_attention = "its score_mod / mask_mod tiles run in float32",
}
local function check(name, fn, inputs)
  if FLOAT32_ONLY[name] then return central(fn, inputs) end
  return as.gradcheck(fn, inputs)
end

local H, D, DV = 2, 4, 5

-- Implementations not covered here, and why.
local SKIP = {
  ring_attention = "splits the sequence across MPI ranks: tests/dist checks it against flash",
}

-- Options per implementation: each case is {opts, Lq = , Lk = , Dv = , Hkv = (GQA),
-- params = fn(core)}.
-- Small windows, spans and landmarks so that the approximation is not exact.
local CASES = {
  local_attention = { { { window_size = 2 } }, { { window_size = 2, causal = true }, Lq = 5, Lk = 9 } },
  sink_attention = { { { window_size = 2, num_sinks = 1 } }, { { window_size = 3, num_sinks = 2 }, Lq = 5, Lk = 9 } },
  sparse_attention = { { { block_size = 2 } }, { { block_size = 3, causal = true } } },
  dynamic_attention = { { { top_k = 3 } }, { { top_k = 2, causal = true }, Hkv = 1 } },
  linear_attention = { { {} }, { { causal = true } }, { { causal = true }, Lq = 5, Lk = 9, Hkv = 1 } },
  performer_attention = { { { nb_features = 6 } }, { { nb_features = 6, causal = true } } },
  efficient_attention = { { {} } },
  nystrom_attention = { { { num_landmarks = 3 } }, { { num_landmarks = 2 }, Lq = 5, Lk = 9 } },
  relative_attention = {
    { { num_buckets = 4, max_distance = 8 } },
    { { num_buckets = 4, max_distance = 8, causal = true } },
    { { alibi = true }, Hkv = 1 },
  },
  adaptive_attention = {
    -- spans inside [0, 1], away from the ramp's kinks at integer distances
    { { max_span = 4, ramp = 2 }, params = function(c) c.span:copy_(as.tensor { 0.4, 0.65 }) end },
    { { max_span = 4, ramp = 3, causal = true }, params = function(c) c.span:copy_(as.tensor { 0.15, 0.9 }) end },
  },
  gated_attention = {
    { { init_bias = 0 } },
    { { init_bias = 0, gate = "elementwise", causal = true }, Dv = D, Hkv = 1 },
  },
  entmax_attention = {
    { { alpha = 1.5 } }, { { alpha = 2, causal = true } }, { { alpha = 1.3 } },
    { { alpha = 1.4, learn_alpha = true } },
  },
  sigmoid_attention = { { {} }, { { bias = 0.5, causal = true } }, { { learn_bias = true } } },
  cosine_attention = { { { init_temperature = 0.5 } }, { { init_temperature = 0.5, causal = true } } },
  -- one process: the whole sequence is the shard; no masks (causal is), so B = 1
  ring_attention = { { {}, no_mask = true }, { { causal = true }, Lq = 6, no_mask = true, Hkv = 1 } },
  flex_attention = {
    { { block_size = 4 } },
    { { block_size = 3, causal = true,
        mask_mod = function(_, _, qi, kj) return (qi - kj):abs():le(3) end } },
  },
}

local function cases_of(name)
  local Class = as.attention.get(name)
  local out = {}
  for _, c in ipairs(CASES[name] or { { {} } }) do
    local o = {}
    for k, v in pairs(c[1]) do o[k] = v end
    for _, s in ipairs(rawget(Class, "shape_options") or {}) do
      if s == "num_heads" then o.num_heads = o.num_heads or H end
      if s == "head_dim" then o.head_dim = o.head_dim or D end
    end
    out[#out + 1] = { opts = o, Lq = c.Lq or 5, Lk = c.Lk or c.Lq or 5, Dv = c.Dv or DV, Hkv = c.Hkv or H,
      params = c.params, no_mask = c.no_mask }
  end
  return out
end

local function describe_opts(o)
  local keys = {}
  for k, v in pairs(o) do keys[#keys + 1] = k .. "=" .. tostring(type(v) == "function" and "fn" or v) end
  table.sort(keys)
  return "{" .. table.concat(keys, ", ") .. "}"
end

-- A core of name with case c, its parameters nudged off their initial values
-- (a zero gate weight or bias table would leave half the gradient untested).
local function make(name, c, seed)
  as.manual_seed(seed)
  local m = as.attention.new(name, c.opts)
  core.set_grad_enabled(false)
  for _, p in m:named_parameters() do p:copy_(p + as.randn(table.unpack(p:shape())) * 0.3) end
  if c.params then c.params(m) end
  core.set_grad_enabled(true)
  return m
end

-- q, k, v of (B, H, L, D); with B = 2 a key-padding mask (batch 2 loses two keys)
local function inputs(c, B, seed)
  as.manual_seed(seed)
  local Hkv = c.Hkv or H
  local q, k, v = as.randn(B, H, c.Lq, D), as.randn(B, Hkv, c.Lk, D), as.randn(B, Hkv, c.Lk, c.Dv)
  local mask
  if B == 2 then
    mask = as.ones(2, 1, 1, c.Lk, "bool")
    mask[2][1][1][1] = false
    mask[2][1][1][c.Lk] = false
  end
  return q, k, v, mask, as.randn(B, H, c.Lq, c.Dv)
end

local function params_of(m)
  local ps = {}
  for _, p in m:named_parameters() do ps[#ps + 1] = p end
  return ps
end

-- the scalar whose gradient is checked: a random projection of the output
local function loss_fn(m, mask, w)
  return function(q, k, v) return (m(q, k, v, mask):to(w:dtype()) * w):sum() end
end

describe("attention gradients", function()
  before_each(function() P.force = false end)

  for _, name in ipairs(as.attention.names()) do
    if SKIP[name] then
      pending(name .. ": " .. SKIP[name])
    else
      it(name .. ": q, k, v and its parameters against central differences", function()
        for ci, c in ipairs(cases_of(name)) do
          -- odd cases B = 2 with a key-padding mask, even ones B = 1 without
          for _, B in ipairs { (ci % 2 == 1 and not c.no_mask) and 2 or 1 } do
            local m = make(name, c, 10 * ci + B)
            local q, k, v, mask, w = inputs(c, B, 100 * ci + B)
            local what = string.format("%s %s B=%d Hkv=%d Lq=%d Lk=%d", name, describe_opts(c.opts), B, c.Hkv,
              c.Lq, c.Lk)
            -- the fused forward (no gradient needed) equals the composite's
            local fused = m(q, k, v, mask)
            P.force = true
            local comp = m(q, k, v, mask)
            P.force = false
            local d = U.maxdiff(fused, comp)
            assert(d <= 1e-4, what .. ": fused and composite forwards differ by " .. d)
            if not FLOAT32_ONLY[name] then
              m:to("float64")
              q, k, v, w = q:double(), k:double(), v:double(), w:double()
            end
            local xs = { q, k, v }
            for _, p in ipairs(params_of(m)) do xs[#xs + 1] = p end
            for _, x in ipairs(xs) do x:requires_grad_() end
            local ok, err = pcall(check, name, loss_fn(m, mask, w), xs)
            assert(ok, what .. ": " .. tostring(err))
            for _, p in ipairs(params_of(m)) do p.grad = nil; p:requires_grad_(false) end
          end
        end
      end)
    end
  end
end)

-- The C functions the modules call on their fused path.
local FUSED = {
  "local_attention", "sink_attention", "sparse_attention", "dynamic_attention", "relative_attention",
  "adaptive_attention", "gated_attention", "entmax_attention", "sigmoid_attention", "cosine_attention",
  "kernelized_attention", "linear_attention_causal",
}

-- Runs fn with the fused entry points wrapped; returns the calls made, each
-- {name, args}.
-- The implementations with a fused CPU kernel (a new one not listed here is
-- checked all the same when it makes a call above).
local HAS_FUSED = {}
for _, n in ipairs { "local_attention", "sink_attention", "sparse_attention", "dynamic_attention",
  "relative_attention", "adaptive_attention", "gated_attention", "entmax_attention", "sigmoid_attention",
  "cosine_attention", "linear_attention", "performer_attention", "efficient_attention", "flex_attention" } do
  HAS_FUSED[n] = true
end

local function recording(fn)
  local calls, saved = {}, {}
  for _, f in ipairs(FUSED) do
    saved[f] = core[f]
    core[f] = function(...)
      calls[#calls + 1] = { f, table.pack(...) }
      return saved[f](...)
    end
  end
  local flex = core.flex_attention_ops.step
  core.flex_attention_ops.step = function(...)
    calls[#calls + 1] = { "flex_attention_ops.step" }
    return flex(...)
  end
  local ok, err = pcall(fn)
  for f, g in pairs(saved) do core[f] = g end
  core.flex_attention_ops.step = flex
  if not ok then error(err, 0) end
  return calls
end

describe("the fused kernels are an inference-only fast path", function()
  before_each(function() P.force = false end)

  for _, name in ipairs(as.attention.names()) do
    if not SKIP[name] then
      it(name .. ": fused without a gradient (if it has a fused kernel), the composite with one", function()
        local c = cases_of(name)[1]
        local m = make(name, c, 1)
        local q, k, v = inputs(c, 1, 2)
        local function run() return m(q, k, v) end
        if #recording(run) == 0 then -- tensor ops only (scaled_dot_product, nystrom, ...)
          assert.is_true(HAS_FUSED[name] == nil, name .. " made no fused call")
          return
        end
        q:requires_grad_()
        assert.is_true(#recording(function() as.no_grad(run) end) > 0, "no fused call under no_grad")
        assert.are.equal(0, #recording(run), "a fused call while q requires grad")
        q:requires_grad_(false)
        local ps = params_of(m)
        if #ps > 0 then
          ps[1]:requires_grad_()
          assert.are.equal(0, #recording(run), "a fused call while a parameter requires grad")
          ps[1]:requires_grad_(false)
        end
      end)
    end
  end

  it("flex_attention: a tensor captured by score_mod gets its gradient", function()
    local slopes = as.tensor({ 0.5, -0.25 }):view(1, 2, 1, 1)
    local m = as.attention.new("flex_attention", {
      block_size = 3, causal = true,
      score_mod = function(s, _, h, qi, kj) return s + slopes * (qi - kj):float() end,
    })
    local q, k, v, _, w = inputs({ Lq = 7, Lk = 7, Dv = DV }, 1, 5)
    local f = loss_fn(m, nil, w)
    -- only the captured tensor requires grad: the C tile step is left for
    -- the tensor-op one as soon as score_mod returns scores that need it
    check("flex_attention", function(sl) return f(q, k, v) end, { slopes })
    assert.is_true(slopes.grad:abs():sum():item() > 0)
    check("flex_attention", f, { q, k, v, slopes })
  end)

  it("performer_attention: the random features stay fixed (a buffer, no gradient)", function()
    local c = cases_of("performer_attention")[1]
    local m = make("performer_attention", c, 3)
    local q, k, v, _, w = inputs(c, 1, 4)
    q:requires_grad_()
    loss_fn(m, nil, w)(q, k, v):backward()
    local before = m.projection:clone()
    assert.are.equal(0, #params_of(m))
    assert.is_false(m.projection.requires_grad)
    assert.is_nil(m.projection.grad)
    m(q, k, v)
    assert.are.equal(0, U.maxdiff(before, m.projection))
  end)

  it("a mask that requires grad where the implementation has no gradient for it is an error naming it", function()
    -- the linear family reads a float mask only as a key-padding keep-mask (0 / -inf)
    for _, name in ipairs { "linear_attention", "performer_attention", "efficient_attention",
      "hedgehog_attention", "lolcats_attention" } do
      local learned = name == "hedgehog_attention" or name == "lolcats_attention" -- feature maps per head
      local core = as.attention.new(name, learned and { num_heads = 2, head_dim = 4 } or {})
      local q, k, v = as.randn(1, 2, 6, 4), as.randn(1, 2, 6, 4), as.randn(1, 2, 6, 4)
      local mask = as.zeros(1, 1, 1, 6)
      mask[1][1][1][6] = -math.huge
      mask:requires_grad_()
      local ok, err = pcall(core, q, k, v, mask)
      assert.is_false(ok, name .. " accepted a mask that requires grad")
      assert.truthy(tostring(err):find(name .. ": the mask requires grad", 1, true), tostring(err))
      -- detached, or under no_grad, it is the key-padding mask it always was
      assert.are.same({ 1, 2, 6, 4 }, core(q, k, v, mask:detach()):shape())
      as.no_grad(function() core(q, k, v, mask) end)
    end
  end)

  it("adaptive_attention: the span's gradient flows outside [0, 1]; clamp_span brings it back", function()
    local m = as.attention.new("adaptive_attention", { num_heads = H, max_span = 4, ramp = 2 })
    m.span:copy_(as.tensor { -0.2, 1.3 })
    m.span:requires_grad_()
    local q, k, v, _, w = inputs({ Lq = 7, Lk = 7, Dv = DV }, 1, 6)
    loss_fn(m, nil, w)(q, k, v):backward()
    assert.is_true(m.span.grad:abs():min():item() > 0, "a span outside [0, 1] got no gradient")
    m:clamp_span()
    assert.are.equal(0, U.maxdiff(m.span, as.tensor { 0, 1 }))
    assert.is_true(m.span.requires_grad)
  end)
end)

describe("long inputs: gradients through many blocks, tiles and chunks", function()
  after_each(function() P.block_elements = 1 << 24 end)

  -- the gradient of q under two splittings of the same computation
  local function qgrad(m, q, k, v, w)
    local qg = q:clone():requires_grad_()
    ;(m(qg, k, v) * w):sum():backward()
    return qg.grad
  end

  it("flex tiles and weights-driver blocks: the gradient does not depend on the split", function()
    as.manual_seed(7)
    local L = 67
    local q, k, v, w = as.randn(1, H, L, D), as.randn(1, H, L, D), as.randn(1, H, L, DV), as.randn(1, H, L, DV)
    local a = qgrad(as.attention.new("flex_attention", { block_size = 8, causal = true }), q, k, v, w)
    local b = qgrad(as.attention.new("flex_attention", { block_size = 128, causal = true }), q, k, v, w)
    assert.is_true(U.maxdiff(a, b) < 1e-4)
    local m = as.attention.new("sigmoid_attention", { causal = true })
    b = qgrad(m, q, k, v, w)
    P.block_elements = H * L * 6 -- 6 query rows a block: 12 blocks
    a = qgrad(m, q, k, v, w)
    assert.is_true(U.maxdiff(a, b) < 1e-4)
  end)

  it("linear causal scan (5 chunk groups) and nystrom's 64 landmarks run backward", function()
    as.manual_seed(8)
    local L = 300
    local q, k, v, w = as.randn(1, H, L, D), as.randn(1, H, L, D), as.randn(1, H, L, DV), as.randn(1, H, L, DV)
    for _, spec in ipairs { { "linear_attention", { causal = true } }, { "performer_attention", { causal = true } },
      { "nystrom_attention", {} } } do
      local g = qgrad(as.attention.new(spec[1], spec[2]), q, k, v, w)
      assert.are.equal(0, g:ne(g):sum():item(), spec[1] .. ": NaN in the gradient")
      assert.is_true(g:abs():sum():item() > 0, spec[1] .. ": zero gradient")
    end
  end)
end)

describe("the check can fail", function()
  it("a gradient 5% off fails it", function()
    local c = cases_of("local_attention")[1]
    local m = make("local_attention", c, 1):to("float64")
    local q, k, v, _, w = inputs(c, 1, 2)
    q, k, v, w = q:double():requires_grad_(), k:double():requires_grad_(), v:double():requires_grad_(), w:double()
    local f = loss_fn(m, nil, w)
    local function wrong(...) return f(...) * (as.is_grad_enabled() and 1.05 or 1) end
    check("local_attention", f, { q, k, v })
    assert.is_false(pcall(check, "local_attention", wrong, { q, k, v }))
    -- and the float32 central differences the two float32-only cores use
    local m32 = make("local_attention", c, 1)
    local q32, k32, v32, _, w32 = inputs(c, 1, 2)
    local f32 = loss_fn(m32, nil, w32)
    local function wrong32(...) return f32(...) * (as.is_grad_enabled() and 1.05 or 1) end
    central(f32, { q32, k32, v32 })
    assert.is_false(pcall(central, wrong32, { q32, k32, v32 }))
  end)

  it("a parameter left without its gradient fails it", function()
    local c = cases_of("gated_attention")[1]
    local m = make("gated_attention", c, 1):to("float64")
    local q, k, v, _, w = inputs(c, 1, 2)
    q, k, v, w = q:double():requires_grad_(), k:double():requires_grad_(), v:double():requires_grad_(), w:double()
    local f = loss_fn(m, nil, w)
    local gw = m.gate_weight:requires_grad_()
    -- the analytic side sees the gate weight as a constant
    local function frozen(...)
      if as.is_grad_enabled() then m.gate_weight = gw:detach() end
      local y = f(...)
      m.gate_weight = gw
      return y
    end
    assert.is_false(pcall(check, "gated_attention", frozen, { q, k, v, gw }))
  end)
end)

describe("a backward through a fused-only functional form", function()
  for _, name in ipairs(as.attention.names()) do
    if not SKIP[name] then
      it(name .. ": is an error naming it", function()
        local c = cases_of(name)[1]
        local m = make(name, c, 1)
        local q, k, v = inputs(c, 1, 2)
        local calls = recording(function() as.no_grad(function() return m(q, k, v) end) end)
        if HAS_FUSED[name] then assert.is_true(#calls > 0, name .. " made no fused call") end
        for _, call in ipairs(calls) do
          local f, args = call[1], call[2]
          if args then
            -- the same call with q requiring grad, then with a learned parameter
            -- (an option tensor) requiring grad
            local qg = args[1]:detach():requires_grad_()
            local a = { table.unpack(args, 1, args.n) }
            a[1] = qg
            local msg = U.errmsg(function() core[f](table.unpack(a, 1, args.n)):float():sum():backward() end)
            assert.matches(name, msg, 1, true)
            assert.matches("backward", msg, 1, true)
            for i = 1, args.n do
              if type(args[i]) == "table" then
                for key, t in pairs(args[i]) do
                  if core.is_tensor(t) and t:dtype() == "float32" then
                    local p = t:detach():requires_grad_()
                    local b = { table.unpack(args, 1, args.n) }
                    local o = {}
                    for kk, vv in pairs(args[i]) do o[kk] = vv end
                    o[key] = p
                    b[i] = o
                    msg = U.errmsg(function() core[f](table.unpack(b, 1, args.n)):float():sum():backward() end)
                    assert.matches(name, msg, 1, true)
                  end
                end
              end
            end
          end
        end
      end)
    end
  end
end)
