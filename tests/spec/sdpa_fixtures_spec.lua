-- Parity of the exact attention implementations with PyTorch itself: each
-- fixture in tests/fixtures/sdpa/ (made by make_sdpa_fixtures.py) holds q, k,
-- v, an optional mask and torch's F.scaled_dot_product_attention output;
-- as.sdp_attention and as.flash_attention must reproduce it within 1e-5.
-- Causal fixtures with Lq != Lk were made with an explicit bottom-right mask
-- in torch (its is_causal aligns top-left), so they encode attnswap's
-- convention: key j visible to query i iff j <= i + Lk - Lq.
local as = require "attnswap"

local src = os.getenv("ATTNSWAP_SOURCE_DIR") or "."
local dir = src .. "/tests/fixtures/sdpa/"

local TOL = 1e-5

local CASES = {
  "odd_7x13", "square_33_causal", "one_by_50_causal", "causal_5x12", "causal_12x5", "gqa_17",
  "gqa_causal_9x20", "bool_mask_bcast", "float_mask", "custom_scale", "bool_mask_causal_6x15", "dv_ne_d",
}

local function maxdiff(a, b) return (a:float() - b:float()):abs():max():item() end

local function load(name)
  local t, meta = as.load(dir .. name .. ".safetensors")
  local opts = { causal = meta.causal == "true" }
  if meta.scale ~= "" then opts.scale = assert(tonumber(meta.scale), "bad scale " .. meta.scale) end
  return t, opts, meta
end

local IMPLS = { sdp_attention = as.sdp_attention, flash_attention = as.flash_attention }

describe("exact attention against torch's scaled_dot_product_attention", function()
  it("has every fixture, and their metadata is consistent with the tensors", function()
    for _, name in ipairs(CASES) do
      local t, opts, meta = load(name)
      assert.is_truthy(t.q and t.k and t.v and t.out, name)
      assert.are.equal(t.k:size(2), tonumber(meta.hkv), name)
      assert.are.equal(0, t.q:size(2) % t.k:size(2), name)
      assert.are.same({ t.q:size(1), t.q:size(2), t.q:size(3), t.v:size(4) },
        { t.out:size(1), t.out:size(2), t.out:size(3), t.out:size(4) }, name)
      assert.is_boolean(opts.causal)
    end
  end)

  for _, name in ipairs(CASES) do
    for _, impl in ipairs { "sdp_attention", "flash_attention" } do
      it(impl .. " matches torch on " .. name, function()
        local t, opts, meta = load(name)
        local y = IMPLS[impl](t.q, t.k, t.v, t.mask, opts)
        assert.are.equal(tostring(t.out:shape()), tostring(y:shape()))
        local d = maxdiff(y, t.out)
        assert.is_true(d < TOL, string.format("%s on %s (%s): max abs diff %.3g", impl, name, meta.desc, d))
      end)
    end
  end

  it("the Lq > Lk causal fixture has the rows that see no key at zero", function()
    local t = load("causal_12x5")
    -- query i sees key j iff j <= i + 5 - 12: rows 0..6 see nothing
    assert.are.equal(0, t.out:narrow(3, 1, 7):abs():max():item())
    assert.is_true(t.out:narrow(3, 8, 5):abs():max():item() > 0)
  end)

  it("bottom-right causal differs from torch's top-left is_causal when Lq != Lk", function()
    -- one query over 50 keys: bottom-right sees all 50, top-left would see key 0 only
    local t = load("one_by_50_causal")
    local top_left = t.v:narrow(3, 1, 1)  -- softmax over a single key returns v[0]
    assert.is_true(maxdiff(t.out, top_left) > 1e-2)
  end)
end)
