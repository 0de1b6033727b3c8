-- as.eval.perplexity: the transformers docs' sliding-window recipe, checked
-- against the same sum recomputed here token by token (a log-softmax written
-- out in Lua numbers over the logits of the window that scores each token).
local as = require "attnswap"
local U = require "spec_util" -- tests/spec/spec_util.lua
local errmsg = U.errmsg

local src = os.getenv("ATTNSWAP_SOURCE_DIR") or "."

-- -log p(ids[t] | window) for a 0-based position t, from the window's logits row t - begin - 1.
local function nll_at(model, ids, begin, e, t)
  local window = { table.unpack(ids, begin + 1, e) }
  local row = model(as.tensor({ window }, "int64"), { use_cache = false }):tolist()[1][t - begin]
  local top = -math.huge
  for _, x in ipairs(row) do top = math.max(top, x) end
  local s = 0
  for _, x in ipairs(row) do s = s + math.exp(x - top) end
  return -(row[ids[t + 1] + 1] - top - math.log(s))
end

-- The windows of the recipe, and which one scores each token: the first
-- window that reaches it and does not start at it or past it.
local function by_hand(model, ids, max_length, stride)
  local N = #ids
  local windows, begin = {}, 0
  while true do
    local e = math.min(begin + max_length, N)
    windows[#windows + 1] = { begin, e }
    if e == N then break end
    begin = begin + stride
  end
  local nll, n = 0, 0
  for t = 1, N - 1 do
    for _, w in ipairs(windows) do
      if w[2] > t then
        if w[1] < t then nll, n = nll + nll_at(model, ids, w[1], w[2], t), n + 1 end
        break
      end
    end
  end
  return math.exp(nll / n), n
end

describe("as.eval.perplexity", function()
  as.manual_seed(4)
  local model = as.models.llama { vocab_size = 32, hidden_size = 16, intermediate_size = 32, num_hidden_layers = 2,
    num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 16 }
  model:eval()
  local ids = {}
  for i = 1, 37 do ids[i] = (i * 7 + i * i) % 32 end

  it("equals the sum recomputed token by token, windows overlapping", function()
    for _, c in ipairs { { 10, 4 }, { 16, 5 }, { 8, 1 } } do
      local ppl, n = as.eval.perplexity(model, nil, ids, { max_length = c[1], stride = c[2] })
      local want, wn = by_hand(model, ids, c[1], c[2])
      assert.are.equal(36, n) -- every token but the first
      assert.are.equal(wn, n)
      assert.is_true(math.abs(ppl - want) / want < 1e-5, string.format("%s: %.8f against %.8f", table.concat(c, "/"), ppl, want))
    end
  end)

  it("stride = max_length is the non-overlapping result: each chunk scored alone", function()
    local ppl, n = as.eval.perplexity(model, nil, ids, { max_length = 10, stride = 10 })
    local nll, count = 0, 0
    for b = 0, #ids - 1, 10 do
      local e = math.min(b + 10, #ids)
      for t = b + 1, e - 1 do nll, count = nll + nll_at(model, ids, b, e, t), count + 1 end
    end
    assert.are.equal(36 - 3, n) -- the first token of each of the 4 chunks is not scored
    assert.are.equal(count, n)
    assert.is_true(math.abs(ppl - math.exp(nll / count)) < 1e-5 * ppl)
    -- and a smaller stride (more context) gives another number
    assert.is_true(math.abs(as.eval.perplexity(model, nil, ids, { max_length = 10, stride = 5 }) - ppl) > 1e-4)
  end)

  it("defaults to non-overlapping windows of the model's positions; ids as a list, (N,) or (1, N) tensor", function()
    local ppl, n = as.eval.perplexity(model, nil, ids)
    local want = as.eval.perplexity(model, nil, ids, { max_length = 16, stride = 16 })
    assert.are.equal(want, ppl)
    assert.are.equal(36 - 2, n)
    assert.are.equal(ppl, (as.eval.perplexity(model, nil, as.tensor(ids, "int64"))))
    assert.are.equal(ppl, (as.eval.perplexity(model, nil, as.tensor({ ids }, "int64"))))
  end)

  it("reads a text through a tokenizer", function()
    local tok = as.tokenizer.from_pretrained(src .. "/tests/fixtures/tokenizers/gpt2/tokenizer.json")
    as.manual_seed(6)
    local lm = as.models.gpt2 { vocab_size = tok.vocab_size, n_positions = 32, n_embd = 16, n_layer = 1, n_head = 2 }
    lm:eval()
    local text = "The quick brown fox jumps over the lazy dog, and the dog sleeps on."
    local enc = tok:encode(text)
    local ppl, n = as.eval.perplexity(lm, tok, text, { stride = 8 })
    assert.are.equal(#enc - 1, n)
    local want = by_hand(lm, enc, 32, 8)
    assert.is_true(math.abs(ppl - want) / want < 1e-5, ppl .. " against " .. want)
  end)

  it("bad arguments are errors that say what was expected", function()
    local function msg(...) return errmsg(as.eval.perplexity, ...) end
    assert.is_truthy(msg(model, nil, "some text"):find("a text needs a tokenizer", 1, true))
    assert.is_truthy(msg(model, nil, ids, { max_length = 10, stride = 11 }):find("stride should be an integer in [1, max_length = 10]", 1, true))
    assert.is_truthy(msg(model, nil, ids, { max_length = 17 }):find("max_length = 17 is past the model's max_position_embeddings = 16", 1, true))
    assert.is_truthy(msg(model, nil, { 3 }):find("needs at least 2 tokens", 1, true))
    assert.is_truthy(msg(model, nil, ids, { strides = 2 }):find("unknown option 'strides'", 1, true))
    assert.is_truthy(msg(model, nil, { 1, 2.5 }):find("ids[2] should be an integer", 1, true))
  end)
end)
