-- dynamic_attention: per-query top-k attention (Zhao et al. 2019, "Explicit
-- Sparse Transformer: Concentrated Attention Through Explicit Selection",
-- eq. 4-6; Gupta et al. 2021, "Memory-efficient Transformers via Top-k
-- Attention").  Each query keeps its top_k largest scores and a softmax over
-- those alone:
--
--   s_i = q_i K^T * scale + bias_i,   t_i = the top_k-th largest of s_i
--   out_i = softmax(s_ij if s_ij >= t_i else -inf) V
--
-- Ties at t_i go to the lower key index (exactly top_k are kept); masked
-- keys are never selected; top_k >= Lk is softmax attention.  A C kernel
-- (kernels/cpu/zoo_sparse_topk.c): scores by blocks of 32 queries (sgemm),
-- a linear-time selection per row, and an output that gathers only the
-- top_k value rows.  Cost O(L^2 D + L k Dv).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local P = require "attnswap.attention.ops_path"

local FN = "dynamic_attention"

local DynamicAttention = nn.class("DynamicTopKAttention")

local SPEC = {
  top_k = { O.positive_integer, 32 },
}

function DynamicAttention:init(opts)
  self.opts = O.parse(FN, opts, SPEC, 3)
end

local NEG_INF = -math.huge

-- Keeps the top_k largest of each row of s (-inf masked) and returns the
-- softmax over them, with the kernel's rules: exactly top_k kept, ties at
-- the threshold to the lower key index, masked keys never, a row with fewer
-- visible keys keeps them all.  Where the selection is not the kernel's
-- (core.topk_keep: float32 on the CPU), ops only: the threshold t (the top_k-th
-- largest) is found by walking down the distinct values of the row, one
-- max-reduction per value (at most top_k of them); ties past the threshold
-- are ranked by an inclusive cumulative count along the row, a matmul with a
-- triangular matrix, computed only when some row has them.
local function topk_softmax(s, top_k)
  local Lk = s:size(4)
  if top_k >= Lk then return P.masked_softmax(s) end
  local sg = s -- the gradient flows through the softmax over the kept set only
  s = s:detach() -- the selection: comparisons and max, no gradient
  -- float32 on the CPU: the fused kernel's linear-time selection (core.topk_keep,
  -- the same rules); elsewhere the walk below, on the device's ops
  local fast = core.topk_keep(s, top_k)
  if fast then return P.masked_softmax(core.where(fast, sg, NEG_INF)) end
  local shape = { s:size(1), s:size(2), s:size(3), 1 }
  local dev = s:device()
  local function full(v, dtype) return P.on(core.full(shape, v, dtype), dev) end
  local count = full(0, "int64")     -- entries above the current value
  local t = full(NEG_INF)            -- the threshold (-inf: keep every visible key)
  local above = full(0, "int64")     -- entries strictly above t
  local at = full(0, "int64")        -- entries equal to t
  local open = P.on(core.ones(shape, "bool"), dev) -- rows still walking
  local cur = nil
  for it = 1, top_k do
    local cand = cur and core.where(s:lt(cur), s, NEG_INF) or s
    local m = cand:max(4, true)
    local visible = m:gt(NEG_INF)
    local c = s:eq(m):logical_and(visible):sum(4, true)
    local reached = open:logical_and((count + c):ge(top_k))
    t = core.where(reached, m, t)
    above = core.where(reached, count, above)
    at = core.where(reached, c, at)
    count = count + c
    open = open:logical_and(reached:logical_not()):logical_and(visible)
    cur = m
    if it % 8 == 0 and open:sum():item() == 0 then break end -- every row has its threshold
  end
  local need = above:neg() + top_k -- how many of the ties at t are kept
  local ties = s:eq(t):logical_and(t:gt(NEG_INF))
  if at:gt(need):logical_and(t:gt(NEG_INF)):sum():item() > 0 then
    local r = P.on(core.arange(0, Lk), dev)
    local incl = r:view(Lk, 1):le(r:view(1, Lk)):float() -- incl[i][j] = i <= j
    ties = ties:logical_and(ties:float():matmul(incl):le(need))
  end
  local keep = s:gt(t):logical_or(ties)
  return P.masked_softmax(core.where(keep, sg, NEG_INF))
end

-- The ops path: scores materialised by blocks of queries (ops_path's
-- weights driver), the selection above, softmax over the kept keys.
local function ops_forward(self, q, k, v, mask)
  local top_k = self.opts.top_k
  return P.weights_attention(FN, q, k, v, mask, self.opts, self:is_training(),
    function(s) return topk_softmax(s, top_k) end)
end

function DynamicAttention:forward(q, k, v, mask)
  local o = self.opts
  if P.active(q, k, v, mask, self) then return ops_forward(self, q, k, v, mask) end
  return core.dynamic_attention(q, k, v, mask, O.call_opts(o, { top_k = o.top_k }), self:is_training())
end

function DynamicAttention:extra_repr()
  return O.repr(self.opts, { "top_k", "causal", "scale", "dropout" })
end

registry.register_attention(FN, DynamicAttention, {
  exact = false, complexity = "O(L^2 D + L k Dv)", causal = true, mask = true, gqa = true,
  incremental = true, devices = "cpu, cuda", paper = "Zhao et al. 2019",
  summary = "per-query top-k: softmax over the k largest scores of each row (ties to the lower index)",
})

return DynamicAttention
