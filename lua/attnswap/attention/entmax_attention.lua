-- entmax_attention: alpha-entmax in place of softmax (Peters et al. 2019,
-- "Sparse Sequence-to-Sequence Models"; Correia et al. 2019, "Adaptively
-- Sparse Transformers"):
--   entmax_a(z)_i = [(a - 1) z_i - tau]_+^(1 / (a - 1)),  tau such that sum = 1
-- Weights are exactly zero below the threshold.  alpha = 1 is softmax, 1.5
-- the exact sort-based 1.5-entmax, 2 sparsemax (exact, sort-based), other
-- values bisect on tau.  learn_alpha = true gives each head its own
-- a_h = 1 + sigmoid(pre_alpha_h) (Correia et al.), the parameter
-- pre_alpha (num_heads,) initialised so that a_h = alpha.  The scores of a
-- block of query rows are materialised and normalised in C
-- (kernels/cpu/zoo_reweight_entmax.c).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"

local FN = "entmax_attention"

local EntmaxAttention = nn.class("EntmaxAttention")

local SPEC = {
  alpha = { O.number_in(1, 2), 1.5 },
  learn_alpha = { O.boolean, false },
  num_heads = { O.positive_integer, 8 },
}

function EntmaxAttention:init(opts)
  local o = O.parse(FN, opts, SPEC, 3)
  if o.learn_alpha then
    if o.alpha <= 1 or o.alpha >= 2 then
      error(string.format("%s: alpha must be in (1, 2) with learn_alpha (alpha = 1 + sigmoid), got %g", FN, o.alpha), 3)
    end
    local p = o.alpha - 1
    self.pre_alpha = nn.Parameter(core.full({ o.num_heads }, math.log(p / (1 - p))))
  end
  self.opts = o
end

function EntmaxAttention:forward(q, k, v, mask)
  local o = self.opts
  return core.entmax_attention(q, k, v, mask, O.call_opts(o, {
    alpha = o.alpha, pre_alpha = o.learn_alpha and self.pre_alpha or nil,
  }), self:is_training())
end

function EntmaxAttention:extra_repr()
  return O.repr(self.opts, { "alpha", "learn_alpha", "causal", "scale", "dropout" })
end

registry.register_attention(FN, EntmaxAttention, {
  exact = false, complexity = "O(L^2 D + L k log k), k = support candidates", causal = true, mask = true,
  gqa = true, incremental = true, devices = "cpu", paper = "Peters et al. 2019; Correia et al. 2019",
  summary = "alpha-entmax instead of softmax: sparse weights with exact zeros (1.5 default, 2 = sparsemax)",
})

return EntmaxAttention
