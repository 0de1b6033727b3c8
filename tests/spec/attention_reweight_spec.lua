-- The reweight implementations from Lua: relative, adaptive, gated, entmax,
-- sigmoid, cosine and flex attention.  Each against a naive reference of the
-- same math written here with tensor ops, the property that pins it to its
-- paper, a swap into a small model and back, its parameters, and bad options.
local as = require "attnswap"
local nn = as.nn

local NEG_INF = -math.huge

local function maxdiff(a, b) return (a - b):abs():max():item() end

-- (B, Hkv, L, D) -> (B, H, L, D): each kv head serves H / Hkv query heads
local function repeat_kv(t, H)
  local B, Hkv, L, D = t:size(1), t:size(2), t:size(3), t:size(4)
  if Hkv == H then return t end
  return t:unsqueeze(3):expand(B, Hkv, H // Hkv, L, D):reshape(B, H, L, D)
end

-- raw scores (B, H, Lq, Lk) = q k^T * scale, then masked (-inf) / biased
local function scores(q, k, opts, mask, scale)
  local H, D, Lq, Lk = q:size(2), q:size(4), q:size(3), k:size(3)
  local s = q:matmul(repeat_kv(k, H):transpose(3, 4)) * (scale or 1 / math.sqrt(D))
  return s, function(x)
    if opts.causal then x = as.where(as.ones(Lq, Lk, "bool"):tril(Lk - Lq), x, NEG_INF) end
    if mask ~= nil then
      if mask:dtype() == "bool" then x = as.where(mask, x, NEG_INF) else x = x + mask end
    end
    return x
  end
end

local function weights_times_v(p, v, H) return p:matmul(repeat_kv(v, H)) end

-- i' - j over (Lq, Lk), i' = i + Lk - Lq
local function rel_pos(Lq, Lk)
  return as.arange(0, Lq):view(Lq, 1) + (Lk - Lq) - as.arange(0, Lk):view(1, Lk)
end

-- a standard problem: B=2, H=4 over Hkv=2 (GQA), odd lengths, Lq != Lk, Dv != D
local function problem(seed, Lq, Lk)
  as.manual_seed(seed or 1)
  Lq, Lk = Lq or 9, Lk or 13
  local q = as.randn(2, 4, Lq, 8) * 1.5
  local k = as.randn(2, 2, Lk, 8)
  local v = as.randn(2, 2, Lk, 6)
  local bmask = as.rand(2, 1, Lq, Lk):gt(0.3)
  local fmask = as.randn(4, Lq, Lk)
  return q, k, v, bmask, fmask
end

-- v = identity: the output is the weight matrix itself
local function eye_v(B, Hkv, Lk)
  local e = as.arange(0, Lk):view(Lk, 1):eq(as.arange(0, Lk):view(1, Lk)):float()
  return e:view(1, 1, Lk, Lk):expand(B, Hkv, Lk, Lk):contiguous()
end

local function tiny_block()
  as.manual_seed(3)
  return nn.TransformerBlock { dim = 16, num_heads = 4 }:eval()
end

local function params_of(m)
  local out = {}
  for path, t in m:named_parameters() do out[path] = t end
  return out
end

-- swaps name into a TransformerBlock and back; returns the swapped output and parameters
local function swap_and_back(name, opts)
  local model = tiny_block()
  local x = as.randn(2, 7, 16)
  local before = model(x)
  local during, params
  do
    local s <close> = as.swapped(model, "scaled_dot_product", name, opts)
    assert.are.equal(1, #s.report.swapped)
    assert.are.equal("attn.core", s.report.swapped[1].path)
    during = s.model(x)
    params = params_of(s.model)
  end
  assert.are.equal("ScaledDotProductAttention", model.attn.core:type())
  assert.are.equal(0, maxdiff(model(x), before))
  assert.are.equal("(2, 7, 16)", tostring(during:shape()))
  return during, before, params
end

local function errors_with(text, f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error containing: " .. text)
  assert.is_truthy(tostring(err):find(text, 1, true), "got: " .. tostring(err))
end

-- ---- relative_attention ----

-- transformers' T5Attention._relative_position_bucket, elementwise in Lua
local function t5_bucket(rel, bidirectional, num_buckets, max_distance)
  local bucket = 0
  if bidirectional then
    num_buckets = num_buckets // 2
    if rel > 0 then bucket = num_buckets end
    rel = math.abs(rel)
  else
    rel = -math.min(rel, 0)
  end
  local max_exact = num_buckets // 2
  if rel < max_exact then return bucket + rel end
  local large = max_exact + math.floor(math.log(rel / max_exact) / math.log(max_distance / max_exact)
    * (num_buckets - max_exact))
  return bucket + math.min(large, num_buckets - 1)
end

-- (H, Lq, Lk) bias: weight (num_buckets, H) gathered by bucket of j - i'
local function t5_bias(weight, Lq, Lk, bidirectional)
  local H = weight:size(2)
  local idx = {}
  for i = 0, Lq - 1 do
    for j = 0, Lk - 1 do idx[#idx + 1] = t5_bucket(j - (i + Lk - Lq), bidirectional, 32, 128) + 1 end
  end
  local g = weight:index_select(1, as.tensor(idx)) -- (Lq*Lk, H)
  return g:t():contiguous():view(H, Lq, Lk)
end

local function alibi_slopes(H)
  local function pow2(n)
    local out = {}
    for i = 1, n do out[i] = 2 ^ (-8 * i / n) end
    return out
  end
  local p2 = 1
  while p2 * 2 <= H do p2 = p2 * 2 end
  local s = pow2(p2)
  local extra = pow2(2 * p2)
  for i = 1, H - p2 do s[#s + 1] = extra[2 * i - 1] end
  return as.tensor(s)
end

describe("relative_attention", function()
  it("matches a naive T5 bias, causal and not, with masks and GQA", function()
    local q, k, v, bmask, fmask = problem(1)
    for _, causal in ipairs { false, true } do
      for _, mask in ipairs { false, bmask, fmask } do
        mask = mask or nil
        local core = as.attention.new("relative_attention", { num_heads = 4, causal = causal })
        as.manual_seed(5)
        core.relative_attention_bias:copy_(as.randn(32, 4))
        local s, finish = scores(q, k, { causal = causal }, mask)
        local ref = weights_times_v(finish(s + t5_bias(core.relative_attention_bias, 9, 13, not causal)):softmax(-1), v, 4)
        assert.is_true(maxdiff(core(q, k, v, mask), ref) < 1e-5)
      end
    end
  end)

  it("with zero bias (its initialisation) equals scaled_dot_product", function()
    local q, k, v, bmask = problem(2)
    local core = as.attention.new("relative_attention", { num_heads = 4, causal = true })
    assert.are.equal(0, core.relative_attention_bias:abs():max():item())
    local ref = as.sdp_attention(q, k, v, bmask, { causal = true })
    assert.is_true(maxdiff(core(q, k, v, bmask), ref) < 1e-6)
  end)

  it("alibi = true adds the paper's slopes times -|i - j|, for 4 and 6 heads", function()
    for _, H in ipairs { 4, 6 } do
      as.manual_seed(H)
      local q, k, v = as.randn(1, H, 11, 8), as.randn(1, H, 11, 8), as.randn(1, H, 11, 8)
      local core = as.attention.new("relative_attention", { alibi = true, causal = true })
      assert.is_nil(next(params_of(core)))
      local bias = -alibi_slopes(H):view(H, 1, 1) * rel_pos(11, 11):abs()
      local s, finish = scores(q, k, { causal = true })
      local ref = finish(s + bias):softmax(-1):matmul(v)
      assert.is_true(maxdiff(core(q, k, v), ref) < 1e-5)
    end
  end)

  it("swaps into a block and back, and carries its bias between relative cores", function()
    local during, before, params = swap_and_back("relative_attention", { num_heads = 4 })
    assert.are.equal("(32, 4)", tostring(params["attn.core.relative_attention_bias"]:shape()))
    assert.is_true(maxdiff(during, before) < 1e-5) -- zero bias: nothing changed
    local model = tiny_block()
    as.swap_attention(model, "scaled_dot_product", "relative_attention", { num_heads = 4 })
    model.attn.core.relative_attention_bias:copy_(as.randn(32, 4))
    local want = model.attn.core.relative_attention_bias:clone()
    local _, report = as.swap_attention(model, "relative_attention", "relative_attention", { num_heads = 4, causal = true })
    assert.are.same({ "relative_attention_bias" }, report.swapped[1].carried)
    assert.are.equal(0, maxdiff(model.attn.core.relative_attention_bias, want))
  end)

  it("rejects bad options and a head count it was not built for", function()
    errors_with("relative_attention: num_heads must be a positive integer, got -1",
      as.attention.new, "relative_attention", { num_heads = -1 })
    errors_with("relative_attention: unknown option 'buckets'", as.attention.new, "relative_attention", { buckets = 3 })
    errors_with("relative_attention: alibi must be a boolean", as.attention.new, "relative_attention", { alibi = 1 })
    errors_with("relative_attention: max_distance must be more than the 8 exact buckets",
      as.attention.new, "relative_attention", { max_distance = 4 })
    local q = as.randn(1, 2, 3, 4)
    errors_with("relative_attention: the bias was made for 8 heads (num_heads) but q has 2",
      as.attention.new("relative_attention"), q, q, q)
  end)
end)

-- ---- adaptive_attention ----

describe("adaptive_attention", function()
  local function naive(q, k, v, mask, causal, z, R)
    local H, Lq, Lk = q:size(2), q:size(3), k:size(3)
    local x = rel_pos(Lq, Lk)
    if not causal then x = x:abs() end
    local m = ((z:view(H, 1, 1) + R - x) / R):clamp(0, 1) -- (H, Lq, Lk)
    local s, finish = scores(q, k, { causal = causal }, mask)
    local p = finish(s):softmax(-1) * m
    local sum = p:sum(-1, true)
    p = as.where(sum:gt(0), p / as.where(sum:gt(0), sum, 1), 0)
    return weights_times_v(p, v, H)
  end

  it("matches a naive soft span mask, renormalised", function()
    local q, k, v, bmask, fmask = problem(3, 21, 30)
    for _, causal in ipairs { false, true } do
      for _, mask in ipairs { false, bmask, fmask } do
        mask = mask or nil
        local core = as.attention.new("adaptive_attention", { num_heads = 4, max_span = 16, ramp = 4, causal = causal })
        core.span:copy_(as.tensor { 0, 0.25, 0.6, 1.3 })
        local z = core.span:clamp(0, 1) * 16
        assert.is_true(maxdiff(core(q, k, v, mask), naive(q, k, v, mask, causal, z, 4)) < 1e-5)
      end
    end
  end)

  it("with a span covering every distance equals softmax attention", function()
    local q, k, v, bmask = problem(4, 21, 30)
    for _, causal in ipairs { false, true } do
      local core = as.attention.new("adaptive_attention", { num_heads = 4, max_span = 64, ramp = 1, init_span = 1, causal = causal })
      assert.is_true(maxdiff(core(q, k, v, bmask), as.sdp_attention(q, k, v, bmask, { causal = causal })) < 1e-5)
    end
  end)

  it("gives no weight past z + R", function()
    local q, k = problem(5, 30, 30)
    local v = eye_v(2, 2, 30)
    local core = as.attention.new("adaptive_attention", { num_heads = 4, max_span = 10, ramp = 2, init_span = 0.3 })
    local p = core(q, k, v) -- (2, 4, 30, 30) weights
    local far = rel_pos(30, 30):abs():ge(3 + 2)
    assert.are.equal(0, as.where(far, p, 0):abs():max():item())
    assert.is_true(maxdiff(p:sum(-1), as.ones(2, 4, 30)) < 1e-5)
  end)

  it("swaps into a block and back with its span parameter", function()
    local _, _, params = swap_and_back("adaptive_attention", { num_heads = 4, init_span = 0.5 })
    assert.are.equal("(4)", tostring(params["attn.core.span"]:shape()))
    assert.are.equal(0.5, params["attn.core.span"][1])
  end)

  it("rejects bad options", function()
    errors_with("adaptive_attention: ramp must be a positive number, got 0", as.attention.new, "adaptive_attention", { ramp = 0 })
    errors_with("adaptive_attention: init_span must be a number in [0, 1], got 2", as.attention.new, "adaptive_attention", { init_span = 2 })
    errors_with("adaptive_attention: max_span must be a positive number", as.attention.new, "adaptive_attention", { max_span = "x" })
    local q = as.randn(1, 2, 3, 4)
    errors_with("adaptive_attention: the span was made for 8 heads", as.attention.new("adaptive_attention"), q, q, q)
  end)
end)

-- ---- gated_attention ----

describe("gated_attention", function()
  local function naive(q, k, v, mask, causal, w, b)
    local s, finish = scores(q, k, { causal = causal }, mask)
    local out = weights_times_v(finish(s):softmax(-1), v, q:size(2))
    local gate = (q:matmul(w) + b:unsqueeze(2)):sigmoid() -- (B, H, Lq, G)
    return out * gate
  end

  it("matches a naive headwise and elementwise gate from the query", function()
    local q, k, v, bmask = problem(6)
    v = as.randn(2, 2, 13, 8)
    for _, gate in ipairs { "headwise", "elementwise" } do
      for _, causal in ipairs { false, true } do
        local core = as.attention.new("gated_attention", { num_heads = 4, head_dim = 8, gate = gate, causal = causal })
        local g = gate == "headwise" and 1 or 8
        core.gate_weight:copy_(as.randn(4, 8, g))
        core.gate_bias:copy_(as.randn(4, g))
        local ref = naive(q, k, v, bmask, causal, core.gate_weight, core.gate_bias)
        assert.is_true(maxdiff(core(q, k, v, bmask), ref) < 1e-5)
      end
    end
  end)

  it("with the gate saturated at 1 equals scaled_dot_product", function()
    local q, k, v, _, fmask = problem(7)
    local core = as.attention.new("gated_attention", { num_heads = 4, head_dim = 8, init_bias = 100 })
    assert.is_true(maxdiff(core(q, k, v, fmask), as.sdp_attention(q, k, v, fmask)) < 1e-6)
  end)

  it("a fresh swap changes a block's output by about 1e-5 of its size", function()
    local during, before, params = swap_and_back("gated_attention", { num_heads = 4, head_dim = 4 })
    assert.are.equal("(4, 4, 1)", tostring(params["attn.core.gate_weight"]:shape()))
    assert.are.equal("(4, 1)", tostring(params["attn.core.gate_bias"]:shape()))
    local rel = maxdiff(during, before) / before:abs():max():item()
    assert.is_true(rel > 0 and rel < 1e-4, "relative change " .. rel)
  end)

  it("rejects bad options and mismatched heads", function()
    errors_with('gated_attention: gate must be one of "headwise", "elementwise", got "both"',
      as.attention.new, "gated_attention", { gate = "both" })
    errors_with("gated_attention: head_dim must be a positive integer, got 0", as.attention.new, "gated_attention", { head_dim = 0 })
    errors_with("gated_attention: init_bias must be a finite number", as.attention.new, "gated_attention", { init_bias = math.huge })
    local q = as.randn(1, 2, 3, 4)
    errors_with("gated_attention: the gate was made for 8 heads of size 64", as.attention.new("gated_attention"), q, q, q)
  end)
end)

-- ---- entmax_attention ----

-- sparsemax over the last dim without sorting: z_i is in the support iff
-- 1 + k_i z_i > sum of the z_j >= z_i, k_i their number (Martins & Astudillo 2016)
local function naive_sparsemax(z)
  local finite = z:gt(NEG_INF)
  local zf = as.where(finite, z, 0)
  local ge = z:unsqueeze(-2):ge(z:unsqueeze(-1)):float() -- [i, j] = z_j >= z_i
  local k = ge:sum(-1)
  local S = (ge * zf:unsqueeze(-2)):sum(-1)
  local support = (k * zf + 1):gt(S):logical_and(finite):float()
  local cnt = support:sum(-1, true)
  local tau = as.where(cnt:gt(0), ((zf * support):sum(-1, true) - 1) / as.where(cnt:gt(0), cnt, 1), 0)
  return (z - tau):clamp(0)
end

-- alpha-entmax by bisection over whole tensors, 80 steps
local function naive_entmax(z, alpha)
  local X = z * (alpha - 1)
  local mx = X:max(-1, true)
  local lo, hi = mx - 1, mx * 1
  local p
  for _ = 1, 80 do
    local mid = (lo + hi) / 2
    p = (X - mid):clamp(0) ^ (1 / (alpha - 1))
    local f = p:sum(-1, true) - 1
    lo, hi = as.where(f:ge(0), mid, lo), as.where(f:ge(0), hi, mid)
  end
  p = (X - lo):clamp(0) ^ (1 / (alpha - 1))
  return p / p:sum(-1, true)
end

describe("entmax_attention", function()
  it("alpha = 2 equals a naive sparsemax, with masks and GQA", function()
    local q, k, v, bmask = problem(8)
    for _, causal in ipairs { false, true } do
      local core = as.attention.new("entmax_attention", { alpha = 2, causal = causal })
      local s, finish = scores(q, k, { causal = causal }, bmask)
      local ref = weights_times_v(naive_sparsemax(finish(s)), v, 4)
      assert.is_true(maxdiff(core(q, k, v, bmask), ref) < 1e-5)
    end
  end)

  it("alpha = 1.5 (sort-based) and other alphas (bisection) match a naive bisection", function()
    local q, k, v, _, fmask = problem(9)
    for _, alpha in ipairs { 1.5, 1.3, 1.75 } do
      local core = as.attention.new("entmax_attention", { alpha = alpha, causal = true })
      local s, finish = scores(q, k, { causal = true }, fmask)
      local ref = weights_times_v(naive_entmax(finish(s), alpha), v, 4)
      assert.is_true(maxdiff(core(q, k, v, fmask), ref) < 1e-5, "alpha " .. alpha)
    end
  end)

  it("alpha close to 1 is close to softmax, alpha = 1 is softmax", function()
    local q, k, v = problem(10)
    local ref = as.sdp_attention(q, k, v)
    assert.is_true(maxdiff(as.attention.new("entmax_attention", { alpha = 1 })(q, k, v), ref) < 1e-6)
    local d = maxdiff(as.attention.new("entmax_attention", { alpha = 1.001 })(q, k, v), ref)
    assert.is_true(d < 5e-3, "alpha 1.001 differs by " .. d)
  end)

  it("weights sum to 1 per row and contain exact zeros", function()
    local q, k = problem(11, 17, 17)
    local p = as.attention.new("entmax_attention", {})(q * 3, k, eye_v(2, 2, 17))
    assert.is_true(maxdiff(p:sum(-1), as.ones(2, 4, 17)) < 1e-5)
    local zeros = p:eq(0):float():sum():item()
    assert.is_true(zeros > 0.2 * p:numel(), "only " .. zeros .. " zeros")
    local e = as.entmax(as.tensor { { 5, 0, 0.5 } }, 2)
    assert.are.same({ { 1, 0, 0 } }, e:tolist())
  end)

  it("learns alpha per head: 1 + sigmoid(pre_alpha), a parameter carried by swaps", function()
    local q, k, v = problem(12)
    local core = as.attention.new("entmax_attention", { learn_alpha = true, num_heads = 4 })
    assert.are.equal(0, core.pre_alpha:abs():max():item()) -- alpha = 1.5 exactly
    local fixed = as.attention.new("entmax_attention", { alpha = 1.5 })
    assert.are.equal(0, maxdiff(core(q, k, v), fixed(q, k, v)))
    core.pre_alpha:copy_(as.tensor { -3, 0, 1, 3 })
    local out = core(q, k, v)
    for h = 1, 4 do
      local a = 1 + 1 / (1 + math.exp(-({ -3, 0, 1, 3 })[h]))
      local one = as.attention.new("entmax_attention", { alpha = a })(q, k, v)
      assert.is_true(maxdiff(out:narrow(2, h, 1), one:narrow(2, h, 1)) < 1e-5)
    end
    local _, _, params = swap_and_back("entmax_attention", { learn_alpha = true, num_heads = 4 })
    assert.are.equal("(4)", tostring(params["attn.core.pre_alpha"]:shape()))
  end)

  it("swaps into a block and back", function()
    local during, before = swap_and_back("entmax_attention", { alpha = 1.5 })
    assert.is_true(maxdiff(during, before) > 1e-4) -- a different normaliser
  end)

  it("rejects bad options", function()
    errors_with("entmax_attention: alpha must be a number in [1, 2], got 2.5", as.attention.new, "entmax_attention", { alpha = 2.5 })
    errors_with("entmax_attention: alpha must be in (1, 2) with learn_alpha", as.attention.new, "entmax_attention", { alpha = 2, learn_alpha = true })
    errors_with("entmax_attention: dropout must be a number in [0, 1), got 1", as.attention.new, "entmax_attention", { dropout = 1 })
    errors_with("entmax: alpha must be a number in [1, 2], got 0.5", as.entmax, as.randn(2, 3), 0.5)
  end)
end)

-- ---- sigmoid_attention ----

describe("sigmoid_attention", function()
  local function naive(q, k, v, mask, causal, b)
    local s, finish = scores(q, k, { causal = causal }, mask)
    local x = finish(s)
    local p = as.where(x:gt(NEG_INF), (x + b):sigmoid(), 0)
    return weights_times_v(p, v, q:size(2))
  end

  it("matches sigma(q k^T * scale - log(Lk)) v, masks contributing 0", function()
    local q, k, v, bmask, fmask = problem(13)
    for _, causal in ipairs { false, true } do
      for _, mask in ipairs { false, bmask, fmask } do
        mask = mask or nil
        local core = as.attention.new("sigmoid_attention", { causal = causal })
        assert.is_true(maxdiff(core(q, k, v, mask), naive(q, k, v, mask, causal, -math.log(13))) < 1e-5)
      end
    end
    local core = as.attention.new("sigmoid_attention", { bias = 0.5, scale = 0.2 })
    local s = q:matmul(repeat_kv(k, 4):transpose(3, 4)) * 0.2
    assert.is_true(maxdiff(core(q, k, v), weights_times_v((s + 0.5):sigmoid(), v, 4)) < 1e-5)
  end)

  it("gives masked keys weight exactly 0 and rows are not normalised", function()
    local q, k, _, bmask = problem(14, 13, 13)
    local p = as.attention.new("sigmoid_attention", {})(q, k, eye_v(2, 2, 13), bmask)
    assert.are.equal(0, as.where(bmask, 0, p):abs():max():item())
    assert.is_true(maxdiff(p:sum(-1), as.ones(2, 4, 13)) > 0.05)
  end)

  it("swaps into a block and back", function()
    local during, before, params = swap_and_back("sigmoid_attention", {})
    for path in pairs(params) do assert.is_nil(path:match("^attn%.core%.")) end
    assert.is_true(maxdiff(during, before) > 1e-4)
  end)

  it("rejects bad options", function()
    errors_with("sigmoid_attention: bias must be a finite number, got inf", as.attention.new, "sigmoid_attention", { bias = math.huge })
    errors_with("sigmoid_attention: causal must be a boolean", as.attention.new, "sigmoid_attention", { causal = "yes" })
    errors_with("bad argument #1 to 'sigmoid_attention' (options table expected, got number)", as.attention.get("sigmoid_attention"), 3)
  end)
end)

-- ---- cosine_attention ----

describe("cosine_attention", function()
  local function unit(x) return x / (x * x):sum(-1, true):sqrt():clamp(1e-12) end
  local function naive(q, k, v, mask, causal, logit_scale)
    local H = q:size(2)
    local s = unit(q):matmul(repeat_kv(unit(k), H):transpose(3, 4)) * logit_scale:clamp(NEG_INF, math.log(100)):exp()
    local _, finish = scores(q, k, { causal = causal }, mask)
    return weights_times_v(finish(s):softmax(-1), v, H)
  end

  it("matches softmax(cos(q, k) / tau + bias) v with Swin V2's clamp", function()
    local q, k, v, bmask, fmask = problem(15)
    for _, causal in ipairs { false, true } do
      for _, mask in ipairs { false, bmask, fmask } do
        mask = mask or nil
        local core = as.attention.new("cosine_attention", { num_heads = 4, causal = causal })
        core.logit_scale:copy_(as.tensor { 0.5, 2.3, 4.0, 6.0 }:view(4, 1, 1)) -- the last one clamped
        assert.is_true(maxdiff(core(q, k, v, mask), naive(q, k, v, mask, causal, core.logit_scale)) < 1e-5)
      end
    end
  end)

  it("depends only on directions: scaling q or k changes nothing", function()
    local q, k, v = problem(16)
    local core = as.attention.new("cosine_attention", { num_heads = 4, init_temperature = 0.05 })
    assert.is_true(maxdiff(core(q * 7, k * 0.1, v), core(q, k, v)) < 1e-5)
    assert.is_true(maxdiff(core.logit_scale:view(-1), as.full({ 4 }, math.log(20))) < 1e-6)
  end)

  it("swaps into a block and back with its temperature", function()
    local during, before, params = swap_and_back("cosine_attention", { num_heads = 4 })
    assert.are.equal("(4, 1, 1)", tostring(params["attn.core.logit_scale"]:shape()))
    assert.is_true(maxdiff(during, before) > 1e-4)
  end)

  it("rejects bad options", function()
    errors_with("cosine_attention: scale is not an option here", as.attention.new, "cosine_attention", { scale = 0.5 })
    errors_with("cosine_attention: init_temperature must be a number in [0.01, inf)", as.attention.new, "cosine_attention", { init_temperature = 0 })
    local q = as.randn(1, 2, 3, 4)
    errors_with("cosine_attention: logit_scale was made for 8 heads", as.attention.new("cosine_attention"), q, q, q)
  end)
end)

-- ---- flex_attention ----

describe("flex_attention", function()
  it("with no mods equals scaled_dot_product (masks, GQA, several tiles)", function()
    local q, k, v, bmask, fmask = problem(17, 21, 30)
    for _, causal in ipairs { false, true } do
      for _, mask in ipairs { false, bmask, fmask } do
        mask = mask or nil
        local core = as.attention.new("flex_attention", { block_size = 8, causal = causal })
        assert.is_true(maxdiff(core(q, k, v, mask), as.sdp_attention(q, k, v, mask, { causal = causal })) < 1e-5)
      end
    end
  end)

  it("with a causal mask_mod equals causal scaled_dot_product", function()
    local q, k, v = problem(18, 25, 25)
    local core = as.attention.new("flex_attention", {
      block_size = 8, mask_mod = function(b, h, q_idx, kv_idx) return q_idx:ge(kv_idx) end,
    })
    assert.is_true(maxdiff(core(q, k, v), as.sdp_attention(q, k, v, nil, { causal = true })) < 1e-5)
  end)

  it("with an ALiBi score_mod equals relative_attention{alibi = true}", function()
    local q, k, v = problem(19, 20, 20)
    local slopes = alibi_slopes(4):view(1, 4, 1, 1)
    local core = as.attention.new("flex_attention", {
      block_size = 8, causal = true,
      score_mod = function(score, b, h, q_idx, kv_idx) return score - slopes * (q_idx - kv_idx):abs() end,
    })
    local ref = as.attention.new("relative_attention", { alibi = true, causal = true })(q, k, v)
    assert.is_true(maxdiff(core(q, k, v), ref) < 1e-5)
  end)

  it("skips tiles that mask_mod empties (a document mask)", function()
    local q, k, v = problem(20, 16, 16)
    local doc = as.tensor { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1 }
    local scored = 0
    local core = as.attention.new("flex_attention", {
      block_size = 4,
      mask_mod = function(b, h, q_idx, kv_idx)
        local dq = doc:index_select(1, q_idx:view(-1) + 1):view(1, 1, -1, 1)
        local dk = doc:index_select(1, kv_idx:view(-1) + 1):view(1, 1, 1, -1)
        return dq:eq(dk)
      end,
      score_mod = function(score) scored = scored + 1; return score end,
    })
    local keep = doc:view(16, 1):eq(doc:view(1, 16))
    assert.is_true(maxdiff(core(q, k, v), as.sdp_attention(q, k, v, keep)) < 1e-5)
    assert.are.equal(8, scored) -- 16 tiles of 4 x 4, half of them across documents
  end)

  it("scores tiles of (B, H, Bq, Bk) with broadcastable int64 indices", function()
    local q, k, v = problem(21, 10, 12)
    local seen = {}
    local core = as.attention.new("flex_attention", {
      block_size = 8,
      score_mod = function(score, b, h, q_idx, kv_idx)
        seen[#seen + 1] = { tostring(score:shape()), tostring(b:shape()), tostring(h:shape()),
          tostring(q_idx:shape()), tostring(kv_idx:shape()), q_idx:dtype(), kv_idx[1][1][1][1] }
        return score
      end,
    })
    core(q, k, v)
    assert.are.same({ "(2, 4, 8, 8)", "(2, 1, 1, 1)", "(1, 4, 1, 1)", "(1, 1, 8, 1)", "(1, 1, 1, 8)", "int64", 0 }, seen[1])
    assert.are.same("(2, 4, 2, 4)", seen[4][1])
    assert.are.equal(4, #seen)
  end)

  it("swaps into a block and back", function()
    local during, before = swap_and_back("flex_attention", { block_size = 4 })
    assert.is_true(maxdiff(during, before) < 1e-5)
  end)

  it("rejects bad options and bad mods", function()
    errors_with("flex_attention: score_mod must be a function, got 5", as.attention.new, "flex_attention", { score_mod = 5 })
    errors_with("flex_attention: block_size must be a positive integer, got 0", as.attention.new, "flex_attention", { block_size = 0 })
    local q = as.randn(1, 2, 3, 4)
    local core = as.attention.new("flex_attention", { mask_mod = function() return 1 end })
    errors_with("flex_attention: mask_mod must return a bool Tensor", core, q, q, q)
    core = as.attention.new("flex_attention", { score_mod = function() end })
    errors_with("flex_attention: score_mod must return a Tensor, got nil", core, q, q, q)
    errors_with("flex_attention: q must be 4-d", as.attention.new("flex_attention"), as.randn(2, 3), q, q)
  end)
end)

describe("the reweight registry entries", function()
  it("are registered with their facts", function()
    for _, name in ipairs { "relative_attention", "adaptive_attention", "gated_attention", "entmax_attention",
      "sigmoid_attention", "cosine_attention", "flex_attention" } do
      local info = as.attention.info(name)
      assert.is_string(info.paper)
      assert.is_true(info.causal and info.mask and info.gqa)
      assert.are.equal("cpu, cuda", info.devices)
    end
  end)

  it("run in training mode with dropout and without it in eval", function()
    local q, k, v = problem(22)
    local cases = {
      relative_attention = { num_heads = 4 }, sigmoid_attention = {}, entmax_attention = {},
      flex_attention = {}, gated_attention = { num_heads = 4, head_dim = 8 },
      adaptive_attention = { num_heads = 4, init_span = 1 }, cosine_attention = { num_heads = 4 },
    }
    for name, opts in pairs(cases) do
      opts.dropout = 0.5
      local core = as.attention.new(name, opts):eval()
      local eval = core(q, k, v)
      core:train()
      local train = core(q, k, v)
      core:eval()
      assert.are.equal(0, maxdiff(core(q, k, v), eval), name)
      assert.is_true(maxdiff(train, eval) > 1e-3, name)
    end
  end)
end)
