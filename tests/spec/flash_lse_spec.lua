-- as.core.flash_attention_lse: the fused forward's output equals
-- flash_attention's, and its per-row log-sum-exp equals logsumexp of the
-- scaled, masked scores computed naively (float64); a row no key is visible
-- to has +inf and a zero output; odd sizes, GQA, non-contiguous inputs, an
-- additive mask, empty; the output records no backward.
local as = require "attnswap"

local function naive_lse(q, k, mask, scale, causal)
  local H, Hkv = q:size(2), k:size(2)
  local kk = k:double()
  if Hkv ~= H then
    kk = kk:unsqueeze(3):expand(k:size(1), Hkv, H // Hkv, k:size(3), k:size(4)):reshape(k:size(1), H, k:size(3),
      k:size(4))
  end
  local s = q:double():matmul(kk:transpose(-2, -1)) * scale
  local Lq, Lk = q:size(3), k:size(3)
  if causal then
    local keep = as.arange(0, Lk):unsqueeze(1):le(as.arange(0, Lq):unsqueeze(2) + (Lk - Lq))
    s = as.where(keep, s, -math.huge)
  end
  if mask then
    if mask:dtype() == "bool" then s = as.where(mask, s, -math.huge) else s = s + mask:double() end
  end
  local m = s:max(-1, true)
  local safe = as.where(m:eq(-math.huge), 0, m)
  local lse = safe + (s - safe):exp():sum(-1, true):log()
  return as.where(m:eq(-math.huge), math.huge, lse):squeeze(-1)
end

describe("flash_attention_lse", function()
  it("matches flash_attention and the naive log-sum-exp on random shapes", function()
    as.manual_seed(11)
    for trial = 1, 12 do
      local B, Hkv, G = math.random(1, 2), math.random(1, 2), math.random(1, 3)
      local H, Lq, Lk, D = Hkv * G, math.random(1, 37), math.random(1, 41), math.random(1, 19)
      local causal = trial % 3 == 0
      if causal then Lq = math.min(Lq, Lk) end
      local q = as.randn(B, H, D, Lq):transpose(3, 4) -- non-contiguous
      local k, v = as.randn(B, Hkv, Lk, D), as.randn(B, Hkv, Lk, D + 1)
      local mask
      if trial % 4 == 1 then
        mask = as.rand(Lq, Lk):gt(0.4) -- broadcast, some rows see nothing
        mask[1]:fill_(false)
      elseif trial % 4 == 2 then
        mask = as.randn(1, H, Lq, Lk)
      end
      local scale = 0.3 + trial / 10
      local out, lse = as.core.flash_attention_lse(q, k, v, mask, { causal = causal, scale = scale })
      local want = as.core.flash_attention(q, k, v, mask, { causal = causal, scale = scale })
      assert.are.same({ B, H, Lq }, lse:shape())
      assert.is_true((out - want):abs():max():item() < 1e-6, "out, trial " .. trial)
      local ref = naive_lse(q, k, mask, scale, causal)
      local inf = ref:eq(math.huge)
      assert.is_true(lse:eq(math.huge):ne(inf):sum():item() == 0, "the rows that saw nothing, trial " .. trial)
      local d = (as.where(inf, 0, lse:double()) - as.where(inf, 0, ref)):abs():max():item()
      assert.is_true(d < 1e-4, ("lse differs by %g, trial %d"):format(d, trial))
    end
  end)

  it("takes empty inputs and records no backward", function()
    local out, lse = as.core.flash_attention_lse(as.randn(1, 2, 0, 4), as.randn(1, 2, 3, 4), as.randn(1, 2, 3, 4))
    assert.are.same({ 1, 2, 0, 4 }, out:shape())
    assert.are.same({ 1, 2, 0 }, lse:shape())
    local q = as.randn(1, 1, 3, 4):requires_grad_()
    out = as.core.flash_attention_lse(q, as.randn(1, 1, 3, 4), as.randn(1, 1, 3, 4))
    local ok, err = pcall(function() out:sum():backward() end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("flash_attention_lse"))
    ok, err = pcall(as.core.flash_attention_lse, as.randn(1, 1, 3, 4), as.randn(1, 1, 3, 5), as.randn(1, 1, 3, 4))
    assert.truthy(not ok and tostring(err):find("flash_attention_lse"))
  end)

  it("flash_attention_backward: the whole equals autograd's; key blocks' shares sum to it", function()
    as.manual_seed(12)
    for trial = 1, 6 do
      local B, Hkv, G = math.random(1, 2), math.random(1, 2), math.random(1, 2)
      local H, Lq, D = Hkv * G, math.random(1, 23), math.random(1, 13)
      local Lk = math.random(2, 29)
      local causal = trial % 2 == 0
      if causal then Lq = math.min(Lq, Lk) end
      local q, k, v = as.randn(B, H, Lq, D), as.randn(B, Hkv, Lk, D), as.randn(B, Hkv, Lk, D + 2)
      local mask = trial % 3 == 0 and as.rand(Lq, Lk):gt(0.3) or nil
      local dout = as.randn(B, H, Lq, D + 2):transpose(3, 4):contiguous():transpose(3, 4) -- strided
      local opts = { causal = causal, scale = 0.5 }
      for _, t in ipairs({ q, k, v }) do t:requires_grad_() end
      ;(as.core.flash_attention(q, k, v, mask, opts) * dout):sum():backward()
      local qd, kd, vd = q:detach(), k:detach(), v:detach()
      local out, lse = as.core.flash_attention_lse(qd, kd, vd, mask, opts)
      local dq, dk, dv = as.core.flash_attention_backward(dout, qd, kd, vd, out, lse, mask, opts)
      for name, pair in pairs({ dq = { dq, q.grad }, dk = { dk, k.grad }, dv = { dv, v.grad } }) do
        local d = (pair[1] - pair[2]):abs():max():item()
        assert.is_true(d < 1e-4, ("%s differs by %g, trial %d"):format(name, d, trial))
      end
      if not causal then -- two key blocks with the whole out and lse: shares that sum to the whole
        local c = Lk // 2
        local bm = function(a, b) return mask and mask:narrow(2, a, b) or nil end
        local dq1, dk1, dv1 = as.core.flash_attention_backward(dout, qd, kd:narrow(3, 1, c), vd:narrow(3, 1, c), out,
          lse, bm(1, c), opts)
        local dq2, dk2, dv2 = as.core.flash_attention_backward(dout, qd, kd:narrow(3, c + 1, Lk - c),
          vd:narrow(3, c + 1, Lk - c), out, lse, bm(c + 1, Lk - c), opts)
        assert.is_true((dq1 + dq2 - q.grad):abs():max():item() < 1e-4, "dq shares")
        assert.is_true((as.cat({ dk1, dk2 }, 3) - k.grad):abs():max():item() < 1e-4, "dk shares")
        assert.is_true((as.cat({ dv1, dv2 }, 3) - v.grad):abs():max():item() < 1e-4, "dv shares")
      end
    end
    local x = as.randn(1, 1, 3, 4)
    local ok, err = pcall(as.core.flash_attention_backward, x, x, x, x, x, as.randn(1, 1, 4))
    assert.truthy(not ok and tostring(err):find("flash_attention_backward: lse must be float32 %(1, 1, 3%)"), err)
  end)
end)
