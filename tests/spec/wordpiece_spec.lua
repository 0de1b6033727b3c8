-- The WordPiece tokenizer on a tiny vocabulary (the real one is checked
-- against HF by examples/minilm_embeddings.lua; see docs/models.md).
local WordPiece = require "attnswap.models.wordpiece"

describe("WordPiece", function()
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  for _, t in ipairs { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sit", "##s", ".", "un", "##believ", "##able", "!" } do
    f:write(t, "\n")
  end
  f:close()
  local tok = WordPiece.load(path)
  os.remove(path)

  it("lower-cases and splits punctuation", function()
    assert.are.same({ "the", "cat", "sits", ".", "hi", "!", "!" }, WordPiece.basic_tokens("The CAT sits. hi!!"))
  end)

  it("splits words into the longest known pieces", function()
    assert.are.same({ "un", "##believ", "##able" }, tok:wordpiece("unbelievable"))
    assert.are.same({ "sit", "##s" }, tok:wordpiece("sits"))
    assert.are.same({ "[UNK]" }, tok:wordpiece("dog"))
  end)

  it("encodes with [CLS] and [SEP] and pads batches", function()
    assert.are.same({ 2, 4, 5, 6, 7, 8, 3 }, tok:encode("The cat sits."))
    local ids, mask = tok:batch { "the cat", "unbelievable!" }
    assert.are.same({ { 2, 4, 5, 3, 0, 0 }, { 2, 9, 10, 11, 12, 3 } }, ids:tolist())
    assert.are.same({ { 1, 1, 1, 1, 0, 0 }, { 1, 1, 1, 1, 1, 1 } }, mask:tolist())
  end)
end)
