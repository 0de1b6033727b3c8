-- as.optim.SGD(params, {lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0,
-- nesterov = false, maximize = false}): torch.optim.SGD's update, step for step:
--   d = grad (+ weight_decay * p)
--   with momentum: buf = d on the first step, else buf = momentum * buf + (1 - dampening) * d;
--                  d = d + momentum * buf (nesterov) or d = buf
--   p = p - lr * d
local Optimizer = require "attnswap.optim.optimizer"
local core = require "attnswap.core"

local function check_group(_, g)
  Optimizer.check_number(g, "lr", 0)
  Optimizer.check_number(g, "momentum", 0)
  Optimizer.check_number(g, "dampening", 0)
  Optimizer.check_number(g, "weight_decay", 0)
  if g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then
    error("nesterov momentum requires a momentum > 0 and zero dampening", 0)
  end
end

-- The update written with tensor ops: the reference the fused kernel is
-- tested against, and the path for dtypes the kernel does not take (float64).
local function reference_update(g, p, grad, st)
  local d = grad
  if g.maximize then d = -d end
  if g.weight_decay ~= 0 then d = d + p * g.weight_decay end
  if g.momentum ~= 0 then
    local buf = st.momentum_buffer
    if buf == nil then
      buf = d:clone()
      st.momentum_buffer = buf
    else
      buf:mul_(g.momentum)
      buf:add_(g.dampening ~= 0 and d * (1 - g.dampening) or d)
    end
    if g.nesterov then d = d + buf * g.momentum else d = buf end
  end
  p:sub_(d * g.lr)
end

-- The fused step (core.sgd_step): one pass over the parameter; the momentum
-- buffer in float32, and a float32 master copy for a float16 / bfloat16 parameter.
local function update(self, g, p, grad, st, gi, i)
  if not Optimizer.FUSED[p:dtype()] then return reference_update(g, p, grad, st) end
  local first = false
  if g.momentum ~= 0 and st.momentum_buffer == nil then
    st.momentum_buffer = Optimizer.zeros_f32(p)
    first = true
  end
  local master = self:_master(gi, i, p, st)
  core.sgd_step(p, grad, st.momentum_buffer, master, g.lr, g.momentum, g.dampening, g.weight_decay,
    g.nesterov, g.maximize, first)
end

local SGD = Optimizer.class("SGD", {
  lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false, maximize = false,
}, update, check_group)
SGD.reference_update = reference_update -- for optim_spec
return SGD
