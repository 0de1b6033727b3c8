-- BERT's WordPiece tokenizer (Wu et al. 2016; HF's BertTokenizer): lower-case,
-- split on whitespace and punctuation, then greedy longest-match sub-words
-- with "##" continuations.  The vocabulary comes from a tokenizer.json (HF
-- tokenizers) or a vocab.txt.  Characters are handled as UTF-8; accents are
-- not stripped (enough for English text).
local core = require "attnswap.core"

local WordPiece = {}
WordPiece.__index = WordPiece

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

--- WordPiece.load(path): tokenizer.json or vocab.txt
function WordPiece.load(path)
  local vocab = {}
  if path:match("%.json$") then
    local j = core.json_decode(read(path))
    if not (j.model and type(j.model.vocab) == "table") then
      error("wordpiece: " .. path .. " has no model.vocab", 2)
    end
    for tok, id in pairs(j.model.vocab) do vocab[tok] = id end
  else
    local id = 0
    for line in io.lines(path) do
      vocab[line] = id
      id = id + 1
    end
  end
  for _, t in ipairs { "[CLS]", "[SEP]", "[UNK]", "[PAD]" } do
    if not vocab[t] then error("wordpiece: vocabulary lacks " .. t, 2) end
  end
  return setmetatable({ vocab = vocab }, WordPiece)
end

-- Lower-cased words, with each punctuation character a token of its own.
local function basic_tokens(text)
  local out = {}
  for word in text:lower():gmatch("%S+") do
    local i = 1
    while i <= #word do
      local s, e = word:find("^[%w\128-\255]+", i)
      if s then
        out[#out + 1] = word:sub(s, e)
        i = e + 1
      else
        out[#out + 1] = word:sub(i, i)
        i = i + 1
      end
    end
  end
  return out
end

function WordPiece:wordpiece(word)
  if #word > 100 then return { "[UNK]" } end
  local pieces, start = {}, 1
  while start <= #word do
    local stop, found = #word, nil
    while stop >= start do
      local sub = word:sub(start, stop)
      if start > 1 then sub = "##" .. sub end
      if self.vocab[sub] then found = sub break end
      stop = stop - 1
    end
    if not found then return { "[UNK]" } end
    pieces[#pieces + 1] = found
    start = stop + 1
  end
  return pieces
end

--- encode(text) -> list of 0-based ids with [CLS] ... [SEP]
function WordPiece:encode(text)
  local ids = { self.vocab["[CLS]"] }
  for _, w in ipairs(basic_tokens(text)) do
    for _, p in ipairs(self:wordpiece(w)) do ids[#ids + 1] = self.vocab[p] end
  end
  ids[#ids + 1] = self.vocab["[SEP]"]
  return ids
end

--- batch(texts) -> input_ids (B, L) int64, attention_mask (B, L) int64, padded with [PAD]
function WordPiece:batch(texts)
  local rows, L = {}, 0
  for i, t in ipairs(texts) do
    rows[i] = self:encode(t)
    L = math.max(L, #rows[i])
  end
  local ids, mask = {}, {}
  for i, r in ipairs(rows) do
    ids[i], mask[i] = {}, {}
    for j = 1, L do
      ids[i][j] = r[j] or self.vocab["[PAD]"]
      mask[i][j] = r[j] and 1 or 0
    end
  end
  return core.tensor(ids, "int64"), core.tensor(mask, "int64")
end

WordPiece.basic_tokens = basic_tokens
return WordPiece
