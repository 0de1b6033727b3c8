-- The linear-cost implementations: linear, performer, efficient, nystrom.
-- Each against a naive reference of its own math, plus the property that
-- pins it to its paper.
local as = require "attnswap"

local function maxdiff(a, b) return (a - b):abs():max():item() end
local function mean_err(a, b) return (a - b):abs():mean():item() end
local function expand(t, H)
  local B, Hkv, L, D = t:size(1), t:size(2), t:size(3), t:size(4)
  return t:unsqueeze(3):expand(B, Hkv, H // Hkv, L, D):reshape(B, H, L, D)
end
local function phi(x) return as.where(x:gt(0), x + 1, x:exp()) end

describe("linear_attention", function()
  local q, k, v = as.randn(2, 4, 9, 8), as.randn(2, 2, 9, 8), as.randn(2, 2, 9, 5)

  it("matches the kernelised formula with the L x L kernel written out", function()
    local a = phi(q):matmul(phi(expand(k, 4)):transpose(3, 4))     -- (B, H, L, L)
    local ref = a:matmul(expand(v, 4)) / a:sum(4, true)
    assert.is_true(maxdiff(as.attention.new("linear_attention")(q, k, v), ref) < 1e-5)
    local causal_a = a * as.ones(9, 9):tril()
    local causal_ref = causal_a:matmul(expand(v, 4)) / causal_a:sum(4, true)
    assert.is_true(maxdiff(as.attention.new("linear_attention", { causal = true })(q, k, v), causal_ref) < 1e-5)
  end)

  it("causal output at position i equals non-causal output on the prefix", function()
    local full, causal = as.attention.new("linear_attention"), as.attention.new("linear_attention", { causal = true })
    local out = causal(q, k, v)
    for i = 1, 9 do
      local pre = full(q:narrow(3, i, 1), k:narrow(3, 1, i), v:narrow(3, 1, i))
      assert.is_true(maxdiff(pre, out:narrow(3, i, 1)) < 1e-5)
    end
  end)

  it("a short query after a cache aligns with the last keys", function()
    local causal = as.attention.new("linear_attention", { causal = true })
    local all = causal(q, k, v)
    assert.is_true(maxdiff(causal(q:narrow(3, 7, 3), k, v), all:narrow(3, 7, 3)) < 1e-5)
  end)

  it("key padding drops those keys", function()
    local keep = as.ones(2, 1, 1, 9, "bool")
    keep[1]:narrow(3, 6, 4):fill_(false)
    local c = as.attention.new("linear_attention")
    local out = c(q, k, v, keep)
    local ref = c(q:narrow(1, 1, 1), k:narrow(1, 1, 1):narrow(3, 1, 5), v:narrow(1, 1, 1):narrow(3, 1, 5))
    assert.is_true(maxdiff(out:narrow(1, 1, 1), ref) < 1e-5)
    local ok, err = pcall(c, q, k, v, as.ones(9, 9, "bool"))
    assert.is_false(ok)
    assert.is_truthy(err:find("only key-padding masks are supported", 1, true))
  end)
end)

-- The fused non-causal CPU kernel that linear_attention and performer_attention
-- run, against the same math written out in tensor ops, on shapes that cross
-- its 128-row chunks, with GQA, key weights, odd and empty sizes.
describe("the fused kernelised-attention kernel", function()
  local core = require "attnswap.core"

  local function favor(x, w, per_row)
    local D = x:size(4)
    local xs = x * (D ^ -0.25)
    local e = xs:matmul(w:t()) - (xs * xs):sum(4, true) * 0.5
    local stab = per_row and e:max(4, true) or e:max(4, true):max(3, true)
    return (e - stab):exp() * (w:size(1) ^ -0.5) + 1e-6
  end

  local function reference(q, k, v, keep, w)
    local H = q:size(2)
    local fq, fk
    if w == "softmax" then
      local kk = expand(k, H)
      if keep then kk = as.where(keep:reshape(keep:size(1), 1, keep:size(2), 1):gt(0), kk, -math.huge) end
      fq, fk = q:softmax(4), kk:softmax(3)
    elseif w then fq, fk = favor(q, w, true), favor(expand(k, H), w, false)
    else fq, fk = phi(q), phi(expand(k, H)) end
    if keep then fk = fk * keep:reshape(keep:size(1), 1, keep:size(2), 1) end
    local num = fq:matmul(fk:transpose(3, 4):matmul(expand(v, H)))
    local den = fq:matmul(fk:sum(3, true):transpose(3, 4))
    return as.where(den:ne(0), num / as.where(den:ne(0), den, 1.0), 0.0)
  end

  local function rel(a, b) return maxdiff(a, b) / math.max(b:abs():max():item(), 1e-30) end

  it("equals the written-out math on random shapes, both feature maps", function()
    as.manual_seed(7)
    local shapes = { -- B, H, Hkv, Lq, Lk, D, Dv
      { 1, 1, 1, 1, 1, 1, 1 }, { 2, 4, 2, 7, 300, 8, 5 }, { 1, 3, 1, 130, 129, 16, 16 },
      { 3, 2, 2, 257, 5, 3, 7 }, { 1, 6, 3, 33, 128, 12, 1 },
    }
    for _, s in ipairs(shapes) do
      local B, H, Hkv, Lq, Lk, D, Dv = table.unpack(s)
      local q, k, v = as.randn(B, H, Lq, D), as.randn(B, Hkv, Lk, D), as.randn(B, Hkv, Lk, Dv)
      local w = as.randn(11, D)
      for _, keepB in ipairs { 0, 1, B } do
        local keep = keepB > 0 and as.rand(keepB, Lk):gt(0.3):float() or nil -- 0 / 1 weights
        local e1 = rel(core.kernelized_attention(q, k, v, keep, nil, "elu1"), reference(q, k, v, keep))
        local e2 = rel(core.kernelized_attention(q, k, v, keep, w, "favor"), reference(q, k, v, keep, w))
        assert.is_true(e1 < 1e-5, string.format("elu1 %s keep %d: %g", table.concat(s, ","), keepB, e1))
        assert.is_true(e2 < 1e-4, string.format("favor %s keep %d: %g", table.concat(s, ","), keepB, e2))
        local e3 = rel(core.kernelized_attention(q, k, v, keep, nil, "softmax"), reference(q, k, v, keep, "softmax"))
        assert.is_true(e3 < 1e-5, string.format("softmax %s keep %d: %g", table.concat(s, ","), keepB, e3))
      end
    end
  end)

  it("causal: equals the per-row prefix scan (in double) on random shapes, both feature maps", function()
    as.manual_seed(11)
    local shapes = { -- B, H, Hkv, Lq, Lk, D, Dv: chunk edges (128), GQA, Lq < Lk, Lq > Lk (rows that see nothing)
      { 1, 1, 1, 1, 1, 4, 4 }, { 2, 4, 2, 300, 300, 8, 5 }, { 1, 2, 1, 130, 129, 16, 16 },
      { 1, 2, 2, 129, 300, 8, 3 }, { 1, 2, 2, 300, 129, 8, 3 }, { 2, 2, 1, 257, 257, 6, 1 },
    }
    for _, s in ipairs(shapes) do
      local B, H, Hkv, Lq, Lk, D, Dv = table.unpack(s)
      local q, k, v = as.randn(B, H, Lq, D), as.randn(B, Hkv, Lk, D), as.randn(B, Hkv, Lk, Dv)
      local w = as.randn(11, D)
      for _, keepB in ipairs { 0, B } do
        local keep = keepB > 0 and as.rand(keepB, Lk):gt(0.3):float() or nil
        local kw = keep and keep:reshape(keep:size(1), 1, Lk, 1) or 1
        local ve = expand(v, H)
        local r1 = core.linear_attention_causal(phi(q), phi(expand(k, H)) * kw, ve)
        local r2 = core.linear_attention_causal(favor(q, w, true), favor(expand(k, H), w, false) * kw, ve)
        local e1 = rel(core.kernelized_attention(q, k, v, keep, nil, "elu1", true), r1)
        local e2 = rel(core.kernelized_attention(q, k, v, keep, w, "favor", true), r2)
        assert.is_true(e1 < 1e-5, string.format("causal elu1 %s keep %d: %g", table.concat(s, ","), keepB, e1))
        assert.is_true(e2 < 1e-4, string.format("causal favor %s keep %d: %g", table.concat(s, ","), keepB, e2))
      end
    end
    local q = as.randn(1, 1, 4, 4)
    assert.has_error(function() core.kernelized_attention(q, q, q, nil, nil, "softmax", true) end,
      "efficient_attention: causal is not supported (the keys' softmax runs over the whole sequence)")
  end)

  it("takes non-contiguous and bfloat16 inputs, and gives zeros where nothing is kept", function()
    local q = as.randn(2, 9, 3, 8):transpose(2, 3)               -- (2, 3, 9, 8), strided
    local k, v = as.randn(2, 3, 20, 8), as.randn(2, 3, 8, 20):transpose(3, 4)
    assert.is_false(q:is_contiguous())
    assert.is_true(rel(core.kernelized_attention(q, k, v, nil, nil, "elu1"), reference(q, k, v)) < 1e-5)
    local qb = q:to("bfloat16")
    local out = core.kernelized_attention(qb, k, v, nil, nil, "elu1")
    assert.are.equal("float32", out:dtype())
    assert.is_true(rel(out, reference(qb:float(), k, v)) < 1e-5)
    local none = as.zeros(2, 20)
    for _, map in ipairs { "elu1", "softmax" } do
      assert.are.equal(0, core.kernelized_attention(q, k, v, none, nil, map):abs():max():item())
    end
  end)

  it("handles empty sizes", function()
    local out = core.kernelized_attention(as.randn(1, 2, 0, 4), as.randn(1, 2, 5, 4), as.randn(1, 2, 5, 3), nil, nil, "elu1")
    assert.are.same({ 1, 2, 0, 3 }, { out:size(1), out:size(2), out:size(3), out:size(4) })
    out = core.kernelized_attention(as.randn(1, 2, 4, 4), as.randn(1, 2, 0, 4), as.randn(1, 2, 0, 3), nil,
      as.randn(5, 4), "favor")
    assert.are.equal(0, out:abs():max():item())
  end)

  it("rejects bad shapes and options with the function's name", function()
    local q, k, v = as.randn(1, 4, 6, 8), as.randn(1, 2, 6, 8), as.randn(1, 2, 6, 8)
    local function fails(pattern, ...)
      local ok, err = pcall(core.kernelized_attention, ...)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find(pattern, 1, true), tostring(err))
    end
    fails("linear_attention: expected q (B, H, Lq, D)", q, as.randn(1, 3, 6, 8), as.randn(1, 3, 6, 8), nil, nil, "elu1")
    fails("linear_attention: key weights must be (1 or B, Lk)", q, k, v, as.ones(1, 5), nil, "elu1")
    fails("performer_attention: the projection must be (m, D)", q, k, v, nil, nil, "favor")
    fails("performer_attention: the projection must be (m, D)", q, k, v, nil, as.randn(3, 7), "favor")
    fails("invalid option 'relu'", q, k, v, nil, nil, "relu")
    fails("expected a floating-point tensor", q:long(), k, v, nil, nil, "elu1")
  end)
end)

describe("performer_attention", function()
  it("its error against softmax attention shrinks as nb_features grows", function()
    local q, k, v = as.randn(1, 2, 48, 16) * 0.5, as.randn(1, 2, 48, 16) * 0.5, as.randn(1, 2, 48, 16)
    local exact = as.sdp_attention(q, k, v)
    local errs = {}
    for i, m in ipairs { 8, 128, 2048 } do
      errs[i] = 0
      for s = 1, 4 do
        as.manual_seed(s)
        errs[i] = errs[i] + mean_err(as.attention.new("performer_attention", { nb_features = m })(q, k, v), exact)
      end
    end
    assert.is_true(errs[1] > errs[2] and errs[2] > errs[3], table.concat(errs, ", "))
    assert.is_true(errs[3] / 4 < 0.02)
  end)

  it("keeps its features as a buffer, stable across calls, redrawn on request", function()
    local c = as.attention.new("performer_attention")
    local q = as.randn(1, 1, 6, 8)
    local a = c(q, q, q)
    assert.are.equal(0, maxdiff(c(q, q, q), a))
    local names = {}
    for n in c:named_buffers() do names[#names + 1] = n end
    assert.are.same({ "projection" }, names)
    assert.are.equal(math.ceil(8 * math.log(8)), c.projection:size(1))
    c:redraw()
    assert.is_true(maxdiff(c(q, q, q), a) > 0)
  end)

  it("causal output equals non-causal output on each prefix", function()
    as.manual_seed(3)
    local c = as.attention.new("performer_attention", { causal = true })
    local q, k, v = as.randn(1, 2, 6, 8), as.randn(1, 2, 6, 8), as.randn(1, 2, 6, 8)
    local out = c(q, k, v)
    c.opts.causal = false
    for i = 1, 6 do
      assert.is_true(maxdiff(c(q:narrow(3, i, 1), k:narrow(3, 1, i), v:narrow(3, 1, i)), out:narrow(3, i, 1)) < 1e-4)
    end
  end)
end)

describe("efficient_attention", function()
  local q, k, v = as.randn(2, 4, 10, 8), as.randn(2, 4, 10, 8), as.randn(2, 4, 10, 6)

  it("is rho_q(Q) (rho_k(K)^T V)", function()
    local ref = q:softmax(4):matmul(k:softmax(3):transpose(3, 4):matmul(v))
    assert.is_true(maxdiff(as.attention.new("efficient_attention")(q, k, v), ref) < 1e-5)
  end)

  it("key padding equals leaving those keys out; causal is a clear error", function()
    local keep = as.ones(2, 1, 1, 10, "bool")
    keep:narrow(4, 8, 3):fill_(false)
    local c = as.attention.new("efficient_attention")
    assert.is_true(maxdiff(c(q, k, v, keep), c(q, k:narrow(3, 1, 7), v:narrow(3, 1, 7))) < 1e-5)
    local ok, err = pcall(as.attention.new, "efficient_attention", { causal = true })
    assert.is_false(ok)
    assert.is_truthy(err:find("efficient_attention: causal is not supported", 1, true))
  end)
end)

describe("nystrom_attention", function()
  it("is exact when every token is a landmark", function()
    local q, k, v = as.randn(1, 2, 20, 8), as.randn(1, 2, 20, 8), as.randn(1, 2, 20, 8)
    assert.is_true(maxdiff(as.attention.new("nystrom_attention", { num_landmarks = 32 })(q, k, v),
      as.sdp_attention(q, k, v)) < 1e-6)
  end)

  it("approaches softmax attention as landmarks grow", function()
    as.manual_seed(5)
    local q, k, v = as.randn(1, 2, 96, 8) * 0.5, as.randn(1, 2, 96, 8) * 0.5, as.randn(1, 2, 96, 8)
    local exact = as.sdp_attention(q, k, v)
    local e4 = mean_err(as.attention.new("nystrom_attention", { num_landmarks = 4 })(q, k, v), exact)
    local e48 = mean_err(as.attention.new("nystrom_attention", { num_landmarks = 48 })(q, k, v), exact)
    assert.is_true(e48 < e4, e4 .. " vs " .. e48)
  end)

  it("matches the paper's formula written out (eq. 14-16, iterative pseudo-inverse)", function()
    local q, k, v = as.randn(1, 1, 12, 4), as.randn(1, 1, 12, 4), as.randn(1, 1, 12, 4)
    local s = 1 / math.sqrt(4)
    local function lm(x) return x:reshape(1, 1, 4, 3, 4):mean(4) end -- 4 landmarks of 3 tokens each
    local f = (q:matmul(lm(k):transpose(3, 4)) * s):softmax(4)
    local a = (lm(q):matmul(lm(k):transpose(3, 4)) * s):softmax(4)
    local b = (lm(q):matmul(k:transpose(3, 4)) * s):softmax(4)
    local I = as.tensor { { 1, 0, 0, 0 }, { 0, 1, 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 0, 1 } }:float()
    local z = a:transpose(3, 4) / (a:sum(3):max() * a:sum(4):max())
    for _ = 1, 6 do
      local az = a:matmul(z)
      z = z:matmul(I * 13 - az:matmul(I * 15 - az:matmul(I * 7 - az))) * 0.25
    end
    local ref = f:matmul(z):matmul(b:matmul(v))
    local out = as.attention.new("nystrom_attention", { num_landmarks = 4 })(q, k, v)
    assert.is_true(maxdiff(out, ref) < 1e-5, "max diff " .. maxdiff(out, ref))
  end)
end)

describe("the linear-cost group in a model", function()
  for _, name in ipairs { "linear_attention", "performer_attention", "efficient_attention", "nystrom_attention" } do
    it(name .. " swaps into a block and back, and rejects bad options", function()
      local block = as.nn.TransformerBlock { dim = 16, num_heads = 4 }:eval()
      local x = as.randn(2, 5, 16)
      local before = block(x)
      do
        local s <close> = as.swapped(block, "scaled_dot_product", name)
        assert.are.equal("(2, 5, 16)", tostring(block(x):shape()))
      end
      assert.are.equal(0, maxdiff(block(x), before))
      local ok, err = pcall(as.attention.new, name, { no_such_option = 1 })
      assert.is_false(ok)
      assert.is_truthy(err:find(name .. ": unknown option 'no_such_option'", 1, true))
      ok, err = pcall(as.attention.new(name), as.randn(1, 2, 3, 4), as.randn(1, 2, 3, 5), as.randn(1, 2, 3, 4))
      assert.is_false(ok)
      assert.is_truthy(err:find(name .. ": q (1, 2, 3, 4) and k (1, 2, 3, 5) must have the same head dimension", 1, true))
    end)
  end
end)
