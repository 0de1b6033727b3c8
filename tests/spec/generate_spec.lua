-- models/generate.lua for both causal families: GPT-2 takes batched prompts
-- of different lengths (left padding + attention mask, positions counted as
-- transformers counts them), each row generating what it would alone; a
-- prompt that cannot fit max_new_tokens in the model's positions is an
-- error before any token is produced.
local as = require "attnswap"
local U = require "spec_util" -- tests/spec/spec_util.lua
local maxdiff, errmsg = U.maxdiff, U.errmsg

local src = os.getenv("ATTNSWAP_SOURCE_DIR") or "."
local fixtures = src .. "/tests/fixtures/"

describe("GPT-2 batched generation", function()
  local model = as.models.gpt2.from_pretrained(fixtures .. "gpt2")
  local io_ = as.load(fixtures .. "gpt2/io.safetensors")
  local rows = io_.input_ids:tolist()
  local short = { table.unpack(rows[2], 1, 5) }

  it("left-pads prompts of different lengths; each row generates what it would alone", function()
    local alone1 = model:generate({ rows[1] }, { max_new_tokens = 8 }):tolist()[1]
    local alone2 = model:generate({ short }, { max_new_tokens = 8 }):tolist()[1]
    assert.are.same(io_.generated:tolist()[1], alone1)
    for _, use_cache in ipairs { true, false } do
      local got = model:generate({ rows[1], short }, { max_new_tokens = 8, use_cache = use_cache }):tolist()
      assert.are.same(alone1, got[1])
      assert.are.same({ 0, 0, 0 }, { table.unpack(got[2], 1, 3) }) -- pad_token_id: none given, so 0
      assert.are.same(alone2, { table.unpack(got[2], 4) })
    end
  end)

  it("runs under no_grad, so a model whose parameters require grad generates the same", function()
    local want = model:generate({ rows[1] }, { max_new_tokens = 4 }):tolist()
    local trainable = model:clone():requires_grad_()
    -- with gradients on, the cache's in-place writes of k and v would be refused
    local got = trainable:generate({ rows[1] }, { max_new_tokens = 4 })
    assert.are.same(want, got:tolist())
    assert.is_false(got.requires_grad)
    assert.is_true(as.is_grad_enabled())
  end)

  it("takes a padded tensor with its attention_mask, and a pad_token_id", function()
    local ids = as.tensor({ rows[1], { 7, 7, 7, table.unpack(short) } }, "int64")
    local mask = as.tensor({ { 1, 1, 1, 1, 1, 1, 1, 1 }, { 0, 0, 0, 1, 1, 1, 1, 1 } }, "int64")
    local got = model:generate(ids, { max_new_tokens = 6, attention_mask = mask }):tolist()
    local alone = model:generate({ short }, { max_new_tokens = 6 }):tolist()[1]
    assert.are.same(alone, { table.unpack(got[2], 4) })
    local padded = model:generate({ rows[1], short }, { max_new_tokens = 6, pad_token_id = 7 }):tolist()
    assert.are.same(got, padded)
  end)

  it("a padded row's logits equal the unpadded prompt's; positions come from the mask", function()
    local ids = as.tensor({ rows[1], { 0, 0, 0, table.unpack(short) } }, "int64")
    local mask = as.tensor({ { 1, 1, 1, 1, 1, 1, 1, 1 }, { 0, 0, 0, 1, 1, 1, 1, 1 } }, "int64")
    local padded = model(ids, { attention_mask = mask })
    local alone = model(as.tensor({ short }, "int64"))
    assert.is_true(maxdiff(padded:narrow(1, 2, 1):narrow(2, 4, 5), alone) < 1e-4)
    assert.is_true(maxdiff(padded:narrow(1, 1, 1), model(io_.input_ids:narrow(1, 1, 1))) < 1e-4)
    -- without the mask the pads are tokens: another result
    assert.is_true(maxdiff(model(ids):narrow(1, 2, 1):narrow(2, 4, 5), alone) > 1e-3)
    local err = errmsg(model, ids, { attention_mask = as.ones({ 2, 5 }, "int64") })
    assert.is_truthy(err:find("attention_mask should be (B, past + L) = (2, 8)", 1, true), err)
  end)

  it("token ids out of range are an error naming vocab_size", function()
    local err = errmsg(model, as.tensor({ { 1, 100 } }, "int64"))
    assert.is_truthy(err:find("token id 100 is out of range (vocab_size = 100)", 1, true), err)
  end)
end)

describe("prompt length + max_new_tokens against the model's positions", function()
  local cases = {
    { "gpt2", function() return as.models.gpt2.from_pretrained(fixtures .. "gpt2") end, 64, "n_positions" },
    { "llama", function() return as.models.llama.from_pretrained(fixtures .. "llama/llama") end, 128,
      "max_position_embeddings" },
  }
  for _, case in ipairs(cases) do
    it(case[1] .. ": an error before any token when they do not fit; exactly fitting runs", function()
      local model, P, name = case[2](), case[3], case[4]
      local calls = 0
      local function count() calls = calls + 1 end
      local prompt = as.ones({ 1, P - 7 }, "int64")
      for _, use_cache in ipairs { true, false } do
        local err = errmsg(model.generate, model, prompt, { max_new_tokens = 8, callback = count, use_cache = use_cache })
        assert.is_truthy(err:find(string.format("a prompt of %d tokens + max_new_tokens = 8 makes %d tokens, past %s = %d",
          P - 7, P + 1, name, P), 1, true), err)
        assert.are.equal(0, calls)
      end
      -- batched lists: the padded length counts
      local err = errmsg(model.generate, model, { { 1, 2 }, prompt:tolist()[1] }, { max_new_tokens = 8 })
      assert.is_truthy(err:find("past " .. name, 1, true), err)
      local fits = as.ones({ 1, P - 8 }, "int64")
      local g = model:generate(fits, { max_new_tokens = 8, eos_token_id = false, callback = count })
      assert.are.equal(P, g:size(2))
      assert.are.equal(8, calls)
    end)
  end
end)
