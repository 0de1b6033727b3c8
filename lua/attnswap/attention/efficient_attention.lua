-- efficient_attention (Shen et al. 2021, "Efficient Attention: Attention with
-- Linear Complexities", eq. 4):
--   out = rho_q(Q) (rho_k(K)^T V),  rho_q = softmax over each query's features,
--                                    rho_k = softmax over the sequence for each feature
-- O(L D Dv), non-causal by construction (the key softmax runs over the whole
-- sequence): asking for causal is an error.  Key-padding masks give those
-- keys -inf before the sequence softmax.  On the CPU one fused C kernel
-- (kernels/cpu/zoo_linear.c) makes both softmaxes a chunk of rows at a time.
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local C = require "attnswap.attention.linear_common"

local FN = "efficient_attention"
local EfficientAttention = nn.class("EfficientAttention")

function EfficientAttention:init(opts)
  self.opts = O.parse(FN, opts, { scale = false }, 3)
  if self.opts.causal then
    error(FN .. ": causal is not supported (the keys' softmax runs over the whole sequence); "
      .. "use linear_attention or performer_attention for causal models", 3)
  end
end

function EfficientAttention:forward(q, k, v, mask)
  C.check(FN, q, k, v, mask, self.opts)
  local H = q:size(2)
  local keep = C.key_padding(FN, mask, k:size(3))
  local fused = C.fused(q, k, v, keep, nil, "softmax", false)
  if fused then return fused:to(q:dtype()) end
  local kk = C.float(C.expand_heads(k, H))
  if keep then kk = core.where(keep:gt(0), kk, -math.huge) end
  local rq = C.float(q):softmax(4)                        -- over features
  local rk = kk:softmax(3)                               -- over the sequence (masked keys get 0)
  local context = rk:transpose(3, 4):matmul(C.float(C.expand_heads(v, H))) -- (B, H, D, Dv)
  return rq:matmul(context):to(q:dtype())
end

function EfficientAttention:extra_repr() return "causal=false" end

registry.register_attention(FN, EfficientAttention, {
  exact = false, complexity = "O(L D^2)", causal = false, mask = true, gqa = true, incremental = false,
  devices = "cpu, cuda", paper = "Shen et al. 2021",
  summary = "softmax over query features and over key positions; rho_q(Q)(rho_k(K)^T V)",
})

return EfficientAttention
