-- What the linear-cost implementations (linear, performer, efficient,
-- nystrom) share: the contract check, GQA, key-padding masks, and the
-- kernelised attention  out = phi(Q) (phi(K)^T V) / phi(Q) (phi(K)^T 1)
-- that never forms the Lq x Lk matrix.  Not an attention itself.
local core = require "attnswap.core"

local M = {}

--- Checks q, k, v, mask against the attention contract (one check for every
--- implementation, runtime/attention_check.c) and rejects dropout > 0.
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
    keep = m:eq(0)
    if keep:logical_or(m:eq(-math.huge)):logical_not():sum():item() > 0 then
      error(fn .. ": a float mask must hold only 0 (keep) and -inf (masked) here", 3)
    end
  end
  return keep:float():reshape(m:size(1), 1, Lk, 1)
end

--- out = phi_q (phi_k^T v) / (phi_q . sum phi_k); causal by the prefix scan in C.
function M.attend(fq, fk, v, causal)
  if causal then return core.linear_attention_causal(fq, fk, v) end
  local kv = fk:transpose(3, 4):matmul(v)              -- (B, H, F, Dv)
  local z = fk:sum(3, true):transpose(3, 4)            -- (B, H, F, 1)
  local num, den = fq:matmul(kv), fq:matmul(z)         -- (B, H, Lq, Dv), (B, H, Lq, 1)
  local safe = den:ne(0)
  return core.where(safe, num / core.where(safe, den, 1.0), 0.0)
end

return M
