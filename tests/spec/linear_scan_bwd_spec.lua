-- The causal linear-attention scan's own backward (issue 17, "backward that
-- keeps the implementation's cost class"): core.linear_attention_causal
-- records a node whose backward is two more scans in C (forward for dphi_q,
-- reverse for dphi_k and dv; kernels/cpu/zoo_linear.c).  Checked by float64
-- gradcheck, against autograd of the chunked tensor-op scan it replaces on
-- the CPU (linear_common's causal_ops, reached with C.composite = true), and
-- through linear_attention / performer_attention.
local as = require "attnswap"
local core = require "attnswap.core"
local C = require "attnswap.attention.linear_common"
local U = require "spec_util"

local function phi(x) return core.where(x:gt(0), x + 1, x:exp()) end -- elu + 1: the features are >= 0

-- positive features, as the feature maps make them, and signed values
local function problem(B, H, Lq, Lk, F, Dv, dtype)
  local q, k, v = phi(as.randn(B, H, Lq, F)), phi(as.randn(B, H, Lk, F)), as.randn(B, H, Lk, Dv)
  if dtype == "float64" then q, k, v = q:double(), k:double(), v:double() end
  return q, k, v
end

local function scan(q, k, v) return core.linear_attention_causal(q, k, v) end

-- the gradients of sum(out * w) for q, k, v through fn
local function grads(fn, q, k, v, w)
  local xs = { q:detach(), k:detach(), v:detach() }
  for _, x in ipairs(xs) do x:requires_grad_() end
  local out = fn(xs[1], xs[2], xs[3])
  ;(out * w):sum():backward()
  return out, xs[1].grad, xs[2].grad, xs[3].grad
end

local function composite(q, k, v)
  C.composite = true
  local ok, out = pcall(C.attend, q, k, v, true)
  C.composite = false
  if not ok then error(out, 0) end
  return out
end

local function dims(t)
  local s, out = t:shape(), {}
  for i = 1, #s do out[i] = s[i] end
  return out
end

-- max |a - b| over max(max |b|, 1): a gradient that is 0 (one key: out_0 = v_0 whatever q)
-- comes as float32 rounding from both sides.
-- (float32 both ways; measured <= 6e-7)
local function rel(a, b) return U.maxdiff(a, b) / math.max(b:abs():max():item(), 1) end

describe("linear_attention_causal's backward", function()
  after_each(function() C.composite = false end)

  it("passes float64 gradcheck on random odd shapes", function()
    as.manual_seed(17)
    local rng = function(lo, hi) return lo + math.floor(as.rand(1):item() * (hi - lo + 1)) end
    for t = 1, 12 do
      local B, H, L, F, Dv = rng(1, 2), rng(1, 3), rng(1, 13), rng(3, 9), rng(2, 7)
      if t == 1 then L = 1 end
      local q, k, v = problem(B, H, L, L, F, Dv, "float64")
      for _, x in ipairs { q, k, v } do x:requires_grad_() end
      local ok, err = pcall(as.gradcheck, scan, { q, k, v })
      assert(ok, string.format("B %d H %d L %d F %d Dv %d: %s", B, H, L, F, Dv, tostring(err)))
    end
  end)

  it("passes float64 gradcheck with Lq ~= Lk (rows before every key) and signed features", function()
    as.manual_seed(18)
    for _, s in ipairs { { 1, 2, 5, 9, 4, 3 }, { 2, 1, 9, 4, 5, 2 }, { 1, 1, 3, 1, 3, 4 } } do
      local q, k, v = problem(s[1], s[2], s[3], s[4], s[5], s[6], "float64")
      for _, x in ipairs { q, k, v } do x:requires_grad_() end
      assert.is_true(as.gradcheck(scan, { q, k, v }))
    end
    -- signed features keep the denominators away from 0 with a shift
    local q = (as.randn(1, 2, 6, 4) + 3):double():requires_grad_()
    local k = (as.randn(1, 2, 6, 4) + 3):double():requires_grad_()
    local v = as.randn(1, 2, 6, 3):double():requires_grad_()
    assert.is_true(as.gradcheck(scan, { q, k, v }))
  end)

  it("equals autograd of the chunked composite in float32, across its chunk edges", function()
    as.manual_seed(19)
    for _, s in ipairs { { 1, 2, 70, 70, 8, 5 }, { 2, 3, 130, 130, 16, 16 }, { 1, 2, 64, 129, 6, 3 },
      { 1, 2, 129, 64, 6, 3 }, { 1, 1, 1, 1, 3, 2 } } do
      local q, k, v = problem(table.unpack(s))
      local w = as.randn(s[1], s[2], s[3], s[6])
      local o1, dq1, dk1, dv1 = grads(scan, q, k, v, w)
      local o2, dq2, dk2, dv2 = grads(composite, q, k, v, w)
      local what = table.concat(s, ",")
      assert.are.equal("linear_attention_causal", o1.grad_fn)
      assert.is_true(rel(o1, o2) < 1e-6, what .. " out " .. rel(o1, o2))
      assert.is_true(rel(dq1, dq2) < 5e-6, what .. " dq " .. rel(dq1, dq2))
      assert.is_true(rel(dk1, dk2) < 5e-6, what .. " dk " .. rel(dk1, dk2))
      assert.is_true(rel(dv1, dv2) < 5e-6, what .. " dv " .. rel(dv1, dv2))
    end
  end)

  it("records its node with a chunked forward (gemm) that agrees with the inference scan (double)", function()
    as.manual_seed(20)
    for _, s in ipairs { { 1, 2, 130, 130, 8, 5 }, { 2, 1, 64, 200, 6, 3 }, { 1, 2, 200, 64, 6, 3 },
      { 1, 1, 65, 65, 3, 2 } } do
      local q, k, v = problem(table.unpack(s))
      local ref = scan(q, k, v)
      assert.is_nil(ref.grad_fn)
      local qg = q:detach():requires_grad_()
      local out = scan(qg, k, v)
      assert.are.equal("linear_attention_causal", out.grad_fn)
      assert.is_true(rel(out, ref) < 1e-6, table.concat(s, ",") .. ": " .. rel(out, ref))
      local q64, k64, v64 = q:double(), k:double(), v:double()
      local e64 = (scan(q64:requires_grad_(), k64, v64) - scan(q64:detach(), k64, v64)):abs():max():item()
      assert.is_true(e64 < 1e-12, table.concat(s, ",") .. " float64: " .. e64)
    end
  end)

  it("gives rows the forward made 0 (no key, or a denominator of 0) no gradient, never NaN", function()
    local q, k, v = problem(1, 1, 6, 6, 4, 3, "float64")
    q[1][1][3]:zero_() -- row 3: phi_q = 0, den = 0
    local w = as.randn(1, 1, 6, 3):double()
    local out, dq, dk, dv = grads(scan, q, k, v, w)
    assert.are.equal(0, out[1][1][3]:abs():sum():item())
    for _, g in ipairs { dq, dk, dv } do assert.are.equal(0, g:ne(g):sum():item()) end
    -- row 3 passes nothing back: its weight does not change any gradient
    local w2 = w:clone()
    w2[1][1][3]:fill_(100)
    local _, dq2, dk2, dv2 = grads(scan, q, k, v, w2)
    assert.are.equal(0, U.maxdiff(dk, dk2))
    assert.are.equal(0, U.maxdiff(dv, dv2))
    assert.are.equal(0, dq2[1][1][3]:abs():sum():item())
    -- Lq > Lk: the first rows see no key
    local q3, k3, v3 = problem(1, 2, 7, 3, 4, 2, "float64")
    local _, dq3 = grads(scan, q3, k3, v3, as.randn(1, 2, 7, 2):double())
    assert.are.equal(0, dq3:narrow(3, 1, 4):abs():sum():item())
    assert.is_true(dq3:narrow(3, 5, 3):abs():sum():item() > 0)
  end)

  it("works on empty shapes (L = 0, Lk = 0, Lq = 0)", function()
    for _, s in ipairs { { 1, 2, 0, 0 }, { 2, 1, 3, 0 }, { 1, 2, 0, 4 }, { 0, 2, 3, 3 } } do
      local B, H, Lq, Lk = table.unpack(s)
      local q, k, v = problem(B, H, Lq, Lk, 4, 3)
      local out, dq, dk, dv = grads(scan, q, k, v, as.ones(B, H, Lq, 3))
      assert.are.same({ B, H, Lq, 3 }, dims(out))
      assert.are.same({ B, H, Lq, 4 }, dims(dq))
      assert.are.same({ B, H, Lk, 4 }, dims(dk))
      assert.are.same({ B, H, Lk, 3 }, dims(dv))
      for _, t in ipairs { out, dq, dk, dv } do
        if t:numel() > 0 then assert.are.equal(0, t:abs():sum():item()) end
      end
    end
  end)

  it("records a node only when a gradient is needed, and computes only the gradients asked for", function()
    local q, k, v = problem(1, 2, 5, 5, 4, 3)
    assert.is_nil(scan(q, k, v).grad_fn)
    q:requires_grad_()
    assert.are.equal("linear_attention_causal", scan(q, k, v).grad_fn)
    assert.is_nil(as.no_grad(scan, q, k, v).grad_fn)
    scan(q, k, v):sum():backward()
    assert.is_not_nil(q.grad)
    assert.is_nil(k.grad)
    -- float64 in, float64 out (the scan in float64); bfloat16 in float32, gradients cast back
    assert.are.equal("float64", scan(q:double(), k:double(), v:double()):dtype())
    local qb = q:detach():to("bfloat16"):requires_grad_()
    local ob = scan(qb, k:to("bfloat16"), v:to("bfloat16"))
    assert.are.equal("float32", ob:dtype())
    ob:sum():backward()
    assert.are.equal("bfloat16", qb.grad:dtype())
  end)

  it("takes strided inputs: the gradients come back in the inputs' shapes", function()
    local q, k, v = problem(1, 2, 9, 9, 5, 3)
    local qt = q:transpose(3, 4):contiguous():transpose(3, 4) -- (1, 2, 9, 5), strided
    local vt = v:transpose(3, 4):contiguous():transpose(3, 4)
    assert.is_false(qt:is_contiguous())
    local w = as.randn(1, 2, 9, 3)
    local o1, dq1, dk1, dv1 = grads(scan, q, k, v, w)
    local o2, dq2, dk2, dv2 = grads(scan, qt, k, vt, w)
    for i, pair in ipairs { { o1, o2 }, { dq1, dq2 }, { dk1, dk2 }, { dv1, dv2 } } do
      assert.are.equal(0, U.maxdiff(pair[1], pair[2]), "tensor " .. i)
    end
  end)

  it("rejects bad input with an error naming the function", function()
    local q, k, v = problem(1, 2, 5, 5, 4, 3)
    local function fails(pat, ...)
      local msg = U.errmsg(scan, ...)
      assert.matches("linear_attention_causal: ", msg, 1, true)
      assert.matches(pat, msg, 1, true)
    end
    fails("expected phi_q (B, H, Lq, F), phi_k (B, H, Lk, F), v (B, H, Lk, Dv), got (2, 5, 4)", q[1], k, v)
    fails("expected phi_q (B, H, Lq, F)", q, k[1], v)
    fails("got (1, 2, 5, 4), (1, 2, 5, 4), (1, 2, 5, 3, 1)", q, k, v:unsqueeze(5))
    fails("got (1, 2, 5, 4), (2, 2, 5, 4)", q, as.cat({ k, k }, 1), v)          -- B
    fails("got (1, 2, 5, 4), (1, 1, 5, 4)", q, k:narrow(2, 1, 1), v)           -- H
    fails("got (1, 2, 5, 4), (1, 2, 5, 3)", q, k:narrow(4, 1, 3), v)           -- F
    fails("got (1, 2, 5, 4), (1, 2, 5, 4), (1, 2, 4, 3)", q, k, v:narrow(3, 1, 4)) -- Lk
    fails("phi_q, phi_k and v must share one dtype, got float32, float64, float32", q, k:double(), v)
    fails("expected a floating-point tensor, got int64", q, k, v:long())
  end)
end)

describe("linear_attention and performer_attention, causal, through the scan's backward", function()
  after_each(function() C.composite = false end)

  local function check(name, opts, B, H, Hkv, Lq, Lk, D, masked)
    as.manual_seed(23)
    local m = as.attention.new(name, opts)
    local q, k, v = as.randn(B, H, Lq, D), as.randn(B, Hkv, Lk, D), as.randn(B, Hkv, Lk, D)
    local mask = masked and as.rand(B, 1, 1, Lk):gt(0.3) or nil
    local w = as.randn(B, H, Lq, D)
    local f = function(a, b, c) return m(a, b, c, mask) end
    local calls, saved = 0, core.linear_attention_causal
    core.linear_attention_causal = function(...) calls = calls + 1; return saved(...) end
    local ok, o1, dq1, dk1, dv1 = pcall(grads, f, q, k, v, w)
    core.linear_attention_causal = saved
    assert(ok, o1)
    assert.is_true(calls > 0, name .. " did not take the C scan under grad")
    C.composite = true
    local o2, dq2, dk2, dv2 = grads(f, q, k, v, w)
    C.composite = false
    local what = string.format("%s B %d H %d/%d L %d/%d", name, B, H, Hkv, Lq, Lk)
    assert.is_true(rel(o1, o2) < 1e-6, what .. " out " .. rel(o1, o2))
    assert.is_true(rel(dq1, dq2) < 5e-6, what .. " dq " .. rel(dq1, dq2))
    assert.is_true(rel(dk1, dk2) < 5e-6, what .. " dk " .. rel(dk1, dk2))
    assert.is_true(rel(dv1, dv2) < 5e-6, what .. " dv " .. rel(dv1, dv2))
  end

  it("linear_attention: gradients match the chunked composite", function()
    check("linear_attention", { causal = true }, 2, 4, 2, 100, 100, 8, false)
    check("linear_attention", { causal = true }, 1, 2, 2, 70, 140, 8, true)
  end)

  it("performer_attention: gradients match the chunked composite", function()
    check("performer_attention", { causal = true, nb_features = 12 }, 2, 2, 1, 90, 90, 8, false)
    check("performer_attention", { causal = true, nb_features = 12 }, 1, 2, 2, 65, 65, 8, true)
  end)

  it("linear_attention: float64 gradcheck through the module (the C scan on both sides)", function()
    as.manual_seed(29)
    local m = as.attention.new("linear_attention", { causal = true })
    local q, k, v = as.randn(1, 2, 6, 4):double(), as.randn(1, 2, 6, 4):double(), as.randn(1, 2, 6, 3):double()
    for _, x in ipairs { q, k, v } do x:requires_grad_() end
    assert.is_true(as.gradcheck(function(a, b, c) return m(a, b, c) end, { q, k, v }))
  end)
end)
