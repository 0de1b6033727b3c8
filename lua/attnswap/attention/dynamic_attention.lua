-- dynamic_attention: per-query top-k attention (Zhao et al. 2019, "Explicit
-- Sparse Transformer: Concentrated Attention Through Explicit Selection",
-- eq. 4-6; Gupta et al. 2021, "Memory-efficient Transformers via Top-k
-- Attention").  Each query keeps its top_k largest scores and a softmax over
-- those alone:
--
--   s_i = q_i K^T * scale + bias_i,   t_i = the top_k-th largest of s_i
--   out_i = softmax(s_ij if s_ij >= t_i else -inf) V
--
-- Ties at t_i go to the lower key index (exactly top_k are kept); masked
-- keys are never selected; top_k >= Lk is softmax attention.  A C kernel
-- (kernels/cpu/zoo_sparse_topk.c): scores by blocks of 32 queries (sgemm),
-- a linear-time selection per row, and an output that gathers only the
-- top_k value rows.  Cost O(L^2 D + L k Dv).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"

local FN = "dynamic_attention"

local DynamicAttention = nn.class("DynamicTopKAttention")

local SPEC = {
  top_k = { O.positive_integer, 32 },
}

function DynamicAttention:init(opts)
  self.opts = O.parse(FN, opts, SPEC, 3)
end

function DynamicAttention:forward(q, k, v, mask)
  local o = self.opts
  return core.dynamic_attention(q, k, v, mask, O.call_opts(o, { top_k = o.top_k }), self:is_training())
end

function DynamicAttention:extra_repr()
  return O.repr(self.opts, { "top_k", "causal", "scale", "dropout" })
end

registry.register_attention(FN, DynamicAttention, {
  exact = false, complexity = "O(L^2 D + L k Dv)", causal = true, mask = true, gqa = true,
  incremental = true, devices = "cpu", paper = "Zhao et al. 2019",
  summary = "per-query top-k: softmax over the k largest scores of each row (ties to the lower index)",
})

return DynamicAttention
