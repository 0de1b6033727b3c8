-- Attention over gathered key blocks: the composite of local_attention and
-- sparse_attention in their own cost class (issue 17).  The queries are cut
-- into items of c rows; each item sees only W keys (its band, or its
-- layout row's kept blocks), gathered with index_select; items with the
-- same W are stacked on the batch dim and run as ONE flash call:
--
--   q (B, H, Lq, D) -> rows qi -> (n, B*Hq, c, D)
--   k (B, Hkv, Lk, D) -> rows ki -> (n, B*Hk, W, D)       (v likewise)
--   keep (n, 1, c, W): the mechanism's keys (band / layout, causal, in range)
--   out (n, B*Hq, c, Dv) -> (B, Hq, n*c, Dv) -> rows of (B, H, Lq, Dv)
--
-- Compute O(L W D) and memory O(L W D / c) per head (the gathered K and V,
-- which each flash node keeps for its backward): no (Lq, Lk) tensor.  Folding B
-- into the head dim keeps GQA (head b*H + h reads kv head b*Hkv + h // G)
-- and lets keep broadcast over batch and heads.  Gradients: each flash call
-- records its own node (the fused flash backward where the device has one,
-- sdp math for float64 and devices without); index_select's backward
-- scatter-adds the overlapping windows' gradients back, once per call.
--
-- local_attention takes the other form by default (local_narrow): a flash
-- call per chunk on narrowed q, k, v, which copies no K or V.  It used to
-- cost a zero-filled gradient of all of K per chunk; since the engine adds
-- narrow's gradient in place (a node's pending gradient, a leaf's sum of
-- slices), it is as fast as the gathered form with less than half its
-- memory (CPU, L 4096, w 64, fwd+bwd: 116 against 121 ms, +66 against
-- +145 MiB; docs/performance.md).
--
-- A plan holds the indices and the keep-mask; it depends only on the
-- shapes and options, so callers cache it.  Not an attention.
local core = require "attnswap.core"
local P = require "attnswap.attention.ops_path"

local M = {
  -- true: local and sparse take their dense composite (an (Lq, Lk) keep-mask
  -- over all keys), the reference the tests compare with
  dense = false,
  -- rows per item of local_attention (nil: max(window_size, LOCAL_ROWS))
  local_chunk = nil,
  -- true: local's chunks run one flash call each on narrowed q, k, v (no
  -- gathered copies), instead of one call on gathered windows
  local_narrow = true,
}

M.LOCAL_ROWS = 64

local function i64(t) return core.tensor(t, "int64") end

--- Does this call take the blocked composite?  Not with dropout in
--- training: the flash kernel's dropout hashes (seed, b, h, i, j) of its own
--- call, so a re-batched call would drop other entries than the dense one
--- (and than the fused kernel); not for empty shapes (the dense path is as
--- cheap and handles them).
function M.usable(q, k, v, o, training)
  if M.dense then return false end
  if training and o.dropout and o.dropout > 0 then return false end
  for d = 1, 4 do
    if q:size(d) == 0 or k:size(d) == 0 or v:size(d) == 0 then return false end
  end
  return true
end

-- (B, X, n*c, D) contiguous -> (n, B*X, c, D), a strided view (flash reads
-- strides): no copy past index_select's
local function fold(t, n, c)
  local B, X, D = t:size(1), t:size(2), t:size(4)
  return t:view(B * X, n, c, D):transpose(1, 2)
end

-- (n, B*X, c, Dv) -> (B, X, n*c, Dv)
local function unfold(t, B, X)
  local n, c, Dv = t:size(1), t:size(3), t:size(4)
  return t:transpose(1, 2):reshape(B, X, n * c, Dv)
end

-- The user's mask m4 (Bm, Hm, Lqm, Lkm), each dim 1 or full, at the group's
-- (query, key) pairs: (n, 1 | B*Hq, 1 | c, 1 | W), gathered by one
-- index_select of its flattened (Hm * Lqm * Lkm) elements (so an additive
-- mask gets its gradient through it).
local function gather_mask(m4, g, B, Hq, LH)
  local Bm, Hm, Lqm, Lkm = m4:size(1), m4:size(2), m4:size(3), m4:size(4)
  local n = g.n
  local cr, wr = Lqm == 1 and 1 or g.c, Lkm == 1 and 1 or g.W
  local idx = P.on(core.zeros({ n, 1, 1, 1 }, "int64"), g.qpos:device())
  if Lqm > 1 then idx = idx + (g.qpos * Lkm):view(n, 1, cr, 1) end
  if Lkm > 1 then idx = idx + g.kpos:view(n, 1, 1, wr) end
  local Hsel = 1
  if Hm > 1 then
    if LH == 1 then
      Hsel = Hm
      idx = idx + P.on(core.arange(0, Hm) * (Lqm * Lkm), idx:device()):view(1, Hm, 1, 1)
    else
      idx = idx + (g.head * (Lqm * Lkm)):view(n, 1, 1, 1)
    end
  end
  local shape = idx:shape()
  local cnt = shape[1] * shape[2] * shape[3] * shape[4]
  local flat = m4:reshape(Bm, Hm * Lqm * Lkm):index_select(2, idx:reshape(cnt) + 1)
  local gm = flat:view(Bm, n, shape[2], shape[3], shape[4]):permute(2, 1, 3, 4, 5)
  if Bm * shape[2] ~= 1 and not (Bm == B and shape[2] == Hq) then
    gm = gm:expand(n, B, Hq, shape[3], shape[4])
  end
  return gm:reshape(n, gm:size(2) * gm:size(3), shape[3], shape[4])
end

--- The blocked forward: q (B, H, Lq, D), k, v (B, Hkv, Lk, D|Dv), m4 the
--- user's mask as ops_path.mask4 gives it (or nil); o: scale.  plan:
---   LH      1, or H when each query head has its own keys (per-head layouts)
---   groups  { n, c, W, qi (n*c), ki (n*W), qpos (n, c), kpos (n, W),
---             head (n) [LH = H], keep (n, 1, c, W) bool, q_in_order (qi
---             is 1 .. n*c = LH*Lq) }, on q's device;
---           qi indexes (1-based, as index_select) the LH*Lq rows of q
---           (B, H/LH, LH*Lq, D), ki the KH*Lk rows of k (B, Hkv/KH, KH*Lk,
---           D), KH = 1 or Hkv (LH = H); qpos, kpos (0-based) the query and
---           key each row stands for, clamped into range; head the item's l
---   inv     int64 (LH*Lq): each query's row (1-based) in the groups'
---           outputs joined (plus one zero row at the end when zero_row);
---           nil: in order
--- Returns (B, H, Lq, Dv) in q's dtype.
function M.attend(q, k, v, m4, o, plan)
  local B, H, Lq, D = q:size(1), q:size(2), q:size(3), q:size(4)
  local Hkv, Lk, Dv = k:size(2), k:size(3), v:size(4)
  local LH = plan.LH
  local Hq = H // LH
  local KH = LH == 1 and 1 or Hkv
  local Hk = Hkv // KH
  local qv = q:reshape(B, Hq, LH * Lq, D)
  local kv, vv = k:reshape(B, Hk, KH * Lk, D), v:reshape(B, Hk, KH * Lk, Dv)
  local fo = { causal = false, scale = P.scale(o, D) }
  local outs = {}
  for _, g in ipairs(plan.groups) do
    local qg = g.q_in_order and fold(qv:contiguous(), g.n, g.c) or fold(qv:index_select(3, g.qi), g.n, g.c)
    local kg = fold(kv:index_select(3, g.ki), g.n, g.W)
    local vg = fold(vv:index_select(3, g.ki), g.n, g.W)
    local mk = g.keep
    if m4 ~= nil then mk = P.combine(gather_mask(m4, g, B, Hq, LH), g.keep) end
    outs[#outs + 1] = unfold(P.flash(qg, kg, vg, mk, fo, false), B, Hq)
  end
  if plan.zero_row then outs[#outs + 1] = P.on(core.zeros({ B, Hq, 1, Dv }, q:dtype()), q:device()) end
  local out = P.cat(outs, 3)
  if plan.inv ~= nil then
    out = out:index_select(3, plan.inv)
  elseif out:size(3) > LH * Lq then
    out = out:narrow(3, 1, LH * Lq)
  end
  return out:reshape(B, H, Lq, Dv)
end

--- local's chunks one at a time: flash on q, k, v narrowed to the chunk's
--- rows and its window (views, nothing copied), the keep-mask and the
--- user's mask narrowed likewise; the outputs joined by ops_path.cat.
function M.attend_chunks(q, k, v, m4, o, plan)
  local g, Lq = plan.groups[1], q:size(3)
  local fo = { causal = false, scale = P.scale(o, q:size(4)) }
  local outs = {}
  for t = 1, g.n do
    local i0, s = (t - 1) * g.c, plan.starts[t]
    local ct = math.min(g.c, Lq - i0)
    local mk = g.keep:narrow(1, t, 1)
    if ct < g.c then mk = mk:narrow(3, 1, ct) end
    if m4 ~= nil then
      local mt = m4
      if mt:size(3) > 1 then mt = mt:narrow(3, i0 + 1, ct) end
      if mt:size(4) > 1 then mt = mt:narrow(4, s + 1, g.W) end
      mk = P.combine(mt, mk)
    end
    outs[t] = P.flash(q:narrow(3, i0 + 1, ct), k:narrow(3, s + 1, g.W), v:narrow(3, s + 1, g.W), mk, fo, false)
  end
  return P.cat(outs, 3)
end

local function cdiv(a, b) return (a + b - 1) // b end
M.cdiv = cdiv

--- local_attention's plan: items of c consecutive queries; item t (rows
--- t*c .. t*c + c - 1, at positions i' = i + Lk - Lq) sees the W = c + 2w
--- keys from its first row's i' - w (causal: W = c + w), shifted to stay
--- inside [0, Lk) and at most Lk of them.  The last item's rows past Lq
--- repeat query Lq - 1 and are dropped.
function M.local_plan(Lq, Lk, w, causal, c, dev)
  c = math.max(1, math.min(c, Lq))
  local n = cdiv(Lq, c)
  local W = math.min(causal and c + w or c + 2 * w, Lk)
  local rows = core.arange(0, n * c)
  local qpos = rows:clamp(0, Lq - 1)
  local first = core.arange(0, n) * c + (Lk - Lq - w)
  local kpos = first:clamp(0, Lk - W):view(n, 1) + core.arange(0, W):view(1, W)
  local ip = (rows + (Lk - Lq)):view(n, 1, c, 1)
  local kp = kpos:view(n, 1, 1, W)
  local keep = kp:ge(ip - w)
  keep = keep:logical_and(causal and kp:le(ip) or kp:le(ip + w))
  return {
    LH = 1,
    starts = first:clamp(0, Lk - W):tolist(), -- each chunk's first key (0-based)
    groups = { {
      n = n, c = c, W = W,
      q_in_order = n * c == Lq, -- the chunks are q's rows as they are: no gather
      qi = P.on(qpos + 1, dev), ki = P.on(kpos:reshape(n * W) + 1, dev),
      qpos = P.on(qpos:view(n, c), dev), kpos = P.on(kpos, dev),
      keep = P.on(keep, dev),
    } },
  }
end

--- sparse_attention's plan from its layout as blocks on the host.
---   kept[l][rb][kb]  (Lua booleans) layout row block rb of head l keeps
---                    key block kb; rows r = rb*bs .. hold query r - off
---   elem             nil, or the element layout (LH, Lq, Lk) bool (host)
---                    whose entries further restrict kept blocks
--- Items (l, rb) are grouped by their number m of kept key blocks (causal
--- drops blocks past the item's last query); a group is one flash call of
--- bs query rows against m*bs keys each.  Rows that keep nothing read zeros.
function M.sparse_plan(kept, LH, H, Hkv, Lq, Lk, bs, off, causal, elem, dev)
  local G = H // Hkv
  local shift = Lk - Lq
  local by_m, order = {}, {}
  for l = 1, LH do
    local rowsl = kept[l]
    for rb = 1, #rowsl do
      local r0 = (rb - 1) * bs - off -- the item's first query
      local qlo, qhi = math.max(r0, 0), math.min(r0 + bs - 1, Lq - 1)
      if qlo <= qhi then
        local kbs = {}
        local krow = rowsl[rb]
        for kb = 1, #krow do
          if krow[kb] and (not causal or (kb - 1) * bs <= qhi + shift) then kbs[#kbs + 1] = kb - 1 end
        end
        local m = #kbs
        local grp = by_m[m]
        if not grp then grp = {}; by_m[m] = grp; order[#order + 1] = m end
        grp[#grp + 1] = { l = l - 1, r0 = r0, kbs = kbs }
      end
    end
  end
  table.sort(order)
  local inv, base, zero_row = {}, 0, false
  local groups = {}
  local zero_at -- the zero row's position, known once every group is counted
  local pending = {}
  for _, m in ipairs(order) do
    local items = by_m[m]
    local n = #items
    if m == 0 then
      zero_row = true
      for _, it in ipairs(items) do
        for t = 0, bs - 1 do
          local i = it.r0 + t
          if i >= 0 and i < Lq then pending[#pending + 1] = it.l * Lq + i end
        end
      end
    else
      local W = m * bs
      local qi, qraw, heads, ki, kraw = {}, {}, {}, {}, {}
      for x, it in ipairs(items) do
        heads[x] = it.l
        for t = 0, bs - 1 do
          local i = it.r0 + t
          qraw[#qraw + 1] = i
          local ic = math.min(math.max(i, 0), Lq - 1)
          qi[#qi + 1] = it.l * Lq + ic + 1
          if i >= 0 and i < Lq then inv[it.l * Lq + i + 1] = base + (x - 1) * bs + t + 1 end
        end
        local kvh = LH == 1 and 0 or it.l // G
        for _, kb in ipairs(it.kbs) do
          for t = 0, bs - 1 do
            local j = kb * bs + t
            kraw[#kraw + 1] = j
            ki[#ki + 1] = kvh * Lk + math.min(j, Lk - 1) + 1
          end
        end
      end
      base = base + n * bs
      local qr = i64(qraw):view(n, 1, bs, 1)
      local kr = i64(kraw):view(n, 1, 1, W)
      local qpos, kpos = qr:clamp(0, Lq - 1):view(n, bs), kr:clamp(0, Lk - 1):view(n, W)
      local keep = kr:lt(Lk):expand(n, 1, bs, W)
      if causal then keep = keep:logical_and(kr:le(qr + shift)) end
      local head = i64(heads)
      if elem ~= nil then
        local idx = head:view(n, 1, 1) * (Lq * Lk) + qpos:view(n, bs, 1) * Lk + kpos:view(n, 1, W)
        local e = elem:reshape(LH * Lq * Lk):index_select(1, idx:reshape(n * bs * W) + 1)
        keep = keep:logical_and(e:view(n, 1, bs, W))
      end
      groups[#groups + 1] = {
        n = n, c = bs, W = W,
        qi = P.on(i64(qi), dev), ki = P.on(i64(ki), dev),
        qpos = P.on(qpos, dev), kpos = P.on(kpos, dev), head = P.on(head, dev),
        keep = P.on(keep:contiguous(), dev),
      }
    end
  end
  zero_at = base
  for _, r in ipairs(pending) do inv[r + 1] = zero_at + 1 end
  return { LH = LH, groups = groups, zero_row = zero_row, inv = P.on(i64(inv), dev) }
end

return M
