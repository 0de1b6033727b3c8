-- performer_attention: FAVOR+ (Choromanski et al. 2021, "Rethinking Attention
-- with Performers", eq. 5 and Lemma 1): softmax attention approximated with
-- positive orthogonal random features
--   phi(x) = exp(w_i . x - |x|^2 / 2) / sqrt(m),  x = input * D^(-1/4)
-- so that E[phi(q) . phi(k)] = exp(q . k / sqrt(D)); then the linear-attention
-- sums (O(L m D)), causal by the prefix scan.  The m x D projection is drawn
-- from the seeded generator in orthogonal blocks (Gram-Schmidt on Gaussian
-- D x D blocks, rows rescaled to chi(D) norms), kept as a buffer, and drawn
-- again by redraw().  Stabilised as lucidrains' performer-pytorch does: the
-- max of each query's exponent and one max over each (batch, head)'s keys are
-- subtracted (they cancel).  Non-causal on the CPU, one fused C kernel
-- (kernels/cpu/zoo_linear.c) makes the features a chunk of rows at a time.
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local C = require "attnswap.attention.linear_common"
local P = require "attnswap.attention.ops_path"
local I = require "attnswap.attention.incremental"

local FN = "performer_attention"
local Performer = nn.class("PerformerAttention")

function Performer:init(opts)
  self.opts = O.parse(FN, opts, { scale = false, nb_features = { O.positive_integer, nil } }, 3)
end

-- (m, D): orthogonal blocks of Gaussian rows, each row scaled to a chi(D) norm.
local function orthogonal_features(m, D)
  local blocks, rows = {}, 0
  while rows < m do
    local g = core.randn(D, D)
    local basis = {}
    for i = 1, D do -- Gram-Schmidt, row by row (D <= a few hundred, at construction only)
      local r = g:narrow(1, i, 1)
      for _, b in ipairs(basis) do r = r - b * (r * b):sum() end
      basis[i] = r / (r * r):sum():sqrt()
    end
    local block = core.cat(basis, 1)
    local take = math.min(D, m - rows)
    blocks[#blocks + 1] = block:narrow(1, 1, take)
    rows = rows + take
  end
  local w = core.cat(blocks, 1)
  local norms = (core.randn(m, D) ^ 2):sum(2, true):sqrt() -- chi(D)
  return w * norms
end

--- Draws a new random projection (the next forward uses it), on the host from
--- the seeded generator, then on `device` (default: where the old one is).
function Performer:redraw(D, device)
  D = D or (self.projection and self.projection:size(2))
  if not D then return self end -- drawn at the first forward, when D is known
  device = device or (self.projection and self.projection:device()) or "cpu"
  local m = self.opts.nb_features or math.max(1, math.ceil(D * math.log(D)))
  self:register_buffer("projection", P.on(orthogonal_features(m, D), device))
  return self
end

-- The exponents w . x~ - |x~|^2 / 2 for x (B, H, L, D): (B, H, L, m).
local function exponents(x, w)
  local D = x:size(4)
  local xs = x * (D ^ -0.25)
  local proj = xs:matmul(w:t())                        -- (B, H, L, m)
  local sq = (xs * xs):sum(4, true) * 0.5              -- (B, H, L, 1)
  return proj - sq
end

-- phi(x) for x (B, H, L, D); is_query: stabilise per row, else with one max.
-- The stabiliser is a constant to autograd (detached): it cancels between
-- numerator and denominator, so its gradient is zero but for the 1e-6 floor.
local function features(x, w, is_query)
  local e = exponents(x, w)
  local ed = e:detach()
  local stab = is_query and ed:max(4, true) or ed:max(4, true):max(3, true)
  return (e - stab):exp() * (w:size(1) ^ -0.5) + 1e-6
end

function Performer:forward(q, k, v, mask)
  local o = self.opts
  C.check(FN, q, k, v, mask, o)
  local D = q:size(4)
  if self.projection == nil or self.projection:size(2) ~= D then self:redraw(D, q:device()) end
  local H = q:size(2)
  local w = self.projection
  P.check_param(FN, "projection", w, q:device())
  local keep = C.key_padding(FN, mask, k:size(3))
  local fused = C.fused(q, k, v, keep, w, "favor", o.causal)
  if fused then return fused:to(q:dtype()) end
  local fk = features(C.float(C.expand_heads(k, H)), w, false)
  if keep then fk = fk * keep end
  return C.attend(features(C.float(q), w, true), fk, C.float(C.expand_heads(v, H)), o.causal):to(q:dtype())
end

--- step(q, k, v, state, keep) -> out, state (attention/incremental.lua): the
--- prefix sums as a recurrent state per key/value head, in float32: A =
--- sum exp(e_k - r) / sqrt(m) v^T (B, Hkv, m, Dv), Az its feature sums
--- (B, Hkv, m, 1), r the keys' running max exponent (B, Hkv, 1, 1), and for
--- the 1e-6 floor Vs = sum v (B, Hkv, 1, Dv) and n the kept keys (B, 1, 1, 1).
--- The exp parts are rescaled when r grows, so the features are stabilised
--- by the max over every key so far, as the forward over the whole prefix is.
function Performer:step(q, k, v, state, keep)
  local o = self.opts
  if not o.causal then error(FN .. ": a cache (step) needs causal = true", 2) end
  C.check(FN, q, k, v, nil, o)
  local B, Hkv, Lq, Dv = k:size(1), k:size(2), k:size(3), v:size(4)
  keep = I.check_keep(FN, keep, B, Lq)
  local out
  if state == nil then out = self(q, k, v, I.mask4(keep)) end -- draws the projection if needed
  local w = self.projection
  local m = w:size(1)
  local e = exponents(C.float(k), w)                    -- (B, Hkv, Lq, m)
  local r = e:max(4, true):max(3, true)                -- (B, Hkv, 1, 1)
  local A, Az, Vs, n
  if state then
    r = state.r:maximum(r)
    local scale = (state.r - r):exp()
    A, Az, Vs, n = state.A * scale, state.Az * scale, state.Vs, state.n
  else
    local dev = q:device()
    A, Az = P.on(core.zeros(B, Hkv, m, Dv), dev), P.on(core.zeros(B, Hkv, m, 1), dev)
    Vs, n = P.on(core.zeros(B, Hkv, 1, Dv), dev), P.on(core.zeros(B, 1, 1, 1), dev)
  end
  local ek = (e - r):exp() * (m ^ -0.5)
  local wt = I.weight(keep)
  local vf = C.float(v)
  if out == nil then
    local fk = ek + 1e-6
    if wt then fk = fk * wt end
    out = I.recurrent_read(features(C.float(q), w, true), fk, vf, A + Vs * 1e-6, Az + n * 1e-6):to(q:dtype())
  end
  if wt then ek, vf = ek * wt, vf * wt end
  A = A + ek:transpose(3, 4):matmul(vf)
  Az = Az + ek:sum(3, true):transpose(3, 4)
  Vs = Vs + vf:sum(3, true)
  n = n + (wt and wt:sum(3, true) or Lq)
  return out, { kind = "recurrent", A = A, Az = Az, Vs = Vs, n = n, r = r,
    length = (state and state.length or 0) + Lq }
end

function Performer:extra_repr() return O.repr(self.opts, { "nb_features", "causal" }) end

registry.register_attention(FN, Performer, {
  exact = false, complexity = "O(L m D), m = D ln D", causal = true, mask = true, gqa = true,
  incremental = true, devices = "cpu, cuda", paper = "Choromanski et al. 2021",
  summary = "FAVOR+: positive orthogonal random features for the softmax kernel",
})

return Performer
