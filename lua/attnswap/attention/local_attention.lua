-- local_attention: sliding-window attention (Beltagy et al. 2020,
-- "Longformer: The Long-Document Transformer", section 3.1; lucidrains'
-- local-attention).  Query i (at i' = i + Lk - Lq, so a KV cache works)
-- attends the keys within window_size positions:
--
--   S_i = {j : i' - w <= j <= i' + w}      (causal: i' - w <= j <= i')
--   out_i = sum_{j in S_i} softmax_{j in S_i}(q_i . k_j * scale + bias_ij) v_j
--
-- A banded kernel (kernels/cpu/zoo_sparse_tiles.c): tiles of keys outside
-- the band are never visited, so the cost is O(L w D), never L^2.
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local P = require "attnswap.attention.ops_path"
local BL = require "attnswap.attention.blocked"
local I = require "attnswap.attention.incremental"

local FN = "local_attention"

local LocalAttention = nn.class("LocalAttention")

local SPEC = {
  window_size = { O.positive_integer, 64 },
}

function LocalAttention:init(opts)
  self.opts = O.parse(FN, opts, SPEC, 3)
end

local plans, nplans = {}, 0 -- blocked plans by shapes and options (a few)

-- The ops path.  Blocked (attention/blocked.lua): chunks of c queries,
-- each against the c + 2w keys its rows can see (causal: c + w), one flash
-- call for all chunks: O(L (c + 2w) D) and a (c, c + 2w) band per chunk,
-- the backward banded too.  Dense (dropout in training, empty shapes,
-- blocked.dense): flash_attention with the band as an (Lq, Lk) keep-mask,
-- O(Lq Lk D).
local function ops_forward(self, q, k, v, mask)
  local o = self.opts
  local _, _, _, Lq, Lk, _, _, dev = P.check(FN, q, k, v, mask)
  local w = o.window_size
  local training = self:is_training()
  if BL.usable(q, k, v, o, training) then
    local c = BL.local_chunk or math.max(w, BL.LOCAL_ROWS)
    local key = table.concat({ Lq, Lk, w, tostring(o.causal), c, dev }, ",")
    local plan = plans[key]
    if not plan then
      if nplans >= 16 then plans, nplans = {}, 0 end
      plan = BL.local_plan(Lq, Lk, w, o.causal, c, dev)
      plans[key], nplans = plan, nplans + 1
    end
    if BL.local_narrow then return BL.attend_chunks(q, k, v, P.mask4(mask), o, plan) end
    return BL.attend(q, k, v, P.mask4(mask), o, plan)
  end
  local qi, kj = P.positions(Lq, Lk, dev)
  local band = kj:ge(qi - w)
  if not o.causal then band = band:logical_and(kj:le(qi + w)) end
  return P.flash(q, k, v, P.combine(P.mask4(mask), band), o, training)
end

function LocalAttention:forward(q, k, v, mask)
  local o = self.opts
  if P.active(q, k, v, mask, self) then return ops_forward(self, q, k, v, mask) end
  return core.local_attention(q, k, v, mask, O.call_opts(o, { window_size = o.window_size }),
    self:is_training())
end

--- step(q, k, v, state, keep) -> out, state (attention/incremental.lua): a
--- ring buffer of the window_size + 1 keys the next query sees, its own
--- included; causal only.
function LocalAttention:step(q, k, v, state, keep)
  if not self.opts.causal then
    error(FN .. ": a cache (step) needs causal = true (a query of a bidirectional window sees later keys)", 2)
  end
  return I.ring_step(self, q, k, v, state, keep, self.opts.window_size + 1, 0)
end

function LocalAttention:extra_repr()
  return O.repr(self.opts, { "window_size", "causal", "scale", "dropout" })
end

-- as.compare's options at a sequence of L keys when the default window
-- would cover it all (and so be exact): a window of a quarter of it.
function LocalAttention.sized_options(L)
  if L > 64 + 1 then return nil end
  return { window_size = math.max(1, L // 4) }
end

registry.register_attention(FN, LocalAttention, {
  exact = false, complexity = "O(L w D)", causal = true, mask = true, gqa = true,
  incremental = true, devices = "cpu, cuda", paper = "Beltagy et al. 2020",
  summary = "sliding window: each query sees the keys within w positions; a banded kernel",
})

return LocalAttention
