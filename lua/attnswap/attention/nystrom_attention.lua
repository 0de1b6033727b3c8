-- nystrom_attention (Xiong et al. 2021, "Nystromformer: A Nystrom-Based
-- Algorithm for Approximating Self-Attention", eq. 14-16): with m landmarks
-- (segment means of Q and K),
--   out = softmax(Q Kl^T s) pinv(softmax(Ql Kl^T s)) (softmax(Ql K^T s) V)
-- where pinv is the paper's iterative Moore-Penrose inverse (6 iterations,
-- Z0 = A^T / (|A|_1 |A|_inf)).  O(L m D).  When L <= num_landmarks every
-- token is its own landmark and the result is exact softmax attention.
-- Key-padding masks apply to the keys' softmax; causal is not supported.
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"
local O = require "attnswap.attention.reweight_opts"
local C = require "attnswap.attention.linear_common"
local P = require "attnswap.attention.ops_path"

local FN = "nystrom_attention"
local Nystrom = nn.class("NystromAttention")

function Nystrom:init(opts)
  self.opts = O.parse(FN, opts, { num_landmarks = { O.positive_integer, 64 }, pinv_iterations = { O.positive_integer, 6 } }, 3)
  if self.opts.causal then error(FN .. ": causal is not supported (landmarks summarise the whole sequence)", 3) end
end

-- x (B, H, L, D) -> (B, H, m, D): means of m consecutive segments (the last
-- segments one longer when m does not divide L).
local function landmarks(x, m)
  local L = x:size(3)
  local parts, start = {}, 1
  for i = 1, m do
    local len = L // m + ((i <= L % m) and 1 or 0)
    parts[i] = x:narrow(3, start, len):mean(3, true)
    start = start + len
  end
  return P.cat(parts, 3)
end

-- The largest element of t, with max's gradient (shared evenly by ties, as
-- PyTorch's): the reduction max has no backward yet, so the maximal entries
-- are picked on detached values and averaged.  The 6 iterations do not
-- forget their initial scale, so it needs its gradient.
local function max_of(t)
  local td = t:detach()
  local at = td:eq(td:max()):float()
  return (t * at):sum() / at:sum()
end

local function pinv(a, iters)
  -- a (B, H, m, m), rows sum to 1 (a softmax)
  local m = a:size(4)
  local col = max_of(a:abs():sum(3)) -- max column sum
  local row = max_of(a:abs():sum(4)) -- max row sum
  local z = a:transpose(3, 4) / (col * row)
  local r = core.arange(m)
  local I = r:unsqueeze(2):eq(r:unsqueeze(1)):float()
  if a:device() ~= "cpu" then I = I:to(a:device()) end
  for _ = 1, iters do
    local az = a:matmul(z)
    z = z:matmul(I * 13 - az:matmul(I * 15 - az:matmul(I * 7 - az))) * 0.25
  end
  return z
end

function Nystrom:forward(q, k, v, mask)
  local o = self.opts
  C.check(FN, q, k, v, mask, o)
  local H, Lq, Lk, D = q:size(2), q:size(3), k:size(3), q:size(4)
  local scale = o.scale or 1 / math.sqrt(D)
  if Lq <= o.num_landmarks and Lk <= o.num_landmarks then
    return core.sdp_attention(q, k, v, mask, { scale = scale }) -- every token a landmark: exact
  end
  local qf, kf, vf = C.float(q), C.float(C.expand_heads(k, H)), C.float(C.expand_heads(v, H))
  local m = math.min(o.num_landmarks, Lq, Lk)
  local ql, kl = landmarks(qf, m), landmarks(kf, m)
  local f = (qf:matmul(kl:transpose(3, 4)) * scale):softmax(4)   -- (B, H, Lq, m)
  local a = (ql:matmul(kl:transpose(3, 4)) * scale):softmax(4)   -- (B, H, m, m)
  local bs = ql:matmul(kf:transpose(3, 4)) * scale                -- (B, H, m, Lk)
  local keep = C.key_padding(FN, mask, Lk)
  if keep then bs = core.where(keep:transpose(3, 4):gt(0), bs, -math.huge) end
  local b = bs:softmax(4)
  return f:matmul(pinv(a, o.pinv_iterations)):matmul(b:matmul(vf)):to(q:dtype())
end

function Nystrom:extra_repr() return O.repr(self.opts, { "num_landmarks", "pinv_iterations" }) end

-- as.compare's options at L keys when the default 64 landmarks are as many
-- as the keys: a quarter as many landmarks.
function Nystrom.sized_options(L)
  if L > 4 * 64 then return nil end
  return { num_landmarks = math.max(1, L // 4) }
end

registry.register_attention(FN, Nystrom, {
  exact = false, complexity = "O(L m D), m landmarks", causal = false, mask = true, gqa = true,
  incremental = false, devices = "cpu, cuda", paper = "Xiong et al. 2021",
  summary = "landmark (segment-mean) Nystrom approximation with an iterative pseudo-inverse",
})

return Nystrom
