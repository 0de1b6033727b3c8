-- as.tokenizer against HF `tokenizers`: the ids and decodes stored by
-- tests/fixtures/make_tokenizer_fixtures.py for GPT-2, Llama 3, Qwen2,
-- Llama 2, Mistral and BERT-style tokenizers; the Lua face; bad input.
local as = require "attnswap"

local root = (os.getenv("ATTNSWAP_SOURCE_DIR") or ".") .. "/tests/fixtures/tokenizers/"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function tmpfile(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

describe("tokenizers match HF tokenizers", function()
  for _, kind in ipairs { "gpt2", "llama3", "qwen2", "llama2", "mistral", "bert", "misc", "metaspace" } do
    it(kind, function()
      local tok = as.tokenizer.from_pretrained(root .. kind)
      local exp = as.json_decode(read(root .. kind .. "/expected.json"))
      assert.are.equal(exp.vocab_size, tok.vocab_size)
      assert.are.equal(exp.vocab_size, #tok)
      for _, c in ipairs(exp.cases) do
        assert.are.same(c.ids, tok:encode(c.text), c.text)
        assert.are.same(c.ids_plain, tok:encode(c.text, { add_special_tokens = false }), c.text)
        assert.are.equal(c.decoded, tok:decode(c.ids))
        assert.are.equal(c.decoded_skip, tok:decode(c.ids, { skip_special_tokens = true }))
        for i, t in ipairs(c.tokens) do
          local text = tok:id_to_token(c.ids[i])
          assert.are.equal(c.ids[i], tok:token_to_id(text))
          -- HF's token of an lstrip/rstrip added token holds the spaces it took
          if not (kind == "misc" and c.ids[i] >= 300) then assert.are.equal(t, text) end
        end
      end
    end)
  end
end)

describe("pre-tokenizers and normalizers match HF tokenizers", function()
  -- variants.json: fragments put in place of the gpt2 fixture's own
  local base = read(root .. "gpt2/tokenizer.json")
  local v = as.json_decode(read(root .. "variants.json"))
  local own = {
    pre_tokenizer = '"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}',
    normalizer = '"normalizer":null',
  }
  for name, case in pairs(v.variants) do
    it(name, function()
      local at, stop = base:find(own[case.stage], 1, true)
      assert.is_not_nil(at)
      local json = base:sub(1, at - 1) .. '"' .. case.stage .. '":' .. case.json .. base:sub(stop + 1)
      local tok = as.tokenizer.from_string(json, name)
      for i, text in ipairs(v.texts) do
        assert.are.same(case.ids[i], tok:encode(text), text)
      end
    end)
  end
end)

describe("as.tokenizer", function()
  local tok = as.tokenizer.from_pretrained(root .. "llama3/tokenizer.json")

  it("encodes to an int64 tensor on request and decodes one", function()
    local ids = tok:encode("Hello world", { tensor = true })
    assert.are.equal("int64", ids:dtype())
    assert.are.same(tok:encode("Hello world"), ids:tolist())
    assert.are.equal("<|begin_of_text|>Hello world", tok:decode(ids))
    assert.are.equal("Hello world", tok:decode(ids, { skip_special_tokens = true }))
    assert.are.same({ 0 }, tok:encode("", { tensor = true }):tolist())
  end)

  it("round-trips any text through byte-level BPE", function()
    local text = "tabs\t, CJK 日本, emoji 👍🏽, é\u{301}, \0 nul, \r\n"
    assert.are.equal(text, tok:decode(tok:encode(text, { add_special_tokens = false })))
  end)

  it("prints, measures and looks up", function()
    assert.matches("^Tokenizer%(byte%-level BPE, vocab_size=420", tostring(tok))
    assert.is_nil(tok:token_to_id("no such token"))
    assert.is_nil(tok:id_to_token(1000000))
    assert.is_true(tok:is_special(0))
    assert.is_false(tok:is_special(100))
  end)

  it("pads batches", function()
    local ids, mask = tok:batch({ "Hello world", "Hi" }, { pad_id = 2 })
    local a, b = tok:encode("Hello world"), tok:encode("Hi")
    assert.are.equal(#a, ids:size(2))
    assert.are.same(b[1], ids:tolist()[2][1])
    assert.are.equal(2, ids:tolist()[2][#a])
    assert.are.equal(#b, mask:sum():item() - #a)
    local left = tok:batch({ "Hello world", "Hi" }, { pad_id = 2, padding_side = "left" })
    assert.are.equal(2, left:tolist()[2][1])
  end)

  it("reads BERT's vocab.txt as WordPiece", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local f = assert(io.open(dir .. "/vocab.txt", "w"))
    for _, t in ipairs { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sit", "##s", ".", "un", "##believ", "##able", "!" } do
      f:write(t, "\n")
    end
    f:close()
    local wp = as.tokenizer.from_pretrained(dir)
    os.remove(dir .. "/vocab.txt")
    os.remove(dir)
    assert.are.same({ 2, 5, 6, 7, 8, 9, 3 }, wp:encode("The CAT sits."))
    assert.are.same({ 2, 10, 11, 12, 13, 1, 3 }, wp:encode("Unbelievable! dog"))
    assert.are.equal("the cat sits.", wp:decode(wp:encode("The cat sits."), { skip_special_tokens = true }))
  end)
end)

describe("as.tokenizer refuses bad input clearly", function()
  local tok = as.tokenizer.from_pretrained(root .. "gpt2")

  local function fails(pattern, f, ...)
    local ok, err = pcall(f, ...)
    assert.is_false(ok)
    assert.matches(pattern, tostring(err), 1, true)
  end

  it("names a missing file or folder", function()
    fails("tokenizer.from_pretrained: /nonexistent/x: no such file or folder", as.tokenizer.from_pretrained, "/nonexistent/x")
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    fails("has no tokenizer.json", as.tokenizer.from_pretrained, dir)
    os.remove(dir)
    fails("bad argument #1 to 'from_pretrained'", as.tokenizer.from_pretrained, 42)
  end)

  it("names an unsupported model type and a malformed merge list, with the file", function()
    local path = tmpfile('{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}')
    fails(path .. ": model type 'Unigram' is not supported (supported: BPE, WordPiece)", as.tokenizer.from_pretrained, path)
    os.remove(path)
    path = tmpfile('{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b c"]}}')
    fails(path .. ": merge 0 is \"a b c\"", as.tokenizer.from_pretrained, path)
    os.remove(path)
    path = tmpfile('{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}}')
    fails("merge 0 (a b): 'ab' is not in the vocabulary", as.tokenizer.from_pretrained, path)
    os.remove(path)
    path = tmpfile('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": {"type": "Precompiled"}}')
    fails("normalizer 'Precompiled' is not supported (supported: NFC", as.tokenizer.from_pretrained, path)
    os.remove(path)
    fails("invalid JSON", as.tokenizer.from_string, "{", "x.json")
  end)

  it("names ids out of range and invalid UTF-8", function()
    fails("decode: id 401 (at position 2) is not in the vocabulary", tok.decode, tok, { 5, 401 })
    fails("decode: id -1 (at position 1) is not in the vocabulary", tok.decode, tok, { -1 })
    fails("decode: ids[2] is string, expected an integer id", tok.decode, tok, { 1, "x" })
    fails("bad argument #2 to 'decode' (list of ids or 1-d int64/int32 CPU tensor expected, got Tensor)", tok.decode, tok, as.ones(2))
    fails("tokenizer.encode: the text is not valid UTF-8 (byte 3, 0xC3)", tok.encode, tok, "abc\xC3(")
    fails("bad argument #2 to 'encode' (string expected, got number)", tok.encode, tok, 42)
    fails("encode: unknown option 'add_special' (known: add_special_tokens, tensor)", tok.encode, tok, "a", { add_special = true })
    fails("encode: option add_special_tokens must be a boolean, got number", tok.encode, tok, "a", { add_special_tokens = 1 })
  end)
end)
