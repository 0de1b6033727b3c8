-- as.tokenizer: tokenizers read from a Hugging Face tokenizer.json, encoding
-- in C (runtime/io/tokenizer*.c) with the ids of HF `tokenizers`: byte-level
-- BPE (GPT-2, Llama 3, Qwen2), BPE with byte fallback and "▁" (Llama 2,
-- Mistral), WordPiece (BERT).  docs/tokenizers.md says what is supported.
--
--   local tok = as.tokenizer.from_pretrained("path/to/model")   -- or .../tokenizer.json
--   local ids = tok:encode("Hello world")                         -- {15496, 995}, 0-based ids
--   tok:encode("Hello", {add_special_tokens = false, tensor = true})  -- int64 tensor
--   tok:decode(ids, {skip_special_tokens = true}), tok:token_to_id("Hello"), tok.vocab_size
local core = require "attnswap.core"

local M = {}

local function is_dir(path)
  local f = io.open(path, "r")
  if not f then return false end
  local _, _, code = f:read(1)
  f:close()
  return code == 21 -- EISDIR
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- Tokenizer from a tokenizer.json, or from a folder holding one (a model's
--- folder).  A folder with only BERT's vocab.txt gets a WordPiece tokenizer
--- built as HF's BertTokenizerFast does (lower-cased unless
--- tokenizer_config.json says do_lower_case = false).
function M.from_pretrained(path)
  if type(path) ~= "string" then
    error(("bad argument #1 to 'from_pretrained' (string path expected, got %s)"):format(type(path)), 2)
  end
  local file = path
  if is_dir(path) then
    file = path:gsub("/+$", "") .. "/tokenizer.json"
    if not exists(file) then
      local vocab = path:gsub("/+$", "") .. "/vocab.txt"
      if exists(vocab) then return M.from_vocab_txt(vocab) end
      error(("tokenizer.from_pretrained: %s has no tokenizer.json (nor a BERT vocab.txt)"):format(path), 2)
    end
  elseif not exists(path) then
    error(("tokenizer.from_pretrained: %s: no such file or folder"):format(path), 2)
  end
  local ok, tok = pcall(core.tokenizer_load, file)
  if not ok then error(tok, 2) end
  return tok
end

--- Tokenizer from the text of a tokenizer.json (name is used in messages).
function M.from_string(json, name)
  local ok, tok = pcall(core.tokenizer_from_json, json, name)
  if not ok then error(tok, 2) end
  return tok
end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ({ ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r" })[c]
      or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

--- WordPiece from BERT's vocab.txt (one token a line, ids from 0), with the
--- normalizer, pre-tokenizer, post-processor and decoder HF's converter gives it.
function M.from_vocab_txt(path, opts)
  opts = opts or {}
  local lower = opts.lowercase
  if lower == nil then
    lower = true
    local cfg = path:gsub("[^/]*$", "") .. "tokenizer_config.json"
    local f = io.open(cfg, "rb")
    if f then
      local ok, j = pcall(core.json_decode, f:read("a"))
      f:close()
      if ok and type(j) == "table" and j.do_lower_case == false then lower = false end
    end
  end
  local entries, ids, id = {}, {}, 0
  for line in io.lines(path) do
    line = line:gsub("\r$", "")
    if ids[line] == nil then
      ids[line] = id
      entries[#entries + 1] = json_string(line) .. ":" .. id
    end
    id = id + 1
  end
  for _, t in ipairs { "[UNK]", "[CLS]", "[SEP]" } do
    if not ids[t] then error(("tokenizer.from_vocab_txt: %s lacks %s"):format(path, t), 2) end
  end
  local added = {}
  for _, t in ipairs { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" } do
    if ids[t] then
      added[#added + 1] = ('{"id":%d,"content":%s,"special":true,"normalized":false}'):format(ids[t], json_string(t))
    end
  end
  local json = ([[{"added_tokens":[%s],
    "normalizer":{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":%s},
    "pre_tokenizer":{"type":"BertPreTokenizer"},
    "post_processor":{"type":"BertProcessing","cls":["[CLS]",%d],"sep":["[SEP]",%d]},
    "decoder":{"type":"WordPiece","prefix":"##","cleanup":true},
    "model":{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,
      "vocab":{%s}}}]]):format(table.concat(added, ","), tostring(lower), ids["[CLS]"], ids["[SEP]"],
    table.concat(entries, ","))
  return M.from_string(json, path)
end

--- Encodes texts and pads them to one length: input_ids and attention_mask,
--- (B, L) int64, padded on the right (or the left: {padding_side = "left"})
--- with pad_id (default: the [PAD]/<pad> token, else 0).
function M.batch(tok, texts, opts)
  opts = opts or {}
  local pad = opts.pad_id or tok:token_to_id("[PAD]") or tok:token_to_id("<pad>") or 0
  local rows, L = {}, 0
  for i, t in ipairs(texts) do
    rows[i] = tok:encode(t, { add_special_tokens = opts.add_special_tokens ~= false })
    L = math.max(L, #rows[i])
  end
  local ids, mask = {}, {}
  for i, r in ipairs(rows) do
    ids[i], mask[i] = {}, {}
    local off = opts.padding_side == "left" and L - #r or 0
    for j = 1, L do
      local v = r[j - off]
      ids[i][j] = v or pad
      mask[i][j] = v and 1 or 0
    end
  end
  return core.tensor(ids, "int64"), core.tensor(mask, "int64")
end

-- tok:batch(texts [, opts]) as a method of every tokenizer
do
  local mt = debug.getregistry()["attnswap.Tokenizer"]
  local index = mt and mt.__index
  if type(index) == "function" then
    mt.__index = function(t, k)
      if k == "batch" then return M.batch end
      return index(t, k)
    end
  end
end

return M
