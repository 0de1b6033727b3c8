-- cosine_attention: scaled cosine attention (Swin Transformer V2, Liu et al.
-- 2022, "Swin Transformer V2: Scaling Up Capacity and Resolution", eq. 2):
--   softmax(cos(q_i, k_j) / tau_h + bias) V
-- with a learned temperature per head, parametrised as Swin V2's
-- logit_scale (num_heads, 1, 1) = log(1 / tau), clamped at log(100)
-- (tau >= 0.01) and initialised to log(1 / init_temperature).  bias is the
-- float mask (Swin V2's position bias comes in that way).  q, k rows
-- normalised in C (kernels/cpu/zoo_reweight_cosine.c), then exact attention
-- with scale 1 in the fused flash kernel.  The learned temperature replaces
-- `scale`, which this implementation does not take.
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local P = require "attnswap.attention.ops_path"

local FN = "cosine_attention"

local CosineAttention = nn.class("CosineAttention")
CosineAttention.shape_options = { "num_heads" } -- filled in by swap_attention

local SPEC = {
  num_heads = { O.positive_integer, 8 },
  init_temperature = { O.number_in(0.01, math.huge, false, true), 0.1 },
  scale = { function(fn) error(fn .. ": scale is not an option here: the learned temperature "
    .. "(logit_scale) replaces it", 0) end, nil },
}

function CosineAttention:init(opts)
  local o = O.parse(FN, opts, SPEC, 3)
  self.logit_scale = nn.Parameter(core.full({ o.num_heads, 1, 1 }, math.log(1 / o.init_temperature)))
  self.opts = o
end

-- rows of x scaled to unit norm (norm clamped at 1e-12, as F.normalize)
local function normalize(x)
  return x / (x * x):sum(4, true):sqrt():clamp(1e-12)
end

-- The ops path: q and k rows normalised (q times 1 / tau_h) with tensor ops,
-- then exact attention with scale 1 by the device's flash kernel.
local function ops_forward(self, q, k, v, mask)
  local _, H, _, _, _, _, _, dev = P.check(FN, q, k, v, mask)
  local ls = self.logit_scale
  if ls:dim() == 3 and ls:size(1) ~= H then
    error(string.format("%s: logit_scale was made for %d heads (num_heads) but q has %d; "
      .. "build the core with num_heads = %d", FN, ls:size(1), H, H), 3)
  end
  P.check_param(FN, "logit_scale", ls, dev)
  local gain = P.float(ls):clamp(-math.huge, math.log(100)):exp():view(1, H, 1, 1)
  local qn, kn = normalize(P.float(q)) * gain, normalize(P.float(k))
  return P.flash(qn, kn, P.float(v), P.mask4(mask), self.opts, self:is_training(), 1.0):to(q:dtype())
end

function CosineAttention:forward(q, k, v, mask)
  if P.active(q, k, v, mask, self) then return ops_forward(self, q, k, v, mask) end
  return core.cosine_attention(q, k, v, mask, O.call_opts(self.opts, {
    logit_scale = self.logit_scale, max_logit = math.log(100),
  }), self:is_training())
end

function CosineAttention:extra_repr()
  return O.repr(self.opts, { "num_heads", "init_temperature", "causal", "dropout" })
end

registry.register_attention(FN, CosineAttention, {
  exact = false, complexity = "O(L^2 D), O(L) memory", causal = true, mask = true, gqa = true,
  incremental = true, devices = "cpu, cuda", paper = "Liu et al. 2022 (Swin V2)",
  summary = "softmax of cosine similarities over a learned per-head temperature (Swin V2)",
})

return CosineAttention
