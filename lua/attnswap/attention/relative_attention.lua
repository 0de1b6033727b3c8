-- relative_attention: softmax(Q K^T * scale + b_h(j - i) + mask) V with a
-- relative position bias per head.
--   T5 (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
--   Unified Text-to-Text Transformer", sec. 2.1): b_h is a learned scalar per
--   head and bucket of j - i, buckets exact up to num_buckets / 4 (per side)
--   then log-spaced up to max_distance; the parameter relative_attention_bias
--   (num_buckets, num_heads) is laid out as HF T5's Embedding weight.
--   ALiBi (Press et al. 2022, "Train Short, Test Long", sec. 3), alibi = true:
--   b_h = -m_h |j - i| with the paper's fixed geometric slopes m_h; no parameter.
-- C kernel: kernels/cpu/zoo_reweight_relative.c (through the reweight driver).
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local P = require "attnswap.attention.ops_path"

local FN = "relative_attention"

local RelativeAttention = nn.class("RelativeAttention")

local SPEC = {
  num_heads = { O.positive_integer, 8 },
  num_buckets = { O.positive_integer, 32 },
  max_distance = { O.positive_integer, 128 },
  bidirectional = { O.boolean, function(opts) return not opts.causal end },
  alibi = { O.boolean, false },
}

function RelativeAttention:init(opts)
  local o = O.parse(FN, opts, SPEC, 3)
  if not o.alibi then
    local min = o.bidirectional and 4 or 2
    if o.num_buckets < min then
      error(string.format("%s: num_buckets must be at least %d%s, got %d", FN, min,
        o.bidirectional and " when bidirectional" or "", o.num_buckets), 3)
    end
    local exact = (o.bidirectional and o.num_buckets // 2 or o.num_buckets) // 2
    if o.max_distance <= exact then
      error(string.format("%s: max_distance must be more than the %d exact buckets, got %d", FN, exact,
        o.max_distance), 3)
    end
    -- zero: a fresh swap computes exactly what scaled_dot_product did
    self.relative_attention_bias = nn.Parameter(core.zeros(o.num_buckets, o.num_heads))
  end
  self.opts = o
end

-- float32 rounding, to compute T5's buckets as the C kernel does (float math)
local function f32(x) return (string.unpack("f", string.pack("f", x))) end

-- transformers' _relative_position_bucket for rel = key - query, as
-- kernels/cpu/zoo_reweight_relative.c computes it (the log in float32,
-- truncated toward zero).
local function t5_bucket(rel, bidirectional, num_buckets, max_distance)
  local bucket = 0
  if bidirectional then
    num_buckets = num_buckets // 2
    if rel > 0 then bucket = bucket + num_buckets end
    rel = math.abs(rel)
  else
    rel = rel < 0 and -rel or 0
  end
  local max_exact = num_buckets // 2
  if rel < max_exact then return bucket + rel end
  local ratio = f32(f32(math.log(f32(f32(rel) / f32(max_exact)))) / f32(math.log(max_distance / max_exact)))
  local large = max_exact + math.tointeger(math.floor(f32(ratio * f32(num_buckets - max_exact)))) -- >= 0
  if large > num_buckets - 1 then large = num_buckets - 1 end
  return bucket + large
end

-- Press et al.'s get_slopes (as_cpu_alibi_slopes)
local function alibi_slopes(H)
  local p2 = 1
  while p2 * 2 <= H do p2 = p2 * 2 end
  local s = {}
  for i = 0, math.min(p2, H) - 1 do s[#s + 1] = 2 ^ (-8 * (i + 1) / p2) end
  for i = 0, H - p2 - 1 do s[#s + 1] = 2 ^ (-8 * (2 * i + 1) / (2 * p2)) end
  return s
end

-- The ops path: the bias b_h(j - i') as a float (H, Lq, Lk) tensor on q's
-- device (T5: the bucket of each relative position, tabled on the host, then
-- index_select of the bias parameter; ALiBi: -slope_h |j - i'|), added to
-- the user's mask, then exact attention by the device's flash kernel.
local function ops_forward(self, q, k, v, mask)
  local o = self.opts
  local _, H, _, Lq, Lk, _, _, dev = P.check(FN, q, k, v, mask)
  local qi, kj = P.positions(Lq, Lk, dev)
  local rel = kj - qi -- j - i', (Lq, Lk)
  local bias
  if o.alibi then
    local slopes = P.on(core.tensor(alibi_slopes(H)), dev):view(H, 1, 1)
    bias = -(slopes * rel:abs():float():view(1, Lq, Lk))
  else
    local w = self.relative_attention_bias
    if w:size(1) == o.num_buckets and w:size(2) ~= H then
      error(string.format("%s: the bias was made for %d heads (num_heads) but q has %d; "
        .. "build the core with num_heads = %d", FN, w:size(2), H, H), 3)
    end
    P.check_param(FN, "relative_attention_bias", w, dev)
    local width = Lq + Lk - 1
    local buckets = {}
    for t = 0, math.max(width, 1) - 1 do
      buckets[t + 1] = t5_bucket(t - (Lk - 1), o.bidirectional, o.num_buckets, o.max_distance) + 1
    end
    local table_ = P.float(w):index_select(1, P.on(core.tensor(buckets), dev)):t() -- (H, width)
    local idx = (rel + Lk):view(Lq * Lk)                                            -- 1-based t
    bias = table_:index_select(2, idx):view(H, Lq, Lk)
  end
  return P.flash(q, k, v, P.combine(P.mask4(mask), nil, bias), o, self:is_training())
end

function RelativeAttention:forward(q, k, v, mask)
  local o = self.opts
  if P.active(q, k, v, mask, self) then return ops_forward(self, q, k, v, mask) end
  return core.relative_attention(q, k, v, mask, O.call_opts(o, {
    alibi = o.alibi, bidirectional = o.bidirectional, num_buckets = o.num_buckets,
    max_distance = o.max_distance, bias = not o.alibi and self.relative_attention_bias or nil,
  }), self:is_training())
end

function RelativeAttention:extra_repr()
  if self.opts.alibi then return O.repr(self.opts, { "alibi", "causal", "scale", "dropout" }) end
  return O.repr(self.opts, { "num_heads", "num_buckets", "max_distance", "bidirectional", "causal", "scale", "dropout" })
end

-- swap_attention fills these from the MultiheadAttention it swaps into
RelativeAttention.shape_options = { "num_heads" }

registry.register_attention(FN, RelativeAttention, {
  exact = false, complexity = "O(L^2 D)", causal = true, mask = true, gqa = true, incremental = true,
  devices = "cpu, cuda", paper = "Raffel et al. 2020 (T5); Press et al. 2022 (ALiBi)",
  summary = "softmax with a learned T5 bucket bias per head, or ALiBi's fixed slopes (alibi = true)",
})

return RelativeAttention
