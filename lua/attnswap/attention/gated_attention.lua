-- gated_attention: output gating after attention (Qiu et al. 2025, "Gated
-- Attention for Large Language Models: Non-linearity, Sparsity, and
-- Attention-Sink-Free", gate position G1):
--   out = Attention(Q, K, V) * sigma(q W_g + b_g)
-- A core sees only q, k, v, so the gate of head h reads that head's query
-- q_h (the head's projection of the block input the paper gates on).
-- gate = "headwise" (default): one scalar per head and query, W_g
-- (num_heads, head_dim, 1); "elementwise": one per channel, W_g
-- (num_heads, head_dim, head_dim) (needs Dv = head_dim).  Initialised
-- W_g = 0, b_g = init_bias (10): sigma = 0.99995, so a fresh swap scales
-- the exact output by 1 - 4.5e-5.  Exact attention by the fused flash kernel,
-- the gate by kernels/cpu/zoo_reweight_gated.c.
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local P = require "attnswap.attention.ops_path"

local FN = "gated_attention"

local GatedAttention = nn.class("GatedAttention")

local SPEC = {
  num_heads = { O.positive_integer, 8 },
  head_dim = { O.positive_integer, 64 },
  gate = { O.one_of("headwise", "elementwise"), "headwise" },
  init_bias = { O.finite_number, 10 },
}

function GatedAttention:init(opts)
  local o = O.parse(FN, opts, SPEC, 3)
  local g = o.gate == "headwise" and 1 or o.head_dim
  self.gate_weight = nn.Parameter(core.zeros(o.num_heads, o.head_dim, g))
  self.gate_bias = nn.Parameter(core.full({ o.num_heads, g }, o.init_bias))
  self.opts = o
end

-- The ops path: exact attention by the device's flash kernel (float32, as
-- the C front-end), times sigma(q W_g + b_g) by one batched matmul.
local function ops_forward(self, q, k, v, mask)
  local _, H, _, _, _, D, Dv, dev = P.check(FN, q, k, v, mask)
  local w, b = self.gate_weight, self.gate_bias
  if w:dim() == 3 and (w:size(1) ~= H or w:size(2) ~= D) then
    error(string.format("%s: the gate was made for %d heads of size %d (num_heads, head_dim) "
      .. "but q has %d heads of size %d", FN, w:size(1), w:size(2), H, D), 3)
  end
  local G = w:size(3)
  if G ~= 1 and G ~= Dv then
    error(string.format("%s: the gate has %d outputs per head; expected 1 (headwise) or Dv = %d (elementwise)",
      FN, G, Dv), 3)
  end
  P.check_param(FN, "gate_weight", w, dev)
  P.check_param(FN, "gate_bias", b, dev)
  local qf = P.float(q)
  local att = P.flash(qf, P.float(k), P.float(v), P.mask4(mask), self.opts, self:is_training())
  local gate = (qf:matmul(P.float(w)) + P.float(b):view(1, H, 1, G)):sigmoid() -- (B, H, Lq, G)
  return (att * gate):to(q:dtype())
end

function GatedAttention:forward(q, k, v, mask)
  if P.active(q, k, v, mask, self) then return ops_forward(self, q, k, v, mask) end
  return core.gated_attention(q, k, v, mask, O.call_opts(self.opts, {
    gate_weight = self.gate_weight, gate_bias = self.gate_bias,
  }), self:is_training())
end

function GatedAttention:extra_repr()
  return O.repr(self.opts, { "num_heads", "head_dim", "gate", "causal", "scale", "dropout" })
end

-- swap_attention fills these from the MultiheadAttention it swaps into
GatedAttention.shape_options = { "num_heads", "head_dim" }

registry.register_attention(FN, GatedAttention, {
  exact = false, complexity = "O(L^2 D), O(L) memory", causal = true, mask = true, gqa = true,
  incremental = true, devices = "cpu, cuda", paper = "Qiu et al. 2025",
  summary = "exact attention times a sigmoid gate per head computed from the head's query",
})

return GatedAttention
