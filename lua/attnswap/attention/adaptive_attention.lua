-- adaptive_attention: adaptive attention span (Sukhbaatar et al. 2019,
-- "Adaptive Attention Span in Transformers").  Each head h learns a
-- span z_h; its softmax weights are multiplied by the soft mask
--   m_z(x) = clamp((R + z - x) / R, 0, 1),   x = i - j (causal) or |i - j|
-- and renormalised to sum 1.  z_h = clamp(span_h, 0, 1) * max_span with the
-- parameter span (num_heads,) initialised to init_span.  A banded C kernel
-- (kernels/cpu/zoo_reweight_adaptive.c): keys at distance >= z + R are never
-- visited, so the cost is O(L (z + R) D).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local P = require "attnswap.attention.ops_path"

local FN = "adaptive_attention"

local AdaptiveAttention = nn.class("AdaptiveSpanAttention")

local SPEC = {
  num_heads = { O.positive_integer, 8 },
  max_span = { O.positive_number, 1024 },
  ramp = { O.positive_number, 32 },
  init_span = { O.number_in(0, 1), 0 },
}

function AdaptiveAttention:init(opts)
  local o = O.parse(FN, opts, SPEC, 3)
  self.span = nn.Parameter(core.full({ o.num_heads }, o.init_span))
  self.opts = o
end

-- The ops path: the soft mask m_z(x) over (H, Lq, Lk) on q's device, turned
-- into an additive log m_z (-inf where m_z = 0), so that the renormalised
-- m_z exp(s) is exactly softmax(s + log m_z): the device's flash kernel then
-- does the rest.  O(Lq Lk D): keys past the span are masked, not skipped.
local function ops_forward(self, q, k, v, mask)
  local o = self.opts
  local _, H, _, Lq, Lk, _, _, dev = P.check(FN, q, k, v, mask)
  local span = self.span
  if span:dim() == 1 and span:size(1) ~= H then
    error(string.format("%s: the span was made for %d heads (num_heads) but q has %d; "
      .. "build the core with num_heads = %d", FN, span:size(1), H, H), 3)
  end
  P.check_param(FN, "span", span, dev)
  span = P.float(span)
  local z = core.where(span:eq(span), span, 0.0):clamp(0, 1) * o.max_span -- NaN -> 0
  local qi, kj = P.positions(Lq, Lk, dev)
  local x = qi - kj
  if not o.causal then x = x:abs() end
  local mz = ((z:view(H, 1, 1) + o.ramp) - x:float():view(1, Lq, Lk)) / o.ramp
  local bias = mz:clamp(0, 1):log() -- log 0 = -inf: the key is out of the span
  return P.flash(q, k, v, P.combine(P.mask4(mask), nil, bias), o, self:is_training())
end

function AdaptiveAttention:forward(q, k, v, mask)
  local o = self.opts
  if P.active(q) then return ops_forward(self, q, k, v, mask) end
  return core.adaptive_attention(q, k, v, mask, O.call_opts(o, {
    span = self.span, max_span = o.max_span, ramp = o.ramp,
  }), self:is_training())
end

function AdaptiveAttention:extra_repr()
  return O.repr(self.opts, { "num_heads", "max_span", "ramp", "causal", "scale", "dropout" })
end

-- swap_attention fills these from the MultiheadAttention it swaps into
AdaptiveAttention.shape_options = { "num_heads" }

registry.register_attention(FN, AdaptiveAttention, {
  exact = false, complexity = "O(L (z+R) D), z = learned span", causal = true, mask = true, gqa = true,
  incremental = true, devices = "cpu, cuda", paper = "Sukhbaatar et al. 2019",
  summary = "softmax times a learned soft span mask per head, renormalised; keys past the span are skipped",
})

return AdaptiveAttention
