-- ring_attention (context parallelism; Liu et al. 2023, "Ring Attention with
-- Blockwise Transformers"): the sequence is split across the ranks of
-- as.distributed; each rank keeps its queries and passes its K/V block
-- around the ring (sendrecv to rank + 1, from rank - 1), attending to the
-- block in hand and merging the partial results by their log-sum-exp:
--   lse = logaddexp(lse_a, lse_b),  o = o_a exp(lse_a - lse) + o_b exp(lse_b - lse).
-- Exact: the result equals one process's softmax attention over the whole
-- sequence.  Causal runs on the zig-zag split (Brandon et al. 2023, "Striped
-- attention" / Llama 3's context parallelism): the sequence in 2W chunks,
-- rank r holding chunks r and 2W-1-r, so every rank has the same work.
--
-- The local shard of a sequence: RingAttention.shard(x, dim, causal); the
-- whole back from the shards: RingAttention.unshard(x, dim, causal).
--
-- Done (docs/distributed.md): the forward, causal or not, GQA, and the
-- backward (RingAttention.attention_backward: dK/dV travel the ring with
-- K/V).  Every block runs the fused flash kernels: the forward's return
-- each row's log-sum-exp (core.flash_attention_lse), the backward's take the
-- whole output and lse (core.flash_attention_backward), so no L/W x L/W
-- scores are materialised.  RingAttention.math_blocks = true computes the
-- blocks through materialised scores instead (the reference).  The
-- forward's next K/V are in flight (isendrecv) while the block in hand is
-- computed.  The module's forward is an as.autograd.Function
-- (RingAttention.fn): loss:backward() on every rank runs attention_backward,
-- so a swapped model trains (the backward is collective: every rank must
-- call it).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local D = require "attnswap.distributed"
local autograd = require "attnswap.autograd"

local FN = "ring_attention"
local RingAttention = nn.class("RingAttention")

function RingAttention:init(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #1 to 'RingAttention' (options table expected)", 3) end
  if opts.dropout and opts.dropout ~= 0 then error(FN .. ": dropout is not supported", 3) end
  self.causal = opts.causal or false
  self.scale = opts.scale
end

local function world()
  if not D.is_initialized() then D.init() end
  return D.rank(), D.world_size()
end

-- Global positions (0-based) of a rank's rows, as an int64 tensor: the
-- contiguous split (rank r holds [r L, (r+1) L)), or the zig-zag one.
local function positions(r, W, L, causal)
  if not causal then return core.arange(r * L, (r + 1) * L) end
  local c = L // 2
  return core.cat({ core.arange(r * c, (r + 1) * c), core.arange((2 * W - 1 - r) * c, (2 * W - r) * c) }, 1)
end

--- RingAttention.shard(x, dim, causal): this rank's part of a whole sequence along dim.
function RingAttention.shard(x, dim, causal)
  local r, W = world()
  local L = x:size(dim)
  local parts = causal and 2 * W or W
  if L % parts ~= 0 then
    error(("%s: the sequence length %d must be a multiple of %d (%s)"):format(FN, L, parts,
      causal and "2 x world size: the zig-zag split" or "the world size"), 2)
  end
  local c = L // parts
  if not causal then return x:narrow(dim, r * c + 1, c) end
  return core.cat({ x:narrow(dim, r * c + 1, c), x:narrow(dim, (2 * W - 1 - r) * c + 1, c) }, dim)
end

--- RingAttention.unshard(x, dim, causal): the whole sequence from every rank's part.
function RingAttention.unshard(x, dim, causal)
  local _, W = world()
  local parts = D.all_gather(x:contiguous())
  if not causal then return core.cat(parts, dim) end
  local c = x:size(dim) // 2
  local chunks = {}
  for r = 0, W - 1 do
    chunks[r + 1] = parts[r + 1]:narrow(dim, 1, c)
    chunks[2 * W - r] = parts[r + 1]:narrow(dim, c + 1, c)
  end
  return core.cat(chunks, dim)
end

local NEG_INF = -math.huge

-- (B, Hkv, L, D) -> (B, H, L, D) for grouped queries
local function repeat_heads(k, H)
  local B, Hkv, L, Dk = k:size(1), k:size(2), k:size(3), k:size(4)
  if Hkv == H then return k end
  return k:unsqueeze(3):expand(B, Hkv, H // Hkv, L, Dk):reshape(B, H, L, Dk)
end

-- One block: out (B, H, Lq, Dv) and lse (B, H, Lq, 1) of q against (k, v)
-- (Hkv heads), keep (Lq, Lk) bool or nil: the fused flash kernel, which
-- returns its row log-sum-exps (+inf for a row that saw no key: -inf here,
-- the merge's identity).
local function block(q, k, v, scale, keep)
  local o, lse = core.flash_attention_lse(q, k, v, keep, { scale = scale })
  return o, core.where(lse:eq(math.huge), NEG_INF, lse):unsqueeze(-1)
end

-- The same through materialised scores (the reference the tests hold the
-- fused path to; RingAttention.math_blocks = true selects it).
local function math_block(q, k, v, scale, keep)
  local H = q:size(2)
  k, v = repeat_heads(k, H), repeat_heads(v, H)
  local s = q:matmul(k:transpose(-2, -1)) * scale
  if keep then s = core.where(keep, s, NEG_INF) end
  local m = s:max(-1, true)
  m = core.where(m:eq(NEG_INF), 0, m)
  local p = (s - m):exp()
  local l = p:sum(-1, true)
  local lse = m + l:log()
  local o = p:matmul(v) / core.where(l:gt(0), l, 1)
  return o, lse
end

local function merge(o, lse, ob, lseb)
  if not o then return ob, lseb end
  local mx = lse:maximum(lseb)
  local safe = core.where(mx:eq(NEG_INF), 0, mx)
  local new = safe + ((lse - safe):exp() + (lseb - safe):exp()):log()
  local base = core.where(new:eq(NEG_INF), 0, new)
  return o * (lse - base):exp() + ob * (lseb - base):exp(), new
end

local function check_shards(q, k, v, causal, lvl)
  for i, t in ipairs({ q, k, v }) do
    if not core.is_tensor(t) or t:dim() ~= 4 then
      error(("bad argument #%d to '%s' (4-d tensor (B, H, L, D) expected)"):format(i, FN), lvl)
    end
  end
  local H, L = q:size(2), q:size(3)
  if k:size(3) ~= L or v:size(3) ~= L then
    error(("%s: q, k and v shards must have the same length, got %d, %d and %d"):format(FN, L, k:size(3),
      v:size(3)), lvl)
  end
  if H % k:size(2) ~= 0 then error(("%s: %d query heads for %d kv heads"):format(FN, H, k:size(2)), lvl) end
  if causal and L % 2 ~= 0 then
    error(("%s: causal shards hold two zig-zag chunks: the local length %d must be even"):format(FN, L), lvl)
  end
end

-- The keep-mask of this rank's queries against src's keys (nil: not causal).
local function keep_of(rank, src, W, L, causal)
  if not causal then return nil end
  return positions(src, W, L, true):unsqueeze(1):le(positions(rank, W, L, true):unsqueeze(2))
end

-- Starts passing the tensors in hand one step around the ring (to rank + 1,
-- from rank - 1), in flight while the caller computes; the returned
-- function waits and gives the ones received.
local function pass(list, rank, W, tag)
  local out, reqs = {}, {}
  for i, t in ipairs(list) do
    out[i] = core.empty(t:shape(), t:dtype()):to(t:device())
    reqs[i] = D.isendrecv(t, (rank + 1) % W, out[i], (rank - 1) % W, tag + i)
  end
  return function()
    for _, r in ipairs(reqs) do r:wait() end
    return out
  end
end

--- RingAttention.attention(q, k, v [, {causal, scale}]) -> out, lse: this rank's
--- rows of the output (float32 computation) and their log-sum-exp (B, H, L, 1),
--- from this rank's shards.
function RingAttention.attention(q, k, v, opts)
  opts = opts or {}
  local causal = opts.causal or false
  check_shards(q, k, v, causal, 3)
  local rank, W = world()
  local L = q:size(3)
  local scale = opts.scale or 1 / math.sqrt(q:size(4))
  local qf = q:float()
  local kb, vb = k:float():contiguous(), v:float():contiguous()
  local o, lse
  for step = 0, W - 1 do
    local src = (rank - step) % W -- whose K/V is in hand
    local nxt = step < W - 1 and pass({ kb, vb }, rank, W, 0) or nil -- in flight during the block
    local ob, lseb = (RingAttention.math_blocks and math_block or block)(qf, kb, vb, scale,
      keep_of(rank, src, W, L, causal))
    o, lse = merge(o, lse, ob, lseb)
    if nxt then kb, vb = table.unpack(nxt()) end
  end
  return o, lse
end

-- (B, H, L, D) gradients of repeated kv heads summed back to (B, Hkv, L, D)
local function fold_heads(g, Hkv)
  local B, H, L, Dk = g:size(1), g:size(2), g:size(3), g:size(4)
  if H == Hkv then return g end
  return g:reshape(B, Hkv, H // Hkv, L, Dk):sum(3)
end

--- RingAttention.attention_backward(q, k, v, out, lse, dout [, opts]) -> dq, dk, dv:
--- the gradients of this rank's shards, out and lse from RingAttention.attention.
--- K/V travel the ring as in the forward, each with the gradient accumulated for
--- it so far; after the last step every dK/dV goes one more hop, to its owner.
function RingAttention.attention_backward(q, k, v, out, lse, dout, opts)
  opts = opts or {}
  local causal = opts.causal or false
  check_shards(q, k, v, causal, 3)
  local rank, W = world()
  local H, Hkv, L = q:size(2), k:size(2), q:size(3)
  local scale = opts.scale or 1 / math.sqrt(q:size(4))
  local qf, dof = q:float(), dout:float()
  local delta = (dof * out:float()):sum(-1, true) -- D_i = rowsum(dO o O)
  local base = core.where(lse:eq(NEG_INF), 0, lse)
  local kb, vb = k:float():contiguous(), v:float():contiguous()
  local dkb, dvb = core.zeros(kb:shape()), core.zeros(vb:shape())
  local dq = core.zeros(qf:shape())
  -- the fused kernel's form: the whole output and lse (+inf: a row that saw nothing)
  local of = out:float():contiguous()
  local lse3 = core.where(lse:eq(NEG_INF), math.huge, lse):squeeze(-1):contiguous()
  for step = 0, W - 1 do
    local src = (rank - step) % W
    local keep = keep_of(rank, src, W, L, causal)
    if not RingAttention.math_blocks then
      -- this block's shares of dq, dk, dv: probabilities exp(s - lse) with the whole lse
      local dqb, dkx, dvx = core.flash_attention_backward(dof, qf, kb, vb, of, lse3, keep, { scale = scale })
      dq, dkb, dvb = dq + dqb, dkb + dkx, dvb + dvx
    else
      local kr, vr = repeat_heads(kb, H), repeat_heads(vb, H)
      local s = qf:matmul(kr:transpose(-2, -1)) * scale
      if keep then s = core.where(keep, s, NEG_INF) end
      local p = (s - base):exp() -- the final probabilities of this block
      local dv = p:transpose(-2, -1):matmul(dof)
      local ds = p * (dof:matmul(vr:transpose(-2, -1)) - delta)
      dq = dq + ds:matmul(kr) * scale
      local dk = ds:transpose(-2, -1):matmul(qf) * scale
      dkb, dvb = dkb + fold_heads(dk, Hkv), dvb + fold_heads(dv, Hkv)
    end
    if step < W - 1 then
      kb, vb, dkb, dvb = table.unpack(pass({ kb, vb, dkb, dvb }, rank, W, 10)())
    end
  end
  if W > 1 then -- the block in hand is rank + 1's: one more hop home
    dkb, dvb = table.unpack(pass({ dkb, dvb }, rank, W, 20)())
  end
  return dq:to(q:dtype()), dkb:to(k:dtype()), dvb:to(v:dtype())
end

--- RingAttention.fn:apply(q, k, v, causal, scale) -> this rank's rows of the
--- output, recorded: the backward passes dK/dV around the ring (every rank
--- runs it, as they run the forward).  Keeps q, k, v, out (float32) and lse.
RingAttention.fn = autograd.Function {
  name = FN,
  forward = function(ctx, q, k, v, causal, scale)
    local opts = { causal = causal, scale = scale }
    local o, lse = RingAttention.attention(q, k, v, opts)
    ctx.opts = opts
    ctx:save_for_backward(q, k, v, o, lse)
    return o:to(q:dtype())
  end,
  backward = function(ctx, g)
    local q, k, v, o, lse = table.unpack(ctx.saved_tensors, 1, 5)
    local dq, dk, dv = RingAttention.attention_backward(q, k, v, o, lse, g, ctx.opts)
    local need = ctx.needs_input_grad
    return need[1] and dq or nil, need[2] and dk or nil, need[3] and dv or nil
  end,
}

--- forward(q, k, v): this rank's queries (B, H, L, D) and K/V (B, Hkv, L, D),
--- each the rank's shard (RingAttention.shard); the rank's rows of the output.
function RingAttention:forward(q, k, v, mask)
  if mask ~= nil then error(FN .. ": masks are not supported (causal is)", 2) end
  check_shards(q, k, v, self.causal, 3)
  return RingAttention.fn:apply(q, k, v, self.causal, self.scale)
end

function RingAttention:extra_repr() return ("causal=%s"):format(tostring(self.causal)) end

registry.register_attention(FN, RingAttention, {
  exact = true, complexity = "O(L^2 D / W) per rank, O(L / W) K/V", causal = true, mask = false, gqa = true,
  incremental = false, devices = "cpu (cuda staged)", paper = "Liu et al. 2023",
  summary = "context parallel: K/V blocks passed around the ranks' ring, merged by log-sum-exp",
})

return RingAttention
