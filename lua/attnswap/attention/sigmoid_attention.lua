-- sigmoid_attention (Ramapuram et al. 2024, "Theory, Analysis, and Best
-- Practices for Sigmoid Self-Attention"):
--   out = sigma(Q K^T * scale + b) V,   b = -log(Lk) by default
-- Each weight stands alone (no normalisation over the row); masked keys
-- contribute 0.  A C kernel (kernels/cpu/zoo_reweight_sigmoid.c).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local P = require "attnswap.attention.ops_path"

local FN = "sigmoid_attention"

local SigmoidAttention = nn.class("SigmoidAttention")

local SPEC = {
  bias = { O.finite_number, nil },
}

function SigmoidAttention:init(opts)
  self.opts = O.parse(FN, opts, SPEC, 3)
end

-- The ops path: sigma(S + b) on the materialised scores (ops_path's weights
-- driver, by blocks of queries); masked keys are -inf, so sigma gives 0.
local function ops_forward(self, q, k, v, mask)
  local bias = self.opts.bias
  if bias == nil then
    local Lk = core.is_tensor(k) and k:dim() == 4 and k:size(3) or 0
    bias = Lk > 0 and -math.log(Lk) or 0
  end
  return P.weights_attention(FN, q, k, v, mask, self.opts, self:is_training(),
    function(s) return (s + bias):sigmoid() end)
end

function SigmoidAttention:forward(q, k, v, mask)
  if P.active(q, k, v, mask, self) then return ops_forward(self, q, k, v, mask) end
  return core.sigmoid_attention(q, k, v, mask, O.call_opts(self.opts, { bias = self.opts.bias }),
    self:is_training())
end

function SigmoidAttention:extra_repr()
  return O.repr(self.opts, { "bias", "causal", "scale", "dropout" })
end

registry.register_attention(FN, SigmoidAttention, {
  exact = false, complexity = "O(L^2 D)", causal = true, mask = true, gqa = true, incremental = true,
  devices = "cpu, cuda", paper = "Ramapuram et al. 2024",
  summary = "elementwise sigmoid of the scores with bias -log(L), no row normalisation",
})

return SigmoidAttention
