-- as.autograd: custom differentiable functions (torch.autograd.Function),
-- anomaly detection and activation checkpointing (torch.utils.checkpoint,
-- the reentrant form).  The graph itself is recorded in C; a Function's node
-- calls back into the Lua closure the binding keeps (runtime/lua/l_autograd.c).
local core = require "attnswap.core"

local M = {}

local is_tensor = core.is_tensor

-- ---- ctx ----

local Ctx = {}
Ctx.__index = Ctx

--- ctx:save_for_backward(...): the tensors (or nils) backward reads as
--- ctx.saved_tensors.  Kept as detached views: a saved output then does not
--- hold its own node (which would keep the graph alive through the registry).
function Ctx:save_for_backward(...)
  local saved = table.pack(...)
  for i = 1, saved.n do
    local t = saved[i]
    if t ~= nil and not is_tensor(t) then
      error(string.format("save_for_backward: argument #%d must be a Tensor or nil, got %s", i, type(t)), 2)
    end
    if t ~= nil then saved[i] = t:detach() end
  end
  rawset(self, "saved_tensors", saved)
end

-- ---- Function ----

local Function = {}
Function.__index = Function

--- as.autograd.Function{forward = function(ctx, ...) end, backward = function(ctx, g...) end [, name = "MyFn"]}
--- forward runs with gradients off and returns one or more values; backward
--- gets one gradient per output (zeros for outputs not used) and returns one
--- gradient (or nil) per tensor argument of apply, in order.
function M.Function(def)
  if type(def) ~= "table" or type(def.forward) ~= "function" or type(def.backward) ~= "function" then
    error("autograd.Function: expected {forward = function(ctx, ...), backward = function(ctx, grad, ...)}", 2)
  end
  if def.name ~= nil and type(def.name) ~= "string" then
    error("autograd.Function: name must be a string, got " .. type(def.name), 2)
  end
  return setmetatable({ forward = def.forward, backward = def.backward, name = def.name or "Function",
    record_always = def.record_always }, Function)
end

--- F:apply(...): forward's results, recorded so that backward gives the
--- tensor arguments their gradients.
function Function:apply(...)
  local args = table.pack(...)
  local inputs, needs, any = {}, {}, false
  local grad_on = core.is_grad_enabled()
  for i = 1, args.n do
    local v = args[i]
    if is_tensor(v) then
      local need = grad_on and v.requires_grad
      inputs[#inputs + 1], needs[#needs + 1] = v, need
      any = any or need
    end
  end
  local ctx = setmetatable({ needs_input_grad = needs }, Ctx)
  local prev = core.set_grad_enabled(false)
  local res = table.pack(pcall(self.forward, ctx, ...))
  core.set_grad_enabled(prev)
  if not res[1] then error(res[2], 0) end
  local nout = res.n - 1
  if not (any or (self.record_always and grad_on)) then return table.unpack(res, 2, res.n) end
  -- fresh views: an input returned as it is keeps its own history
  local outs, meta = {}, {}
  for k = 1, nout do
    local v = res[k + 1]
    if is_tensor(v) then
      v = v:detach()
      meta[k] = { shape = v:shape(), dtype = v:dtype(), device = v:device() }
    end
    outs[k] = v
  end
  local backward, name, ninputs = self.backward, self.name, #inputs
  -- the node of output k calls run(k, g): the other outputs' gradients are zeros
  local function run(k, g)
    local gs = {}
    for j = 1, nout do
      if j == k then
        gs[j] = g
      elseif meta[j] then
        gs[j] = core.zeros(meta[j].shape, meta[j].dtype):to(meta[j].device)
      end
    end
    local r = table.pack(backward(ctx, table.unpack(gs, 1, nout)))
    if r.n > ninputs then
      local extra = false
      for i = ninputs + 1, r.n do extra = extra or r[i] ~= nil end
      if extra then
        error(string.format("%s's backward returned %d gradients, but apply got %d tensor input%s", name, r.n,
          ninputs, ninputs == 1 and "" or "s"), 0)
      end
    end
    return table.unpack(r, 1, ninputs)
  end
  core.function_record(name, run, inputs, outs)
  return table.unpack(outs, 1, nout)
end

-- ---- anomaly detection ----

--- detect_anomaly(true | false): turns anomaly mode on or off, returning the
--- previous mode.  detect_anomaly(): on until the returned value is closed
--- (`local _ <close> = as.autograd.detect_anomaly()`).  While on, a NaN or
--- Inf made in backward is an error naming the op and the module path its
--- forward ran in.
function M.detect_anomaly(on)
  if on == nil then
    local prev = core.set_anomaly_enabled(true)
    return setmetatable({}, { __close = function() core.set_anomaly_enabled(prev) end })
  end
  return core.set_anomaly_enabled(on and true or false)
end

function M.is_anomaly_enabled() return core.is_anomaly_enabled() end

-- ---- activation checkpointing ----

local Checkpoint = M.Function {
  name = "checkpoint",
  record_always = true, -- parameters inside fn need the node even when no input requires grad
  forward = function(ctx, fn, ...)
    ctx.fn, ctx.args = fn, table.pack(...)
    ctx.rng = { core.get_rng_state() }
    for i = 1, ctx.args.n do -- only the inputs are kept, detached
      if is_tensor(ctx.args[i]) then ctx.args[i] = ctx.args[i]:detach() end
    end
    return fn(...)
  end,
  backward = function(ctx, ...)
    local grads = table.pack(...)
    local args, leaves = {}, {}
    for i = 1, ctx.args.n do
      local v = ctx.args[i]
      if is_tensor(v) then
        v = v:detach()
        if ctx.needs_input_grad[#leaves + 1] then v:requires_grad_() end
        leaves[#leaves + 1] = v
      end
      args[i] = v
    end
    -- recompute with gradients on and the generator where forward found it
    -- (dropout draws the same mask), then put the generator back
    local now = { core.get_rng_state() }
    core.set_rng_state(ctx.rng[1], ctx.rng[2])
    local prev = core.set_grad_enabled(true)
    local res = table.pack(pcall(ctx.fn, table.unpack(args, 1, ctx.args.n)))
    local total
    if res[1] then
      for k = 1, res.n - 1 do
        local out, g = res[k + 1], grads[k]
        if is_tensor(out) and out.requires_grad and g ~= nil then
          local term = (out * g):sum()
          total = total and total + term or term
        end
      end
    end
    core.set_grad_enabled(prev)
    core.set_rng_state(now[1], now[2])
    if not res[1] then error(res[2], 0) end
    if total then total:backward() end
    local out = { n = #leaves + 1 } -- fn itself is no tensor: gradients for the tensor inputs
    for i, v in ipairs(leaves) do out[i] = v.requires_grad and v.grad or nil end
    return table.unpack(out, 1, #leaves)
  end,
}

--- checkpoint(fn, ...): fn(...) without keeping its activations; backward
--- runs fn again (gradients on, the random generator restored so dropout
--- replays) and backpropagates through the recomputation.  Parameters used
--- inside fn get their .grad.  fn must be a function of its arguments (and
--- parameters) only.
function M.checkpoint(fn, ...)
  if type(fn) ~= "function" and not (type(fn) == "userdata" or type(fn) == "table") then
    error("checkpoint: argument #1 must be a function or module, got " .. type(fn), 2)
  end
  return Checkpoint:apply(fn, ...)
end

return M
