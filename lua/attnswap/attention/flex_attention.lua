-- flex_attention: FlexAttention's idea (Dong et al. 2024, "Flex Attention:
-- A Programming Model for Generating Optimized Attention Kernels") without a
-- compiler.  The user writes
--   score_mod(score, b, h, q_idx, kv_idx) -> new scores
--   mask_mod(b, h, q_idx, kv_idx)         -> bool keep (true = may attend)
-- as Lua functions of TILE TENSORS, called once per tile, not per element:
--   score   float32 (B, H, Bq, Bk): q k^T * scale for one block of queries and keys
--   b       int64 (B, 1, 1, 1)   batch index
--   h       int64 (1, H, 1, 1)   query head index
--   q_idx   int64 (1, 1, Bq, 1)  query position, 0-based; counted from Lk - Lq so
--                                that it lines up with kv_idx under a KV cache
--                                (= FlexAttention's q_idx when Lq = Lk)
--   kv_idx  int64 (1, 1, 1, Bk)  key position, 0-based
-- both returning tensors broadcastable to the tile.  A tile whose mask_mod is
-- all false is skipped (the mask is evaluated before any score is made), and
-- tiles wholly in the future are skipped when causal.  The tiles are
-- combined by an online softmax (Dao et al. 2022) whose per-tile step is C
-- (core.flex_attention_ops.step, kernels/cpu/zoo_reweight_flex.c).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local P = require "attnswap.attention.ops_path"

local FN = "flex_attention"

local FlexAttention = nn.class("FlexAttention")

local SPEC = {
  score_mod = { O.func, nil },
  mask_mod = { O.func, nil },
  block_size = { O.positive_integer, 128 },
}

function FlexAttention:init(opts)
  self.opts = O.parse(FN, opts, SPEC, 3)
end

local function shape_str(t) return tostring(t:shape()) end

local function check_inputs(q, k, v, mask)
  for i, t in ipairs { q, k, v } do
    if not core.is_tensor(t) then
      error(string.format("%s: %s must be a Tensor, got %s", FN, ("qkv"):sub(i, i), type(t)), 3)
    end
    if t:dim() ~= 4 then
      error(string.format("%s: %s must be 4-d (B, H, L, D), got shape %s", FN, ("qkv"):sub(i, i), shape_str(t)), 3)
    end
  end
  local B, H, D = q:size(1), q:size(2), q:size(4)
  if k:size(1) ~= B or v:size(1) ~= B then
    error(string.format("%s: batch sizes differ: q %s, k %s, v %s", FN, shape_str(q), shape_str(k), shape_str(v)), 3)
  end
  if k:size(2) ~= v:size(2) or k:size(3) ~= v:size(3) then
    error(string.format("%s: k %s and v %s must have the same heads and length", FN, shape_str(k), shape_str(v)), 3)
  end
  if k:size(2) == 0 or H % k:size(2) ~= 0 then
    error(string.format("%s: the query heads (%d) must be a multiple of the key/value heads (%d)", FN, H, k:size(2)), 3)
  end
  if k:size(4) ~= D then
    error(string.format("%s: q %s and k %s must have the same head dimension", FN, shape_str(q), shape_str(k)), 3)
  end
  local float = { float32 = true, float16 = true, bfloat16 = true }
  if not float[q:dtype()] or k:dtype() ~= q:dtype() or v:dtype() ~= q:dtype() then
    error(string.format("%s: q, k and v must be floating point of one dtype, got %s, %s and %s", FN,
      q:dtype(), k:dtype(), v:dtype()), 3)
  end
  if mask ~= nil then
    if not core.is_tensor(mask) then error(string.format("%s: mask must be a Tensor, got %s", FN, type(mask)), 3) end
    local target = { B, H, q:size(3), k:size(3) }
    local ok = mask:dim() <= 4
    for d = 1, ok and mask:dim() or 0 do
      local n = mask:size(mask:dim() - d + 1)
      ok = ok and (n == 1 or n == target[5 - d])
    end
    if not ok then
      error(string.format("%s: mask of shape %s is not broadcastable to (B, H, Lq, Lk) = (%d, %d, %d, %d)", FN,
        shape_str(mask), B, H, q:size(3), k:size(3)), 3)
    end
    if mask:dtype() ~= "bool" and not float[mask:dtype()] then
      error(string.format("%s: mask must be bool (keep) or floating point (additive), got %s", FN, mask:dtype()), 3)
    end
  end
end

-- The block [i0, i0 + n) (0-based) of a broadcastable mask along dim d (1-based).
local function narrow_mask(mask, d, i0, n)
  if mask:size(d) == 1 then return mask end
  return mask:narrow(d, i0 + 1, n)
end

local NEG_INF = -math.huge

-- The tile step of the ops path: core.flex_attention_ops.step (the online
-- softmax of Dao et al. 2022) written with tensor ops; returns the new
-- acc (B, H, Bq, Dv), m, l (B, H, Bq, 1).  Rows with nothing visible so far
-- keep m = -inf, l = 0, acc = 0.
-- The running max m is a constant to autograd (detached): it cancels in
-- acc / l, so the gradient flows through p and the tiles' scores only.
local function ops_step(acc, m, l, s, v, drop, keep_scale)
  local m_new = m:maximum(s:detach():max(4, true))
  local has = m_new:gt(NEG_INF)
  local m_safe = core.where(has, m_new, 0.0)
  local alpha = (m - m_safe):exp()                 -- m = -inf: 0
  local p = (s - m_safe):exp()                     -- masked: 0
  l = l * alpha + p:sum(4, true)
  if drop ~= nil then p = core.where(drop, p * keep_scale, 0.0) end
  acc = acc * alpha + P.weights_times_v(p, v)
  return acc, core.where(has, m_new, m), l
end

local c_ops = {
  new = function(B, H, bq, Dv)
    return core.zeros(B, H, bq, Dv), core.full({ B, H, bq }, NEG_INF), core.zeros(B, H, bq)
  end,
  step = function(acc, m, l, s, v, drop, ks)
    core.flex_attention_ops.step(acc, m, l, s, v, drop, ks)
    return acc, m, l
  end,
  finish = function(acc, l, dtype) return core.flex_attention_ops.finish(acc, l, dtype) end,
}

local function device_ops(dev)
  return {
    new = function(B, H, bq, Dv)
      return P.on(core.zeros(B, H, bq, Dv), dev), P.on(core.full({ B, H, bq, 1 }, NEG_INF), dev),
        P.on(core.zeros(B, H, bq, 1), dev)
    end,
    step = ops_step,
    finish = function(acc, l, dtype)
      local safe = l:gt(0)
      return core.where(safe, acc / core.where(safe, l, 1.0), 0.0):to(dtype)
    end,
  }
end

function FlexAttention:forward(q, k, v, mask)
  check_inputs(q, k, v, mask)
  local dev = q:device()
  local ops = c_ops
  if P.active(q, k, v, mask, self) then
    core.attention_check(FN, q, k, v, mask) -- one device for q, k, v and the mask
    ops = device_ops(dev)
  end
  local function here(t) return ops == c_ops and t or P.on(t, dev) end
  local o = self.opts
  local B, H, Lq, D = q:size(1), q:size(2), q:size(3), q:size(4)
  local Hkv, Lk, Dv = k:size(2), k:size(3), v:size(4)
  local G, off = H // Hkv, Lk - Lq
  local scale = o.scale or (D > 0 and 1 / math.sqrt(D) or 1)
  local dtype = q:dtype()
  q, k, v = q:float() * scale, k:float(), v:float() -- scores come out scaled
  if mask ~= nil then
    while mask:dim() < 4 do mask = mask:unsqueeze(1) end
    if mask:dtype() ~= "bool" then mask = mask:float() end
  end
  local training = self:is_training() and o.dropout > 0
  local bs = o.block_size
  local b_idx = here(core.arange(0, B)):view(B, 1, 1, 1)
  local h_idx = here(core.arange(0, H)):view(1, H, 1, 1)
  local tiles = {}
  for i0 = 0, Lq - 1, bs do
    local bq = math.min(bs, Lq - i0)
    local q_idx = here(core.arange(i0 + off, i0 + off + bq)):view(1, 1, bq, 1)
    -- (B, Hkv, G * bq, D): one matmul per kv head serves its G query heads
    local qt = q:narrow(3, i0 + 1, bq)
    if G > 1 then qt = qt:reshape(B, Hkv, G * bq, D) end
    local bops = ops
    local acc, m, l = bops.new(B, H, bq, Dv)
    local last_key = o.causal and math.min(Lk, i0 + bq + off) or Lk -- keys [0, last_key)
    for j0 = 0, last_key - 1, bs do
      local bk = math.min(bs, Lk - j0)
      local kv_idx = here(core.arange(j0, j0 + bk)):view(1, 1, 1, bk)
      local keep = true
      if o.mask_mod then
        keep = o.mask_mod(b_idx, h_idx, q_idx, kv_idx)
        if type(keep) ~= "boolean" and not (core.is_tensor(keep) and keep:dtype() == "bool") then
          error(string.format("%s: mask_mod must return a bool Tensor (or a boolean), got %s", FN,
            core.is_tensor(keep) and keep:dtype() .. " Tensor" or type(keep)), 2)
        end
        if core.is_tensor(keep) and not keep:max():item() then keep = false end -- an empty tile
      end
      if keep ~= false then
        local s = qt:matmul(k:narrow(3, j0 + 1, bk):transpose(3, 4)) -- (B, Hkv, G*bq, bk)
        if G > 1 then s = s:reshape(B, H, bq, bk) end
        if o.score_mod then
          s = o.score_mod(s, b_idx, h_idx, q_idx, kv_idx)
          if not core.is_tensor(s) then
            error(string.format("%s: score_mod must return a Tensor, got %s", FN, type(s)), 2)
          end
          if shape_str(s) ~= string.format("(%d, %d, %d, %d)", B, H, bq, bk) then s = s:expand(B, H, bq, bk) end
        end
        if bops == c_ops and s.requires_grad and core.is_grad_enabled() then
          -- score_mod brought in a tensor that requires grad (ALiBi slopes, a
          -- bias table): the C step records nothing, so this block goes on
          -- with the tensor-op step from the state it has reached
          bops = device_ops(dev)
          m, l = m:view(B, H, bq, 1), l:view(B, H, bq, 1)
        end
        if keep ~= true then s = core.where(keep, s, NEG_INF) end
        if o.causal and j0 + bk - 1 > i0 + off then s = core.where(q_idx:ge(kv_idx), s, NEG_INF) end
        if mask ~= nil then
          local mt = narrow_mask(narrow_mask(mask, 3, i0, bq), 4, j0, bk)
          if mt:dtype() == "bool" then s = core.where(mt, s, NEG_INF) else s = s + mt end
        end
        local drop
        if training then drop = here(core.rand(B, H, bq, bk):ge(o.dropout)) end
        acc, m, l = bops.step(acc, m, l, s, v:narrow(3, j0 + 1, bk), drop, 1 / (1 - o.dropout))
      end
    end
    tiles[#tiles + 1] = bops.finish(acc, l, dtype)
  end
  if #tiles == 0 then return here(core.zeros({ B, H, Lq, Dv }, dtype)) end
  if #tiles == 1 then return tiles[1] end
  return P.cat(tiles, 3)
end

function FlexAttention:extra_repr()
  local o = self.opts
  local parts = { O.repr(o, { "block_size", "causal", "scale", "dropout" }) }
  if o.score_mod then parts[#parts + 1] = "score_mod=<function>" end
  if o.mask_mod then parts[#parts + 1] = "mask_mod=<function>" end
  return table.concat(parts, ", ")
end

registry.register_attention(FN, FlexAttention, {
  exact = true, complexity = "O(L^2 D), skips empty tiles", causal = true, mask = true, gqa = true,
  incremental = true, devices = "cpu, cuda", paper = "Dong et al. 2024 (FlexAttention)",
  summary = "user score_mod / mask_mod on tile tensors, online softmax over tiles, empty tiles skipped",
})

return FlexAttention
