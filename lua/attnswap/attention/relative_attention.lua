-- relative_attention: softmax(Q K^T * scale + b_h(j - i) + mask) V with a
-- relative position bias per head.
--   T5 (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
--   Unified Text-to-Text Transformer", sec. 2.1): b_h is a learned scalar per
--   head and bucket of j - i, buckets exact up to num_buckets / 4 (per side)
--   then log-spaced up to max_distance; the parameter relative_attention_bias
--   (num_buckets, num_heads) is laid out as HF T5's Embedding weight.
--   ALiBi (Press et al. 2022, "Train Short, Test Long", sec. 3), alibi = true:
--   b_h = -m_h |j - i| with the paper's fixed geometric slopes m_h; no parameter.
-- C kernel: kernels/cpu/zoo_reweight_relative.c (through the reweight driver).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"

local FN = "relative_attention"

local RelativeAttention = nn.class("RelativeAttention")

local SPEC = {
  num_heads = { O.positive_integer, 8 },
  num_buckets = { O.positive_integer, 32 },
  max_distance = { O.positive_integer, 128 },
  bidirectional = { O.boolean, function(opts) return not opts.causal end },
  alibi = { O.boolean, false },
}

function RelativeAttention:init(opts)
  local o = O.parse(FN, opts, SPEC, 3)
  if not o.alibi then
    local min = o.bidirectional and 4 or 2
    if o.num_buckets < min then
      error(string.format("%s: num_buckets must be at least %d%s, got %d", FN, min,
        o.bidirectional and " when bidirectional" or "", o.num_buckets), 3)
    end
    local exact = (o.bidirectional and o.num_buckets // 2 or o.num_buckets) // 2
    if o.max_distance <= exact then
      error(string.format("%s: max_distance must be more than the %d exact buckets, got %d", FN, exact,
        o.max_distance), 3)
    end
    -- zero: a fresh swap computes exactly what scaled_dot_product did
    self.relative_attention_bias = nn.Parameter(core.zeros(o.num_buckets, o.num_heads))
  end
  self.opts = o
end

function RelativeAttention:forward(q, k, v, mask)
  local o = self.opts
  return core.relative_attention(q, k, v, mask, O.call_opts(o, {
    alibi = o.alibi, bidirectional = o.bidirectional, num_buckets = o.num_buckets,
    max_distance = o.max_distance, bias = not o.alibi and self.relative_attention_bias or nil,
  }), self:is_training())
end

function RelativeAttention:extra_repr()
  if self.opts.alibi then return O.repr(self.opts, { "alibi", "causal", "scale", "dropout" }) end
  return O.repr(self.opts, { "num_heads", "num_buckets", "max_distance", "bidirectional", "causal", "scale", "dropout" })
end

-- swap_attention fills these from the MultiheadAttention it swaps into
RelativeAttention.shape_options = { "num_heads" }

registry.register_attention(FN, RelativeAttention, {
  exact = false, complexity = "O(L^2 D)", causal = true, mask = true, gqa = true, incremental = true,
  devices = "cpu", paper = "Raffel et al. 2020 (T5); Press et al. 2022 (ALiBi)",
  summary = "softmax with a learned T5 bucket bias per head, or ALiBi's fixed slopes (alibi = true)",
})

return RelativeAttention
