-- as.models.from_pretrained(dir) -> model, family, tokenizer: the
-- tokenizer.json beside the weights comes back through as.tokenizer; none
-- gives nil, and one that cannot be read gives nil and why (the model loads).
local as = require "attnswap"
local U = require "spec_util" -- tests/spec/spec_util.lua
local tmpdir, write = U.tmpdir, U.write

local src = os.getenv("ATTNSWAP_SOURCE_DIR") or "."
local fixtures = src .. "/tests/fixtures/"

describe("models.from_pretrained and the tokenizer beside the model", function()
  it("returns the folder's tokenizer.json as a third value", function()
    local dir = tmpdir()
    assert(os.execute(string.format("env -u LD_PRELOAD cp %sgpt2/config.json %sgpt2/model.safetensors %stokenizers/gpt2/tokenizer.json %s/",
      fixtures, fixtures, fixtures, dir)))
    local model, family, tok = as.models.from_pretrained(dir)
    assert.are.equal("gpt2", family)
    assert.are.equal("GPT2LMHeadModel", model:type())
    assert.is_not_nil(tok)
    local want = as.tokenizer.from_pretrained(fixtures .. "tokenizers/gpt2/tokenizer.json")
    assert.are.same(want:encode("Hello world, again"), tok:encode("Hello world, again"))
    os.execute("env -u LD_PRELOAD rm -rf " .. dir)
  end)

  it("gives nil without one, and nil and why with one it cannot read", function()
    local model, family, tok, why = as.models.from_pretrained(fixtures .. "llama/llama")
    assert.are.equal("llama", family)
    assert.is_not_nil(model)
    assert.is_nil(tok)
    assert.is_nil(why)
    local dir = tmpdir()
    assert(os.execute(string.format("env -u LD_PRELOAD cp %sllama/qwen2/config.json %sllama/qwen2/model.safetensors %s/", fixtures,
      fixtures, dir)))
    write(dir .. "/tokenizer.json", '{"model": {"type": "Unigram", "vocab": []}}')
    model, family, tok, why = as.models.from_pretrained(dir)
    assert.are.equal("qwen2", family)
    assert.is_nil(tok)
    assert.is_truthy(why and why:find("Unigram", 1, true), why)
    os.execute("env -u LD_PRELOAD rm -rf " .. dir)
  end)
end)
