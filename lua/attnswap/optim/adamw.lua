-- as.optim.AdamW(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 1e-2,
-- amsgrad = false, maximize = false}) and as.optim.Adam (the same options,
-- weight_decay = 0, an L2 penalty added to the gradient): torch.optim's updates,
-- step for step:
--   t = t + 1
--   AdamW: p = p * (1 - lr * weight_decay)      Adam: g = g + weight_decay * p
--   m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g * g
--   (amsgrad: vmax = max(vmax, v), used for v below)
--   p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
-- State per parameter: step (a number), exp_avg, exp_avg_sq (and max_exp_avg_sq).
local Optimizer = require "attnswap.optim.optimizer"
local core = require "attnswap.core"

local function check_group(_, g)
  Optimizer.check_number(g, "lr", 0)
  Optimizer.check_number(g, "eps", 0)
  Optimizer.check_number(g, "weight_decay", 0)
  local b = g.betas
  if type(b) ~= "table" or #b ~= 2 then
    error("invalid betas: expected a table {beta1, beta2}, got " .. tostring(b), 0)
  end
  for i = 1, 2 do
    if type(b[i]) ~= "number" or b[i] < 0 or b[i] >= 1 then
      error(string.format("invalid beta parameter at index %d: %s (expected a number >= 0 and < 1)", i, tostring(b[i])), 0)
    end
  end
end

-- The update written with tensor ops: the reference the fused kernel is
-- tested against (optim_spec), and the path for dtypes the kernel does not
-- take (float64).  State in the parameter's dtype.
local function reference_update(decoupled, g, p, grad, st)
  local lr, wd = g.lr, g.weight_decay
  local b1, b2 = g.betas[1], g.betas[2]
  if g.maximize then grad = -grad end
  if st.step == nil then
    st.step = 0
    st.exp_avg = Optimizer.zeros_like(p)
    st.exp_avg_sq = Optimizer.zeros_like(p)
    if g.amsgrad then st.max_exp_avg_sq = Optimizer.zeros_like(p) end
  end
  st.step = st.step + 1
  if wd ~= 0 then
    if decoupled then p:mul_(1 - lr * wd) else grad = grad + p * wd end
  end
  local m, v = st.exp_avg, st.exp_avg_sq
  m:mul_(b1):add_(grad * (1 - b1))
  v:mul_(b2):add_(grad * grad * (1 - b2))
  local bc1 = 1 - b1 ^ st.step
  local bc2 = 1 - b2 ^ st.step
  if g.amsgrad then
    if st.max_exp_avg_sq == nil then st.max_exp_avg_sq = v:clone() end
    st.max_exp_avg_sq:copy_(core.maximum(st.max_exp_avg_sq, v))
    v = st.max_exp_avg_sq
  end
  local denom = v:sqrt() / math.sqrt(bc2) + g.eps
  p:sub_(m / denom * (lr / bc1))
end

-- The fused step (core.adamw_step, kernels/cpu/optim.c and kernels/cuda/optim.cu):
-- one pass over the parameter.  State in float32; a float16 / bfloat16
-- parameter gets a float32 master copy (state.master_param) that the update
-- runs on, the parameter receiving its rounding.
local function make_update(decoupled)
  return function(self, g, p, grad, st, gi, i)
    if not Optimizer.FUSED[p:dtype()] then return reference_update(decoupled, g, p, grad, st) end
    if st.step == nil then
      st.step = 0
      st.exp_avg = Optimizer.zeros_f32(p)
      st.exp_avg_sq = Optimizer.zeros_f32(p)
    end
    local master = self:_master(gi, i, p, st)
    if g.amsgrad and st.max_exp_avg_sq == nil then st.max_exp_avg_sq = Optimizer.zeros_f32(p) end
    st.step = st.step + 1
    core.adamw_step(p, grad, st.exp_avg, st.exp_avg_sq, g.amsgrad and st.max_exp_avg_sq or nil, master,
      g.lr, g.betas[1], g.betas[2], g.eps, g.weight_decay, st.step, decoupled, g.amsgrad, g.maximize)
  end
end

local DEFAULTS = { lr = 1e-3, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 1e-2, amsgrad = false, maximize = false }

local M = {}
M.AdamW = Optimizer.class("AdamW", DEFAULTS, make_update(true), check_group)
local adam = {}
for k, v in pairs(DEFAULTS) do adam[k] = v end
adam.weight_decay = 0
M.Adam = Optimizer.class("Adam", adam, make_update(false), check_group)
-- for optim_spec: the tensor-op form of each update
M.reference_update = reference_update
return M
