-- linear_attention (Katharopoulos et al. 2020, "Transformers are RNNs: Fast
-- Autoregressive Transformers with Linear Attention", eq. 4-6 and 10-12):
--   phi(x) = elu(x) + 1,   out_i = phi(q_i)^T sum_j phi(k_j) v_j^T / phi(q_i)^T sum_j phi(k_j)
-- O(L D Dv): the D x Dv sums replace the L x L matrix; causal keeps them as
-- running prefix sums (a C scan, kernels/cpu/zoo_linear.c); non-causal on the
-- CPU is one fused kernel there that makes phi a chunk of rows at a time.
-- Key-padding masks drop those keys from the sums.
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local C = require "attnswap.attention.linear_common"
local I = require "attnswap.attention.incremental"

local FN = "linear_attention"
local LinearAttention = nn.class("LinearAttention")

function LinearAttention:init(opts)
  self.opts = O.parse(FN, opts, { scale = false }, 3)
end

local function phi(x) return core.where(x:gt(0), x + 1, x:exp()) end -- elu(x) + 1

function LinearAttention:forward(q, k, v, mask)
  local o = self.opts
  C.check(FN, q, k, v, mask, o)
  local H = q:size(2)
  local keep = C.key_padding(FN, mask, k:size(3))
  local fused = C.fused(q, k, v, keep, nil, "elu1", o.causal)
  if fused then return fused:to(q:dtype()) end
  local fk = phi(C.expand_heads(k, H))
  if keep then fk = fk * keep end
  return C.attend(phi(q), fk, C.expand_heads(v, H), o.causal):to(q:dtype())
end

--- step(q, k, v, state, keep) -> out, state (attention/incremental.lua): the
--- RNN form of eq. 10-12, state {S = sum phi(k) v^T (B, Hkv, D, Dv), z =
--- sum phi(k) (B, Hkv, D, 1)} in float32, whatever the number of tokens.
function LinearAttention:step(q, k, v, state, keep)
  local o = self.opts
  if not o.causal then error(FN .. ": a cache (step) needs causal = true", 2) end
  C.check(FN, q, k, v, nil, o)
  local B, Lq = k:size(1), k:size(3)
  keep = I.check_keep(FN, keep, B, Lq)
  local fk, vf = phi(k:float()), v:float()
  local w = I.weight(keep)
  if w then fk = fk * w end
  local out, S, z
  if state == nil then
    out = self(q, k, v, I.mask4(keep))
    S = fk:transpose(3, 4):matmul(vf)
    z = fk:sum(3, true):transpose(3, 4)
  else
    out, S, z = I.recurrent_read(phi(q:float()), fk, vf, state.S, state.z)
    out = out:to(q:dtype())
  end
  return out, { kind = "recurrent", S = S, z = z, length = (state and state.length or 0) + Lq }
end

function LinearAttention:extra_repr() return O.repr(self.opts, { "causal" }) end

registry.register_attention(FN, LinearAttention, {
  exact = false, complexity = "O(L D^2)", causal = true, mask = true, gqa = true, incremental = true,
  devices = "cpu, cuda", paper = "Katharopoulos et al. 2020",
  summary = "elu+1 feature map; D x Dv sums instead of the L x L matrix; causal by prefix sums",
})

return LinearAttention
