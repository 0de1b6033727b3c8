-- sink_attention: sliding window plus attention sinks (Xiao et al. 2023,
-- "Efficient Streaming Language Models with Attention Sinks", section 3.2:
-- StreamingLLM).  Query i (at i' = i + Lk - Lq) attends the first num_sinks
-- keys and the window_size most recent ones, itself included:
--
--   S_i = {j <= i' : j < num_sinks  or  i' - window_size < j}
--
-- what a rolling KV cache of sinks + window keeps.  Always causal.  The
-- banded kernel of local_attention with the sink tiles added
-- (kernels/cpu/zoo_sparse_tiles.c): cost O(L (w + s) D).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local P = require "attnswap.attention.ops_path"
local I = require "attnswap.attention.incremental"

local FN = "sink_attention"

local SinkAttention = nn.class("SinkAttention")

local function non_negative_integer(fn, name, v)
  if math.type(v) ~= "integer" or v < 0 then
    error(string.format("%s: %s must be a non-negative integer, got %s", fn, name, tostring(v)), 0)
  end
  return v
end

local function always_causal(fn, name, v)
  if v ~= true then
    error(string.format("%s: %s must be true (StreamingLLM attention is causal by construction), got %s",
      fn, name, tostring(v)), 0)
  end
  return v
end

local SPEC = {
  window_size = { O.positive_integer, 64 },
  num_sinks = { non_negative_integer, 4 },
  causal = { always_causal, true },
}

function SinkAttention:init(opts)
  self.opts = O.parse(FN, opts, SPEC, 3)
end

-- The ops path: flash_attention (causal) with the sinks and the window as a
-- keep-mask, O(Lq Lk D) on the device's flash kernel.
local function ops_forward(self, q, k, v, mask)
  local o = self.opts
  local _, _, _, Lq, Lk, _, _, dev = P.check(FN, q, k, v, mask)
  local qi, kj = P.positions(Lq, Lk, dev)
  local keep = kj:gt(qi - o.window_size):logical_or(kj:lt(o.num_sinks))
  return P.flash(q, k, v, P.combine(P.mask4(mask), keep), o, self:is_training())
end

function SinkAttention:forward(q, k, v, mask)
  local o = self.opts
  if P.active(q, k, v, mask, self) then return ops_forward(self, q, k, v, mask) end
  return core.sink_attention(q, k, v, mask, O.call_opts(o, {
    window_size = o.window_size, num_sinks = o.num_sinks,
  }), self:is_training())
end

--- step(q, k, v, state, keep) -> out, state (attention/incremental.lua): the
--- rolling cache of section 3.2, num_sinks first keys plus a ring buffer of
--- the window_size most recent ones.
function SinkAttention:step(q, k, v, state, keep)
  local o = self.opts
  return I.ring_step(self, q, k, v, state, keep, o.window_size, o.num_sinks)
end

function SinkAttention:extra_repr()
  return O.repr(self.opts, { "num_sinks", "window_size", "causal", "scale", "dropout" })
end

-- as.compare's options at L keys when the default window and sinks would
-- cover them all: a window of a quarter of the sequence.
function SinkAttention.sized_options(L)
  if L > 64 + 4 then return nil end
  return { window_size = math.max(1, L // 4) }
end

registry.register_attention(FN, SinkAttention, {
  exact = false, complexity = "O(L (w + s) D)", causal = true, mask = true, gqa = true,
  incremental = true, devices = "cpu, cuda", paper = "Xiao et al. 2023",
  summary = "StreamingLLM: the first s keys (attention sinks) plus a causal window of w recent keys",
})

return SinkAttention
