-- as.models.charlm: the small character-level transformer of
-- examples/train_tiny.lua and the data helpers around it, shared with
-- bench/recover.lua so that the benchmark distils exactly the model the
-- example trains (same alphabet, split, batches and architecture).
local as = require "attnswap"
local nn = as.nn

local M = {}

-- Reads a text and makes its alphabet (sorted bytes), 0-based ids, the
-- train/held-out split (the last 10% held out) and the unigram entropy of
-- the training part in nats. Returns nil, message when the file is unreadable.
function M.load_text(path)
  local f = io.open(path, "rb")
  if not f then return nil, "cannot read " .. path end
  local text = f:read("a")
  f:close()
  local chars, id_of = {}, {}
  for c in text:gmatch(".") do
    if not id_of[c] then chars[#chars + 1] = c; id_of[c] = true end
  end
  table.sort(chars)
  for k, c in ipairs(chars) do id_of[c] = k - 1 end
  local n = #text
  local ids = {}
  for k = 1, n do ids[k] = id_of[text:sub(k, k)] end
  local split = math.floor(n * 0.9)
  local counts = {}
  for k = 1, split do counts[ids[k]] = (counts[ids[k]] or 0) + 1 end
  local unigram = 0
  for _, c in pairs(counts) do unigram = unigram - c / split * math.log(c / split) end
  return { text = text, chars = chars, ids = ids, V = #chars, n = n, split = split, unigram = unigram }
end

-- batch(lo, hi) -> x, y: B random windows of L ids starting in [lo, hi)
-- and the same shifted by one (the next-token targets), drawn with the
-- attnswap generator (as.manual_seed makes them repeatable).
function M.batcher(data, B, L)
  local ids = data.ids
  return function(lo, hi)
    local x, y = {}, {}
    for b = 1, B do
      local s = lo + math.floor(as.rand(1):item() * (hi - lo - L - 1))
      x[b], y[b] = {}, {}
      for t = 1, L do x[b][t], y[b][t] = ids[s + t], ids[s + t + 1] end
    end
    return as.tensor(x, "int64"), as.tensor(y, "int64")
  end
end

-- token + position embeddings, `layers` causal pre-norm blocks, a final
-- LayerNorm and a linear head: (B, L) ids -> (B, L, V) logits.
local CharModel = nn.class("CharModel")
function CharModel:init(opts)
  if type(opts) ~= "table" or math.type(opts.V) ~= "integer" or opts.V < 1 then
    error("as.models.charlm.new: V (the alphabet size) must be a positive integer, got " ..
      (type(opts) == "table" and tostring(opts.V) or type(opts)), 3)
  end
  local dim, L = opts.dim or 64, opts.L or 64
  self.tok = nn.Embedding(opts.V, dim)
  self.pos = nn.Embedding(L, dim)
  local blocks = {}
  for k = 1, opts.layers or 2 do
    blocks[k] = nn.TransformerBlock { dim = dim, num_heads = opts.num_heads or 4, core_opts = { causal = true } }
  end
  self.blocks = nn.Sequential(table.unpack(blocks))
  self.norm = nn.LayerNorm(dim)
  self.head = nn.Linear(dim, opts.V)
  self.positions = as.arange(0, L):long()
end
function CharModel:forward(x)
  local h = self.tok(x) + self.pos(self.positions)
  return self.head(self.norm(self.blocks(h)))
end

-- new{V = , L = 64, dim = 64, num_heads = 4, layers = 2}
function M.new(opts) return CharModel(opts) end

return M
