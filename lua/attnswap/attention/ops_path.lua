-- The swap zoo's second forward path: each implementation whose C kernel is
-- CPU-only (sparse, local, sink, dynamic, linear, performer, efficient,
-- nystrom, relative, adaptive, gated, entmax, sigmoid, cosine, flex) also
-- has a forward composed only of attnswap tensor ops (matmul, softmax,
-- where, exp, reductions, index_select, flash_attention, ...), taken when q
-- is not on the CPU, so it runs on whatever device the tensors are on.  It
-- is the same mechanism as the C kernel, with the same options and contract
-- (fully masked query rows give zeros); nothing is moved to the CPU.
--
-- What they share lives here: the switch, the contract check, positions,
-- masks, GQA, the materialised "weights" driver, dropout.  Not an attention.
--
-- Tests force the ops path on CPU tensors to compare it with the C kernels:
--   require("attnswap.attention.ops_path").force = true
local core = require "attnswap.core"

local M = {
  -- true: every implementation takes the ops path, on the CPU too (tests)
  force = false,
  -- scores held at once by the weights driver (elements of B*H*rows*Lk)
  block_elements = 1 << 24,
}

local NEG_INF = -math.huge
M.NEG_INF = NEG_INF

--- Does a gradient have to flow through this call?  Grad mode on, and one
--- of the tensors given (q, k, v, mask, ...) or a parameter of module (the
--- core: gate, span, bias table, temperature, alpha) requires grad.
function M.grad_needed(module, ...)
  if not core.is_grad_enabled() then return false end
  for i = 1, select("#", ...) do
    local t = select(i, ...)
    if core.is_tensor(t) and t.requires_grad then return true end
  end
  if module ~= nil then
    for _, p in module:named_parameters() do
      if p.requires_grad then return true end
    end
  end
  return false
end

--- Does this call take the ops path?  Off the CPU (the C kernels are CPU
--- only), when forced (tests), and whenever a gradient is needed: the fused
--- CPU kernels are an inference-only fast path with no backward, the
--- composite is the definition autograd differentiates.  The one place the
--- choice is made (issue 17).
function M.active(q, k, v, mask, module)
  if M.force then return true end
  if core.is_tensor(q) and q:device() ~= "cpu" then return true end
  -- float64 (a gradcheck): the fused kernels take float32 and the halves only
  if core.is_tensor(q) and q:dtype() == "float64" then return true end
  return M.grad_needed(module, q, k, v, mask)
end

local CAT_INPUTS = 4 -- the most tensors one cat records a gradient through (AS_NODE_MAX_INPUTS)

--- core.cat(ts, dim) for any number of tensors under autograd too: one cat
--- records at most CAT_INPUTS inputs, so longer lists are joined as a tree of
--- cats (log4(n) copies) when a gradient is needed, in one cat otherwise.
function M.cat(ts, dim)
  if #ts == 1 then return ts[1] end
  if #ts <= CAT_INPUTS or not M.grad_needed(nil, table.unpack(ts)) then return core.cat(ts, dim) end
  local groups = {}
  for i = 1, #ts, CAT_INPUTS do
    groups[#groups + 1] = core.cat({ table.unpack(ts, i, math.min(#ts, i + CAT_INPUTS - 1)) }, dim)
  end
  return M.cat(groups, dim)
end

--- t on device dev (a no-op when it is there already).
function M.on(t, dev)
  if t:device() ~= dev then return t:to(dev) end
  return t
end

local moved = setmetatable({}, { __mode = "k" }) -- tensor -> {dev -> copy}

--- An option tensor (a layout, made on the host) on dev, copied once per device.
function M.on_cached(t, dev)
  if t:device() == dev then return t end
  local per = moved[t]
  if not per then per = {}; moved[t] = per end
  local c = per[dev]
  if not c then c = t:to(dev); per[dev] = c end
  return c
end

--- t in the composites' compute dtype: float32 for float32 and the halves,
--- float64 kept (a float64 gradcheck runs every op in float64).
function M.float(t)
  local dt = t:dtype()
  if dt == "float32" or dt == "float64" then return t end
  return t:float()
end

--- The attention contract (one check for every implementation) plus the
--- options every ops path reads; returns B, H, Hkv, Lq, Lk, D, Dv, device.
function M.check(fn, q, k, v, mask)
  core.attention_check(fn, q, k, v, mask)
  return q:size(1), q:size(2), k:size(2), q:size(3), k:size(3), q:size(4), v:size(4), q:device()
end

--- A parameter or buffer of the core must sit on q's device: nothing moves
--- implicitly.
function M.check_param(fn, name, t, dev)
  if t:device() ~= dev then
    error(string.format("%s: %s is on %s but q is on %s; move the core there first (core:to(\"%s\"))",
      fn, name, t:device(), dev, dev), 3)
  end
end

function M.scale(o, D)
  return o.scale or (D > 0 and 1 / math.sqrt(D) or 1)
end

--- Query positions i' = i + Lk - Lq as (Lq, 1) and key positions (1, Lk),
--- int64 on dev: bottom-right alignment, as causal uses it.
function M.positions(Lq, Lk, dev)
  local qi = M.on(core.arange(Lk - Lq, Lk), dev):view(Lq, 1)
  local kj = M.on(core.arange(0, Lk), dev):view(1, Lk)
  return qi, kj
end

--- k or v (B, Hkv, L, D) repeated to H query heads (expand, then one copy).
function M.expand_heads(t, H)
  local B, Hkv, L, D = t:size(1), t:size(2), t:size(3), t:size(4)
  if Hkv == H then return t end
  return t:unsqueeze(3):expand(B, Hkv, H // Hkv, L, D):reshape(B, H, L, D)
end

--- scores (B, H, Lq, Lk) = q k^T * scale; GQA by viewing q as (B, Hkv, G Lq, D)
--- against k, so K is never repeated.
function M.scores(q, k, scale)
  local B, H, Lq, D = q:size(1), q:size(2), q:size(3), q:size(4)
  local Hkv, Lk = k:size(2), k:size(3)
  local kt = k:transpose(3, 4)
  if H == Hkv then return q:matmul(kt) * scale end
  return (q:reshape(B, Hkv, (H // Hkv) * Lq, D):matmul(kt) * scale):reshape(B, H, Lq, Lk)
end

--- weights p (B, H, Lq, Lk) times v (B, Hkv, Lk, Dv), GQA as in scores.
function M.weights_times_v(p, v)
  local B, H, Lq, Lk = p:size(1), p:size(2), p:size(3), p:size(4)
  local Hkv, Dv = v:size(2), v:size(4)
  if H == Hkv then return p:matmul(v) end
  return p:reshape(B, Hkv, (H // Hkv) * Lq, Lk):matmul(v):reshape(B, H, Lq, Dv)
end

--- A mask broadcastable to (B, H, Lq, Lk) as a 4-d bool or float32 tensor.
function M.mask4(mask)
  if mask == nil then return nil end
  while mask:dim() < 4 do mask = mask:unsqueeze(1) end
  if mask:dtype() ~= "bool" then mask = M.float(mask) end
  return mask
end

--- The user's mask combined with a mechanism's own keep-mask (bool) or
--- additive bias (float), as one mask for flash_attention.
function M.combine(mask, keep, bias)
  local m = mask
  if keep ~= nil then
    if m == nil then m = keep
    elseif m:dtype() == "bool" then m = m:logical_and(keep)
    else m = core.where(keep, M.float(m), NEG_INF) end
  end
  if bias ~= nil then
    if m == nil then m = bias
    elseif m:dtype() == "bool" then m = core.where(m, bias, NEG_INF)
    else m = M.float(m) + bias end
  end
  return m
end

--- Exact softmax attention on device ops (the flash kernel of q's device),
--- with the contract's options; dropout uses the flash kernel's hash.
--- When a gradient must flow and q's device has no fused flash backward,
--- the materialising sdp math path, whose ops all record theirs (O(Lq Lk)
--- memory per head instead of O(Lq)); float64 keeps its precision there.
function M.flash(q, k, v, mask, o, training, scale)
  local opts = { causal = o.causal, scale = scale or o.scale, dropout = o.dropout }
  if q:dtype() == "float64" or (M.grad_needed(nil, q, k, v, mask) and not core.flash_has_backward(q)) then
    return core.sdp_attention(q, k, v, mask, opts, training)
  end
  return core.flash_attention(q, k, v, mask, opts, training)
end

--- softmax over the last dim; a row of -inf gives zeros (the runtime's softmax
--- does so; kept here so every ops path names one function).
function M.masked_softmax(s)
  return s:softmax(-1)
end

--- Dropout on weights p (training, rate > 0): the keep draw is made on the
--- host from the seeded generator and copied, kept weights scaled 1 / (1 - p).
function M.dropout(p, rate, training)
  if not training or not rate or rate <= 0 then return p end
  local keep = M.on(core.rand(p:size(1), p:size(2), p:size(3), p:size(4)):ge(rate), p:device())
  return core.where(keep, p * (1 / (1 - rate)), 0.0)
end

--- The materialising driver of the mechanisms that need the weights
--- themselves (dynamic, entmax, sigmoid): per block of query rows,
---   S = q k^T * scale, causal / bool mask -inf, float mask added,
---   P = weigh(S, ctx), P = dropout(P), O = P V.
--- ctx: {qi = (bq, 1) query positions, kj = (1, Lk) key positions, i0, bq}.
--- Returns (B, H, Lq, Dv) in q's dtype.
function M.weights_attention(fn, q, k, v, mask, o, training, weigh)
  local B, H, _, Lq, Lk, D, Dv, dev = M.check(fn, q, k, v, mask)
  local dtype = q:dtype()
  if B * H * Lq * Dv == 0 or Lk == 0 then return M.on(core.zeros({ B, H, Lq, Dv }, dtype), dev) end
  local scale = M.scale(o, D)
  local qf, kf, vf = M.float(q), M.float(k), M.float(v)
  local m4 = M.mask4(mask)
  local qpos, kj = M.positions(Lq, Lk, dev)
  local rows = math.max(1, math.min(Lq, M.block_elements // math.max(1, B * H * Lk)))
  local outs = {}
  for i0 = 0, Lq - 1, rows do
    local bq = math.min(rows, Lq - i0)
    local qi = qpos:narrow(1, i0 + 1, bq)
    local s = M.scores(qf:narrow(3, i0 + 1, bq), kf, scale)
    if o.causal then s = core.where(kj:le(qi), s, NEG_INF) end
    if m4 ~= nil then
      local mt = m4:size(3) == 1 and m4 or m4:narrow(3, i0 + 1, bq)
      if mt:dtype() == "bool" then s = core.where(mt, s, NEG_INF) else s = s + mt end
    end
    local p = weigh(s, { qi = qi, kj = kj, i0 = i0, bq = bq })
    p = M.dropout(p, o.dropout, training)
    outs[#outs + 1] = M.weights_times_v(p, vf)
  end
  local out = M.cat(outs, 3)
  return out:to(dtype)
end

return M
