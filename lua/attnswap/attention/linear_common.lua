-- What the linear-cost implementations (linear, performer, efficient,
-- nystrom) share: the contract check, GQA, key-padding masks, and the
-- kernelised attention  out = phi(Q) (phi(K)^T V) / phi(Q) (phi(K)^T 1)
-- that never forms the Lq x Lk matrix.  Not an attention itself.
local core = require "attnswap.core"
local P = require "attnswap.attention.ops_path"

local M = {
  -- true: causal takes the chunked tensor-op scan (causal_ops) on the CPU too,
  -- under autograd or not (bench/linear_scan_bwd.lua's baseline, specs)
  composite = false,
}

--- Checks q, k, v, mask against the attention contract (one check for every
--- implementation, runtime/attention/contract.c) and rejects dropout > 0.
function M.check(fn, q, k, v, mask, o, level)
  core.attention_check(fn, q, k, v, mask)
  if o.dropout and o.dropout > 0 then
    error(fn .. ": dropout is not supported (there is no attention matrix to drop from)", level or 3)
  end
end

--- k or v (B, Hkv, L, D) repeated to the query heads H (grouped-query attention).
function M.expand_heads(t, H)
  local B, Hkv, L, D = t:size(1), t:size(2), t:size(3), t:size(4)
  if Hkv == H then return t end
  return t:unsqueeze(3):expand(B, Hkv, H // Hkv, L, D):reshape(B, H, L, D)
end

function M.float(t) return P.float(t) end

local function shape_str(t) return tostring(t:shape()) end

--- A key-padding mask as a float keep-weight (B or 1, 1, Lk, 1), or nil.
--- Accepted: a bool keep-mask or a float mask of 0 / -inf that varies only
--- over the batch and the keys (broadcastable to (B, 1, 1, Lk)).
function M.key_padding(fn, mask, Lk)
  if mask == nil then return nil end
  local m = mask
  while m:dim() < 4 do m = m:unsqueeze(1) end
  if m:size(2) ~= 1 or m:size(3) ~= 1 or m:size(4) ~= Lk then
    error(string.format("%s: only key-padding masks are supported (broadcastable to (B, 1, 1, Lk)), got shape %s",
      fn, shape_str(mask)), 3)
  end
  local keep
  if m:dtype() == "bool" then
    keep = m
  else
    -- only which keys are kept is read: a mask that asks for a gradient would get none
    if m.requires_grad and core.is_grad_enabled() then
      error(string.format("%s: the mask requires grad, but this implementation reads it only as a key-padding " ..
        "keep-mask (0 / -inf), which has no gradient; pass a bool mask or mask:detach()", fn), 3)
    end
    keep = m:eq(0)
    if keep:logical_or(m:eq(-math.huge)):logical_not():sum():item() > 0 then
      error(fn .. ": a float mask must hold only 0 (keep) and -inf (masked) here", 3)
    end
  end
  return keep:float():reshape(m:size(1), 1, Lk, 1)
end

local CHUNK = 64 -- keys per chunk of the ops path's causal scan

-- The causal sums on device ops, chunked: query i sees keys j <= e_i =
-- i + Lk - Lq.  Queries are grouped by g = floor((e_i + 1) / CHUNK), the
-- number of whole key chunks before their own; a group reads the running
-- state of those chunks (S = sum phi(k_j) v_j^T, z = sum phi(k_j), one
-- matmul per chunk added in order) plus its own partial chunk as a small
-- masked (queries x CHUNK) product.  O(L F Dv + L CHUNK (F + Dv)), float32
-- sums (the C scan keeps them in double).
local function causal_ops(fq, fk, v)
  local B, H, Lq, F = fq:size(1), fq:size(2), fq:size(3), fq:size(4)
  local Lk, Dv = fk:size(3), v:size(4)
  local dev = fq:device()
  local out = {}
  local S = P.on(core.zeros(B, H, F, Dv), dev)
  local z = P.on(core.zeros(B, H, F, 1), dev)
  local done = 0 -- key chunks in S, z
  local off = Lk - Lq
  local i = 0    -- next query (0-based)
  while i < Lq do
    local e = i + off -- last key of query i
    local g = e < 0 and 0 or math.min((e + 1) // CHUNK, (Lk + CHUNK - 1) // CHUNK)
    -- the queries of this group: e_i + 1 < (g + 1) * CHUNK
    local last = math.min(Lq - 1, (g + 1) * CHUNK - 2 - off)
    if e < 0 then last = math.min(Lq - 1, -1 - off) end -- queries before every key
    local n = last - i + 1
    while done < g do
      local j0 = done * CHUNK
      local c = math.min(CHUNK, Lk - j0)
      local kc, vc = fk:narrow(3, j0 + 1, c), v:narrow(3, j0 + 1, c)
      S = S + kc:transpose(3, 4):matmul(vc)
      z = z + kc:sum(3, true):transpose(3, 4)
      done = done + 1
    end
    local qg = fq:narrow(3, i + 1, n)
    local num, den = qg:matmul(S), qg:matmul(z)
    local j0 = g * CHUNK
    if e >= 0 and j0 < Lk then -- the group's own partial chunk, masked j <= e_i
      local c = math.min(CHUNK, Lk - j0)
      local a = qg:matmul(fk:narrow(3, j0 + 1, c):transpose(3, 4)) -- (B, H, n, c)
      local qi = P.on(core.arange(i + off, i + off + n), dev):view(n, 1)
      local kj = P.on(core.arange(j0, j0 + c), dev):view(1, c)
      a = core.where(kj:le(qi), a, 0.0)
      num = num + a:matmul(v:narrow(3, j0 + 1, c))
      den = den + a:sum(4, true)
    end
    local safe = den:ne(0)
    out[#out + 1] = core.where(safe, num / core.where(safe, den, 1.0), 0.0)
    i = last + 1
  end
  if #out == 0 then return P.on(core.zeros(B, H, Lq, Dv), dev) end
  return P.cat(out, 3)
end

--- On the CPU: the fused kernel that makes the features itself (feature
--- "elu1", "favor" with projection w, or "softmax", which is not causal), so
--- no L x F tensor is ever allocated; keep is key_padding's weight or nil.
--- Returns nil elsewhere (q on a device, or a gradient needed: the kernel has
--- no backward): the caller takes the tensor-op path.
function M.fused(q, k, v, keep, w, feature, causal)
  if P.active(q, k, v, keep) then return nil end
  if keep then keep = keep:reshape(keep:size(1), keep:size(3)) end
  return core.kernelized_attention(q, k, v, keep, w, feature, causal)
end

--- out = phi_q (phi_k^T v) / (phi_q . sum phi_k); causal by the prefix scan in C
--- when fq is on the CPU (float32 or float64; the halves in float32), which
--- records its own backward (two more scans, O(L F Dv), no per-chunk state);
--- on device ops (ops_path) elsewhere, when forced (P.force) or when
--- M.composite is set: autograd of the chunked sums keeps O(L F Dv / CHUNK)
--- state, not one per step.
function M.attend(fq, fk, v, causal)
  if causal then
    fq, fk, v = M.float(fq), M.float(fk), M.float(v)
    if M.composite or P.force or fq:device() ~= "cpu" then return causal_ops(fq, fk, v) end
    -- one dtype for the scan: float64 only when all three are
    if fq:dtype() ~= fk:dtype() or fq:dtype() ~= v:dtype() then fq, fk, v = fq:float(), fk:float(), v:float() end
    return core.linear_attention_causal(fq, fk, v)
  end
  local kv = fk:transpose(3, 4):matmul(v)              -- (B, H, F, Dv)
  local z = fk:sum(3, true):transpose(3, 4)            -- (B, H, F, 1)
  local num, den = fq:matmul(kv), fq:matmul(z)         -- (B, H, Lq, Dv), (B, H, Lq, 1)
  local safe = den:ne(0)
  return core.where(safe, num / core.where(safe, den, 1.0), 0.0)
end

return M
