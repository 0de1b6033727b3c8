-- as.optim.SGD(params, {lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0,
-- nesterov = false, maximize = false}): torch.optim.SGD's update, step for step:
--   d = grad (+ weight_decay * p)
--   with momentum: buf = d on the first step, else buf = momentum * buf + (1 - dampening) * d;
--                  d = d + momentum * buf (nesterov) or d = buf
--   p = p - lr * d
local Optimizer = require "attnswap.optim.optimizer"

local function check_group(_, g)
  Optimizer.check_number(g, "lr", 0)
  Optimizer.check_number(g, "momentum", 0)
  Optimizer.check_number(g, "dampening", 0)
  Optimizer.check_number(g, "weight_decay", 0)
  if g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then
    error("nesterov momentum requires a momentum > 0 and zero dampening", 0)
  end
end

local function update(_, g, p, grad, st)
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

return Optimizer.class("SGD", {
  lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false, maximize = false,
}, update, check_group)
