-- Token generation for the causal LMs (GPT-2, the Llama family): greedy or
-- sampled (temperature, top-k, top-p, in transformers' order), stop tokens,
-- a streaming callback, and batched prompts of different lengths, left-padded
-- with an attention mask as transformers pads them.  With the cache (the
-- default) each step feeds only the new tokens and each layer's core keeps
-- its own state (attention/incremental.lua: the growing K/V, a ring buffer
-- of a window, or a recurrent state).  Also what the models' attention
-- layers share: positions from a mask, and attend (the core, or its step).
local as = require "attnswap"
local I = require "attnswap.attention.incremental"
local nn = as.nn

local M = {}

local KNOWN = { "max_new_tokens", "use_cache", "do_sample", "temperature", "top_k", "top_p", "eos_token_id",
  "pad_token_id", "attention_mask", "callback", "seed" }
local PYTORCH = { max_length = "give max_new_tokens, the tokens to add", streamer = "give callback = function(tokens, step)",
  num_beams = "beam search is not implemented", repetition_penalty = "not implemented" }

--- check_incremental(model [, level]): an error naming the first attention
--- core with no incremental form (registered with incremental = false: it
--- cannot take a query shorter than its keys, so it cannot run with a cache).
function M.check_incremental(model, level)
  for path, m in model:named_modules() do
    if path:match("%.core$") or path == "core" then
      local step, _, name = I.stepper(m)
      if not step then
        error(string.format("generate: %s (%s) cannot run incrementally with a KV cache; pass {use_cache = false}",
          path, name), (level or 1) + 1)
      end
    end
  end
end

--- positions(B, L, offset, mask) -> int64 (B, L): the positions of the L new
--- tokens, offset + 0 .. L-1, or from an attention mask (B, offset + L) as
--- transformers' generate makes them for left padding: cumsum(mask) - 1,
--- and 1 at padded places.
function M.positions(B, L, offset, mask)
  if not mask then
    return as.arange(offset, offset + L):reshape(1, L):expand(B, L):contiguous()
  end
  local rows = mask:tolist()
  local out = {}
  for b = 1, B do
    local row, n, pos = rows[b], 0, {}
    for j = 1, #row do
      local on = row[j] ~= 0 and row[j] ~= false
      if on then n = n + 1 end
      if j > #row - L then pos[#pos + 1] = on and n - 1 or 1 end
    end
    out[b] = pos
  end
  return as.tensor(out, "int64")
end

--- check_ids(name, ids, vocab_size, level): token ids in [0, vocab_size), as
--- an error naming vocab_size.  Only for ids on the CPU: on a GPU the reduction
--- and its .item() would stop the host twice per forward (GPT-2 small on an
--- H100: 18.2 -> 20.2 ms), and the embedding checks the ids it gathers anyway
--- ("embedding: id 50300 is out of range for 50257 embeddings").
function M.check_ids(name, ids, vocab_size, level)
  if ids:numel() == 0 or ids:device() ~= "cpu" then return end
  local lo, hi = ids:min():item(), ids:max():item()
  if lo < 0 or hi >= vocab_size then
    error(string.format("%s: token id %d is out of range (vocab_size = %d)", name, lo < 0 and lo or hi, vocab_size),
      level + 1)
  end
end

--- position_ids(name, pos, B, L, offset, mask, level) -> the (B, L) positions
--- a forward uses: the caller's, checked, or those the cache offset and the
--- attention mask give.
function M.position_ids(name, pos, B, L, offset, mask, level)
  if pos == nil then return M.positions(B, L, offset, mask) end
  if not as.is_tensor(pos) or pos:dim() ~= 2 or pos:size(1) ~= B or pos:size(2) ~= L then
    error(string.format("%s: position_ids should be (B, L) = (%d, %d), got %s", name, B, L,
      as.is_tensor(pos) and tostring(pos:shape()) or type(pos)), level + 1)
  end
  return pos
end

--- all_on(mask): whether a mask keeps every position.
function M.all_on(mask)
  return mask:ne(0):logical_not():sum():item() == 0
end

--- check_mask(name, mask, B, n, level) -> the mask on the CPU, or nil when it
--- keeps everything; an error unless it is a tensor (B, n).
function M.check_mask(name, mask, B, n, level)
  if mask == nil then return nil end
  if not as.is_tensor(mask) or mask:dim() ~= 2 or mask:size(1) ~= B or mask:size(2) ~= n then
    error(string.format("%s: attention_mask should be (B, past + L) = (%d, %d), got %s", name, B, n,
      as.is_tensor(mask) and tostring(mask:shape()) or type(mask)), level + 1)
  end
  mask = mask:cpu()
  if M.all_on(mask) then return nil end
  return mask
end

--- attend(core, q, k, v, past, keep, use_cache) -> out, state (nil when not
--- caching, or when the core has no incremental form and no past is given).
--- keep (B, L) bool or nil: the new tokens that are real.  Without a cache
--- the core is called as it is, its mask the keep of every key.
function M.attend(core, q, k, v, past, keep, use_cache)
  local mask = keep and keep:reshape(keep:size(1), 1, 1, keep:size(2)) or nil
  if past == nil and not use_cache then return core(q, k, v, mask), nil end
  local step, why = I.stepper(core)
  if not step then
    if past ~= nil then error("the cache cannot be extended: " .. why, 0) end
    return core(q, k, v, mask), nil
  end
  return step(q, k, v, past, keep)
end

--- layer_past(name, past, i, level) -> layer i's state of a cache, or nil
function M.layer_past(name, past, i, level)
  if past == nil or past.length == 0 then return nil end
  local s = past[i]
  if s == nil then
    error(string.format("%s: the cache has no state for layer %d (its attention core has no incremental form; " ..
      "run without a cache)", name, i), level + 1)
  end
  return s
end

-- The k largest entries of a (V,) float tensor, largest first: ids (1-based), values.
local function top_k_of(row, k)
  local ids, vals = {}, {}
  local work = row:clone()
  for r = 1, k do
    local i = work:argmax():item()
    ids[r], vals[r] = i, work[i]
    work[i] = -math.huge
  end
  return ids, vals
end

--- pick(logits (V,) float32, opts) -> a 0-based token id: argmax, or a draw
--- from softmax(logits / temperature) restricted to the top_k ids, then to
--- the fewest ids whose probability reaches top_p.
function M.pick(logits, opts)
  if not opts.do_sample then return logits:argmax():item() - 1 end
  local V = logits:size(1)
  local x = logits / (opts.temperature or 1.0)
  local ids, vals
  if opts.top_k and opts.top_k < V then
    ids, vals = top_k_of(x, opts.top_k)
  else
    vals = x:tolist()
    ids = {}
    for i = 1, V do ids[i] = i end
    if opts.top_p and opts.top_p < 1 then
      table.sort(ids, function(a, b) return vals[a] > vals[b] end)
      local sorted = {}
      for r, i in ipairs(ids) do sorted[r] = vals[i] end
      vals = sorted
    end
  end
  local top = -math.huge
  for _, v in ipairs(vals) do if v > top then top = v end end
  local p, total = {}, 0
  for r, v in ipairs(vals) do
    p[r] = math.exp(v - top)
    total = total + p[r]
  end
  local n = #p
  if opts.top_p and opts.top_p < 1 then
    local acc = 0
    for r = 1, #p do
      acc = acc + p[r] / total
      if acc >= opts.top_p then n = r break end
    end
  end
  local kept = 0
  for r = 1, n do kept = kept + p[r] end
  local u = as.rand(1):item() * kept
  for r = 1, n do
    u = u - p[r]
    if u <= 0 then return ids[r] - 1 end
  end
  return ids[n] - 1
end

local function positive_int(v) return math.type(v) == "integer" and v > 0 end

local function check(opts, level)
  if type(opts) ~= "table" then
    error("bad argument #2 to 'generate' (options table expected, got " .. type(opts) .. ")", level + 1)
  end
  nn.check_options("generate", opts, KNOWN, PYTORCH, level + 1)
  local function bad(fmt, ...) error(string.format("generate: " .. fmt, ...), level + 1) end
  local n = opts.max_new_tokens
  if n ~= nil and (math.type(n) ~= "integer" or n < 0) then
    bad("max_new_tokens should be an integer >= 0, got %s", tostring(n))
  end
  if opts.temperature ~= nil and (type(opts.temperature) ~= "number" or not (opts.temperature > 0)) then
    bad("temperature should be a number > 0, got %s (for greedy decoding leave do_sample off)", tostring(opts.temperature))
  end
  if opts.top_k ~= nil and not positive_int(opts.top_k) then
    bad("top_k should be a positive integer, got %s", tostring(opts.top_k))
  end
  if opts.top_p ~= nil and (type(opts.top_p) ~= "number" or not (opts.top_p > 0 and opts.top_p <= 1)) then
    bad("top_p should be a number in (0, 1], got %s", tostring(opts.top_p))
  end
  if opts.callback ~= nil and type(opts.callback) ~= "function" then
    bad("callback should be a function(tokens, step), got %s", type(opts.callback))
  end
end

-- Stop ids as a set: a number, a list of numbers, or false/nil for none.
local function stop_set(e)
  local s = {}
  if type(e) == "number" then s[e] = true
  elseif type(e) == "table" then for _, v in ipairs(e) do s[v] = true end end
  return s
end

-- Prompts as rows of ids: an int tensor (B, L) (with an attention mask, or
-- none), or a Lua list of lists of different lengths, left-padded here.
local function prompts(ids, opts, pad, level)
  if as.is_tensor(ids) then
    if ids:dim() ~= 2 or (ids:dtype() ~= "int64" and ids:dtype() ~= "int32") then
      error("generate: expected ids as an int64 tensor (B, L) or a list of lists of ids, got " ..
        ids:dtype() .. " " .. tostring(ids:shape()), level + 1)
    end
    local mask = opts.attention_mask
    if mask ~= nil then
      if not as.is_tensor(mask) or mask:dim() ~= 2 or mask:size(1) ~= ids:size(1) or mask:size(2) ~= ids:size(2) then
        error(string.format("generate: attention_mask should be a tensor of the ids' shape %s, got %s",
          tostring(ids:shape()), as.is_tensor(mask) and tostring(mask:shape()) or type(mask)), level + 1)
      end
      mask = mask:cpu():ne(0):long():tolist()
    end
    return ids:cpu():long():tolist(), mask, ids:device()
  end
  if type(ids) ~= "table" or #ids == 0 then
    error("generate: expected ids as an int64 tensor (B, L) or a list of lists of ids, got " .. type(ids), level + 1)
  end
  if type(ids[1]) == "number" then ids = { ids } end
  local L = 0
  for b, row in ipairs(ids) do
    if type(row) ~= "table" or #row == 0 then
      error(string.format("generate: prompt %d should be a non-empty list of ids", b), level + 1)
    end
    for j, v in ipairs(row) do
      if math.type(v) ~= "integer" then
        error(string.format("generate: prompt %d, position %d: id should be an integer, got %s", b, j, tostring(v)),
          level + 1)
      end
    end
    L = math.max(L, #row)
  end
  local rows, mask, padded = {}, {}, false
  for b, row in ipairs(ids) do
    local r, m = {}, {}
    for j = 1, L - #row do r[j], m[j] = pad, 0 end
    for _, v in ipairs(row) do r[#r + 1], m[#m + 1] = v, 1 end
    rows[b], mask[b] = r, m
    padded = padded or #row < L
  end
  return rows, padded and mask or nil, nil
end

-- Where the model's weights are (Lua-list prompts go there).
local function device_of(model)
  local p = model:parameters()[1]
  return p and p:device() or "cpu"
end

local function has_padding(mask)
  if not mask then return false end
  for _, r in ipairs(mask) do for _, v in ipairs(r) do if v == 0 then return true end end end
  return false
end

--- generate(model, ids, opts, caps) -> ids (B, Lprompt + new) int64, prompts
--- left-padded.  model(ids, {past, attention_mask, last_only}) -> logits, cache.
--- caps: mask (the model takes attention_mask), last_only (it takes
--- last_only), pad_token_id, eos_token_id (the config's), max_positions and
--- positions_name (the model's position limit and its config name: a prompt
--- of L tokens with max_new_tokens = n needs L + n <= max_positions, checked
--- before any token is produced).
--- opts: max_new_tokens (20), use_cache (true), do_sample (false), temperature,
--- top_k, top_p, seed (as.manual_seed first), eos_token_id (a number, a list,
--- or false: none), pad_token_id, attention_mask (for a padded tensor),
--- callback(tokens, step) (tokens: the new id of each row; return false to stop).
-- Decoding runs under no_grad, as transformers' generate does: no graph is
-- kept, and the caches (buffers written in place) hold no gradient.
function M.generate(model, ids, opts, caps)
  local _ <close> = as.no_grad()
  opts = opts or {}
  caps = caps or {}
  check(opts, 2)
  local n = opts.max_new_tokens or 20
  local use_cache = opts.use_cache ~= false
  local eos_given = opts.eos_token_id
  if eos_given == nil then eos_given = caps.eos_token_id end
  local stops = stop_set(eos_given)
  local pad = opts.pad_token_id or caps.pad_token_id
  if not pad then
    pad = type(eos_given) == "number" and eos_given or (type(eos_given) == "table" and eos_given[1]) or 0
  end
  local rows, mask, device = prompts(ids, opts, pad, 2)
  device = device or device_of(model)
  if not has_padding(mask) then mask = nil end
  if mask and not caps.mask then
    error("generate: this model takes no attention mask, so batched prompts must have the same length " ..
      "(generate them one by one)", 2)
  end
  local L = #rows[1]
  if caps.max_positions and L + n > caps.max_positions then
    error(string.format("generate: a prompt of %d tokens + max_new_tokens = %d makes %d tokens, past %s = %d " ..
      "(shorten the prompt or ask for fewer tokens)", L, n, L + n, caps.positions_name or "the model's positions",
      caps.max_positions), 2)
  end
  if use_cache then M.check_incremental(model, 2) end
  if opts.seed ~= nil then as.manual_seed(opts.seed) end
  local B = #rows
  local done = {}
  local function tensor(t) return as.tensor(t, "int64"):to(device) end
  local input, past = tensor(rows), nil
  for step = 1, n do
    local fwd = { use_cache = use_cache }
    if use_cache then fwd.past = past end
    if mask then fwd.attention_mask = tensor(mask) end
    if caps.last_only then fwd.last_only = true end
    local logits, presents = model(input, fwd)
    local last = logits:select(2, logits:size(2)):float():cpu()   -- (B, V)
    local new = {}
    for b = 1, B do
      if done[b] then
        new[b] = pad
      else
        new[b] = M.pick(last[b], opts)
        if stops[new[b]] then done[b] = true end
      end
      rows[b][#rows[b] + 1] = new[b]
      if mask then mask[b][#mask[b] + 1] = 1 end
    end
    if opts.callback and opts.callback(new, step) == false then break end
    local all = true
    for b = 1, B do all = all and done[b] == true end
    if all then break end
    if use_cache then
      past = presents
      local col = {}
      for b = 1, B do col[b] = { new[b] } end
      input = tensor(col)
    else
      input = tensor(rows)
    end
  end
  return as.tensor(rows, "int64")
end

return M
