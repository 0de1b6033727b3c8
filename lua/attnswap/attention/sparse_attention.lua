-- sparse_attention: exact softmax attention restricted to a sparsity layout
-- (Child et al. 2019, "Generating Long Sequences with Sparse Transformers",
-- eq. 2: attend(X, S) with the connectivity pattern S_i of each query; the
-- block-sparse kernels of OpenAI's blocksparse and xFormers).
--
--   out_i = sum_{j in S_i} softmax_{j in S_i}(q_i . k_j * scale + bias_ij) v_j
--
-- The layout is a bool tensor, true = may attend: element level (Lq, Lk) as
-- as.patterns builds them, or block level (ceil(Lq/b), ceil(Lk/b)) from
-- as.patterns.to_blocks / bigbird{blocks = true}; optionally with a leading
-- dim of 1 or H (one per head).  A block kernel (kernels/cpu/
-- zoo_sparse_tiles.c): for each query block only its non-empty key blocks
-- are visited, with an online softmax as in flash attention; blocks only
-- partly kept by an element layout are masked element by element.  Cost
-- O(nnz_blocks b^2 D).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local patterns = require "attnswap.patterns"
local P = require "attnswap.attention.ops_path"
local BL = require "attnswap.attention.blocked"

local FN = "sparse_attention"
local CACHE_SIZE = 8 -- layouts built per (Lq, Lk) that a layout function keeps

local SparseAttention = nn.class("SparseAttention")

local function describe(v)
  if core.is_tensor(v) then return v:dtype() .. " tensor " .. tostring(v:shape()) end
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

local function layout_arg(fn, name, v)
  if type(v) == "function" then return v end
  if core.is_tensor(v) and v:dtype() == "bool" and (v:dim() == 2 or v:dim() == 3) then return v end
  error(string.format("%s: %s must be a 2-d or 3-d bool tensor (elements or blocks, see as.patterns) "
    .. "or a function(Lq, Lk) returning one, got %s", fn, name, describe(v)), 0)
end

local SPEC = {
  layout = { layout_arg, nil },
  mask = { layout_arg, nil }, -- a synonym of layout
  block_size = { O.positive_integer, 32 },
}

-- The default when no layout is given: each query block sees its own block,
-- one on either side and the first block (global), as blocks.
local function default_layout(block)
  return function(_, Lk)
    return patterns.bigbird(math.max(Lk, 1), { block = block, window = 3, globals = 1, randoms = 0, blocks = true })
  end
end

function SparseAttention:init(opts)
  local o = O.parse(FN, opts, SPEC, 3)
  if o.layout ~= nil and o.mask ~= nil then
    error(FN .. ": give layout or its synonym mask, not both", 3)
  end
  o.layout, o.mask = o.layout or o.mask, nil
  o.default = o.layout == nil
  if o.default then o.layout = default_layout(o.block_size) end
  self.opts = o
  self.layouts = {} -- a layout function's results by "Lq,Lk"
end

local placeholder = core.ones(1, 1, "bool")

-- The layout for these inputs (a layout function is called once per (Lq, Lk)).
function SparseAttention:layout_for(q, k)
  local layout = self.opts.layout
  if type(layout) ~= "function" then return layout end
  if not (core.is_tensor(q) and core.is_tensor(k) and q:dim() == 4 and k:dim() == 4) then
    return placeholder -- the kernel reports what is wrong with q or k first
  end
  local key = q:size(3) .. "," .. k:size(3)
  local cache = self.layouts
  local t = cache[key]
  if t == nil then
    t = layout(q:size(3), k:size(3))
    if not (core.is_tensor(t) and t:dtype() == "bool") then
      error(string.format("%s: the layout function returned %s, expected a bool tensor", FN, describe(t)), 3)
    end
    local n = 0
    for _ in pairs(cache) do n = n + 1 end
    if n >= CACHE_SIZE then cache = {}; self.layouts = cache end
    cache[key] = t
  end
  return t
end

local function cdiv(a, b) return (a + b - 1) // b end

-- Which reading of the layout fits these shapes, as the C front-end reads
-- it (runtime/attention/sparse.c: elements first, then blocks; Lk rows with
-- a shorter query are read from the last Lq rows): the layout as (LH, rows,
-- cols), "elements" or "blocks", and Lr, the rows it stands for.
local function classify(layout, H, Lq, Lk, bs)
  local t = layout
  if t:dim() == 2 then t = t:unsqueeze(1) end
  local LH, rows, cols = t:size(1), t:size(2), t:size(3)
  if LH ~= 1 and LH ~= H then
    error(string.format("%s: a 3-d layout has one layout per head: its first dim must be 1 or %d "
      .. "(the query heads), got shape %s", FN, H, tostring(layout:shape())), 4)
  end
  if cols == Lk and (rows == Lq or (rows == Lk and Lk > Lq)) then return t, "elements", rows end
  if cols == cdiv(Lk, bs) and ((rows == cdiv(Lk, bs) and Lk > Lq) or rows == cdiv(Lq, bs)) then
    return t, "blocks", (rows == cdiv(Lk, bs) and Lk > Lq) and Lk or Lq
  end
  error(string.format("%s: layout of shape %s fits neither the elements (%d, %d) nor the "
    .. "%d-blocks (%d, %d) of Lq = %d queries and Lk = %d keys", FN, tostring(layout:shape()), Lq, Lk,
    bs, cdiv(Lq, bs), cdiv(Lk, bs), Lq, Lk), 4)
end

-- The layout as an element keep-mask (LH, Lq, Lk) on dev.
local function element_keep(layout, H, Lq, Lk, bs, dev)
  local _, kind, Lr = classify(layout, H, Lq, Lk, bs)
  local t = P.on_cached(layout, dev)
  if t:dim() == 2 then t = t:unsqueeze(1) end
  if kind == "blocks" then -- a kept block attends all its elements
    local LH, rows, cols = t:size(1), t:size(2), t:size(3)
    t = t:view(LH, rows, 1, cols, 1):expand(LH, rows, bs, cols, bs):reshape(LH, rows * bs, cols * bs)
    t = t:narrow(2, 1, Lr):narrow(3, 1, Lk)
  end
  if Lr > Lq then t = t:narrow(2, Lr - Lq + 1, Lq) end
  return t
end

-- The blocked composite's plan for this layout and these shapes (host
-- work, cached per layout tensor): the layout's kept blocks as Lua
-- booleans; an element layout is reduced to the blocks it touches and
-- restricts them element by element.
local plans = setmetatable({}, { __mode = "k" }) -- layout -> {key -> plan}

local function plan_for(layout, H, Hkv, Lq, Lk, bs, causal, dev)
  local per = plans[layout]
  if not per then per = {}; plans[layout] = per end
  local key = table.concat({ H, Hkv, Lq, Lk, bs, tostring(causal), dev }, ",")
  if per[key] then return per[key] end
  local t, kind, Lr = classify(layout, H, Lq, Lk, bs)
  if t:device() ~= "cpu" then t = t:to("cpu") end
  local LH = t:size(1)
  local kept, elem, off
  if kind == "blocks" then
    kept, off = t:tolist(), Lr - Lq
  else
    if Lr > Lq then t = t:narrow(2, Lr - Lq + 1, Lq) end
    elem, off = t:contiguous(), 0
    local nrb, nkb = cdiv(Lq, bs), cdiv(Lk, bs)
    local f = elem:float()
    if nrb * bs > Lq then f = core.cat({ f, core.zeros({ LH, nrb * bs - Lq, Lk }, "float32") }, 2) end
    if nkb * bs > Lk then f = core.cat({ f, core.zeros({ LH, nrb * bs, nkb * bs - Lk }, "float32") }, 3) end
    kept = f:view(LH, nrb, bs, nkb, bs):sum(5):sum(3):gt(0):tolist()
  end
  local plan = BL.sparse_plan(kept, LH, H, Hkv, Lq, Lk, bs, off, causal, elem, dev)
  local n = 0
  for _ in pairs(per) do n = n + 1 end
  if n >= CACHE_SIZE then per = {}; plans[layout] = per end
  per[key] = plan
  return plan
end

-- The ops path.  Blocked (attention/blocked.lua): per block of queries only
-- the key blocks its layout row keeps, gathered, one flash call per number
-- of kept blocks: O(nnz_blocks b^2 D), as the kernel.  Dense (dropout in
-- training, empty shapes, blocked.dense): flash_attention with the layout's
-- elements as an (Lq, Lk) keep-mask, empty blocks masked, not skipped.
local function ops_forward(self, q, k, v, mask)
  local o = self.opts
  local _, H, Hkv, Lq, Lk, _, _, dev = P.check(FN, q, k, v, mask)
  local training = self:is_training()
  local layout = self:layout_for(q, k)
  if BL.usable(q, k, v, o, training) then
    local plan = plan_for(layout, H, Hkv, Lq, Lk, o.block_size, o.causal, dev)
    -- (a layout that keeps nothing at all: the dense path's zeros, which
    -- carry a gradient node as every composite's output does)
    if #plan.groups > 0 then return BL.attend(q, k, v, P.mask4(mask), o, plan) end
  end
  local keep = element_keep(layout, H, Lq, Lk, o.block_size, dev)
  return P.flash(q, k, v, P.combine(P.mask4(mask), keep), o, training)
end

function SparseAttention:forward(q, k, v, mask)
  local o = self.opts
  if P.active(q, k, v, mask, self) then return ops_forward(self, q, k, v, mask) end
  return core.sparse_attention(q, k, v, mask, O.call_opts(o, {
    layout = self:layout_for(q, k), block_size = o.block_size,
  }), self:is_training())
end

function SparseAttention:extra_repr()
  local o, what = self.opts, nil
  if o.default then what = "layout=default (3-block window + 1 global block)"
  elseif type(o.layout) == "function" then what = "layout=function"
  else what = "layout=" .. tostring(o.layout:shape()) end
  return what .. ", " .. O.repr(o, { "block_size", "causal", "scale", "dropout" })
end

-- as.compare's options at L keys when the default layout (a query block
-- sees at most 4 blocks of 32) would cover them all: blocks of L/16, so a
-- query sees about a quarter of the keys.
function SparseAttention.sized_options(L)
  if L > 4 * 32 then return nil end
  return { block_size = math.max(1, (L + 15) // 16) }
end

registry.register_attention(FN, SparseAttention, {
  exact = false, complexity = "O(nnz_blocks b^2 D)", causal = true, mask = true, gqa = true,
  incremental = true, devices = "cpu, cuda", paper = "Child et al. 2019",
  summary = "exact softmax over a block layout (as.patterns); only non-empty blocks are computed",
})

return SparseAttention
