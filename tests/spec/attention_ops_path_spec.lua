-- The ops path of the swap zoo (lua/attnswap/attention/ops_path.lua): each
-- implementation whose C kernel is CPU-only also has a forward made of tensor
-- ops, taken on CUDA tensors.  Forced onto the CPU here (ops_path.force), it
-- must give what the C kernel gives, option by option: max abs diff <= 1e-4.
local as = require "attnswap"
local P = require "attnswap.attention.ops_path"

local TOL = 1e-4
local NEG_INF = -math.huge

local function maxdiff(a, b)
  assert.same(tostring(a:shape()), tostring(b:shape()))
  assert.equal(a:dtype(), b:dtype())
  if a:numel() == 0 then return 0 end
  return (a:float() - b:float()):abs():max():item()
end

-- both paths on the same core and inputs
local function both(core, q, k, v, mask)
  P.force = false
  local ref = core(q, k, v, mask)
  P.force = true
  local ok, out = pcall(core, q, k, v, mask)
  P.force = false
  if not ok then error(out, 0) end
  return ref, out
end

local function close(core, q, k, v, mask, what)
  local ref, out = both(core, q, k, v, mask)
  local d = maxdiff(ref, out)
  assert(d <= TOL, string.format("%s: max abs diff %g", what or "?", d))
  assert(out:ne(out):sum():item() == 0 or ref:ne(ref):sum():item() > 0, (what or "?") .. ": NaN on the ops path")
  return ref, out
end

-- B = 2, H = 4 query heads over Hkv (GQA when 2), odd lengths, Dv != D
local function problem(seed, Lq, Lk, Hkv, D, Dv)
  as.manual_seed(seed)
  Hkv, D, Dv = Hkv or 2, D or 8, Dv or 6
  return as.randn(2, 4, Lq, D), as.randn(2, Hkv, Lk, D), as.randn(2, Hkv, Lk, Dv)
end

-- masks of several broadcast shapes, each with a fully masked query row
local function masks(Lq, Lk)
  local out = {}
  local keep = as.rand(2, 1, Lq, Lk):gt(0.3)
  keep[1][1][2] = false                                   -- batch 1, query 2 sees nothing
  out[#out + 1] = { "bool (B, 1, Lq, Lk)", keep }
  local pad = as.ones(2, 1, 1, Lk, "bool")
  pad[2][1][1][Lk] = false
  pad[2][1][1][1] = false
  out[#out + 1] = { "bool key padding (B, 1, 1, Lk)", pad }
  local bias = as.randn(Lq, Lk) * 0.5
  bias[3] = NEG_INF                                        -- query 3: all -inf
  out[#out + 1] = { "float (Lq, Lk) with -inf row", bias }
  local hb = as.randn(1, 4, 1, Lk)
  out[#out + 1] = { "float (1, H, 1, Lk)", hb }
  return out
end

-- runs make(opts) over causal on/off, masks and shapes; check each
local function sweep(make, opts_list, shapes)
  shapes = shapes or { { 7, 7, 2 }, { 5, 11, 4 }, { 9, 13, 2 } }
  local n = 0
  for si, sh in ipairs(shapes) do
    local q, k, v = problem(si, sh[1], sh[2], sh[3])
    for _, opts in ipairs(opts_list) do
      local core = make(opts)
      core:eval()
      close(core, q, k, v, nil, "no mask")
      n = n + 1
      for _, m in ipairs(masks(sh[1], sh[2])) do
        close(core, q, k, v, m[2], m[1])
        n = n + 1
      end
    end
  end
  return n
end

local function new(name, extra)
  return function(opts)
    local o = {}
    for key, val in pairs(opts) do o[key] = val end
    for key, val in pairs(extra or {}) do o[key] = val end
    return as.attention.new(name, o)
  end
end

describe("ops_path", function()
  after_each(function() P.force = false end)

  it("is taken only for non-cpu tensors unless forced", function()
    local q = as.randn(1, 1, 2, 4)
    assert.is_false(P.active(q))
    P.force = true
    assert.is_true(P.active(q))
  end)

  it("lists cuda for every zoo implementation", function()
    for _, name in ipairs { "sparse_attention", "local_attention", "sink_attention", "dynamic_attention",
      "linear_attention", "performer_attention", "efficient_attention", "nystrom_attention",
      "relative_attention", "adaptive_attention", "gated_attention", "entmax_attention",
      "sigmoid_attention", "cosine_attention", "flex_attention" } do
      assert.equal("cpu, cuda", as.attention.info(name).devices, name)
    end
  end)
end)

describe("ops path equals the C kernels: sparse family", function()
  after_each(function() P.force = false end)

  it("local_attention", function()
    sweep(new("local_attention"), { { window_size = 1 }, { window_size = 3, causal = true }, { window_size = 20 } })
  end)

  it("sink_attention", function()
    sweep(new("sink_attention"), { { window_size = 3, num_sinks = 2 }, { window_size = 1, num_sinks = 0 },
      { window_size = 4, num_sinks = 20 } })
  end)

  it("sparse_attention: element, block, per-head and function layouts", function()
    local P_ = as.patterns
    sweep(function(o)
      local c = as.attention.new("sparse_attention", o)
      return c
    end, {
      { block_size = 2 }, -- the default layout
      { block_size = 4, causal = true },
      { layout = function(Lq, Lk) return P_.local_1d(Lk, 2) end, block_size = 4 },      -- Lk rows, read from the end
      { layout = function(Lq, Lk) return P_.random(Lk, 0.5, 3):narrow(1, Lk - Lq + 1, Lq) end, block_size = 3 },
      { layout = function(Lq, Lk)
          return P_.to_blocks(P_.random(Lk, 0.3, 1), 4):view(1, (Lk + 3) // 4, (Lk + 3) // 4):expand(4, (Lk + 3) // 4,
            (Lk + 3) // 4):contiguous()
        end, block_size = 4 },                                                             -- blocks, one per head
      { layout = function(Lq, Lk) return as.rand(4, Lq, Lk):gt(0.5) end, block_size = 8 }, -- elements per head
    })
  end)

  it("sparse_attention rejects a layout that fits nothing on the ops path too", function()
    local q, k, v = problem(1, 5, 5)
    local c = as.attention.new("sparse_attention", { layout = as.ones(3, 3, "bool"), block_size = 4 })
    P.force = true
    assert.has_error(function() c(q, k, v) end)
  end)

  it("dynamic_attention, ties to the lower index included", function()
    sweep(new("dynamic_attention"), { { top_k = 1 }, { top_k = 3, causal = true }, { top_k = 5 }, { top_k = 40 } })
    -- ties: many equal scores (q = 0 gives every key the score 0)
    local q, k, v = problem(3, 6, 9)
    q = as.zeros(2, 4, 6, 8)
    q:narrow(3, 1, 2):copy_(as.randn(2, 4, 2, 8))
    for _, kk in ipairs { 1, 2, 4, 8 } do
      local c = as.attention.new("dynamic_attention", { top_k = kk })
      close(c, q, k, v, nil, "ties top_k=" .. kk)
      close(c, q, k, v, as.tensor({ true, false, true, true, true, false, true, true, true }):view(1, 1, 1, 9), "ties+pad")
    end
  end)
end)

describe("ops path equals the C kernels: linear-cost family", function()
  after_each(function() P.force = false end)

  local function pad_masks(Lk)
    local b = as.ones(2, 1, 1, Lk, "bool")
    b[1][1][1][2] = false
    local f = as.zeros(2, 1, 1, Lk)
    f[2][1][1][Lk] = NEG_INF
    return { b, f }
  end

  local function linear_sweep(name, opts_list, shapes)
    for si, sh in ipairs(shapes) do
      local q, k, v = problem(10 + si, sh[1], sh[2], sh[3])
      for _, o in ipairs(opts_list) do
        as.manual_seed(5)
        local c = as.attention.new(name, o)
        close(c, q, k, v, nil, name)
        for _, m in ipairs(pad_masks(sh[2])) do close(c, q, k, v, m, name .. " padded") end
      end
    end
  end

  it("linear_attention, causal by the chunked scan", function()
    linear_sweep("linear_attention", { {}, { causal = true } }, { { 7, 7, 2 }, { 5, 11, 4 }, { 70, 150, 2 }, { 1, 9, 2 } })
  end)

  it("performer_attention", function()
    linear_sweep("performer_attention", { { nb_features = 16 }, { nb_features = 16, causal = true } },
      { { 7, 7, 2 }, { 5, 11, 4 }, { 67, 131, 2 } })
  end)

  it("efficient_attention and nystrom_attention", function()
    linear_sweep("efficient_attention", { {} }, { { 7, 7, 2 }, { 5, 11, 4 } })
    linear_sweep("nystrom_attention", { { num_landmarks = 4 }, { num_landmarks = 64 } }, { { 9, 9, 2 }, { 13, 13, 4 } })
  end)
end)

describe("ops path equals the C kernels: reweight family", function()
  after_each(function() P.force = false end)

  it("relative_attention: T5 buckets (trained bias) and ALiBi", function()
    sweep(function(o)
      local c = as.attention.new("relative_attention", o)
      if not o.alibi then
        as.manual_seed(4)
        c.relative_attention_bias = as.randn(o.num_buckets or 32, 4)
      end
      return c
    end, {
      { num_heads = 4, num_buckets = 8, max_distance = 6 },
      { num_heads = 4, num_buckets = 6, max_distance = 5, causal = true },
      { num_heads = 4, alibi = true },
      { num_heads = 4, alibi = true, causal = true, scale = 0.5 },
    })
    -- ALiBi with a head count that is not a power of two
    local q, k, v = problem(9, 6, 10, 3)
    q = as.randn(2, 6, 6, 8)
    close(as.attention.new("relative_attention", { alibi = true }), q, k, v, nil, "alibi H=6")
  end)

  it("adaptive_attention", function()
    sweep(function(o)
      local c = as.attention.new("adaptive_attention", o)
      c.span = as.tensor { 0.0, 0.1, 0.45, 2.0 }
      return c
    end, { { num_heads = 4, max_span = 10, ramp = 2 }, { num_heads = 4, max_span = 10, ramp = 3.5, causal = true } })
  end)

  it("gated_attention, headwise and elementwise", function()
    sweep(function(o)
      local c = as.attention.new("gated_attention", o)
      as.manual_seed(8)
      c.gate_weight = as.randn(c.gate_weight:size(1), c.gate_weight:size(2), c.gate_weight:size(3)) * 0.3
      c.gate_bias = as.randn(c.gate_bias:size(1), c.gate_bias:size(2))
      return c
    end, { { num_heads = 4, head_dim = 8 }, { num_heads = 4, head_dim = 8, causal = true } })
    local q, k, v = problem(2, 5, 7, 2, 8, 8)
    local c = as.attention.new("gated_attention", { num_heads = 4, head_dim = 8, gate = "elementwise" })
    c.gate_weight = as.randn(4, 8, 8) * 0.3
    close(c, q, k, v, nil, "elementwise")
    close(c, q, k, v, as.rand(2, 1, 5, 7):gt(0.4), "elementwise masked")
  end)

  it("entmax_attention: alpha 1, 1.5, 2, 1.25 and learned per head", function()
    sweep(function(o)
      local c = as.attention.new("entmax_attention", o)
      if o.learn_alpha then c.pre_alpha = as.tensor { -2.0, 0.0, 0.7, 3.0 } end
      return c
    end, {
      { alpha = 1.5 }, { alpha = 2, causal = true }, { alpha = 1 }, { alpha = 1.25 },
      { alpha = 1.5, learn_alpha = true, num_heads = 4, causal = true },
    })
  end)

  it("sigmoid_attention and cosine_attention", function()
    sweep(new("sigmoid_attention"), { {}, { bias = 0.5, causal = true, scale = 0.3 } })
    sweep(function(o)
      local c = as.attention.new("cosine_attention", o)
      c.logit_scale = as.tensor({ 0.5, 1.0, 2.0, 5.0 }):view(4, 1, 1)
      return c
    end, { { num_heads = 4 }, { num_heads = 4, causal = true } })
  end)

  it("flex_attention: mods, masks, tiles", function()
    local slopes = (as.arange(1, 5):float() * -math.log(2)):exp():view(1, 4, 1, 1)
    sweep(new("flex_attention"), {
      { block_size = 4 },
      { block_size = 3, causal = true },
      { block_size = 4, score_mod = function(s, b, h, qi, ki) return s - slopes * (qi - ki):abs() end },
      { block_size = 5, mask_mod = function(b, h, qi, ki) return qi:ge(ki):logical_and((qi - ki):lt(3)) end },
      { block_size = 2, score_mod = function(s) return (s / 2):tanh() * 2 end, causal = true },
    })
  end)
end)

describe("ops path: dtypes, empty inputs, dropout", function()
  after_each(function() P.force = false end)

  it("returns the input dtype", function()
    local q, k, v = problem(1, 5, 7)
    for _, name in ipairs { "local_attention", "dynamic_attention", "entmax_attention", "sigmoid_attention" } do
      local c = as.attention.new(name, {})
      local ref, out = both(c, q:bfloat16(), k:bfloat16(), v:bfloat16())
      assert.equal("bfloat16", out:dtype())
      assert(maxdiff(ref, out) <= 2e-2, name)
    end
  end)

  it("runs dropout in training and keeps the expectation", function()
    local q, k, v = problem(1, 6, 6)
    for _, name in ipairs { "sigmoid_attention", "entmax_attention", "flex_attention", "local_attention" } do
      local c = as.attention.new(name, { dropout = 0.5 })
      c:train()
      P.force = true
      local out = c(q, k, v)
      P.force = false
      assert.same("(2, 4, 6, 6)", tostring(out:shape()))
      assert.equal(0, out:ne(out):sum():item())
    end
  end)

  it("refuses parameters on another device than q with a clear error", function()
    -- simulated: the check itself, as a cuda core would meet a cpu parameter
    local ok, err = pcall(P.check_param, "relative_attention", "relative_attention_bias", as.zeros(2), "cuda:0")
    assert.is_false(ok)
    assert.matches("relative_attention: relative_attention_bias is on cpu but q is on cuda:0", err, 1, true)
  end)

  it("never calls a CPU-only kernel", function()
    local core = require "attnswap.core"
    local cpu_only = { "sparse_attention", "local_attention", "sink_attention", "dynamic_attention",
      "relative_attention", "adaptive_attention", "gated_attention", "entmax_attention", "sigmoid_attention",
      "cosine_attention", "linear_attention_causal" }
    local saved, saved_step = {}, core.flex_attention_ops.step
    local function trap(name) return function() error("called the CPU kernel " .. name, 0) end end
    for _, f in ipairs(cpu_only) do saved[f] = core[f]; core[f] = trap(f) end
    core.flex_attention_ops.step = trap("flex step")
    local q, k, v = problem(4, 6, 70)
    local ok, err = pcall(function()
      P.force = true
      for _, spec in ipairs {
        { "sparse_attention", { block_size = 4 } }, { "local_attention", {} }, { "sink_attention", {} },
        { "dynamic_attention", { top_k = 3 } }, { "relative_attention", { num_heads = 4 } },
        { "relative_attention", { alibi = true } }, { "adaptive_attention", { num_heads = 4 } },
        { "gated_attention", { num_heads = 4, head_dim = 8 } }, { "entmax_attention", {} },
        { "sigmoid_attention", {} }, { "cosine_attention", { num_heads = 4 } }, { "flex_attention", {} },
        { "linear_attention", { causal = true } }, { "performer_attention", { causal = true } },
        { "efficient_attention", {} }, { "nystrom_attention", { num_landmarks = 4 } },
      } do
        local out = as.attention.new(spec[1], spec[2])(q, k, v)
        assert.same("(2, 4, 6, 6)", tostring(out:shape()))
      end
    end)
    P.force = false
    for f, fn in pairs(saved) do core[f] = fn end
    core.flex_attention_ops.step = saved_step
    assert(ok, err)
  end)
end)
