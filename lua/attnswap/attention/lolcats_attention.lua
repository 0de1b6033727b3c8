-- lolcats_attention (Zhang et al. 2024, "LoLCATs: On Low-Rank Linearizing of
-- Large Language Models", section 3.1, eq. 7; reference: HazyResearch/lolcats
-- linear_window_attention_sw.py, hybrid_attention_quadratic, and the
-- configs' window_size 64, init_window_factor logit(0.1), affine false):
-- softmax over a sliding window of the w most recent keys plus Hedgehog
-- linear attention over the keys before it, under one normaliser:
--   a_ij = gamma_h exp(q_i.k_j / sqrt(D) - m_i)   i' - w < j <= i'
--   a_ij = lambda_h phi_q(q_i).phi_k(k_j)         j <= i' - w
--   out_i = sum_j a_ij v_j / sum_j a_ij
-- m_i the max of the window's scores (as the reference: the window term is
-- not normalised on its own, so gamma weighs it against the linear part);
-- gamma_h = sigmoid(window_factors_h), a parameter per head initialised to
-- window_factor (0.1); lambda = 1, or 1 - gamma with affine = true.
-- Bidirectional (causal = false, not in the paper): the window is
-- |i' - j| < w and the linear part every other key.
-- phi as hedgehog_attention (attention/hedgehog_common.lua), init "random"
-- (LoLCATs' kaiming_uniform_; zero_init false in its configs).  Blocked:
-- O(L ((w + 64) D + F Dv)), tensor ops only (autograd, any device).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local C = require "attnswap.attention.linear_common"
local I = require "attnswap.attention.incremental"
local P = require "attnswap.attention.ops_path"
local HC = require "attnswap.attention.hedgehog_common"

local FN = "lolcats_attention"
local Lolcats = nn.class("LolcatsAttention")

local SPEC = HC.spec("random")
SPEC.window_size = { O.positive_integer, 64 }
SPEC.window_factor = { O.number_in(0, 1, true, true), 0.1 }
SPEC.affine = { O.boolean, false }

function Lolcats:init(opts)
  local o = O.parse(FN, opts, SPEC, 3)
  if o.dropout > 0 then
    error(FN .. ": dropout must be 0 (the window and linear weights share one normaliser), got " ..
      tostring(o.dropout), 3)
  end
  self.feature_q = HC.new_map(o)
  self.feature_k = HC.new_map(o)
  local g = o.window_factor
  self.window_factors = nn.Parameter(core.full({ 1, o.num_heads, 1, 1 }, math.log(g / (1 - g))))
  self.opts = o
end

-- The hybrid over q (B, H, Lq, D) and k, v with a key-padding keep weight
-- (B, 1, Lk, 1) or nil, from sums S0, z0 over earlier keys (or nil).
-- Returns out (float32) and phi_k(k) (weighted), v with the query heads.
local function attend(self, q, k, v, keep, S0, z0)
  local o = self.opts
  local H, Lk = q:size(2), k:size(3)
  if self.window_factors:size(2) ~= H then
    error(string.format("%s: window_factors was made for %d heads (num_heads) but q has %d; pass {num_heads = %d}",
      FN, self.window_factors:size(2), H, H), 3)
  end
  P.check_param(FN, "window_factors", self.window_factors, q:device())
  local qf, kf, vf = P.float(q), HC.heads(k, H), HC.heads(v, H)
  local fq = HC.phi(FN, q, self.feature_q, o.eps, "feature_q")
  local fk = HC.phi(FN, kf, self.feature_k, o.eps, "feature_k")
  local keep4
  if keep then
    fk = fk * keep
    keep4 = keep:reshape(keep:size(1), 1, 1, Lk):ne(0)
  end
  local gamma = P.float(self.window_factors):sigmoid()
  local out = HC.hybrid {
    fq = fq, fk = fk, v = vf, causal = o.causal, lin = o.affine and (1 - gamma) or 1, S0 = S0, z0 = z0,
    w = o.window_size, q = qf, k = kf, scale = P.scale(o, q:size(4)), gamma = gamma, keep = keep4,
  }
  return out, fk, vf
end

function Lolcats:forward(q, k, v, mask)
  C.check(FN, q, k, v, mask, self.opts)
  local keep = C.key_padding(FN, mask, k:size(3))
  return (attend(self, q, k, v, keep)):to(q:dtype())
end

--- step(q, k, v, state, keep) -> out, state (attention/incremental.lua):
--- state {kind = "window+recurrent", k, v (B, Hkv, <= w, D): the window's
--- keys and values, keep (B, <= w) or nil, S, z (B, H, 2F, Dv / 1): the
--- linear sums over the keys that left the window, length}.  Causal only.
function Lolcats:step(q, k, v, state, keep)
  local o = self.opts
  if not o.causal then
    error(FN .. ": a cache (step) needs causal = true (a query of a bidirectional window sees later keys)", 2)
  end
  C.check(FN, q, k, v, nil, o)
  local B, Lq = q:size(1), q:size(3)
  keep = I.check_keep(FN, keep, B, Lq)
  local held = state and state.k:size(3) or 0
  local K, V, KEEP = k, v, keep
  if held > 0 then
    K, V = core.cat({ state.k, k }, 3), core.cat({ state.v, v }, 3)
    if state.keep or keep then
      local function ones(n)
        local t = core.ones({ B, n }, "bool")
        return q:device() ~= "cpu" and t:to(q:device()) or t
      end
      KEEP = core.cat({ state.keep or ones(held), keep or ones(Lq) }, 2)
    end
  end
  local n = held + Lq
  local out, fk, vf = attend(self, q, K, V, I.weight(KEEP), state and state.S, state and state.z)
  local S, z = state and state.S, state and state.z
  local leave = n - o.window_size -- keys that leave the window: into the sums
  if leave > 0 then
    local fl, vl = fk:narrow(3, 1, leave), vf:narrow(3, 1, leave)
    local dS, dz = fl:transpose(3, 4):matmul(vl), fl:sum(3, true):transpose(3, 4)
    if S then S, z = S + dS, z + dz else S, z = dS, dz end
  end
  local function last(t, dim)
    if t == nil or leave <= 0 then return t end
    return t:narrow(dim, leave + 1, n - leave):contiguous()
  end
  return out:to(q:dtype()), {
    kind = "window+recurrent", k = last(K, 3), v = last(V, 3), keep = last(KEEP, 2), S = S, z = z,
    length = (state and state.length or 0) + Lq,
  }
end

function Lolcats:extra_repr()
  return O.repr(self.opts, { "num_heads", "head_dim", "feature_dim", "window_size", "window_factor", "affine",
    "init", "causal" })
end

-- swap_attention fills these from the module it swaps into
Lolcats.shape_options = { "num_heads", "head_dim" }

-- as.compare's options at a sequence of L keys when the default window
-- would cover it all (and so be softmax attention): a quarter of it.
function Lolcats.sized_options(L)
  if L > 64 then return nil end
  return { window_size = math.max(1, L // 4) }
end

registry.register_attention(FN, Lolcats, {
  exact = false, complexity = "O(L (w + F) D)", causal = true, mask = true, gqa = true, incremental = true,
  devices = "cpu, cuda", paper = "Zhang et al. 2024 (LoLCATs)",
  summary = "softmax over a sliding window of 64 plus Hedgehog linear attention over the keys before it, one normaliser",
})

return Lolcats
