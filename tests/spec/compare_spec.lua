-- as.compare: the table `make run` shows must not mislead (sized options,
-- rows marked when a swap changes nothing, refusals as rows, medians with
-- their spread).
local as = require "attnswap"
local nn = as.nn

local function tiny_vit()
  as.manual_seed(0)
  local model = as.models.vit { img_size = 32, patch_size = 4, embed_dim = 32, depth = 2, num_heads = 4,
    mlp_ratio = 2, num_classes = 5 }:eval()
  return model, { as.randn(2, 3, 32, 32) } -- 64 patches + the class token: 65 keys
end

local function sink() return io.open("/dev/null", "w") end

describe("as.compare", function()
  it("sizes window options to the sequence the model's attention sees", function()
    local model, inputs = tiny_vit()
    local rows = as.compare(model, inputs, { "local_attention", "sparse_attention" },
      { out = sink(), min_repeats = 2, min_time = 0 })
    assert.are.equal(65, rows.length)
    assert.are.equal("window_size=16 (sized to 65 keys)", rows[2].options)
    assert.are.equal("block_size=5 (sized to 65 keys)", rows[3].options)
    for i = 2, 3 do
      assert.is_true(rows[i].rel > 1e-3) -- no longer the model itself
      assert.is_nil(rows[i].note)
    end
    -- the model ends as it began
    assert.are.equal("ScaledDotProductAttention", model.blocks[1].attn.core:type())
  end)

  it("keeps options the caller gives and marks a swap that changes nothing", function()
    local model, inputs = tiny_vit()
    local rows = as.compare(model, inputs, { "local_attention", "flash_attention" },
      { out = sink(), min_repeats = 2, min_time = 0, opts = { local_attention = { window_size = 100 } } })
    assert.are.equal("window_size=100", rows[2].options)
    assert.is_true(rows[2].rel < 1e-5)
    assert.truthy(rows[2].note:find("same output as the model's here", 1, true))
    assert.is_nil(rows[3].note) -- flash is exact by name: nothing to flag
  end)

  it("shows a refused swap as a row and goes on", function()
    local Only = nn.class("SpecCausalOnly")
    function Only:init(opts)
      if not (opts and opts.causal) then error("spec_causal_only: needs causal = true", 0) end
    end
    function Only:forward(q, k, v) return v end
    as.register_attention("spec_causal_only", Only, { exact = false, causal = true })
    local model, inputs = tiny_vit()
    local rows = as.compare(model, inputs, { "spec_causal_only", "flash_attention" },
      { out = sink(), min_repeats = 2, min_time = 0 })
    assert.are.equal("spec_causal_only: needs causal = true", rows[2].refused)
    assert.are.equal("flash_attention", rows[3].name)
    assert.truthy(tostring(rows):find("spec_causal_only       refused: spec_causal_only: needs causal = true", 1, true))
  end)

  it("times with repeats until min_time and reports the spread; prints as its table", function()
    local model, inputs = tiny_vit()
    local rows = as.compare(model, inputs, { "flash_attention" }, { out = sink(), min_repeats = 3, min_time = 0.05 })
    for _, r in ipairs(rows) do
      assert.is_true(r.count >= 3 and r.count <= 50)
      assert.is_true(r.spread >= 0)
    end
    local text = tostring(rows)
    assert.truthy(text:find("^implementation +time spread +speed%-up"))
    assert.truthy(text:find("\nflash_attention ", 1, true))
    assert.truthy(text:find("the attention sees 65 keys", 1, true))
    rows = as.compare(model, inputs, { "flash_attention" }, { out = sink(), repeats = 2 })
    assert.are.equal(2, rows[1].count)
    local ok, err = pcall(as.compare, model, inputs, { "flash_attention" }, { repeats = 0 })
    assert.is_false(ok)
    assert.truthy(err:find("repeats must be a positive integer", 1, true))
  end)
end)
