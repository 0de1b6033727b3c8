-- adaptive_attention: adaptive attention span (Sukhbaatar et al. 2019,
-- "Adaptive Attention Span in Transformers").  Each head h learns a
-- span z_h; its softmax weights are multiplied by the soft mask
--   m_z(x) = clamp((R + z - x) / R, 0, 1),   x = i - j (causal) or |i - j|
-- and renormalised to sum 1.  z_h = clamp(span_h, 0, 1) * max_span with the
-- parameter span (num_heads,) initialised to init_span.  As in the paper's
-- code, span is kept in [0, 1] by clamp_span() after each optimizer step;
-- the forward's clamp passes the gradient straight through (a clamp's own
-- gradient, 0 outside [0, 1], would leave a span that stepped out stuck).  A banded C kernel
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
  span = core.where(span:eq(span), span, 0.0) -- NaN -> 0
  -- clamp(span, 0, 1) in value (as the fused kernel), identity in gradient
  local z = (span + (span:detach():clamp(0, 1) - span:detach())) * o.max_span
  local qi, kj = P.positions(Lq, Lk, dev)
  local x = qi - kj
  if not o.causal then x = x:abs() end
  local mz = ((z:view(H, 1, 1) + o.ramp) - x:float():view(1, Lq, Lk)) / o.ramp
  -- log m_z, -inf where m_z <= 0 (the key is out of the span); log never
  -- sees 0, so its backward never makes 0 * inf = NaN there.  The gradient
  -- to span flows through the ramp, 0 < m_z < 1.
  local inside = mz:gt(0)
  local bias = core.where(inside, core.where(inside, mz, 1.0):clamp(0, 1):log(), P.NEG_INF)
  return P.flash(q, k, v, P.combine(P.mask4(mask), nil, bias), o, self:is_training())
end

function AdaptiveAttention:forward(q, k, v, mask)
  local o = self.opts
  if P.active(q, k, v, mask, self) then return ops_forward(self, q, k, v, mask) end
  return core.adaptive_attention(q, k, v, mask, O.call_opts(o, {
    span = self.span, max_span = o.max_span, ramp = o.ramp,
  }), self:is_training())
end

--- clamp_span(): span into [0, 1] in place, outside autograd; call it
--- after each optimizer step (Sukhbaatar et al.'s clamp_param).
function AdaptiveAttention:clamp_span()
  local span = self.span
  local prev = core.set_grad_enabled(false)
  local ok, err = pcall(function() span:copy_(span:clamp(0, 1)) end)
  core.set_grad_enabled(prev)
  if not ok then error(err, 2) end
  return self
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
