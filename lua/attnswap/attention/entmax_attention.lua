-- entmax_attention: alpha-entmax in place of softmax (Peters et al. 2019,
-- "Sparse Sequence-to-Sequence Models"; Correia et al. 2019, "Adaptively
-- Sparse Transformers"):
--   entmax_a(z)_i = [(a - 1) z_i - tau]_+^(1 / (a - 1)),  tau such that sum = 1
-- Weights are exactly zero below the threshold.  alpha = 1 is softmax, 1.5
-- the exact sort-based 1.5-entmax, 2 sparsemax (exact, sort-based), other
-- values bisect on tau.  learn_alpha = true gives each head its own
-- a_h = 1 + sigmoid(pre_alpha_h) (Correia et al.), the parameter
-- pre_alpha (num_heads,) initialised so that a_h = alpha.  The scores of a
-- block of query rows are materialised and normalised in C
-- (kernels/cpu/zoo_reweight_entmax.c).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local P = require "attnswap.attention.ops_path"

local FN = "entmax_attention"

local EntmaxAttention = nn.class("EntmaxAttention")
EntmaxAttention.shape_options = { "num_heads" } -- filled in by swap_attention

local SPEC = {
  alpha = { O.number_in(1, 2), 1.5 },
  learn_alpha = { O.boolean, false },
  num_heads = { O.positive_integer, 8 },
}

function EntmaxAttention:init(opts)
  local o = O.parse(FN, opts, SPEC, 3)
  if o.learn_alpha then
    if o.alpha <= 1 or o.alpha >= 2 then
      error(string.format("%s: alpha must be in (1, 2) with learn_alpha (alpha = 1 + sigmoid), got %g", FN, o.alpha), 3)
    end
    local p = o.alpha - 1
    self.pre_alpha = nn.Parameter(core.full({ o.num_heads }, math.log(p / (1 - p))))
  end
  self.opts = o
end

local NEG_INF = -math.huge
local BISECT = 32 -- halvings of the threshold's bracket (its width starts below 1)

-- alpha-entmax over the last dim of s (-inf masked) with tensor ops only:
-- bisection on the threshold tau (Blondel et al.'s entmax_bisect: f(tau) =
-- sum (X - tau)_+^(1/(alpha-1)) - 1 is decreasing, the bracket
-- [max X - 1, max X - (1/n)^(alpha-1)] as the C kernel's), a fixed number of
-- elementwise passes and row sums instead of a sort.  For alpha = 1.5 and 2
-- the support the bisection finds gives tau in closed form (the formulas of
-- the kernel's sort-based paths), so they are exact; other alpha (and a
-- learned alpha per head, a (1, H, 1, 1) tensor) start from the bisected tau,
-- precise to float32 (the kernel polishes it in double with Newton steps).
-- Where core.entmax has a kernel for the scores (has_kernel: the CPU in
-- float32 and float64, CUDA in float32; float64 is CPU-only) the support and
-- the threshold come from it instead, one pass over the scores in place of
-- BISECT.  The bisection is left for a device without the kernel (none
-- today) and as the tests' reference: they set EntmaxAttention.bisect_only.
-- Rows with nothing visible give zeros.
local function has_kernel(s)
  if EntmaxAttention.bisect_only then return false end
  local dev = s:device()
  return dev == "cpu" or dev:match("^cuda") ~= nil
end

local function entmax_rows(s, alpha)
  if alpha == 1 then return P.masked_softmax(s) end
  local mx = s:detach():max(4, true)       -- a shift: entmax does not see it
  local valid = mx:gt(NEG_INF)
  local z = s - core.where(valid, mx, 0.0) -- max 0; masked stay -inf
  local seen = s:gt(NEG_INF)
  local finite = seen:sum(4, true):float():clamp(1)
  local am1 = alpha - 1                    -- a number or a (1, H, 1, 1) tensor
  local inv = 1 / am1
  -- X = z (alpha - 1), -inf where masked; the product is taken on finite z
  -- only, so alpha's gradient never meets -inf * 0
  local X = core.where(seen, core.where(seen, z, 0.0) * am1, NEG_INF)
  -- the bisection runs on constants (detached): only where it lands matters
  local Xd = X:detach()
  local am1d = core.is_tensor(am1) and am1:detach() or am1
  local invd = core.is_tensor(inv) and inv:detach() or inv
  local function power(d) -- d >= 0
    if alpha == 2 then return d elseif alpha == 1.5 then return d * d end
    return d:pow(invd)
  end
  local function bisect()
    local lo = core.full({ s:size(1), s:size(2), s:size(3), 1 }, -1.0)
    if s:device() ~= "cpu" then lo = lo:to(s:device()) end
    local dm = (-(1 / finite):pow(am1d)) - lo
    for _ = 1, BISECT do
      dm = dm * 0.5
      local mid = lo + dm
      local f = power((Xd - mid):clamp(0)):sum(4, true) - 1
      lo = core.where(f:ge(0), mid, lo)
    end
    return lo
  end
  local tau
  if alpha == 2 or alpha == 1.5 then
    -- the support: the kernel's (core.entmax, detached: sort-based on the
    -- CPU, bisection and Newton on CUDA; BISECT tensor passes over every
    -- score cost 10x more), the bisection where there is no kernel
    local sup
    if has_kernel(s) then sup = core.entmax(s:detach(), alpha):gt(0)
    else sup = Xd:gt(bisect()) end
    local n = sup:sum(4, true):float():clamp(1)
    local Xs = core.where(sup, X, 0.0)
    local s1 = Xs:sum(4, true)
    if alpha == 2 then
      tau = (s1 - 1) / n
    else
      local mean = s1 / n
      local ss = ((Xs * Xs):sum(4, true) / n - mean * mean) * n
      tau = mean - ((1 - ss) / n):clamp(0):sqrt()
    end
    local p = power((X - tau):clamp(0))
    local sum = p:sum(4, true)
    return core.where(valid, p / core.where(valid, sum, 1.0), 0.0)
  end
  -- Other alpha: one Newton step on f(tau) = sum (X - tau)_+^(1/(alpha-1)) - 1
  -- from the bisected tau0 (a constant).  Its value is tau0 to float32 (f(tau0)
  -- ~ 0), and its gradient is the implicit one, -(df/dX, df/dalpha) / (df/dtau),
  -- the entmax Jacobian on the support (Peters et al. 2019), alpha's included.
  -- Powers of (X - tau) are taken on the support only (where, twice), so
  -- their backward never meets 0^(negative) or log 0.
  local function ppow(d, e, on) return core.where(on, core.where(on, d, 1.0):pow(e), 0.0) end
  -- Where the scores have a kernel, its threshold, read back from each row's
  -- largest weight: X's row maximum is 0, so p_max = (0 - tau)^(1/(alpha-1))
  -- (one kernel pass, a head at a time for a learned alpha, in place of BISECT
  -- tensor passes over every score; float64 computed in double); nil elsewhere.
  local function kernel_tau()
    if not has_kernel(s) then return nil end
    local sd = s:detach()
    if not core.is_tensor(alpha) then return -(core.entmax(sd, alpha):max(4, true):pow(am1d)) end
    local per_head = am1d:reshape(-1):cpu() -- numbers for core.entmax
    if per_head:numel() ~= s:size(2) then return nil end
    local parts = {}
    for h = 1, s:size(2) do
      local a = per_head[h]
      parts[h] = -(core.entmax(sd:narrow(2, h, 1), 1 + a):max(4, true):pow(a))
    end
    return core.cat(parts, 2)
  end
  local lo = kernel_tau() or bisect()
  local sup = Xd:gt(lo)
  local d0 = X - lo
  local f = ppow(d0, inv, sup):sum(4, true) - 1
  local fp = ppow(d0, inv - 1, sup):sum(4, true) * inv -- -df/dtau > 0 on a support
  local ok = fp:detach():gt(0)
  tau = lo + core.where(ok, f / core.where(ok, fp, 1.0), 0.0)
  local d = X - tau
  local p = ppow(d, inv, d:detach():gt(0))
  local sum = p:sum(4, true)
  return core.where(valid, p / core.where(valid, sum, 1.0), 0.0)
end

-- The ops path: scores materialised by blocks of queries (ops_path's weights
-- driver), entmax_rows above.
local function ops_forward(self, q, k, v, mask)
  local o = self.opts
  local _, H, _, _, _, _, _, dev = P.check(FN, q, k, v, mask)
  local alpha = o.alpha
  if o.learn_alpha then
    local pre = self.pre_alpha
    if pre:dim() == 1 and pre:size(1) ~= H then
      error(string.format("%s: pre_alpha was made for %d heads (num_heads) but q has %d; "
        .. "build the core with num_heads = %d", FN, pre:size(1), H, H), 3)
    end
    P.check_param(FN, "pre_alpha", pre, dev)
    pre = P.float(pre)
    local nan = pre:ne(pre)
    if nan:sum():item() > 0 then
      error(string.format("%s: pre_alpha[%d] is NaN", FN, nan:long():argmax():item()), 3)
    end
    alpha = (pre:sigmoid() + 1):view(1, H, 1, 1)
  end
  return P.weights_attention(FN, q, k, v, mask, o, self:is_training(),
    function(s) return entmax_rows(s, alpha) end)
end

function EntmaxAttention:forward(q, k, v, mask)
  local o = self.opts
  if P.active(q, k, v, mask, self) then return ops_forward(self, q, k, v, mask) end
  return core.entmax_attention(q, k, v, mask, O.call_opts(o, {
    alpha = o.alpha, pre_alpha = o.learn_alpha and self.pre_alpha or nil,
  }), self:is_training())
end

function EntmaxAttention:extra_repr()
  return O.repr(self.opts, { "alpha", "learn_alpha", "causal", "scale", "dropout" })
end

registry.register_attention(FN, EntmaxAttention, {
  exact = false, complexity = "O(L^2 D + L k log k), k = support candidates", causal = true, mask = true,
  gqa = true, incremental = true, devices = "cpu, cuda", paper = "Peters et al. 2019; Correia et al. 2019",
  summary = "alpha-entmax instead of softmax: sparse weights with exact zeros (1.5 default, 2 = sparsemax)",
})

return EntmaxAttention
