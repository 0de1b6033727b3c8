-- The sparse implementations from Lua: sparse (block layouts), local (sliding
-- window), sink (StreamingLLM) and dynamic (per-query top-k) attention.  Each
-- against a naive reference of the same math written here with tensor ops,
-- the property that pins it to its paper, a swap into a small model and
-- back, its (absent) parameters, and bad options.
local as = require "attnswap"
local patterns = as.patterns or require "attnswap.patterns"
local nn = as.nn

local NEG_INF = -math.huge

local function maxdiff(a, b) return (a - b):abs():max():item() end

-- (B, Hkv, L, D) -> (B, H, L, D): each kv head serves H / Hkv query heads
local function repeat_kv(t, H)
  local B, Hkv, L, D = t:size(1), t:size(2), t:size(3), t:size(4)
  if Hkv == H then return t end
  return t:unsqueeze(3):expand(B, Hkv, H // Hkv, L, D):reshape(B, H, L, D)
end

-- naive masked softmax attention: keep (bool, broadcastable to (B, H, Lq, Lk))
-- restricts the keys; fbias (float) is added; rows with nothing give zeros
local function naive(q, k, v, keep, fbias, causal)
  local H, D, Lq, Lk = q:size(2), q:size(4), q:size(3), k:size(3)
  local s = q:matmul(repeat_kv(k, H):transpose(3, 4)) * (1 / math.sqrt(D))
  if fbias then s = s + fbias end
  if causal then s = as.where(as.ones(Lq, Lk, "bool"):tril(Lk - Lq), s, NEG_INF) end
  if keep then s = as.where(keep, s, NEG_INF) end
  return s:softmax(-1):matmul(repeat_kv(v, H))
end

-- i' - j over (Lq, Lk), i' = i + Lk - Lq
local function rel_pos(Lq, Lk)
  return as.arange(0, Lq):view(Lq, 1) + (Lk - Lq) - as.arange(0, Lk):view(1, Lk)
end

-- a standard problem: B=2, H=4 over Hkv=2 (GQA), odd lengths, Dv != D
local function problem(seed, Lq, Lk)
  as.manual_seed(seed or 1)
  Lq, Lk = Lq or 37, Lk or 37
  local q = as.randn(2, 4, Lq, 8) * 1.5
  local k = as.randn(2, 2, Lk, 8)
  local v = as.randn(2, 2, Lk, 6)
  local bmask = as.rand(2, 1, Lq, Lk):gt(0.2)
  local fmask = as.randn(4, Lq, Lk)
  return q, k, v, bmask, fmask
end

local function finite(t) return (t - t):eq(0) end
local function all(t) return t:float():min():item() == 1 end
local function none(t) return t:float():max():item() == 0 end

local function tiny_block()
  as.manual_seed(3)
  return nn.TransformerBlock { dim = 16, num_heads = 4 }:eval()
end

local function param_names(m)
  local out = {}
  for path in m:named_parameters() do out[#out + 1] = path end
  table.sort(out)
  return table.concat(out, " ")
end

-- swaps name into a TransformerBlock and back; returns the swapped output
local function swap_and_back(name, opts, L)
  local model = tiny_block()
  local x = as.randn(2, L or 7, 16)
  local before, names = model(x), param_names(model)
  local during
  do
    local s <close> = as.swapped(model, "scaled_dot_product", name, opts)
    assert.are.equal(1, #s.report.swapped)
    assert.are.equal("attn.core", s.report.swapped[1].path)
    during = s.model(x)
    -- no learnable parameters: the model's are exactly the original ones
    assert.are.equal(names, param_names(s.model))
    assert.are.equal("", param_names(s.model.attn.core))
  end
  assert.are.equal("ScaledDotProductAttention", model.attn.core:type())
  assert.are.equal(0, maxdiff(model(x), before))
  assert.are.equal(tostring(x:shape()), tostring(during:shape()))
  return during, before
end

local function errors_with(text, f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error containing: " .. text)
  assert.is_truthy(tostring(err):find(text, 1, true), "got: " .. tostring(err))
end

-- ---- sparse_attention ----

describe("sparse_attention", function()
  local function sparse(opts) return as.attention.new("sparse_attention", opts) end

  it("matches a naive masked softmax for element layouts, with masks, causal and GQA", function()
    local q, k, v, bmask, fmask = problem(1)
    local L = 37
    local layouts = {
      strided = patterns.strided(L, 6),
      fixed = patterns.fixed(L, 8, 2),
      bigbird = patterns.bigbird(L, { block = 4, randoms = 2, seed = 7 }),
      random = patterns.random(L, 0.3, 5),
      union = patterns.union(patterns.local_1d(L, 3), patterns.global_tokens(L, { 1, 20 })),
      axial = patterns.axial_2d(L, 1),
    }
    for name, lay in pairs(layouts) do
      for _, causal in ipairs { false, true } do
        for _, bs in ipairs { 4, 7, 32 } do
          local core = sparse { layout = lay, block_size = bs, causal = causal }
          local ref = naive(q, k, v, lay:logical_and(bmask), nil, causal)
          local d = maxdiff(core(q, k, v, bmask), ref)
          assert.is_true(d < 1e-5, name .. " bs=" .. bs .. ": " .. d)
          assert.is_true(maxdiff(core(q, k, v, fmask), naive(q, k, v, lay, fmask, causal)) < 1e-5, name)
        end
      end
    end
  end)

  it("equals scaled_dot_product with the same dense mask", function()
    local q, k, v = problem(2)
    local lay = patterns.union(patterns.strided(37, 5, true), patterns.random(37, 0.1, 1))
    local out = sparse { layout = lay, block_size = 8 }(q, k, v)
    local ref = as.attention.new("scaled_dot_product")(q, k, v, lay)
    assert.is_true(maxdiff(out, ref) < 1e-5)
  end)

  it("with a full layout equals full attention", function()
    local q, k, v = problem(3)
    for _, causal in ipairs { false, true } do
      local ref = as.sdp_attention(q, k, v, nil, { causal = causal })
      assert.is_true(maxdiff(sparse { layout = patterns.full(37), causal = causal }(q, k, v), ref) < 1e-5)
      local blocks = as.ones(3, 3, "bool") -- ceil(37 / 16) blocks, every one kept
      assert.is_true(maxdiff(sparse { layout = blocks, block_size = 16, causal = causal }(q, k, v), ref) < 1e-5)
    end
  end)

  it("takes block layouts: every element of a kept block attends", function()
    local q, k, v, bmask = problem(4)
    local blocks = patterns.to_blocks(patterns.local_1d(37, 5), 8) -- (5, 5)
    assert.are.equal("(5, 5)", tostring(blocks:shape()))
    local dense = patterns.from_blocks(blocks, 8, 37)
    local out = sparse { layout = blocks, block_size = 8 }(q, k, v, bmask)
    assert.is_true(maxdiff(out, naive(q, k, v, dense:logical_and(bmask))) < 1e-5)
  end)

  it("takes one layout per head", function()
    local q, k, v = problem(5)
    local per_head = as.stack({ patterns.local_1d(37, 2), patterns.strided(37, 4), patterns.causal(37),
      patterns.random(37, 0.5, 2) }, 1) -- (4, 37, 37)
    local out = sparse { layout = per_head, block_size = 8 }(q, k, v)
    assert.is_true(maxdiff(out, naive(q, k, v, per_head)) < 1e-5)
  end)

  it("never visits empty blocks: NaN values there do not reach other rows", function()
    local q, k, v = problem(6, 64, 64)
    -- block diagonal of 16-blocks: block row r sees only block r
    local lay = as.arange(0, 4):view(4, 1):eq(as.arange(0, 4):view(1, 4))
    local vn = v:clone()
    vn:narrow(3, 33, 16):fill_(0 / 0) -- keys 33..48 are block 2
    local out = sparse { layout = lay, block_size = 16 }(q, k, vn)
    local ok_rows = as.cat({ out:narrow(3, 1, 32), out:narrow(3, 49, 16) }, 3)
    assert.is_true(all(finite(ok_rows)))
    assert.is_true(none(finite(out:narrow(3, 33, 16))))
    -- a dense kernel with the same mask multiplies the NaNs by zero weights
    assert.is_true(none(finite(as.sdp_attention(q, k, vn, patterns.from_blocks(lay, 16, 64)))))
  end)

  it("runs incrementally: a (Lk, Lk) layout is aligned bottom-right for a shorter query", function()
    local q, k, v = problem(7, 37, 37)
    local lay = patterns.bigbird(37, { block = 4, randoms = 1, causal = true })
    local core = sparse { layout = lay, block_size = 4, causal = true }
    local full = core(q, k, v)
    local last = core(q:narrow(3, 31, 7), k, v) -- the last 7 queries against all 37 keys
    assert.is_true(maxdiff(last, full:narrow(3, 31, 7)) < 1e-5)
    local blocks = patterns.to_blocks(lay, 4)
    local cb = sparse { layout = blocks, block_size = 4, causal = true }
    assert.is_true(maxdiff(cb(q:narrow(3, 30, 8), k, v), cb(q, k, v):narrow(3, 30, 8)) < 1e-5)
  end)

  it("builds its layout from a function per (Lq, Lk), and has a default", function()
    local q, k, v = problem(8)
    local calls = 0
    local core = sparse { mask = function(Lq, Lk) calls = calls + 1; return patterns.local_1d(Lk, 4) end }
    local ref = naive(q, k, v, patterns.local_1d(37, 4))
    assert.is_true(maxdiff(core(q, k, v), ref) < 1e-5)
    assert.is_true(maxdiff(core(q, k, v), ref) < 1e-5)
    assert.are.equal(1, calls)
    -- the default: a 3-block window and the first block global
    local qd, kd, vd = problem(9, 100, 100)
    local dflt = sparse {}(qd, kd, vd)
    local want = patterns.bigbird(100, { block = 32, window = 3, globals = 1, randoms = 0 })
    assert.is_true(maxdiff(dflt, naive(qd, kd, vd, want)) < 1e-5)
  end)

  it("swaps into a block and back", function()
    local out, before = swap_and_back("sparse_attention", { layout = patterns.local_1d(7, 2), block_size = 2 })
    assert.is_true(maxdiff(out, before) > 1e-4) -- a different attention
    local full = swap_and_back("sparse_attention", { layout = patterns.full(7) })
    assert.is_true(maxdiff(full, before) < 1e-5) -- full layout: the same model
  end)

  it("rejects bad options and layouts that do not fit", function()
    errors_with("sparse_attention: layout must be a 2-d or 3-d bool tensor", sparse, { layout = 3 })
    errors_with("sparse_attention: layout must be a 2-d or 3-d bool tensor", sparse, { layout = as.ones(4, 4) })
    errors_with("sparse_attention: block_size must be a positive integer, got 0", sparse, { block_size = 0 })
    errors_with("sparse_attention: give layout or its synonym mask, not both", sparse,
      { layout = patterns.full(4), mask = patterns.full(4) })
    errors_with("sparse_attention: unknown option 'window_size'", sparse, { window_size = 3 })
    local q, k, v = problem(10)
    errors_with("sparse_attention: layout of shape (10, 10) fits neither", sparse { layout = patterns.full(10) }, q, k, v)
    errors_with("sparse_attention: the layout function returned nil", sparse { layout = function() end }, q, k, v)
    errors_with("sparse_attention: q must be 4-d", sparse {}, as.randn(2, 3), k, v)
  end)
end)

-- ---- local_attention ----

local function band(Lq, Lk, w, causal)
  local rel = rel_pos(Lq, Lk)
  local keep = rel:abs():le(w)
  if causal then keep = keep:logical_and(rel:ge(0)) end
  return keep
end

describe("local_attention", function()
  local function loc(opts) return as.attention.new("local_attention", opts) end

  it("matches a naive band mask |i' - j| <= w, causal and not, with masks and GQA", function()
    for _, shape in ipairs { { 37, 37 }, { 9, 40 }, { 70, 70 } } do
      local q, k, v, bmask, fmask = problem(11, shape[1], shape[2])
      for _, w in ipairs { 1, 3, 16, 50 } do
        for _, causal in ipairs { false, true } do
          local core = loc { window_size = w, causal = causal }
          local keep = band(shape[1], shape[2], w, causal)
          assert.is_true(maxdiff(core(q, k, v), naive(q, k, v, keep)) < 1e-5)
          assert.is_true(maxdiff(core(q, k, v, bmask), naive(q, k, v, keep:logical_and(bmask))) < 1e-5)
          assert.is_true(maxdiff(core(q, k, v, fmask), naive(q, k, v, keep, fmask)) < 1e-5)
        end
      end
    end
  end)

  it("with a window past every key equals full attention", function()
    local q, k, v = problem(12)
    for _, causal in ipairs { false, true } do
      local ref = as.attention.new("scaled_dot_product", { causal = causal })(q, k, v)
      assert.is_true(maxdiff(loc { window_size = 1000, causal = causal }(q, k, v), ref) < 1e-5)
    end
  end)

  it("never visits keys outside the band: NaN values far away stay far away", function()
    local q, k, v = problem(13, 512, 512)
    local vn = v:clone()
    vn:narrow(3, 401, 1):fill_(0 / 0) -- key 400 (0-based)
    local out = loc { window_size = 8 }(q, k, vn)
    assert.is_true(all(finite(out:narrow(3, 1, 256))))
    assert.is_true(none(finite(out:narrow(3, 395, 12))))
  end)

  it("swaps into a block and back", function()
    local out, before = swap_and_back("local_attention", { window_size = 2 })
    assert.is_true(maxdiff(out, before) > 1e-4)
    local wide = swap_and_back("local_attention", { window_size = 6 }) -- sees all 7 tokens
    assert.is_true(maxdiff(wide, before) < 1e-5)
  end)

  it("rejects bad options", function()
    errors_with("local_attention: window_size must be a positive integer, got -1", loc, { window_size = -1 })
    errors_with("local_attention: window_size must be a positive integer, got 2.5", loc, { window_size = 2.5 })
    errors_with("local_attention: dropout must be a number in [0, 1)", loc, { dropout = 1 })
    errors_with("local_attention: unknown option 'window'", loc, { window = 3 })
    errors_with("bad argument #1 to 'local_attention' (options table expected, got string)",
      as.attention.get("local_attention"), "x")
  end)
end)

-- ---- sink_attention ----

describe("sink_attention", function()
  local function sink(opts) return as.attention.new("sink_attention", opts) end

  -- j <= i' and (j < s or i' - j < w)
  local function sink_mask(Lq, Lk, w, s)
    local rel = rel_pos(Lq, Lk)
    local j = as.arange(0, Lk):view(1, Lk)
    return rel:ge(0):logical_and(j:lt(s):logical_or(rel:lt(w)))
  end

  it("matches a naive mask of sinks plus a causal window, with masks and GQA", function()
    for _, shape in ipairs { { 37, 37 }, { 5, 60 }, { 80, 80 } } do
      local q, k, v, bmask, fmask = problem(14, shape[1], shape[2])
      for _, ws in ipairs { { 1, 0 }, { 4, 4 }, { 10, 1 }, { 33, 7 } } do
        local core = sink { window_size = ws[1], num_sinks = ws[2] }
        local keep = sink_mask(shape[1], shape[2], ws[1], ws[2])
        assert.is_true(maxdiff(core(q, k, v), naive(q, k, v, keep)) < 1e-5)
        assert.is_true(maxdiff(core(q, k, v, bmask), naive(q, k, v, keep:logical_and(bmask))) < 1e-5)
        assert.is_true(maxdiff(core(q, k, v, fmask), naive(q, k, v, keep, fmask)) < 1e-5)
      end
    end
  end)

  it("is StreamingLLM's cache: sinks + window of a long stream equal attention over just those keys", function()
    local q, k, v = problem(15, 1, 200) -- one new token after 199 others
    local out = sink { window_size = 16, num_sinks = 4 }(q, k, v)
    local kept_k = as.cat({ k:narrow(3, 1, 4), k:narrow(3, 185, 16) }, 3)
    local kept_v = as.cat({ v:narrow(3, 1, 4), v:narrow(3, 185, 16) }, 3)
    assert.is_true(maxdiff(out, as.sdp_attention(q, kept_k, kept_v)) < 1e-5)
  end)

  it("without sinks is causal local attention; with a huge window causal attention", function()
    local q, k, v = problem(16)
    assert.is_true(maxdiff(sink { window_size = 5, num_sinks = 0 }(q, k, v),
      as.attention.new("local_attention", { window_size = 4, causal = true })(q, k, v)) < 1e-6)
    assert.is_true(maxdiff(sink { window_size = 100 }(q, k, v), as.sdp_attention(q, k, v, nil, { causal = true })) < 1e-5)
  end)

  it("swaps into a block and back", function()
    local out, before = swap_and_back("sink_attention", { window_size = 2, num_sinks = 1, causal = true })
    assert.is_true(maxdiff(out, before) > 1e-4)
  end)

  it("rejects bad options", function()
    errors_with("sink_attention: causal must be true", sink, { causal = false })
    errors_with("sink_attention: window_size must be a positive integer, got 0", sink, { window_size = 0 })
    errors_with("sink_attention: num_sinks must be a non-negative integer, got -1", sink, { num_sinks = -1 })
    errors_with("sink_attention: unknown option 'sinks'", sink, { sinks = 2 })
  end)
end)

-- ---- dynamic_attention ----

describe("dynamic_attention", function()
  local function dyn(opts) return as.attention.new("dynamic_attention", opts) end

  -- the top-k keep mask (B, H, Lq, Lk) chosen in Lua from the scores: sort
  -- each row's visible scores by value, ties to the lower index
  local function topk_mask(q, k, top_k, keep, fbias, causal)
    local H, D, Lq, Lk = q:size(2), q:size(4), q:size(3), k:size(3)
    local s = q:matmul(repeat_kv(k, H):transpose(3, 4)) * (1 / math.sqrt(D))
    if fbias then s = s + fbias end
    if causal then s = as.where(as.ones(Lq, Lk, "bool"):tril(Lk - Lq), s, NEG_INF) end
    if keep then s = as.where(keep, s, NEG_INF) end
    local rows = s:tolist()
    local out = {}
    for b, hs in ipairs(rows) do
      out[b] = {}
      for h, is in ipairs(hs) do
        out[b][h] = {}
        for i, row in ipairs(is) do
          local order = {}
          for j, x in ipairs(row) do if x ~= NEG_INF then order[#order + 1] = j end end
          table.sort(order, function(a, c) if row[a] ~= row[c] then return row[a] > row[c] end return a < c end)
          local m = {}
          for j = 1, #row do m[j] = false end
          for t = 1, math.min(top_k, #order) do m[order[t]] = true end
          out[b][h][i] = m
        end
      end
    end
    return as.tensor(out)
  end

  it("matches a naive top-k mask chosen by sorting, with masks, causal and GQA", function()
    local q, k, v, bmask, fmask = problem(17, 21, 26)
    for _, top_k in ipairs { 1, 2, 5, 13 } do
      for _, causal in ipairs { false, true } do
        local core = dyn { top_k = top_k, causal = causal }
        local keep = topk_mask(q, k, top_k, nil, nil, causal)
        assert.is_true(maxdiff(core(q, k, v), naive(q, k, v, keep)) < 1e-5)
        keep = topk_mask(q, k, top_k, bmask, nil, causal)
        assert.is_true(maxdiff(core(q, k, v, bmask), naive(q, k, v, keep)) < 1e-5)
        keep = topk_mask(q, k, top_k, nil, fmask, causal)
        assert.is_true(maxdiff(core(q, k, v, fmask), naive(q, k, v, keep, fmask)) < 1e-5)
      end
    end
  end)

  it("with top_k >= Lk equals softmax attention", function()
    local q, k, v, bmask = problem(18)
    for _, causal in ipairs { false, true } do
      local ref = as.sdp_attention(q, k, v, bmask, { causal = causal })
      assert.is_true(maxdiff(dyn { top_k = 37, causal = causal }(q, k, v, bmask), ref) < 1e-5)
      assert.is_true(maxdiff(dyn { top_k = 1000, causal = causal }(q, k, v, bmask), ref) < 1e-5)
    end
  end)

  it("with top_k = 1 is hard attention: the value of the best key", function()
    local q, k, v = problem(19)
    local out = dyn { top_k = 1 }(q, k, v)
    local s = q:matmul(repeat_kv(k, 4):transpose(3, 4))
    local _, best = s:max(4) -- 1-based indices (2, 4, 37)
    local vv = repeat_kv(v, 4)
    for b = 1, 2 do
      for h = 1, 4 do
        local picked = vv[b][h]:index_select(1, best[b][h])
        assert.is_true(maxdiff(out[b][h], picked) < 1e-6)
      end
    end
  end)

  it("keeps the first k by index among ties, and never selects masked keys", function()
    -- every score equal: the first k keys win
    local q = as.zeros(1, 1, 1, 4)
    local k = as.randn(1, 1, 10, 4)
    local v = as.randn(1, 1, 10, 3)
    local out = dyn { top_k = 3 }(q, k, v)
    assert.is_true(maxdiff(out[1][1][1], v[1][1]:narrow(1, 1, 3):mean(1)) < 1e-6)
    -- mask away the first two: keys 3..5 win
    local keep = as.arange(0, 10):ge(2)
    out = dyn { top_k = 3 }(q, k, v, keep)
    assert.is_true(maxdiff(out[1][1][1], v[1][1]:narrow(1, 3, 3):mean(1)) < 1e-6)
    -- fewer visible keys than k: all of them, and a row that sees none is zero
    local two = as.arange(0, 10):lt(2)
    out = dyn { top_k = 5 }(q, k, v, two)
    assert.is_true(maxdiff(out[1][1][1], v[1][1]:narrow(1, 1, 2):mean(1)) < 1e-6)
    out = dyn { top_k = 5 }(q, k, v, as.zeros(10, "bool"))
    assert.are.equal(0, out:abs():max():item())
  end)

  it("swaps into a block and back", function()
    local out, before = swap_and_back("dynamic_attention", { top_k = 2 })
    assert.is_true(maxdiff(out, before) > 1e-4)
    local all_keys = swap_and_back("dynamic_attention", { top_k = 7 })
    assert.is_true(maxdiff(all_keys, before) < 1e-5)
  end)

  it("rejects bad options", function()
    errors_with("dynamic_attention: top_k must be a positive integer, got 0", dyn, { top_k = 0 })
    errors_with("dynamic_attention: top_k must be a positive integer, got \"8\"", dyn, { top_k = "8" })
    errors_with("dynamic_attention: scale must be a positive number", dyn, { scale = -1 })
    errors_with("dynamic_attention: unknown option 'k'", dyn, { k = 3 })
  end)
end)

describe("the sparse registry entries", function()
  local NAMES = { "sparse_attention", "local_attention", "dynamic_attention", "sink_attention" }

  it("are registered with their facts", function()
    local papers = {
      sparse_attention = "Child et al. 2019", local_attention = "Beltagy et al. 2020",
      dynamic_attention = "Zhao et al. 2019", sink_attention = "Xiao et al. 2023",
    }
    for _, name in ipairs(NAMES) do
      local info = as.attention.info(name)
      assert.is_false(info.exact)
      assert.is_true(info.causal and info.mask and info.gqa and info.incremental)
      assert.are.equal(papers[name], info.paper)
      assert.is_truthy(info.devices:find("cpu"))
    end
    assert.are.equal("O(L w D)", as.attention.info("local_attention").complexity)
  end)

  it("run with dropout in training mode only, reproducibly under a seed", function()
    local q, k, v = problem(20)
    for _, name in ipairs(NAMES) do
      local opts = { dropout = 0.5 }
      if name == "sparse_attention" then opts.layout = patterns.local_1d(37, 8) end
      local core = as.attention.new(name, opts):eval() -- modules start in training mode, as torch's
      local eval = core(q, k, v)
      core:train()
      as.manual_seed(5)
      local a = core(q, k, v)
      as.manual_seed(5)
      local b = core(q, k, v)
      core:eval()
      assert.are.equal(0, maxdiff(a, b), name)
      assert.is_true(maxdiff(a, eval) > 1e-3, name)
      assert.are.equal(0, maxdiff(core(q, k, v), eval))
    end
  end)

  it("work in float16 and bfloat16 (computed in float32)", function()
    local q, k, v = problem(21)
    for _, name in ipairs(NAMES) do
      local core = as.attention.new(name, name == "sparse_attention" and { layout = patterns.local_1d(37, 8) } or {})
      local ref = core(q, k, v)
      for _, dt in ipairs { "float16", "bfloat16" } do
        local out = core(q:to(dt), k:to(dt), v:to(dt))
        assert.are.equal(dt, out:dtype())
        assert.is_true(maxdiff(out:float(), ref) < 0.05, name .. " " .. dt)
      end
    end
  end)
end)
