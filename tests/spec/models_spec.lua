-- Parity with the libraries themselves: timm's ViT, HF's GPT-2 and BERT load
-- from their own checkpoints (tests/fixtures/*, made by make_model_fixtures.py)
-- and reproduce the outputs those libraries computed, within 1e-4.
local as = require "attnswap"
local U = require "spec_util"

local src = os.getenv("ATTNSWAP_SOURCE_DIR") or "."
local fixtures = src .. "/tests/fixtures/"

local function maxdiff(a, b) return (a:float() - b:float()):abs():max():item() end

describe("ViT (timm)", function()
  local model = as.models.vit.from_pretrained(fixtures .. "vit")
  local io_ = as.load(fixtures .. "vit/io.safetensors")

  it("matches timm's logits", function()
    local logits = model(io_.pixel_values:float())
    assert.are.equal("(1, 10)", tostring(logits:shape()))
    assert.is_true(maxdiff(logits, io_.logits) < 1e-4, "max diff " .. maxdiff(logits, io_.logits))
  end)

  it("keeps its output through a swap to flash_attention and back", function()
    local x = io_.pixel_values:float()
    do
      local s <close> = as.swapped(model, "scaled_dot_product", "flash_attention")
      assert.are.equal(2, #s.report.swapped)
      assert.is_true(maxdiff(model(x), io_.logits) < 1e-4)
    end
    assert.are.equal("ScaledDotProductAttention", model.blocks[1].attn.core:type())
  end)
end)

describe("GPT-2 (HF transformers)", function()
  local model = as.models.gpt2.from_pretrained(fixtures .. "gpt2")
  local io_ = as.load(fixtures .. "gpt2/io.safetensors")

  it("matches HF's logits", function()
    local logits = model(io_.input_ids)
    assert.are.equal("(2, 8, 100)", tostring(logits:shape()))
    assert.is_true(maxdiff(logits, io_.logits) < 1e-4, "max diff " .. maxdiff(logits, io_.logits))
  end)

  it("greedy generation with and without the KV cache gives HF's tokens", function()
    local prompt = io_.input_ids:narrow(1, 1, 1)
    local with_cache = model:generate(prompt, { max_new_tokens = 8 })
    local without = model:generate(prompt, { max_new_tokens = 8, use_cache = false })
    assert.are.same(io_.generated:tolist(), with_cache:tolist())
    assert.are.same(with_cache:tolist(), without:tolist())
  end)

  it("every exact implementation gives the same tokens through the cache", function()
    local prompt = io_.input_ids:narrow(1, 1, 1)
    for _, name in ipairs { "flash_attention" } do
      local s <close> = as.swapped(model, "scaled_dot_product", name)
      assert.are.same(io_.generated:tolist(), model:generate(prompt, { max_new_tokens = 8 }):tolist())
    end
  end)

  it("the cache agrees with a full forward", function()
    local ids = io_.input_ids:narrow(1, 1, 1)
    local full = model(ids)
    local _, past = model(ids:narrow(2, 1, 5))
    local tail = model(ids:narrow(2, 6, 3), { past = past })
    assert.is_true(maxdiff(tail, full:narrow(2, 6, 3)) < 1e-4)
  end)
end)

describe("GPT-2 built from a config (training from scratch)", function()
  local cfg = { vocab_size = 64, n_positions = 16, n_embd = 32, n_layer = 2, n_head = 4 }

  it("starts as transformers initialises it: embeddings N(0, 0.02), residual projections scaled", function()
    as.manual_seed(3)
    local m = as.models.gpt2.new(cfg)
    local function std(t) return t:float():var():item() ^ 0.5 end
    local wte = std(m.transformer.wte.weight)
    assert.is_true(wte > 0.017 and wte < 0.023, "wte std " .. wte)
    local proj = std(m.transformer.h[1].attn.c_proj.weight)
    local want = 0.02 / math.sqrt(2 * cfg.n_layer)
    assert.is_true(math.abs(proj - want) < 0.15 * want, "c_proj std " .. proj .. " want " .. want)
    -- a fresh model's next-token loss is near log(vocab), not hundreds of nats
    local ids = as.tensor({ { 1, 5, 9, 13, 2, 7 } }, "int64")
    local logits = m(ids)
    local loss = as.F.cross_entropy(logits:reshape(6, 64), as.tensor({ 5, 9, 13, 2, 7, 1 }, "int64")):item()
    assert.is_true(math.abs(loss - math.log(64)) < 0.5, "initial loss " .. loss)
  end)

  it("drops out (embd, attn, resid p = 0.1) in training only", function()
    local m = as.models.gpt2.new(cfg)
    local ids = as.tensor({ { 1, 5, 9, 13, 2, 7 } }, "int64")
    m:train()
    assert.is_true(U.maxdiff(m(ids), m(ids)) > 0, "training forwards should differ")
    m:eval()
    assert.are.equal(0, U.maxdiff(m(ids), m(ids)))
    local off = as.models.gpt2.new({ vocab_size = 64, n_positions = 16, n_embd = 32, n_layer = 2, n_head = 4,
      attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0 }):train()
    assert.are.equal(0, U.maxdiff(off(ids), off(ids)))
  end)
end)

describe("BERT (HF transformers)", function()
  local model = as.models.bert.from_pretrained(fixtures .. "bert")
  local io_ = as.load(fixtures .. "bert/io.safetensors")

  it("matches HF's hidden states with padding and token types", function()
    local h, pooled = model(io_.input_ids, { attention_mask = io_.attention_mask, token_type_ids = io_.token_type_ids })
    assert.are.equal("(2, 7, 32)", tostring(h:shape()))
    assert.is_true(maxdiff(h, io_.last_hidden_state) < 1e-4, "max diff " .. maxdiff(h, io_.last_hidden_state))
    assert.is_true(maxdiff(pooled, io_.pooler_output) < 1e-4)
  end)
end)

describe("model errors", function()
  it("rejects unknown config keys and bad inputs", function()
    local ok, err = pcall(as.models.vit.new, { embed_dimm = 3 })
    assert.is_false(ok)
    assert.is_truthy(err:find("vit: unknown option 'embed_dimm'", 1, true))
    ok, err = pcall(as.models.gpt2.from_pretrained, "/nonexistent")
    assert.is_false(ok)
    assert.is_truthy(err:find("neither a .safetensors file, a folder, nor a hub name", 1, true))
    local g = as.models.gpt2.new { vocab_size = 10, n_positions = 8, n_embd = 8, n_layer = 1, n_head = 2 }
    ok, err = pcall(g, as.zeros(1, 3))
    assert.is_false(ok)
    assert.is_truthy(err:find("expected input_ids as an int64 tensor", 1, true))
  end)
end)
