-- The incremental (decoding) protocol of attention cores: how a causal model
-- asks its core for a cache and feeds it one token (or a few) at a time.
-- Not an attention itself.
--
--   out, state = core:step(q, k, v, state, keep)
--     q (B, H, Lq, D): the new queries; k (B, Hkv, Lq, D), v (B, Hkv, Lq, Dv):
--     the new tokens' keys and values (positions already applied); keep
--     (B, Lq) bool or nil: which new tokens are real (false: left padding);
--     state: what the previous call returned, nil at the first (the prompt).
--     -> out (B, H, Lq, Dv), causal over everything seen so far, and the new
--     state.  state.length counts the tokens seen.
--
-- A core without a step method that is registered with incremental = true
-- (or not registered) gets kv_step: the growing K/V, the core called with a
-- query shorter than its keys (causal, aligned bottom-right).  Three kinds of
-- state here: kv (exact attention and the reweighting cores: every key),
-- ring (local and sink attention: a fixed buffer of the window plus the
-- sinks, written in place once full) and recurrent (linear and performer:
-- S = sum phi(k) v^T and z = sum phi(k) per key/value head, O(F Dv) whatever
-- the length).
local core = require "attnswap.core"
local registry = require "attnswap.registry"

local M = {}

local function bool_ones(B, n, device)
  local t = core.ones({ B, n }, "bool")
  return device ~= "cpu" and t:to(device) or t
end

-- The keep bits of the cached keys followed by the new ones, (B, n + Lq), or
-- nil when neither has any.
local function join_keep(old, n, new, B, Lq, device)
  if old == nil and new == nil then return nil end
  old = old or bool_ones(B, n, device)
  new = new or bool_ones(B, Lq, device)
  if n == 0 then return new end
  return core.cat({ old, new }, 2)
end

local function mask4(keep)
  if keep == nil then return nil end
  return keep:reshape(keep:size(1), 1, 1, keep:size(2))
end

local function check_keep(fn, keep, B, Lq)
  if keep == nil then return nil end
  if not core.is_tensor(keep) or keep:dim() ~= 2 or keep:size(1) ~= B or keep:size(2) ~= Lq then
    error(string.format("%s: step's keep should be a bool tensor (B, Lq) = (%d, %d), got %s", fn, B, Lq,
      core.is_tensor(keep) and tostring(keep:shape()) or type(keep)), 3)
  end
  return keep:dtype() == "bool" and keep or keep:ne(0)
end

-- t's first n positions (dim 3) in a new buffer of cap positions.
local function grown(t, n, cap)
  local shape = t:shape()
  local buf = core.zeros({ shape[1], shape[2], cap, shape[4] }, t:dtype())
  if t:device() ~= "cpu" then buf = buf:to(t:device()) end
  buf:narrow(3, 1, n):copy_(t:narrow(3, 1, n))
  return buf
end

--- kv_step(core, q, k, v, state, keep) -> out, {kind = "kv", k, v, keep, length}
--- The growing K/V cache: every key kept, the core called on all of them.
--- Keys and values live in buffers that double when full, the new ones
--- written in place (state.k is a view of the first `length`): a step costs
--- no allocation as the cache grows, where a cat per step allocates two
--- tensors per layer (transformers' default cache cats).  Extending a state
--- uses it up, as the ring's does: extend each state once.
function M.kv_step(c, q, k, v, state, keep)
  local B, Lq = q:size(1), q:size(3)
  keep = check_keep("kv_step", keep, B, Lq)
  local n = state and state.length or 0
  local K, V, bk, bv = k, v, nil, nil
  if state then
    bk, bv = state.buf_k or state.k, state.buf_v or state.v
    if n + Lq > bk:size(3) then
      local cap = math.max(2 * bk:size(3), n + Lq)
      bk, bv = grown(state.k, n, cap), grown(state.v, n, cap)
    end
    bk:narrow(3, n + 1, Lq):copy_(k)
    bv:narrow(3, n + 1, Lq):copy_(v)
    K, V = bk:narrow(3, 1, n + Lq), bv:narrow(3, 1, n + Lq)
  end
  local KEEP = join_keep(state and state.keep, n, keep, B, Lq, q:device())
  local out = c(q, K, V, mask4(KEEP))
  return out, { kind = "kv", k = K, v = V, buf_k = bk, buf_v = bv, keep = KEEP, length = n + Lq }
end

-- The ring's keys oldest first: the sinks, then the window from its oldest slot.
local function ordered(t, s, n, slot, dim)
  if t == nil then return nil end
  local ring = n - s
  if slot == 0 or ring <= 0 then return t end
  local parts = {}
  if s > 0 then parts[#parts + 1] = t:narrow(dim, 1, s) end
  parts[#parts + 1] = t:narrow(dim, s + slot + 1, ring - slot)
  parts[#parts + 1] = t:narrow(dim, s + 1, slot)
  return core.cat(parts, dim)
end

-- The first s and the last cap of the rest of t along dim (n entries), contiguous.
local function keep_window(t, s, cap, n, dim)
  if t == nil then return nil end
  local sinks = math.min(s, n)
  local rest = n - sinks
  if rest <= cap then return t:contiguous() end
  local parts = {}
  if sinks > 0 then parts[#parts + 1] = t:narrow(dim, 1, sinks) end
  parts[#parts + 1] = t:narrow(dim, n - cap + 1, cap)
  return core.cat(parts, dim):contiguous()
end

--- ring_step(core, q, k, v, state, keep, cap, sinks) -> out, state
--- For a core whose query at i' sees at most the first `sinks` keys and the
--- `cap` most recent ones (its own included), and whose mask is by position
--- (bottom-right aligned), so that called on the buffer it sees all of it.
--- state {kind = "ring", k, v (B, Hkv, <= sinks + cap, D), keep (B, n) or
--- nil, slot, sinks, cap, length}: k holds the sinks, then the window; once
--- full, a one-token step writes over the window's oldest slot in place (the
--- previous state is consumed).  Several tokens at once go through the
--- window in order and leave it ordered (slot 0).
function M.ring_step(c, q, k, v, state, keep, cap, sinks)
  local B, Lq = q:size(1), q:size(3)
  keep = check_keep("ring_step", keep, B, Lq)
  local s = sinks or 0
  state = state or { kind = "ring", length = 0, slot = 0, sinks = s, cap = cap }
  local held = state.k and state.k:size(3) or 0
  if Lq == 1 and held == s + cap and state.length >= s + cap then
    local at = s + state.slot + 1
    state.k:narrow(3, at, 1):copy_(k)
    state.v:narrow(3, at, 1):copy_(v)
    if keep ~= nil and state.keep == nil then state.keep = bool_ones(B, held, q:device()) end
    if state.keep ~= nil then state.keep:narrow(2, at, 1):copy_(keep or bool_ones(B, 1, q:device())) end
    state.slot = (state.slot + 1) % cap
    state.length = state.length + 1
    return c(q, state.k, state.v, mask4(state.keep)), state
  end
  local K, V = k, v
  local KEEP = join_keep(state.keep and ordered(state.keep, s, held, state.slot, 2), held, keep, B, Lq, q:device())
  if held > 0 then
    K = core.cat({ ordered(state.k, s, held, state.slot, 3), k }, 3)
    V = core.cat({ ordered(state.v, s, held, state.slot, 3), v }, 3)
  end
  local out = c(q, K, V, mask4(KEEP))
  local total = held + Lq
  return out, {
    kind = "ring", k = keep_window(K, s, cap, total, 3), v = keep_window(V, s, cap, total, 3),
    keep = keep_window(KEEP, s, cap, total, 2), slot = 0, sinks = s, cap = cap, length = state.length + Lq,
  }
end

local CHUNK = 64 -- new tokens per block of the recurrent form's several-token step

--- recurrent_read(fq (B, H, L, F), fk (B, Hkv, L, F) (weighted by keep), v
--- (B, Hkv, L, Dv), S (B, Hkv, F, Dv), z (B, Hkv, F, 1)) -> out (B, H, L, Dv)
--- float32, S and z with the new keys folded in: query i reads S, z plus the
--- new keys j <= i (blocks of CHUNK tokens, each its masked block product);
--- a zero denominator gives zeros.
function M.recurrent_read(fq, fk, v, S, z)
  local B, H, L, F = fq:size(1), fq:size(2), fq:size(3), fq:size(4)
  local Hkv, Dv = fk:size(2), v:size(4)
  local G = H // Hkv
  local dev = fq:device()
  local out = {}
  for j0 = 0, L - 1, CHUNK do
    local c = math.min(CHUNK, L - j0)
    local qc = fq:narrow(3, j0 + 1, c):reshape(B, Hkv, G * c, F)
    local kc, vc = fk:narrow(3, j0 + 1, c), v:narrow(3, j0 + 1, c)
    local num, den = qc:matmul(S), qc:matmul(z)
    local a = qc:matmul(kc:transpose(3, 4)) -- (B, Hkv, G c, c)
    if c > 1 then
      local qi = core.arange(0, c):reshape(1, c):expand(G, c):reshape(G * c, 1)
      local tri = core.arange(0, c):reshape(1, c):le(qi)
      if dev ~= "cpu" then tri = tri:to(dev) end
      a = core.where(tri, a, 0.0)
    end
    num = num + a:matmul(vc)
    den = den + a:sum(4, true)
    local safe = den:ne(0)
    out[#out + 1] = core.where(safe, num / core.where(safe, den, 1.0), 0.0):reshape(B, H, c, Dv)
    S = S + kc:transpose(3, 4):matmul(vc)
    z = z + kc:sum(3, true):transpose(3, 4)
  end
  return #out == 1 and out[1] or core.cat(out, 3), S, z
end

--- A keep (B, L) bool as a float weight (B, 1, L, 1), or nil.
function M.weight(keep)
  if keep == nil then return nil end
  return keep:float():reshape(keep:size(1), 1, keep:size(2), 1)
end

M.check_keep = check_keep
M.mask4 = mask4

-- ---- which step a core takes ----

local function registered_name(c)
  local ok, name = registry.attention.is_core(c)
  return ok and name or nil
end

--- stepper(core) -> function(q, k, v, state, keep) -> out, state; or nil and
--- why: a core registered with incremental = false has no cache.  The
--- core's own step method when it has one, else kv_step.
function M.stepper(c)
  local name = registered_name(c)
  if name then
    local info = registry.attention.info(name)
    if info and info.incremental == false then
      return nil, string.format("%s is registered with incremental = false (it cannot take a query shorter " ..
        "than its keys)", name), name
    end
  end
  local step = c.step
  if type(step) == "function" then
    return function(q, k, v, state, keep) return step(c, q, k, v, state, keep) end, nil, name
  end
  return function(q, k, v, state, keep) return M.kv_step(c, q, k, v, state, keep) end, nil, name
end

local SIZE = { float32 = 4, float64 = 8, float16 = 2, bfloat16 = 2, int64 = 8, int32 = 4, bool = 1, uint8 = 1 }

--- bytes(state) -> the bytes of the tensors a state holds (what it costs per layer).
function M.bytes(state)
  local n = 0
  for _, t in pairs(state or {}) do
    if core.is_tensor(t) then n = n + t:numel() * (SIZE[t:dtype()] or 4) end
  end
  return n
end

return M
