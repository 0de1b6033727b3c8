-- as.eval: what a causal LM makes of a text.  perplexity is the sliding-window
-- recipe of the transformers docs ("Perplexity of fixed-length models"):
-- windows of max_length tokens starting every stride tokens, each scoring
-- only the tokens the previous window did not reach, so every token but the
-- first is predicted from up to max_length - 1 tokens before it (stride <
-- max_length) and each is scored once.
local M = {}

local function bad(fmt, ...) error(string.format("eval.perplexity: " .. fmt, ...), 3) end

local function positive_int(v) return math.type(v) == "integer" and v > 0 end

-- The ids to score as a Lua list of 0-based integers.
local function ids_of(as, tok, input)
  if type(input) == "string" then
    if tok == nil then bad("a text needs a tokenizer (argument #2), or give the ids") end
    if type(tok) ~= "table" and type(tok) ~= "userdata" then bad("argument #2 should be a tokenizer or nil, got %s", type(tok)) end
    return tok:encode(input)
  end
  if as.is_tensor(input) then
    if input:dim() == 2 and input:size(1) == 1 then input = input:reshape(input:size(2)) end
    if input:dim() ~= 1 or (input:dtype() ~= "int64" and input:dtype() ~= "int32") then
      bad("ids should be an int tensor (N,) or (1, N), got %s %s", input:dtype(), tostring(input:shape()))
    end
    return input:cpu():long():tolist()
  end
  if type(input) == "table" then
    for i, v in ipairs(input) do
      if math.type(v) ~= "integer" then bad("ids[%d] should be an integer, got %s", i, tostring(v)) end
    end
    return input
  end
  bad("argument #3 should be a text, a list of ids or an int tensor, got %s", type(input))
end

-- The model's position limit, and its config name.
local function positions_of(model)
  local c = type(model) ~= "function" and model.config or nil
  if type(c) ~= "table" then return nil end
  if c.max_position_embeddings then return c.max_position_embeddings, "max_position_embeddings" end
  if c.n_positions then return c.n_positions, "n_positions" end
end

--- perplexity(model, tokenizer or nil, text or ids, {max_length = the model's positions,
---   stride = max_length}) -> perplexity, tokens scored, mean negative log-likelihood
--- model(ids (1, L), {use_cache = false}) -> logits (1, L, V): GPT-2 and the
--- Llama family.  The window starting at b covers [b, min(b + max_length, N))
--- and scores the tokens from max(the previous window's end, b + 1) to its
--- end, each by log_softmax of the logits one position before; perplexity =
--- exp(sum of their negative log-likelihoods / their number).  stride =
--- max_length: non-overlapping windows, the first token of each unscored.
--- (The docs' loop averages each window's loss over trg_len - 1 tokens while
--- it scores trg_len of them when windows overlap; the sum here is exact.)
function M.perplexity(model, tok, input, opts)
  local as = require "attnswap"
  opts = opts or {}
  if type(opts) ~= "table" then bad("options should be a table, got %s", type(opts)) end
  as.nn.check_options("eval.perplexity", opts, { "stride", "max_length" }, nil, 3)
  local ids = ids_of(as, tok, input)
  local N = #ids
  if N < 2 then bad("needs at least 2 tokens (the first is never scored), got %d", N) end
  local limit, limit_name = positions_of(model)
  local M_ = opts.max_length or limit
  if M_ == nil then bad("give max_length (the model has no max_position_embeddings or n_positions)") end
  if not positive_int(M_) or M_ < 2 then bad("max_length should be an integer >= 2, got %s", tostring(M_)) end
  if limit and M_ > limit then bad("max_length = %d is past the model's %s = %d", M_, limit_name, limit) end
  local stride = opts.stride or M_
  if not positive_int(stride) or stride > M_ then
    bad("stride should be an integer in [1, max_length = %d], got %s", M_, tostring(stride))
  end
  local p = model:parameters()[1]
  local device = p and p:device() or "cpu"
  local all = as.tensor({ ids }, "int64")
  local nll, n, prev_end, begin = 0.0, 0, 0, 0
  while begin < N do
    local e = math.min(begin + M_, N)
    local first = math.max(prev_end, begin + 1) -- 0-based positions first .. e - 1 are scored
    if first < e then
      local cnt = e - first
      local logits = model(all:narrow(2, begin + 1, e - begin):to(device), { use_cache = false })
      local V = logits:size(3)
      local lp = logits:narrow(2, first - begin, cnt):float():cpu():log_softmax(3):reshape(cnt * V)
      local at = {}
      for t = 0, cnt - 1 do at[t + 1] = t * V + ids[first + t + 1] + 1 end
      for _, x in ipairs(lp:index_select(1, as.tensor(at, "int64")):tolist()) do nll = nll - x end
      n = n + cnt
    end
    prev_end = e
    if e == N then break end
    begin = begin + stride
  end
  return math.exp(nll / n), n, nll / n
end

return M
