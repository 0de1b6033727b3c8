-- hedgehog_attention and lolcats_attention (issue 18): each forward (with
-- gradients recorded and without) against a direct O(L^2) reading of
-- the formula, causal and not, with key-padding masks, GQA and odd lengths;
-- step-by-step decoding against the full causal forward; gradients of q, k,
-- v and of the learnable maps (and LoLCATs' window factors) against central
-- differences; swapped into GPT-2 and BERT, forward + backward, sized from
-- the model; as.compare lists them; bad options are clear errors.
local as = require "attnswap"
local U = require "spec_util" -- tests/spec/spec_util.lua
local numgrad = require "numgrad"
local I = require "attnswap.attention.incremental"
local HC = require "attnswap.attention.hedgehog_common"
local maxdiff, errmsg = U.maxdiff, U.errmsg

-- ---- the reference: whole L x L matrices, straight from the formula ----

-- phi(x) = [softmax(x W_h), softmax(-x W_h)] per head, x (B, H, L, D), W (H, D, F)
local function ref_phi(x, W)
  local heads = {}
  for h = 1, x:size(2) do
    local xw = x:select(2, h):matmul(W:select(1, h)) -- (B, L, F)
    heads[h] = as.cat({ xw:softmax(-1), (-xw):softmax(-1) }, 3):unsqueeze(2)
  end
  return as.cat(heads, 2)
end

local function rep(t, H) -- (B, Hkv, L, D) -> (B, H, L, D)
  local B, Hkv, L, D = t:size(1), t:size(2), t:size(3), t:size(4)
  return t:unsqueeze(3):expand(B, Hkv, H // Hkv, L, D):reshape(B, H, L, D)
end

-- (Lq, Lk) bool masks: visible keys, window keys (bottom-right aligned)
local function masks(Lq, Lk, causal, w)
  local qi = as.arange(Lk - Lq, Lk):view(Lq, 1)
  local kj = as.arange(0, Lk):view(1, Lk)
  local seen = causal and kj:le(qi) or as.ones({ Lq, Lk }, "bool")
  local win = kj:gt(qi - w):logical_and(kj:lt(qi + w)):logical_and(seen)
  return seen, win
end

-- keep (B, Lk) bool or nil -> out (B, H, Lq, Dv)
local function reference(c, q, k, v, keep)
  local o = c.opts
  local H, Lq, Lk, D = q:size(2), q:size(3), k:size(3), q:size(4)
  k, v = rep(k, H), rep(v, H)
  local lin = ref_phi(q, c.feature_q):matmul(ref_phi(k, c.feature_k):transpose(3, 4)) -- (B, H, Lq, Lk)
  local w = o.window_size or 0
  local seen, win = masks(Lq, Lk, o.causal, w)
  local kp = keep and keep:reshape(keep:size(1), 1, 1, Lk) or as.ones({ 1, 1, 1, Lk }, "bool")
  local linear = seen:logical_and(win:logical_not()):logical_and(kp)
  local a
  if w == 0 then
    a = as.where(linear, lin, 0.0)
  else
    local gamma = c.window_factors:sigmoid()
    local lam = o.affine and (1 - gamma) or 1
    local s = q:matmul(k:transpose(3, 4)) / math.sqrt(D)
    local ww = win:logical_and(kp)
    local m = as.where(ww, s, -1e30):max(4, true)
    m = as.where(m:gt(-1e29), m, 0.0)
    a = as.where(ww, (as.where(ww, s, 0.0) - m):exp() * gamma, 0.0) + as.where(linear, lin, 0.0) * lam
  end
  local den = a:sum(4, true)
  return as.where(den:ne(0), a:matmul(v) / as.where(den:ne(0), den, 1.0), 0.0)
end

local function new(name, H, D, extra)
  local o = { num_heads = H, head_dim = D, feature_dim = 5 }
  for key, val in pairs(extra or {}) do o[key] = val end
  return as.attention.new(name, o)
end

local CASES = {
  { "hedgehog_attention", {} },
  { "hedgehog_attention", { init = "random" } },
  { "lolcats_attention", { window_size = 3 } },
  { "lolcats_attention", { window_size = 1, affine = true, window_factor = 0.7 } },
  { "lolcats_attention", { window_size = 70 } }, -- two query blocks inside one window
}

local function label(case, causal)
  local parts = {}
  for key, val in pairs(case[2]) do parts[#parts + 1] = key .. "=" .. tostring(val) end
  table.sort(parts)
  return string.format("%s {%s} causal=%s", case[1], table.concat(parts, ", "), tostring(causal))
end

describe("hedgehog and lolcats forward against the formula", function()
  local B, H, Hkv, D, Dv = 2, 4, 2, 6, 5
  for _, case in ipairs(CASES) do
    for _, causal in ipairs { true, false } do
      it(label(case, causal), function()
        as.manual_seed(5)
        local extra = { causal = causal }
        for key, val in pairs(case[2]) do extra[key] = val end
        local c = new(case[1], H, D, extra)
        -- random maps and factors, so the test does not hinge on an identity map
        c.feature_q:copy_(as.randn(H, D, 5) * 0.7)
        c.feature_k:copy_(as.randn(H, D, 5) * 0.7)
        if c.window_factors then c.window_factors:copy_(as.randn(1, H, 1, 1)) end
        for _, shape in ipairs { { 13, 13 }, { 1, 9 }, { 4, 11 }, { 67, 67 }, { 150, 150 }, { 280, 280 } } do
          local Lq, Lk = shape[1], shape[2]
          if causal or Lq == Lk then
            local q, k, v = as.randn(B, H, Lq, D), as.randn(B, Hkv, Lk, D), as.randn(B, Hkv, Lk, Dv)
            local keep = as.rand(B, Lk):gt(0.3)
            keep[1][Lk] = true
            for _, masked in ipairs { false, true } do
              local kp = masked and keep or nil
              local mask = kp and kp:reshape(B, 1, 1, Lk) or nil
              local want = reference(c, q, k, v, kp)
              local fast = as.no_grad(function() return c(q, k, v, mask) end) -- no graph
              c:requires_grad_()
              local graded = c(q, k, v, mask)                                  -- a graph
              c:requires_grad_(false)
              local tag = string.format("Lq=%d Lk=%d masked=%s", Lq, Lk, tostring(masked))
              assert.are.same({ B, H, Lq, Dv }, graded:shape())
              assert.is_true(maxdiff(fast, want) < 2e-5, tag .. " inference: " .. maxdiff(fast, want))
              assert.is_true(maxdiff(graded, want) < 2e-5, tag .. " autograd: " .. maxdiff(graded, want))
              HC.loop = true -- the block loop (steps, bidirectional) on the same call
              local ok, looped = pcall(c, q, k, v, mask)
              HC.loop = false
              assert(ok, looped)
              assert.is_true(maxdiff(looped, want) < 2e-5, tag .. " loop: " .. maxdiff(looped, want))
            end
          end
        end
      end)
    end
  end

  it("a float 0/-inf key-padding mask is the bool one; fully masked rows give zeros", function()
    as.manual_seed(6)
    for _, name in ipairs { "hedgehog_attention", "lolcats_attention" } do
      local c = new(name, 2, 4, name == "lolcats_attention" and { window_size = 2 } or nil)
      local q, k, v = as.randn(1, 2, 5, 4), as.randn(1, 2, 5, 4), as.randn(1, 2, 5, 4)
      local keep = as.tensor({ { true, false, true, true, false } }):reshape(1, 1, 1, 5)
      local fmask = as.where(keep, 0.0, -math.huge)
      assert.is_true(maxdiff(c(q, k, v, keep), c(q, k, v, fmask)) < 1e-6)
      local none = as.zeros({ 1, 1, 1, 5 }, "bool")
      assert.are.equal(0, c(q, k, v, none):abs():max():item())
    end
  end)
end)

describe("step (generation) equals the causal forward", function()
  local B, H, Hkv, D, L = 2, 4, 2, 6, 90
  local chunks = { 7, 1, 1, 5, 1, 1, 1, 70, 1, 1, 1 }
  for _, case in ipairs(CASES) do
    it(label(case, true), function()
      as.manual_seed(11)
      local extra = { causal = true }
      for key, val in pairs(case[2]) do extra[key] = val end
      local c = new(case[1], H, D, extra)
      c.feature_q:copy_(as.randn(H, D, 5) * 0.7)
      c.feature_k:copy_(as.randn(H, D, 5) * 0.7)
      local q, k, v = as.randn(B, H, L, D), as.randn(B, Hkv, L, D), as.randn(B, Hkv, L, D)
      local keep = as.ones({ B, L }, "bool")
      keep[2]:narrow(1, 1, 3):fill_(false) -- row 2 left-padded by 3
      for _, masked in ipairs { false, true } do
        local state, at = nil, 0
        for _, n in ipairs(chunks) do
          local function part(t) return t:narrow(3, at + 1, n) end
          local out
          out, state = I.stepper(c)(part(q), part(k), part(v), state, masked and keep:narrow(2, at + 1, n) or nil)
          at = at + n
          local function prefix(t) return t:narrow(3, 1, at) end
          local mask = masked and keep:narrow(2, 1, at):reshape(B, 1, 1, at) or nil
          local want = c(prefix(q), prefix(k), prefix(v), mask):narrow(3, at - n + 1, n)
          local d = maxdiff(out, want)
          assert.is_true(d < 1e-4, string.format("after %d tokens (masked %s): max diff %g", at, tostring(masked), d))
          assert.are.equal(at, state.length)
          if case[1] == "lolcats_attention" then -- the window's K/V stay bounded
            assert.is_true(state.k:size(3) <= c.opts.window_size)
          else
            assert.are.same({ B, H, 10, 1 }, state.z:shape())
          end
        end
      end
    end)
  end

  it("is refused for a bidirectional core", function()
    for _, name in ipairs { "hedgehog_attention", "lolcats_attention" } do
      local c = new(name, 2, 4)
      local x = as.randn(1, 2, 3, 4)
      assert.truthy(errmsg(c.step, c, x, x, x):find(name .. ": a cache (step) needs causal = true", 1, true))
    end
  end)
end)

describe("gradients against central differences", function()
  for _, case in ipairs(CASES) do
    for _, causal in ipairs { true, false } do
      it(label(case, causal), function()
        as.manual_seed(21)
        local H, Hkv, D, L = 2, 1, 3, 7
        local extra = { causal = causal }
        for key, val in pairs(case[2]) do extra[key] = val end
        if extra.window_size == 70 then extra.window_size = 2 end
        local c = new(case[1], H, D, extra)
        c.feature_q:copy_(as.randn(H, D, 5) * 0.7)
        c.feature_k:copy_(as.randn(H, D, 5) * 0.7)
        local w = as.randn(1, H, L, D)
        local keep = as.tensor({ { true, true, false, true, true, true, true } }):reshape(1, 1, 1, L)
        local xs = { as.randn(1, H, L, D), as.randn(1, Hkv, L, D), as.randn(1, Hkv, L, D), c.feature_q, c.feature_k }
        if c.window_factors then xs[#xs + 1] = c.window_factors end
        numgrad.check(function(q, k, v) return (c(q, k, v, keep) * w):sum() end, xs)
      end)
    end
  end
end)

describe("swapped into models", function()
  it("GPT-2: sized from the model, trains (forward + backward), decodes with its cache as without", function()
    for _, name in ipairs { "hedgehog_attention", "lolcats_attention" } do
      as.manual_seed(2)
      local m = as.models.gpt2.new { vocab_size = 50, n_positions = 32, n_embd = 24, n_layer = 2, n_head = 3,
        attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0 }
      local opts = name == "lolcats_attention" and { window_size = 4 } or nil
      local _, report = as.swap_attention(m, "scaled_dot_product", name, opts)
      assert.are.equal(2, #report.swapped)
      local core = m.transformer.h[1].attn.core
      assert.are.same({ 3, 8, 64 }, core.feature_q:shape()) -- num_heads, head_dim from the model
      assert.is_true(core.opts.causal)
      local ids = as.tensor({ { 1, 5, 9, 13, 2, 7, 11, 3, 4, 8 } }, "int64")
      m:requires_grad_()
      local logits = m(ids)
      local loss = as.F.cross_entropy(logits:reshape(10, 50), as.tensor({ 5, 9, 13, 2, 7, 11, 3, 4, 8, 1 }, "int64"))
      loss:backward()
      for _, p in ipairs { core.feature_q, core.feature_k, core.window_factors } do
        local g = p.grad
        assert.is_not_nil(g, name)
        assert.is_true(g:abs():max():item() > 0, name .. ": a zero gradient")
        assert.are.equal(0, g:ne(g):sum():item(), name .. ": NaN in a gradient")
      end
      m:requires_grad_(false)
      m:eval()
      local full = m(ids)
      local _, past = m(ids:narrow(2, 1, 6))
      local tail = m(ids:narrow(2, 7, 4), { past = past })
      assert.is_true(maxdiff(tail, full:narrow(2, 7, 4)) < 1e-4, name)
    end
  end)

  it("Llama (grouped-query, RoPE): sized from num_heads / head_dim, decodes with its cache as without", function()
    for _, name in ipairs { "hedgehog_attention", "lolcats_attention" } do
      as.manual_seed(8)
      local m = as.models.llama.new { vocab_size = 32, hidden_size = 16, intermediate_size = 32, num_hidden_layers = 2,
        num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 32 }
      as.swap_attention(m, "scaled_dot_product", name, name == "lolcats_attention" and { window_size = 3 } or nil)
      local core = m.model.layers[1].self_attn.core
      assert.are.same({ 4, 4, 64 }, core.feature_k:shape()) -- k's map per query head (after repeat_kv)
      local ids = as.tensor({ { 3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5 } }, "int64")
      local full = m(ids)
      local _, past = m(ids:narrow(2, 1, 5))
      local tail = m(ids:narrow(2, 6, 6), { past = past })
      assert.is_true(maxdiff(tail, full:narrow(2, 6, 6)) < 1e-4, name)
    end
  end)

  it("BERT (bidirectional): sized, stays bidirectional, forward + backward", function()
    for _, name in ipairs { "hedgehog_attention", "lolcats_attention" } do
      as.manual_seed(4)
      local m = as.models.bert.new { vocab_size = 40, hidden_size = 16, num_hidden_layers = 1, num_attention_heads = 2,
        intermediate_size = 32, max_position_embeddings = 16, hidden_dropout_prob = 0,
        attention_probs_dropout_prob = 0 }
      as.swap_attention(m, "scaled_dot_product", name, name == "lolcats_attention" and { window_size = 2 } or nil)
      local core = m.encoder.layer[1].attention.self.core
      assert.are.same({ 2, 8, 64 }, core.feature_k:shape())
      assert.is_false(core.opts.causal)
      m:requires_grad_()
      local ids = as.tensor({ { 2, 7, 3, 9, 1, 4, 6 } }, "int64")
      local out = m(ids)
      ;(out * out):mean():backward()
      assert.is_true(core.feature_q.grad:abs():max():item() > 0, name)
    end
  end)

  it("as.compare lists both", function()
    as.manual_seed(0)
    local model = as.models.vit { img_size = 16, patch_size = 4, embed_dim = 16, depth = 1, num_heads = 2,
      mlp_ratio = 2, num_classes = 3 }:eval()
    local rows = as.compare(model, { as.randn(1, 3, 16, 16) }, { "hedgehog_attention", "lolcats_attention" },
      { out = io.open("/dev/null", "w"), min_repeats = 1, max_repeats = 1, min_time = 0 })
    assert.are.equal("hedgehog_attention", rows[2].name)
    assert.are.equal("lolcats_attention", rows[3].name)
    for i = 2, 3 do
      assert.is_nil(rows[i].refused, rows[i].refused)
      assert.is_true(rows[i].cos > -1 and rows[i].cos <= 1 + 1e-6)
    end
    assert.are.equal("window_size=4 (sized to 17 keys)", rows[3].options)
  end)

  it("initialises as the papers do: identity (Hedgehog), kaiming-uniform (LoLCATs), gamma = 0.1", function()
    local h = as.attention.new("hedgehog_attention", { num_heads = 2, head_dim = 3, feature_dim = 4 })
    local eye = as.zeros(3, 4)
    for i = 1, 3 do eye[i][i] = 1 end
    for hd = 1, 2 do
      assert.are.equal(0, maxdiff(h.feature_q:select(1, hd), eye))
      assert.are.equal(0, maxdiff(h.feature_k:select(1, hd), eye))
    end
    as.manual_seed(1)
    local l = as.attention.new("lolcats_attention", { num_heads = 4, head_dim = 32, feature_dim = 64 })
    local b = math.sqrt(6 / (32 * 64))
    local m = l.feature_q:abs():max():item()
    assert.is_true(m <= b and m > 0.9 * b, "max |W| " .. m .. " bound " .. b)
    assert.is_true(maxdiff(l.feature_q, l.feature_k) > 0) -- untied
    assert.is_true(maxdiff(l.window_factors:sigmoid(), as.full({ 1, 4, 1, 1 }, 0.1)) < 1e-6)
  end)

  it("registers the facts", function()
    for _, name in ipairs { "hedgehog_attention", "lolcats_attention" } do
      local i = as.attention.info(name)
      assert.is_false(i.exact)
      assert.is_true(i.causal and i.mask and i.gqa and i.incremental)
    end
    assert.are.equal("O(L F D)", as.attention.info("hedgehog_attention").complexity)
  end)
end)

describe("errors", function()
  it("bad options and shapes say what was expected", function()
    local function err(...) return errmsg(as.attention.new, ...) end
    assert.truthy(err("hedgehog_attention", { feature_dim = 0 }):find(
      "hedgehog_attention: feature_dim must be a positive integer, got 0", 1, true))
    assert.truthy(err("hedgehog_attention", { init = "eye" }):find(
      'hedgehog_attention: init must be one of "identity", "random", got "eye"', 1, true))
    assert.truthy(err("hedgehog_attention", { scale = 0.5 }):find("unknown option 'scale'", 1, true))
    assert.truthy(err("hedgehog_attention", { dropout = 0.1 }):find("hedgehog_attention: dropout must be 0", 1, true))
    assert.truthy(err("lolcats_attention", { window_factor = 1 }):find(
      "lolcats_attention: window_factor must be a number in (0, 1), got 1", 1, true))
    assert.truthy(err("lolcats_attention", { window_size = -2 }):find(
      "lolcats_attention: window_size must be a positive integer, got -2", 1, true))
    local c = as.attention.new("hedgehog_attention", { num_heads = 2, head_dim = 4 })
    local x = as.randn(1, 3, 5, 4)
    local msg = errmsg(c, x, x, x)
    assert.truthy(msg:find("hedgehog_attention: feature_q was made for 2 heads of size 4 (num_heads, head_dim) " ..
      "but got 3 heads of size 4", 1, true), msg)
    local l = as.attention.new("lolcats_attention", { num_heads = 2, head_dim = 4 })
    msg = errmsg(l, x, x, x)
    assert.truthy(msg:find("lolcats_attention: window_factors was made for 2 heads", 1, true), msg)
    local y = as.randn(1, 2, 5, 4)
    msg = errmsg(c, y, y, y, as.ones({ 1, 1, 5, 5 }, "bool"))
    assert.truthy(msg:find("hedgehog_attention: only key-padding masks are supported", 1, true), msg)
  end)
end)
