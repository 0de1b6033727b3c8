-- hedgehog_attention (Zhang, Bhatia, Kumbong, Re 2024, "The Hedgehog & the
-- Porcupine: Expressive Linear Attentions with Softmax Mimicry", ICLR 2024;
-- the feature map as HazyResearch/lolcats src/model/feature_map.py has it):
--   phi_q(x) = [softmax(x Wq_h), softmax(-x Wq_h)], phi_k likewise with Wk_h
--   out_i = phi_q(q_i)^T sum_j phi_k(k_j) v_j^T / phi_q(q_i)^T sum_j phi_k(k_j)
-- Wq, Wk (num_heads, head_dim, feature_dim) are parameters, trained to
-- mimic the softmax attention they replace (as.distill); phi has
-- 2 * feature_dim features.  Linear attention over them (attention/
-- hedgehog_common.lua): causal by running sums, key-padding masks drop keys
-- from the sums, GQA by repeating k, v to the query heads (k's map is per
-- query head, as the reference maps k after repeat_kv).
-- Tensor ops only (autograd differentiates it; any device): causal by the
-- blocked running sums of hedgehog_common.hybrid, which on the CPU beat the
-- per-row C scan (core.linear_attention_causal) 4x at 2F = 128 features
-- (L = 1024, one thread: 102 vs 415 ms); the fused kernels make their own
-- fixed features and cannot take these.
-- Parameters are sized at construction: num_heads and head_dim are options,
-- which swap_attention fills from the module it swaps into (shape_options).
-- init = "identity" (default; the Hedgehog paper's listing initialises its
-- map as the identity) or "random" (LoLCATs' kaiming_uniform_).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local C = require "attnswap.attention.linear_common"
local I = require "attnswap.attention.incremental"
local HC = require "attnswap.attention.hedgehog_common"

local FN = "hedgehog_attention"
local Hedgehog = nn.class("HedgehogAttention")

local SPEC = HC.spec("identity")
SPEC.scale = false -- no scores to scale: the maps learn it

function Hedgehog:init(opts)
  local o = O.parse(FN, opts, SPEC, 3)
  if o.dropout > 0 then
    error(FN .. ": dropout must be 0 (there is no attention matrix to drop from), got " .. tostring(o.dropout), 3)
  end
  self.feature_q = HC.new_map(o)
  self.feature_k = HC.new_map(o)
  self.opts = o
end

-- phi_q(q), phi_k(k) weighted by the keep weight (B, 1, Lk, 1) or nil, and v;
-- all float32 with the query heads.
local function features(self, q, k, v, keep)
  local H, eps = q:size(2), self.opts.eps
  local fq = HC.phi(FN, q, self.feature_q, eps, "feature_q")
  local fk = HC.phi(FN, HC.heads(k, H), self.feature_k, eps, "feature_k")
  if keep then fk = fk * keep end
  return fq, fk, HC.heads(v, H)
end

function Hedgehog:forward(q, k, v, mask)
  local o = self.opts
  C.check(FN, q, k, v, mask, o)
  local keep = C.key_padding(FN, mask, k:size(3))
  local fq, fk, vf = features(self, q, k, v, keep)
  local out
  if o.causal then
    out = HC.hybrid { fq = fq, fk = fk, v = vf, causal = true }
  else
    out = C.attend(fq, fk, vf, false) -- two matmuls through the 2F x Dv sums
  end
  return out:to(q:dtype())
end

--- step(q, k, v, state, keep) -> out, state (attention/incremental.lua): the
--- recurrent form, state {S = sum phi_k(k) v^T (B, H, 2F, Dv), z = sum
--- phi_k(k) (B, H, 2F, 1)} in float32 per query head, whatever the length.
function Hedgehog:step(q, k, v, state, keep)
  local o = self.opts
  if not o.causal then error(FN .. ": a cache (step) needs causal = true", 2) end
  C.check(FN, q, k, v, nil, o)
  local B, H, Lq = q:size(1), q:size(2), q:size(3)
  keep = I.check_keep(FN, keep, B, Lq)
  local fq, fk, vf = features(self, q, k, v, I.weight(keep))
  local S, z
  if state then
    S, z = state.S, state.z
  else
    S = core.zeros(B, H, fk:size(4), vf:size(4))
    z = core.zeros(B, H, fk:size(4), 1)
    if q:device() ~= "cpu" then S, z = S:to(q:device()), z:to(q:device()) end
  end
  local out
  out, S, z = I.recurrent_read(fq, fk, vf, S, z)
  return out:to(q:dtype()), { kind = "recurrent", S = S, z = z, length = (state and state.length or 0) + Lq }
end

function Hedgehog:extra_repr()
  return O.repr(self.opts, { "num_heads", "head_dim", "feature_dim", "init", "causal" })
end

-- swap_attention fills these from the module it swaps into
Hedgehog.shape_options = { "num_heads", "head_dim" }

registry.register_attention(FN, Hedgehog, {
  exact = false, complexity = "O(L F D)", causal = true, mask = true, gqa = true, incremental = true,
  devices = "cpu, cuda", paper = "Zhang et al. 2024 (Hedgehog)",
  summary = "linear attention over a learnable softmax feature map per head (2 x 64 features), trained to mimic softmax",
})

return Hedgehog
