-- sigmoid_attention (Ramapuram et al. 2024, "Theory, Analysis, and Best
-- Practices for Sigmoid Self-Attention"):
--   out = sigma(Q K^T * scale + b) V,   b = -log(Lk) by default
-- Each weight stands alone (no normalisation over the row); masked keys
-- contribute 0.  A C kernel (kernels/cpu/zoo_reweight_sigmoid.c).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"

local FN = "sigmoid_attention"

local SigmoidAttention = nn.class("SigmoidAttention")

local SPEC = {
  bias = { O.finite_number, nil },
}

function SigmoidAttention:init(opts)
  self.opts = O.parse(FN, opts, SPEC, 3)
end

function SigmoidAttention:forward(q, k, v, mask)
  return core.sigmoid_attention(q, k, v, mask, O.call_opts(self.opts, { bias = self.opts.bias }),
    self:is_training())
end

function SigmoidAttention:extra_repr()
  return O.repr(self.opts, { "bias", "causal", "scale", "dropout" })
end

registry.register_attention(FN, SigmoidAttention, {
  exact = false, complexity = "O(L^2 D)", causal = true, mask = true, gqa = true, incremental = true,
  devices = "cpu", paper = "Ramapuram et al. 2024",
  summary = "elementwise sigmoid of the scores with bias -log(L), no row normalisation",
})

return SigmoidAttention
