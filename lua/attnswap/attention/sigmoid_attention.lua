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
  learn_bias = { O.boolean, false },
}

-- learn_bias: b = (bias or -log(Lk)) + bias_delta, bias_delta a parameter (1,)
-- initialised at 0, so a fresh core is the paper's and training moves b.
function SigmoidAttention:init(opts)
  self.opts = O.parse(FN, opts, SPEC, 3)
  if self.opts.learn_bias then self.bias_delta = nn.Parameter(core.zeros(1)) end
end

-- the fixed part of b: the option, or -log(Lk)
local function base_bias(o, k)
  if o.bias ~= nil then return o.bias end
  local Lk = core.is_tensor(k) and k:dim() == 4 and k:size(3) or 0
  return Lk > 0 and -math.log(Lk) or 0
end

-- The ops path: sigma(S + b) on the materialised scores (ops_path's weights
-- driver, by blocks of queries); masked keys are -inf, so sigma gives 0.
local function ops_forward(self, q, k, v, mask)
  local bias = base_bias(self.opts, k)
  if self.bias_delta then
    P.check_param(FN, "bias_delta", self.bias_delta, q:device())
    bias = P.float(self.bias_delta):view(1, 1, 1, 1) + bias
  end
  return P.weights_attention(FN, q, k, v, mask, self.opts, self:is_training(),
    function(s) return (s + bias):sigmoid() end)
end

function SigmoidAttention:forward(q, k, v, mask)
  if P.active(q, k, v, mask, self) then return ops_forward(self, q, k, v, mask) end
  local bias = self.opts.bias
  if self.bias_delta then bias = base_bias(self.opts, k) + self.bias_delta:item() end
  return core.sigmoid_attention(q, k, v, mask, O.call_opts(self.opts, { bias = bias }),
    self:is_training())
end

function SigmoidAttention:extra_repr()
  return O.repr(self.opts, { "bias", "learn_bias", "causal", "scale", "dropout" })
end

registry.register_attention(FN, SigmoidAttention, {
  exact = false, complexity = "O(L^2 D)", causal = true, mask = true, gqa = true, incremental = true,
  devices = "cpu, cuda", paper = "Ramapuram et al. 2024",
  summary = "elementwise sigmoid of the scores with bias -log(L), no row normalisation",
})

return SigmoidAttention
