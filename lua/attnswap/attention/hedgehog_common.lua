-- What hedgehog_attention and lolcats_attention share: the learnable
-- feature map and the blocked "sliding window + linear" attention, both
-- composed of tensor ops only, so autograd differentiates them and they run
-- on any device.  Not an attention itself.
--
-- Feature map (Zhang et al. 2024, "The Hedgehog & the Porcupine", eq. 6, as
-- LoLCATs' SoftmaxDim + FeatureMapMLP implement it, HazyResearch/lolcats
-- src/model/feature_map.py):
--   phi(x) = [softmax(x W_h), softmax(-x W_h)]  clamped to >= eps,
-- x a head's query or key (D), W_h (D x F) one matrix per head, so phi has
-- 2F features; q and k have their own W (untied, as the reference).
--
-- Hybrid attention (LoLCATs, Zhang et al. 2024, "LoLCATs: On Low-Rank
-- Linearizing of Large Language Models", eq. 7; reference
-- hybrid_attention_quadratic in linear_window_attention_sw.py): query i
-- (at i' = i + Lk - Lq) splits the keys it sees into a window W_i
-- (causal: i' - w < j <= i'; bidirectional: |i' - j| < w) and the rest R_i:
--   a_ij = gamma exp(q_i.k_j s - m_i)   for j in W_i   (m_i: max over W_i)
--   a_ij = lambda phi_q(q_i).phi_k(k_j) for j in R_i
--   out_i = sum_j a_ij v_j / sum_j a_ij
-- with w = 0 (no window) it is plain linear attention over phi.  Computed
-- a block of CHUNK queries at a time: the keys left of the block's window
-- range are folded into running sums S = sum phi_k(k) v^T, z = sum phi_k(k)
-- (bidirectional: the total minus the block's range), the block's range is
-- one small (CHUNK x (CHUNK + 2w)) product; O(L (F Dv + (CHUNK + w) D)).
-- A causal call over a whole sequence takes the batched form instead
-- (causal_batched, below), which autograd differentiates in O(L).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local O = require "attnswap.attention.reweight_opts"
local P = require "attnswap.attention.ops_path"

local M = {
  -- true: every call takes the block loop (the causal batched form's
  -- cross-check in benchmarks); the loop serves steps and bidirectional calls
  loop = false,
}

local CHUNK = 64 -- queries per block

--- The feature-map options both implementations take (swap_attention fills
--- num_heads and head_dim from the module it swaps into: shape_options).
function M.spec(init)
  return {
    num_heads = { O.positive_integer, 8 },
    head_dim = { O.positive_integer, 64 },
    feature_dim = { O.positive_integer, 64 },
    init = { O.one_of("identity", "random"), init },
    eps = { O.positive_number, 1e-12 },
  }
end

--- A (num_heads, head_dim, feature_dim) map: "identity" (Hedgehog's listing:
--- W = I, rectangular when D ~= F) or "random" (LoLCATs' kaiming_uniform_:
--- U(-b, b), b = sqrt(6 / fan_in), fan_in = head_dim * feature_dim as
--- PyTorch counts it for a 3-d tensor).
function M.new_map(o)
  local H, D, F = o.num_heads, o.head_dim, o.feature_dim
  if o.init == "random" then
    local b = math.sqrt(6 / (D * F))
    return nn.Parameter((core.rand(H, D, F) * 2 - 1) * b)
  end
  local w = core.zeros(H, D, F)
  for h = 1, H do
    for i = 1, math.min(D, F) do w[h][i][i] = 1 end
  end
  return nn.Parameter(w)
end

--- phi(x (B, H, L, D)) with map W (H, D, F) -> (B, H, L, 2F) float32.
function M.phi(fn, x, W, eps, name)
  local H, D = x:size(2), x:size(4)
  if W:size(1) ~= H or W:size(2) ~= D then
    error(string.format("%s: %s was made for %d heads of size %d (num_heads, head_dim) but got %d heads of size %d; " ..
      "pass {num_heads = %d, head_dim = %d} (swap_attention fills them from the module it swaps into)",
      fn, name, W:size(1), W:size(2), H, D, H, D), 4)
  end
  P.check_param(fn, name, W, x:device())
  local xw = P.float(x):matmul(P.float(W)) -- (B, H, L, F): W broadcasts over the batch
  return core.cat({ xw:softmax(-1), (-xw):softmax(-1) }, 4):clamp(eps, nil)
end

-- m (B, H, n, 1): the max of each row of s (-inf outside the window), 0
-- for a row with no window entry.  Its value is taken without gradient (max
-- has no backward) and given one as torch.amax's: the row's maximal entries
-- share it.
local function window_max(s)
  local d = s:dim()
  local sd = s:detach()
  local m = sd:max(d, true)
  m = core.where(m:gt(P.NEG_INF), m, 0.0)
  if not core.is_grad_enabled() then return m end
  local at = sd:eq(m)
  local n = at:float():sum(d, true)
  return core.where(at, s, 0.0):sum(d, true) / core.where(n:gt(0), n, 1.0)
end

-- core.cat of a list, four at a time (autograd's cat takes at most four
-- tensors that need gradients).
local function cat(ts, dim)
  while #ts > 4 do
    local next = {}
    for i = 1, #ts, 4 do
      next[#next + 1] = i == #ts and ts[i] or core.cat(table.move(ts, i, math.min(i + 3, #ts), 1, {}), dim)
    end
    ts = next
  end
  return #ts == 1 and ts[1] or core.cat(ts, dim)
end

-- The causal hybrid over Lq = Lk = L as one batched computation (no slice
-- per block: autograd's narrow gives a gradient of the whole input's size,
-- so a loop of slices costs O(L^2 / CHUNK) in backward).  Query block b
-- sees keys of blocks b - R .. b directly (R = ceil((w - 1) / CHUNK)
-- blocks back cover its window) and the rest through the block sums
-- dS_b = phi_k(K_b)^T V_b accumulated by a strictly lower-triangular
-- (nb x nb) matmul (O(nb^2 F Dv), no scan op needed).
local function causal_batched(a)
  local fq, fk, v = a.fq, a.fk, a.v
  local B, H, L, F2 = fq:size(1), fq:size(2), fq:size(3), fq:size(4)
  local Dv = v:size(4)
  local dev = fq:device()
  local w, lin = a.w or 0, a.lin or 1
  if core.is_tensor(lin) then lin = lin:unsqueeze(5) end -- (1, H, 1, 1, 1) against the blocks
  local c = CHUNK
  local nb = (L + c - 1) // c
  local R = w > 1 and (w - 2) // c + 1 or 0 -- ceil((w - 1) / c)
  local Lp = nb * c
  local function pad(t, X) -- (B, H, L, X) -> (B, H, nb, c, X)
    if Lp > L then t = cat({ t, P.on(core.zeros(t:size(1), t:size(2), Lp - L, X), dev) }, 3) end
    return t:reshape(t:size(1), t:size(2), nb, c, X)
  end
  -- (B, H, nb, c, X) -> (B, H, nb, (R + 1) c, X): blocks b - R .. b side by side
  local function local_keys(t)
    if R == 0 then return t end
    local b1, h1, X = t:size(1), t:size(2), t:size(5)
    local parts = {}
    for r = R, 0, -1 do
      if r == 0 then parts[#parts + 1] = t
      elseif r >= nb then parts[#parts + 1] = P.on(core.zeros(b1, h1, nb, c, X), dev)
      else
        parts[#parts + 1] = cat({ P.on(core.zeros(b1, h1, r, c, X), dev), t:narrow(3, 1, nb - r) }, 3)
      end
    end
    return cat(parts, 4)
  end
  local qb, kb, vb = pad(fq, F2), pad(fk, F2), pad(v, Dv)
  -- the sums of blocks b' < b - R for each block b
  local dS = kb:transpose(4, 5):matmul(vb):reshape(B, H, nb, F2 * Dv)
  local dz = kb:sum(4):reshape(B, H, nb, F2)
  local bi = P.on(core.arange(0, nb), dev)
  local T = bi:view(1, nb):lt(bi:view(nb, 1) - R):float() -- T[b, b'] = b' < b - R
  local S = T:matmul(dS):reshape(B, H, nb, F2, Dv)
  local z = T:matmul(dz):reshape(B, H, nb, F2, 1)
  local num, den = qb:matmul(S) * lin, qb:matmul(z) * lin -- (B, H, nb, c, Dv / 1)
  local K = (R + 1) * c
  local kl, vl = local_keys(kb), local_keys(vb)
  local ii = P.on(core.arange(0, c), dev):view(c, 1)
  local jj = P.on(core.arange(0, K), dev):view(1, K) - R * c -- key offset from the block's start
  local linear = jj:le(ii - w)                               -- (c, K)
  local al = core.where(linear, qb:matmul(kl:transpose(4, 5)), 0.0) * lin
  num, den = num + al:matmul(vl), den + al:sum(5, true)
  if w > 0 then
    local win = jj:gt(ii - w):logical_and(jj:le(ii)):view(1, 1, 1, c, K)
    -- keys that exist: not the look-back's padding in front, not past L, kept
    local real = a.keep and a.keep:float() or P.on(core.ones(1, 1, 1, L), dev)
    real = pad(real:reshape(real:size(1), 1, L, 1), 1)          -- (Bk, 1, nb, c, 1)
    real = local_keys(real):reshape(real:size(1), 1, nb, 1, K)  -- (Bk, 1, nb, 1, K)
    win = win:logical_and(real:gt(0))
    local ql, kk = pad(a.q, a.q:size(4)), local_keys(pad(a.k, a.k:size(4)))
    local s = ql:matmul(kk:transpose(4, 5)) * a.scale + core.where(win, 0.0, P.NEG_INF)
    local gamma = core.is_tensor(a.gamma) and a.gamma:unsqueeze(5) or a.gamma
    local e = (s - window_max(s)):exp() * gamma
    num, den = num + e:matmul(vl), den + e:sum(5, true)
  end
  local safe = den:ne(0)
  local out = core.where(safe, num / core.where(safe, den, 1.0), 0.0):reshape(B, H, Lp, Dv)
  return Lp > L and out:narrow(3, 1, L) or out
end

--- hybrid(a) -> out (B, H, Lq, Dv) float32.
--- a: fq (B, H, Lq, F2), fk (B, H, Lk, F2) weighted by the keep mask, v
--- (B, H, Lk, Dv), causal, lin (the linear factor, a number or (1, H, 1, 1)),
--- S0, z0 (sums over keys before these, causal only, or nil); and for a
--- window: w (>= 1), q (B, H, Lq, D), k (B, H, Lk, D), scale, gamma
--- (1, H, 1, 1), keep (B or 1, 1, 1, Lk) bool or nil.  All float32.
function M.hybrid(a)
  if a.causal and not a.S0 and a.fq:size(3) == a.fk:size(3) and a.fq:size(3) > 0
      and not M.loop then
    return causal_batched(a)
  end
  local fq, fk, v = a.fq, a.fk, a.v
  local B, H, Lq, F2 = fq:size(1), fq:size(2), fq:size(3), fq:size(4)
  local Lk, Dv = fk:size(3), v:size(4)
  local dev = fq:device()
  local w, causal, lin = a.w or 0, a.causal, a.lin or 1
  local off = Lk - Lq
  local S = a.S0 or P.on(core.zeros(B, H, F2, Dv), dev)
  local z = a.z0 or P.on(core.zeros(B, H, F2, 1), dev)
  local function sums(j0, n) -- the sums over keys [j0, j0 + n)
    local kc = fk:narrow(3, j0 + 1, n)
    return kc:transpose(3, 4):matmul(v:narrow(3, j0 + 1, n)), kc:sum(3, true):transpose(3, 4)
  end
  local St, zt
  if not causal and Lk > 0 then St, zt = sums(0, Lk) end
  local done = 0 -- causal: keys folded into S, z
  local out = {}
  for i0 = 0, Lq - 1, CHUNK do
    local n = math.min(CHUNK, Lq - i0)
    local p0, p1 = i0 + off, i0 + off + n - 1 -- the block's query positions
    -- the keys some query of the block sees other than through S, z
    local ka = math.max(0, p0 - w + 1)
    local kb = math.min(Lk - 1, causal and p1 or p1 + w - 1)
    if not causal and w == 0 then ka, kb = 0, -1 end
    local qb = fq:narrow(3, i0 + 1, n)
    local Sb, zb
    if causal then
      local upto = math.min(ka, Lk)
      if upto > done then
        local dS, dz = sums(done, upto - done)
        S, z, done = S + dS, z + dz, upto
      end
      Sb, zb = S, z
    elseif St then
      Sb, zb = St, zt
      if kb >= ka then
        local dS, dz = sums(ka, kb - ka + 1)
        Sb, zb = St - dS, zt - dz
      end
    end
    local num, den
    if Sb then num, den = qb:matmul(Sb) * lin, qb:matmul(zb) * lin
    else num, den = P.on(core.zeros(B, H, n, Dv), dev), P.on(core.zeros(B, H, n, 1), dev) end
    if kb >= ka then
      local K = kb - ka + 1
      local qi = P.on(core.arange(p0, p1 + 1), dev):view(n, 1)
      local kj = P.on(core.arange(ka, kb + 1), dev):view(1, K)
      local win = kj:gt(qi - w)
      if causal then win = win:logical_and(kj:le(qi)) else win = win:logical_and(kj:lt(qi + w)) end
      local linear = (causal and kj:le(qi - w) or win:logical_not()):view(1, 1, n, K)
      local vb = v:narrow(3, ka + 1, K)
      local al = core.where(linear, qb:matmul(fk:narrow(3, ka + 1, K):transpose(3, 4)), 0.0) * lin
      num, den = num + al:matmul(vb), den + al:sum(4, true)
      if w > 0 then
        win = win:view(1, 1, n, K)
        if a.keep then win = win:logical_and(a.keep:narrow(4, ka + 1, K)) end
        -- -inf outside the window: exp gives 0 there, and its gradient 0
        local s = a.q:narrow(3, i0 + 1, n):matmul(a.k:narrow(3, ka + 1, K):transpose(3, 4)) * a.scale
          + core.where(win, 0.0, P.NEG_INF)
        local e = (s - window_max(s)):exp() * a.gamma
        num, den = num + e:matmul(vb), den + e:sum(4, true)
      end
    end
    local safe = den:ne(0)
    out[#out + 1] = core.where(safe, num / core.where(safe, den, 1.0), 0.0)
  end
  local o
  if #out == 0 then o = P.on(core.zeros(B, H, Lq, Dv), dev)
  else o = cat(out, 3) end
  return o
end

--- k or v (B, Hkv, L, D) as float32 with H heads (grouped-query attention).
function M.heads(t, H)
  local B, Hkv, L, D = t:size(1), t:size(2), t:size(3), t:size(4)
  t = P.float(t)
  if Hkv == H then return t end
  return t:unsqueeze(3):expand(B, Hkv, H // Hkv, L, D):reshape(B, H, L, D)
end

return M
